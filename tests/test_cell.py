"""A closed-loop Locust cell per transport: real users against real servers, every latency
kept, errors counted rather than hidden."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import pytest

from .conftest import MAX_BATCH, SERVER_ARGS, TRANSPORTS


def cell(transport: str, address: str, *args: str) -> dict:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "wiremark.harness.cell",
            "--transport",
            transport,
            "--address",
            address,
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_closed_loop_cell_measures(transport, servers):
    out = cell(
        transport,
        servers[transport].address,
        "--users",
        "4",
        "--duration",
        "1.5",
        "--warmup",
        "0.5",
    )
    assert out["errors"] == 0 and out["requests"] > 50
    assert out["rps"] == pytest.approx(out["requests"] / out["duration_s"], rel=0.01)
    order = [out[k] for k in ("p50", "p90", "p95", "p99", "p999", "max")]
    assert all(0 < a <= b for a, b in itertools.pairwise(order)), order
    assert out["reply_bytes"] > 0 and 0 < out["client_cpu"] <= 1.5


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_failed_requests_are_counted(transport, servers):
    too_big = str(MAX_BATCH + 1)  # every request is refused by the server
    out = cell(
        transport,
        servers[transport].address,
        "--users",
        "2",
        "--duration",
        "0.5",
        "--warmup",
        "0.2",
        "--batch",
        too_big,
    )
    assert out["requests"] == 0 and out["errors"] > 0 and out["p50"] is None


def test_mnist_list_encoding_cell(servers):
    out = cell(
        "msgpack",
        servers["msgpack"].address,
        "--model",
        "mnist",
        "--encoding",
        "list",
        "--users",
        "2",
        "--duration",
        "1",
        "--warmup",
        "0.3",
    )
    assert out["errors"] == 0 and out["requests"] > 10


DELAY_MS = 30.0  # the second arm's server waits this long in every request


@pytest.fixture(scope="module")
def delayed():
    """A second gRPC server, slower by DELAY_MS in every request: the other arm."""
    from wiremark.harness.launch import ServerProcess

    slower = ("--models", "iris", "--inject-delay-ms", f"{DELAY_MS:g}")
    proc = ServerProcess("grpc", (*SERVER_ARGS, *slower))
    try:
        proc.start().wait_ready()
        yield proc
    finally:
        proc.stop()


@pytest.mark.parametrize("loop", [("--users", "4"), ("--users", "8", "--rate", "200")])
def test_an_interleaved_ab_cell_counts_each_request_for_the_arm_it_went_to(loop, servers, delayed):
    """Both servers loaded by turns from one cell process: every request to the delayed
    server takes at least its delay, so its arm's fastest reply says whether any request of
    the other arm was counted there; each arm gets the whole window, its own server's CPU
    and its own samples."""
    from wiremark.harness.histogram import Latencies

    quick = servers["grpc"]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "wiremark.harness.cell",
            *("--transport", "grpc", "--address", quick.address),
            *("--ab-address", delayed.address, "--ab-slot", "0.2", "--ab-seed", "7"),
            *("--server-pid", str(quick.proc.pid), "--ab-server-pid", str(delayed.proc.pid)),
            *("--duration", "1", "--warmup", "0.4", "--sample", "3", "--wire-requests", "5"),
            *loop,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    fast, slow = json.loads(result.stdout.strip().splitlines()[-1])["arms"]
    for arm in (fast, slow):
        assert arm["errors"] == 0 and arm["requests"] > 0
        assert arm["duration_s"] >= 1.0  # whole pairs of turns until each arm had its second
        assert arm["server_cpu_s"] is not None and len(arm["samples"]) == 3
        assert arm["wire_up_bytes"] > 0
    assert Latencies.decode(slow["histogram"]).percentile(0) >= DELAY_MS * 0.999
    assert Latencies.decode(fast["histogram"]).percentile(0) < DELAY_MS
    if "--rate" in loop:
        assert fast["late"] is not None and slow["dropped"] is not None


def test_the_arms_take_turns_in_pairs_of_random_order_until_each_had_its_time():
    from wiremark.harness.cell import Alternation

    def turns(seed: int, pairs: int) -> list[int]:
        said: list[int] = []
        alternation = Alternation(said.append, slot=0.0, seed=seed)
        for _ in range(pairs):
            alternation.pair()
        return said

    said = turns(7, 16)
    pairs = [tuple(said[i : i + 2]) for i in range(0, len(said), 2)]
    assert len(pairs) == 16 and set(pairs) == {(0, 1), (1, 0)}  # each order drawn
    assert turns(7, 16) == said and turns(8, 16) != said  # the seed fixes the order

    alternation = Alternation(lambda arm: None, slot=0.002, seed=1)
    alternation.warm(0.0)  # one pair, not counted
    assert alternation.active == [0.0, 0.0] and alternation.pairs == 0
    alternation.measure(0.02)
    assert min(alternation.active) >= 0.02 and alternation.pairs >= 1
