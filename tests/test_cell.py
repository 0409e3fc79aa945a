"""A closed-loop Locust cell per transport: real users against real servers, every latency
kept, errors counted rather than hidden."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import pytest

from .conftest import MAX_BATCH, TRANSPORTS


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
