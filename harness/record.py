"""From what the load workers measured to a result-file cell (`reports/records.py`): the
in-process references, the sampled replies checked against them, the validity rules."""

from __future__ import annotations

import base64
import functools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from wiremark.payloads import bodies
from wiremark.payloads import transport as registry
from wiremark.payloads.contract import MODEL_FAMILIES, PixelEncoding, Prediction
from wiremark.payloads.timing import parse_server_timing
from wiremark.reports import records

from .cell import CLIENT_BOUND, batch_for
from .conformance import Cell as ConformCell
from .conformance import compare
from .histogram import Latencies
from .scenario import CellSpec, Scenario


@dataclass
class Reference:
    """The in-process answer and costs for one workload (model, batch, pixel encoding)."""

    prediction: Prediction
    inprocess_ms: float
    request_bytes: dict[str, int] = field(default_factory=dict)
    client_encode_ms: dict[str, float] = field(default_factory=dict)


def timed(fn: Callable[[], Any], budget_s: float = 0.3, most: int = 500) -> float:
    """Median milliseconds of `fn()`, over as many calls as fit in the budget."""
    times: list[float] = []
    end = time.perf_counter() + budget_s
    while len(times) < most and (len(times) < 5 or time.perf_counter() < end):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


class References:
    """The scenario's models built in this process, and each workload's reference, once."""

    def __init__(self, models: list[str]) -> None:
        from wiremark.servers.runner import build_all

        self.runners = build_all(models)[0]
        self.cache: dict[tuple[str, int, str], Reference] = {}

    def get(self, model: str, batch_size: int, encoding: str) -> Reference:
        key = (model, batch_size, encoding)
        if key not in self.cache:
            batch = batch_for(model, batch_size)
            run = self.runners[model]
            ref = Reference(run.predict(batch), timed(lambda: run.predict(batch)))
            pixels = PixelEncoding(encoding)
            for t in registry.names(peers=True):
                ref.request_bytes[t] = len(bodies.encode(t, model, batch, pixels))
                ref.client_encode_ms[t] = timed(
                    functools.partial(bodies.encode, t, model, batch, pixels)
                )
            self.cache[key] = ref
        return self.cache[key]


@dataclass
class Measured:
    """One cell's load workers, merged: every latency (full resolution) and the sums."""

    histogram: Latencies  # ms from the intended send
    uncorrected: Latencies | None  # open loop: ms from the actual send
    encoded: str  # the histograms as the result file keeps them
    encoded_uncorrected: str | None
    duration_s: float
    errors: int
    first_error: str
    client_cpu_s: float
    reply_bytes: float
    server_cpu_s: float | None
    server_peak_rss_mb: float | None
    late: int | None
    dropped: int | None
    samples: list[dict[str, str]]
    wire_up_bytes: float | None
    wire_down_bytes: float | None
    workers: list[dict[str, Any]] = field(default_factory=list)  # each that finished
    workers_planned: int = 1


@dataclass
class SampleCheck:
    checked: int
    differing: int  # replies with at least one mismatch
    mismatches: list[str]
    server_ms: dict[str, float]  # Server-Timing medians
    decode_ms: float | None  # the client codec's decode of one reply
    body_bytes: int | None


def check_samples(spec: CellSpec, samples: list[dict[str, str]], ref: Reference) -> SampleCheck:
    """Sampled replies against the reference."""
    checker = ConformCell(spec.model, spec.transport)
    family = MODEL_FAMILIES[spec.model]
    timings: dict[str, list[float]] = {}
    decode_ms = body_bytes = None
    differing = 0
    for i, sample in enumerate(samples):
        body = base64.b64decode(sample["body"])
        before = len(checker.mismatches)
        try:
            got = bodies.decode(spec.transport, family, body)
        except Exception as exc:  # a reply that does not even decode is a mismatch
            checker.mismatches.append(f"sample {i}: undecodable reply: {exc}")
            differing += 1
            continue
        compare(f"sample {i}", got, ref.prediction, checker)
        differing += len(checker.mismatches) > before
        for stage, ms in parse_server_timing(sample["server_timing"]).items():
            timings.setdefault(stage, []).append(ms)
        if decode_ms is None:
            body_bytes = len(body)
            decode_ms = timed(functools.partial(bodies.decode, spec.transport, family, body))
    medians = {k: statistics.median(v) for k, v in timings.items()}
    return SampleCheck(len(samples), differing, checker.mismatches, medians, decode_ms, body_bytes)


def identity(spec: CellSpec, trial: int, rate: float | None) -> dict[str, Any]:
    """The fields that say which measurement a cell is (records.CELL_KEY, and the trial)."""
    return {
        "trial": trial,
        "model": spec.model,
        "transport": spec.transport,
        "mode": spec.mode,
        "concurrency": spec.concurrency,
        "rate": None if rate is None else round(rate, 2),
        "arrival": spec.arrival,
        "batch": spec.batch,
        "encoding": spec.encoding,
        "compression": spec.compression,
        "tls": spec.tls,
        "client": spec.client,
    }


