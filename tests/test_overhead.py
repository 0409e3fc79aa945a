"""`wiremark overhead` runs end to end and reports what it promises (its figures are a
benchmark's, printed, not asserted); without its load generators it says what to install."""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys

import pytest

from wiremark.payloads import transport as registry

from . import cli

FIELDS = {
    "transport",
    "echo_rps",
    "echo_p50_ms",
    "inproc_p50_ms",
    "rps_c16",
    "p50_c1_ms",
    "efficiency",
    "tax_ratio",
}


wiremark = functools.partial(cli.wiremark, timeout=600)


@pytest.mark.skipif(
    not (shutil.which("wrk") and shutil.which("h2load")),
    reason="apt-get install wrk nghttp2-client",
)
def test_overhead_reports_every_transport():
    result = wiremark("overhead", "--json", "--repeats", "1", "--duration", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(result.stdout)
    assert [r["transport"] for r in rows] == list(registry.names())
    for r in rows:
        assert set(r) == FIELDS
        assert r["echo_rps"] > 0 and r["rps_c16"] > 0 and r["p50_c1_ms"] > 0
        bound = 1 / (1 / r["echo_rps"] + r["inproc_p50_ms"] / 1000)
        assert r["efficiency"] == pytest.approx(r["rps_c16"] / bound, rel=1e-3)
        assert r["tax_ratio"] == pytest.approx(
            (r["p50_c1_ms"] - r["inproc_p50_ms"]) / r["echo_p50_ms"], rel=1e-3
        )
    assert "load generator on core" in result.stderr or "one core" in result.stderr


def test_overhead_names_missing_tools(tmp_path):
    # a PATH with python but without wrk and h2load
    (tmp_path / "python").symlink_to(sys.executable)
    env = {**os.environ, "PATH": str(tmp_path)}
    result = wiremark("overhead", env=env)
    assert result.returncode == 2
    assert "nghttp2-client" in result.stderr and "Traceback" not in result.stderr
