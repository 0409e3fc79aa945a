"""`wiremark calibrate` runs the harness and the C tools on the same servers and reports
both (its figures are a benchmark's: printed, not asserted)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from wiremark.payloads import transport as registry

FIELDS = {"transport", "harness_rps", "tool_rps", "harness_p50_ms", "tool_p50_ms"}
FIELDS |= {"harness_client_cpu"}


@pytest.mark.skipif(
    not (shutil.which("wrk") and shutil.which("h2load")),
    reason="apt-get install wrk nghttp2-client",
)
def test_calibrate_reports_harness_beside_tools():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "wiremark",
            "calibrate",
            "--json",
            "--repeats",
            "1",
            "--duration",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(result.stdout)
    assert [r["transport"] for r in rows] == list(registry.names())
    for r in rows:
        assert set(r) == FIELDS | {"client"} and r["client"] == "lean"
        assert all(r[k] > 0 for k in FIELDS - {"transport"})
    assert "harness on the lean client" in result.stderr and "tool" in result.stderr