SERVER_DOWN = "server down"  # how a cell whose server was gone says so


def record(
    spec: CellSpec,
    trial: int,
    rate: float | None,
    got: Measured,
    processes: int,
    reference: Reference,
    scenario: Scenario,
    conformance_failed: bool,
) -> dict[str, Any]:
    """The result-file cell of one measurement, with its validity and reasons."""
    wall = got.duration_s
    n = got.histogram.count
    # the busiest worker's CPU over the core it had (less what the hypervisor stole): one
    # client-bound worker is a bottleneck, whatever the others did
    share = max((w["client_cpu_share"] for w in got.workers), default=0.0)
    check = check_samples(spec, got.samples, reference)
    reasons = []
    # no reply at all: the cell measured neither side (a load generator spinning on refused
    # connections looks saturated, but it is not the bottleneck of anything)
    no_replies = n == 0 and got.errors > 0
    if no_replies and "refused" in got.first_error.lower():
        reasons.append(
            f"{SERVER_DOWN}: every request failed, the connection refused "
            f"(first: {got.first_error[:160]})"
        )
    if wall < scenario.duration_s * 0.9:
        reasons.append(f"measured {wall:.1f} s of {scenario.duration_s} s")
    if n < scenario.min_requests:
        reasons.append(f"{n} requests, fewer than {scenario.min_requests}")
    if got.errors:
        reasons.append(f"{got.errors} errors (first: {got.first_error[:160]})")
    if check.differing:
        reasons.append(
            f"{check.differing} of {check.checked} sampled replies differ from the reference "
            f"(first: {check.mismatches[0][:160]})"
        )
    if conformance_failed:
        reasons.append("conformance check failed for this model and transport")
    finished = len(got.workers)
    if finished < got.workers_planned:
        reasons.append(
            f"{got.workers_planned - finished} of {got.workers_planned} load workers lost "
            f"mid-cell; {finished} finished it"
        )
    pct = got.histogram.summary()
    unc = got.uncorrected.summary() if got.uncorrected is not None else None
    server_cpu = got.server_cpu_s
    return {
        **identity(spec, trial, rate),
        "duration_s": round(wall, 3),
        "requests": n,
        "errors": got.errors,
        "rps": round(n / wall, 1) if wall else 0.0,
        **{f"{k}_ms": v for k, v in pct.items()},
        **{f"uncorrected_{k}_ms": unc[k] if unc else None for k in records.UNCORRECTED},
        "late": got.late,
        "dropped": got.dropped,
        "request_bytes": reference.request_bytes[spec.transport],
        "response_bytes": check.body_bytes if check.body_bytes is not None else got.reply_bytes,
        "wire_up_bytes": got.wire_up_bytes,
        "wire_down_bytes": got.wire_down_bytes,
        "client_cpu_ms": round(got.client_cpu_s * 1000 / n, 4) if n else None,
        "server_cpu_ms": round(server_cpu * 1000 / n, 4) if n and server_cpu is not None else None,
        "client_cpu_share": round(share, 3),
        "server_peak_rss_mb": got.server_peak_rss_mb,
        "server_decode_ms": check.server_ms.get("decode"),
        "server_infer_ms": check.server_ms.get("infer"),
        "server_encode_ms": check.server_ms.get("encode"),
        "client_encode_ms": round(reference.client_encode_ms[spec.transport], 4),
        "client_decode_ms": None if check.decode_ms is None else round(check.decode_ms, 4),
        "inprocess_ms": round(reference.inprocess_ms, 4),
        "transport_tax_ms": records.transport_tax(pct["p50"], reference.inprocess_ms),
        "processes": processes,
        "workers": finished,
        "workers_planned": got.workers_planned,
        "load_workers": got.workers,
        "latency_hdr": got.encoded,
        "latency_hdr_uncorrected": got.encoded_uncorrected,
        "client_bound": share >= CLIENT_BOUND and not no_replies,
        "scaling": "",
        "sampled": check.checked,
        "sample_mismatches": check.differing,
        "valid": not reasons,
        "invalid_reasons": reasons,
    }


def failed_cell(
    spec: CellSpec, trial: int, rate: float | None, message: str, reference: Reference
) -> dict[str, Any]:
    """The record of a cell whose load process failed: no figures, and why."""
    last = message.strip().splitlines()[-1] if message.strip() else "unknown failure"
    return {
        **identity(spec, trial, rate),
        "requests": 0,
        "errors": 0,
        "rps": 0.0,
        "request_bytes": reference.request_bytes[spec.transport],
        "processes": 1,
        "client_bound": False,
        "scaling": "",
        "sampled": 0,
        "sample_mismatches": 0,
        "valid": False,
        "invalid_reasons": [f"the load process failed: {last[:300]}"],
    }
