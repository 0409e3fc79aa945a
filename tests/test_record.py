"""From a measurement to a result-file cell, on synthetic figures: no server, no load, no
TensorFlow. The validity rules, the client-bound flag, the transport tax and the sampled
replies' check are logic, tested as logic."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from wiremark.harness.histogram import Latencies
from wiremark.harness.record import Measured, Reference, record
from wiremark.harness.scenario import CellSpec, Scenario
from wiremark.payloads import bodies
from wiremark.payloads.contract import Classes, Family

SPEC = CellSpec("iris", "json", "closed", 4, None, None, 1, "raw", "none")
SCENARIO = Scenario(duration_s=2.0, min_requests=100, sample=2)
ANSWER = Classes(np.array([0]), np.array([[0.9, 0.05, 0.05]], dtype=np.float32))
WRONG = Classes(np.array([2]), np.array([[0.05, 0.05, 0.9]], dtype=np.float32))


def reply(prediction: Classes) -> dict[str, str]:
    from wiremark.payloads import transport

    body = transport.get("json").codec.encode_reply(prediction)
    return {"body": base64.b64encode(body).decode(), "server_timing": "decode;dur=0.020"}


def worker(index: int, cpu_s: float, requests: int = 200) -> dict:
    return {"index": index, "requests": requests, "client_cpu_s": cpu_s, "wall_s": 2.0} | {
        "client_cpu_share": round(cpu_s / 2.0, 3)
    }


def measured(
    n: int = 400,
    errors: int = 0,
    cpu_s: float = 0.5,
    samples=None,
    workers: list[dict] | None = None,
    planned: int = 1,
    uncorrected: Latencies | None = None,
) -> Measured:
    histogram = Latencies.of(np.linspace(0.5, 2.5, n))
    return Measured(
        histogram=histogram,
        uncorrected=uncorrected,
        encoded=histogram.encode(),
        encoded_uncorrected=uncorrected.encode() if uncorrected else None,
        duration_s=2.0,
        errors=errors,
        first_error="HTTP 503: busy" if errors else "",
        client_cpu_s=sum(w["client_cpu_s"] for w in workers) if workers else cpu_s,
        reply_bytes=60.0,
        server_cpu_s=1.0,
        server_peak_rss_mb=700.0,
        late=None,
        dropped=None,
        samples=[reply(ANSWER)] * 2 if samples is None else samples,
        wire_up_bytes=150.0,
        wire_down_bytes=180.0,
        workers=[worker(0, cpu_s)] if workers is None else workers,
        workers_planned=planned,
    )


def cell(got: Measured, conformance_failed: bool = False) -> dict:
    ref = Reference(
        ANSWER, inprocess_ms=0.25, request_bytes={"json": 40}, client_encode_ms={"json": 0.01}
    )
    return record(SPEC, 0, None, got, 1, ref, SCENARIO, conformance_failed)


def test_a_good_measurement_is_a_valid_cell():
    out = cell(measured())
    assert out["valid"] and out["invalid_reasons"] == []
    assert out["requests"] == 400 and out["rps"] == 200.0
    assert out["p50_ms"] == pytest.approx(1.5, abs=0.005)
    assert out["transport_tax_ms"] == pytest.approx(1.25, abs=0.005)
    assert out["latency_hdr"] and Latencies.decode(out["latency_hdr"]).count == 400
    assert out["uncorrected_p99_ms"] is None and out["workers"] == out["workers_planned"] == 1
    assert out["sampled"] == 2 and out["sample_mismatches"] == 0
    assert out["server_decode_ms"] == pytest.approx(0.020) and out["server_cpu_ms"] == 2.5
    assert not out["client_bound"] and out["client_cpu_share"] == 0.25


@pytest.mark.parametrize(
    ("got", "failed", "reason"),
    [
        (measured(n=50), False, "50 requests, fewer than 100"),
        (measured(errors=3), False, "3 errors (first: HTTP 503: busy)"),
        (measured(samples=[reply(ANSWER), reply(WRONG)]), False, "1 of 2 sampled replies differ"),
        (measured(samples=[{"body": "bm90IGpzb24=", "server_timing": ""}]), False, "1 of 1"),
        (measured(), True, "conformance check failed"),
        (measured(workers=[worker(1, 0.5)], planned=2), False, "1 of 2 load workers lost"),
    ],
    ids=["too-few", "errors", "wrong-reply", "undecodable-reply", "conformance", "lost-worker"],
)
def test_each_rule_makes_a_cell_invalid_and_says_why(got, failed, reason):
    out = cell(got, failed)
    assert not out["valid"]
    assert any(r.startswith(reason) for r in out["invalid_reasons"]), out["invalid_reasons"]


def test_a_saturated_load_generator_is_flagged():
    out = cell(measured(cpu_s=1.9))  # 1.9 s of CPU in a 2 s window on one core
    assert out["client_bound"] and out["client_cpu_share"] == 0.95


def test_one_saturated_worker_flags_the_cell_whatever_the_others_did():
    """Two workers, one at 95% of its core and one idle: on average they used half their
    cores, but the busy one was the bottleneck of its half of the load."""
    busy = measured(workers=[worker(0, 1.9), worker(1, 0.1)], planned=2)
    assert cell(busy)["client_bound"] and cell(busy)["client_cpu_share"] == 0.95
    calm = measured(workers=[worker(0, 1.0), worker(1, 1.0)], planned=2)
    assert not cell(calm)["client_bound"] and cell(calm)["client_cpu_share"] == 0.5


def test_an_open_loop_cell_records_its_uncorrected_latencies_beside():
    unc = Latencies.of(np.linspace(0.2, 1.0, 400))
    out = cell(measured(uncorrected=unc))
    assert out["uncorrected_p50_ms"] == pytest.approx(0.6, abs=0.005)
    assert out["uncorrected_p50_ms"] < out["p50_ms"]
    assert Latencies.decode(out["latency_hdr_uncorrected"]).count == 400


def test_the_codec_round_trip_the_check_relies_on():
    body = base64.b64decode(reply(ANSWER)["body"])
    got = bodies.decode("json", Family.TABULAR, body)
    assert got.class_ids.tolist() == [0]
