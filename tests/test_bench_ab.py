"""A/B runs end to end: `serve --inject-cpu-us` on every server kind, `bench --ab` with the
servers it starts, `bench --target/--baseline-target` against servers started here, and the
gate and the report on the file they write."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

from wiremark.harness.clients import connect
from wiremark.harness.launch import ServerProcess, running
from wiremark.payloads import samples
from wiremark.reports import records

from .cli import wiremark
from .conftest import TRANSPORTS

bench = functools.partial(wiremark, "bench", timeout=400)
BURN_US = 20_000  # 20 ms of CPU per request: far above any decode here

SMALL = """
[scenario]
name = "ab-test"
models = ["iris"]
transports = ["msgpack"]
concurrency = [2]
rate = ["50%"]
duration_s = 1.0
warmup_s = 0.3
min_requests = 20
wire_requests = 10
sample = 5
"""


def scenario_file(tmp: Path, text: str = SMALL) -> str:
    path = tmp / "ab.toml"
    path.write_text(text)
    return str(path)


def test_inject_cpu_burns_in_the_decode_lap_on_every_server_kind() -> None:
    """The burn spins until the request's thread has used BURN_US more CPU time, so its
    decode lap (wall time) is at least that long however busy the machine is."""
    procs = {
        t: ServerProcess(t, ("--models", "iris", "--inject-cpu-us", str(BURN_US)))
        for t in TRANSPORTS
    }
    rows = samples.iris_rows(2)[0]
    with running(procs.values()):
        for t, proc in procs.items():
            with connect(t, proc.address, timeout=30) as client:
                reply = client.predict("iris", rows)
            assert reply.server_ms["decode"] >= BURN_US / 1000, (t, reply.server_ms)
            assert len(reply.prediction.class_ids) == 2  # type: ignore[union-attr]


def check_ab(run: records.Run, blocks: int) -> None:
    assert run.is_ab and run.meta["schema_version"] == records.SCHEMA_VERSION
    cells = run.cells
    assert {c["arm"] for c in cells} == set(records.ARMS)
    assert all(c["block"] == c["trial"] for c in cells)
    modes = {(c["mode"], c["block"], c["arm"]) for c in cells}
    assert len(cells) == len(modes) == 2 * 2 * blocks  # closed + open, both arms, each block
    for block in range(blocks):
        rates = {c["rate"] for c in cells if c["block"] == block and c["mode"] == "open"}
        assert len(rates) == 1 and None not in rates  # one open-loop rate for both arms
    assert all(c["valid"] and not c["errors"] for c in cells), [c["invalid_reasons"] for c in cells]
    assert {c["arm"] for c in run.conformance} == set(records.ARMS)


def test_ab_run_with_servers_bench_starts(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = bench(
        *("--scenario", scenario_file(tmp_path), "--out", str(out), "--repeat", "2"),
        *("--ab", "--inject-cpu-us", "3000", "--seed", "7", "--no-report"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "A/B run, 2 blocks" in result.stderr and f"wiremark gate {out}" in result.stderr
    run = records.load(out)
    check_ab(run, 2)
    assert run.meta["ab"]["seed"] == 7
    arms = run.meta["ab"]["arms"]
    assert arms["current"]["inject_cpu_us"] == 3000 and arms["baseline"]["inject_cpu_us"] == 0
    for c in run.cells:  # 3 ms burnt per request, inside the decode lap, on the current arm
        if c["arm"] == "current":
            assert c["server_decode_ms"] >= 3.0
    cpu = {arm: [c["server_cpu_ms"] for c in run.cells if c["arm"] == arm] for arm in records.ARMS}
    assert min(cpu["current"]) > max(cpu["baseline"])
    # two blocks: too few for the paired test, and the gate says so rather than pass quietly
    gated = wiremark("gate", out)
    assert gated.returncode == 0, gated.stdout + gated.stderr
    assert "NOT JUDGED" in gated.stdout and "too few blocks" in gated.stdout
    html = tmp_path / "report.html"
    made = wiremark("report", out, "--out", html)
    assert made.returncode == 0, made.stderr
    text = html.read_text(encoding="utf-8")
    assert f"{run.label} baseline" in text and f"{run.label} current" in text


def test_ab_run_against_running_servers(tmp_path: Path) -> None:
    """The CI recipe: main's server and the candidate's, started beforehand."""
    main = ServerProcess("msgpack", ("--models", "iris"))
    candidate = ServerProcess("msgpack", ("--models", "iris"))
    with running([main, candidate]):
        out = tmp_path / "out"
        result = bench(
            *("--scenario", scenario_file(tmp_path), "--out", str(out), "--repeat", "2"),
            *("--target", f"msgpack={candidate.address}"),
            *("--baseline-target", f"msgpack={main.address}", "--no-report"),
        )
        assert result.returncode == 0, result.stderr[-3000:]
        run = records.load(out)
        check_ab(run, 2)
        arms = run.meta["ab"]["arms"]
        assert arms["baseline"]["targets"] == {"msgpack": main.address}
        assert arms["current"]["targets"] == {"msgpack": candidate.address}
        doc = json.loads(wiremark("gate", out, "--json", "-").stdout)
        assert doc["unit"] == "blocks"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--baseline-target", "msgpack=127.0.0.1:9"], "on both arms or on neither"),
        (["--baseline-inject-cpu-us", "5"], "need an A/B run: add --ab"),
        (["--ab-slot-ms", "100"], "--ab-slot-ms needs an A/B run: add --ab"),
        (["--seed", "7"], "--seed needs an A/B run: add --ab"),
        (
            ["--ab", "--target", "msgpack=127.0.0.1:9", "--baseline-target", "json=127.0.0.1:9"],
            "must name the same transports",
        ),
        (["--inject-cpu-us", "-1"], "must be a finite number >= 0"),
        (
            [
                "--ab",
                "--baseline-target",
                "msgpack=127.0.0.1:9",
                "--target",
                "msgpack=127.0.0.1:9",
                "--baseline-inject-delay-ms",
                "1",
            ],
            "applies to servers bench starts",
        ),
    ],
)
def test_ab_usage_errors_are_one_line(tmp_path: Path, args: list[str], says: str) -> None:
    result = bench("--scenario", scenario_file(tmp_path), "--out", str(tmp_path / "o"), *args)
    assert result.returncode == 2, result.stdout + result.stderr
    last = result.stderr.strip().splitlines()[-1]  # argparse's usage comes before it
    assert last.startswith("wiremark") and "error: " in last and says in last
    assert "Traceback" not in result.stderr
