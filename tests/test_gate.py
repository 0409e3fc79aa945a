"""`wiremark gate`: rules, statistics, verdicts and outputs, on synthetic result files (no
servers). The A/A and injected-slowdown proofs of docs/ci.md run here on synthetic data."""

from __future__ import annotations

import argparse
import functools
import json
import math
import re
import shlex
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.synthetic import run_doc, write_doc
from wiremark.payloads.transport import names as transport_names
from wiremark.reports import gate, records

from . import cli

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
LATENCY = ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "p999_ms", "max_ms", "mean_ms")
# The tail and throughput rules many tests below judge by (the defaults are p50:+5% rps:-5%)
TAIL = ("p99:+10%", "rps:-5%")
TRANSPORTS_REGISTERED = transport_names()


wiremark = functools.partial(cli.wiremark, cwd=ROOT)


def load(doc: dict[str, Any], tmp: Path, name: str) -> records.Run:
    return records.load(write_doc(tmp / name, doc))


def edit(doc: dict[str, Any], fn: Callable[[dict[str, Any]], None], **match: Any) -> int:
    """Apply `fn` to every cell matching `match`; returns how many."""
    hits = [c for c in doc["cells"] if all(c[k] == v for k, v in match.items())]
    for c in hits:
        fn(c)
    return len(hits)


def add_delay(doc: dict[str, Any], ms: float) -> dict[str, Any]:
    """Every latency `ms` higher, as `bench --inject-delay-ms` would; closed-loop throughput
    falls to match (users / latency), and the transport tax grows with the p50."""
    for c in doc["cells"]:
        old_mean = c["mean_ms"]
        for name in LATENCY:
            c[name] += ms
        c["transport_tax_ms"] = records.transport_tax(c["p50_ms"], c["inprocess_ms"])
        if c["mode"] == "closed":
            c["rps"] = round(c["rps"] * old_mean / c["mean_ms"], 1)
    return doc


# --- rules -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "column", "sign", "threshold"),
    [
        ("p99:+10%", "p99_ms", 1, 10.0),
        ("rps:-5%", "rps", -1, 5.0),
        (" p999 : +20.5 % ", "p999_ms", 1, 20.5),
        ("P50:+0%", "p50_ms", 1, 0.0),
        ("mean:+3%", "mean_ms", 1, 3.0),
        ("max:+50%", "max_ms", 1, 50.0),
        ("server_cpu:+10%", "server_cpu_ms", 1, 10.0),
        ("client_cpu:+.5%", "client_cpu_ms", 1, 0.5),
        ("tax:+10%", "transport_tax_ms", 1, 10.0),
        ("transport_tax_ms:+5%", "transport_tax_ms", 1, 5.0),
        ("p99_ms:+10%", "p99_ms", 1, 10.0),
    ],
)
def test_rules_parse(text: str, column: str, sign: int, threshold: float) -> None:
    rule = gate.Rule.parse(text)
    assert (rule.column, rule.sign, rule.threshold_pct) == (column, sign, threshold)
    assert gate.Rule.parse(rule.text) == rule


def test_rule_semantics_and_defaults() -> None:
    p50, rps = gate.parse_rules(None)
    assert (p50.text, rps.text) == gate.DEFAULT_RULES == ("p50:+5%", "rps:-5%")
    p99, _ = gate.parse_rules(TAIL)
    assert p99.worse(10.1) and not p99.worse(10.0) and not p99.worse(-50)
    assert p99.better(-10.1) and not p99.better(5)
    assert rps.worse(-5.1) and not rps.worse(-5.0) and not rps.worse(30)
    assert rps.better(5.1)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("p99", "FIELD:+N%"),
        ("p99:10%", "FIELD:+N%"),
        ("p99:+10", "FIELD:+N%"),
        ("p99:+ten%", "FIELD:+N%"),
        ("p99:+-10%", "FIELD:+N%"),
        ("", "FIELD:+N%"),
        ("latency:+10%", "unknown field 'latency'"),
        ("rps:+5%", "write rps:-5%"),
        ("p99:-10%", "write p99:+10%"),
        ("tax:-10%", "write tax:+10%"),
    ],
)
def test_bad_rules(text: str, says: str) -> None:
    with pytest.raises(gate.RuleError) as err:
        gate.Rule.parse(text)
    message = str(err.value)
    assert repr(text) in message and says in message and "\n" not in message


def test_a_field_once() -> None:
    with pytest.raises(gate.RuleError, match="more than one rule for p99"):
        gate.parse_rules(["p99:+10%", "p99:+20%"])


# --- statistics ------------------------------------------------------------------------------


def test_smallest_attainable_p() -> None:
    assert gate.min_attainable_p(1, 1) == 0.5
    assert gate.min_attainable_p(2, 2) == pytest.approx(1 / 6)
    assert gate.min_attainable_p(3, 3) == pytest.approx(0.05)
    assert gate.min_attainable_p(5, 5) == pytest.approx(1 / 252)
    assert gate.min_attainable_p(2, 5) == pytest.approx(1 / 21)
    assert gate.min_attainable_p(0, 5) == 1.0
    assert gate.trials_needed(0.05) == 3
    assert gate.trials_needed(0.01) == 5
    assert gate.trials_needed(0.001) == 7


def test_mann_whitney_matches_scipy() -> None:
    from scipy import stats

    rng = np.random.default_rng(7)
    for _ in range(40):
        n_c, n_b = (int(n) for n in rng.integers(2, 7, 2))
        cur = [float(v) for v in np.round(rng.normal(size=n_c), 1)]  # ties on purpose
        base = [float(v) for v in np.round(rng.normal(size=n_b), 1)]
        if min(cur + base) == max(cur + base):
            continue
        for alternative in ("greater", "less"):
            method = stats.PermutationMethod(n_resamples=math.inf)
            want = stats.mannwhitneyu(cur, base, alternative=alternative, method=method).pvalue
            assert gate.mann_whitney_p(cur, base, alternative) == pytest.approx(want, abs=1e-9)
    # complete separation reaches the floor; the same values give p = 1
    assert gate.mann_whitney_p([4, 5, 6], [1, 2, 3], "greater") == pytest.approx(0.05)
    assert gate.mann_whitney_p([4, 5, 6], [1, 2, 3], "less") == pytest.approx(1.0)
    assert gate.mann_whitney_p([1, 1, 1], [1, 1, 1], "greater") == 1.0


# --- verdicts --------------------------------------------------------------------------------


def test_a_a_passes(tmp_path: Path) -> None:
    base = load(run_doc(run_id="a1", trials=5, noise=0.02, seed=11), tmp_path, "a1")
    cur = load(run_doc(run_id="a2", trials=5, noise=0.02, seed=12), tmp_path, "a2")
    verdict = gate.evaluate(base, cur, None, 0.05)
    assert verdict.passed and verdict.exit_status == 0, verdict.summary()
    assert not verdict.regressions and not verdict.failures and not verdict.insufficient
    assert len(verdict.comparisons) == 54 and verdict.cells_in_common == 27
    assert not [w for w in verdict.warnings if w.kind == "noise"]
    changes = [abs(c.change_pct) for c in verdict.comparisons]
    assert max(changes) < 5
    assert verdict.markdown().startswith("✅ no regression\n")


def test_a_a_noisy_warns_and_wider_rules_pass(tmp_path: Path) -> None:
    """At 5% trial noise the default rps:-5% is within the noise: the gate says so; rules at
    2.5x the noise pass the same A/A pair."""
    base = load(run_doc(run_id="a1", trials=5, noise=0.05, seed=21), tmp_path, "a1")
    cur = load(run_doc(run_id="a2", trials=5, noise=0.05, seed=22), tmp_path, "a2")
    noisy = gate.evaluate(base, cur)
    assert [w for w in noisy.warnings if w.kind == "noise" and "rps:-5%" in w.message]
    assert 4 < noisy.noise_pct["rps:-5%"] < 6
    wide = gate.evaluate(base, cur, ["p99:+13%", "rps:-13%"])
    assert wide.passed and not [w for w in wide.warnings if w.kind == "noise"]


def test_slowdown_fails(tmp_path: Path) -> None:
    base = load(run_doc(run_id="main", trials=5, noise=0.03, seed=1), tmp_path, "base")
    cur = load(run_doc(run_id="pr", trials=5, noise=0.03, seed=2, slowdown=1.2), tmp_path, "pr")
    verdict = gate.evaluate(base, cur, TAIL)
    assert not verdict.passed and verdict.exit_status == 1
    assert len(verdict.regressions) == len(verdict.comparisons) == 54
    named = {(c.cell, c.rule.text): c for c in verdict.regressions}
    p99 = named["mnist/grpc closed c=8 batch=1 raw", "p99:+10%"]
    assert p99.p_value == pytest.approx(1 / 252) and 12 < p99.change_pct < 28
    rps = named["mnist/grpc closed c=8 batch=1 raw", "rps:-5%"]
    assert -24 < rps.change_pct < -10 and rps.p_value == pytest.approx(1 / 252)
    assert "p99:+10% mnist/grpc closed c=8 batch=1 raw" in verdict.summary()
    md = verdict.markdown()
    assert md.startswith("❌ 54 regressions\n")
    assert "| `mnist/grpc closed c=8 batch=1 raw` | `p99:+10%` |" in md
    doc = json.loads(verdict.json())
    assert doc["passed"] is False and doc["exit_status"] == 1 and len(doc["regressions"]) == 54
    suite = ET.fromstring(verdict.junit()).find("testsuite")
    assert suite is not None and suite.get("failures") == "54" and suite.get("tests") == "54"


def test_injected_delay_fails_small_models_only(tmp_path: Path) -> None:
    """+2 ms on every latency (`bench --inject-delay-ms 2`): the sub-millisecond models regress
    by far more than 10%; the 45 ms face model stays within p99:+10%."""
    base = load(run_doc(trials=5, noise=0.02, seed=3), tmp_path, "base")
    cur = load(add_delay(run_doc(trials=5, noise=0.02, seed=4), 2.0), tmp_path, "slow")
    verdict = gate.evaluate(base, cur, TAIL)
    assert verdict.exit_status == 1
    regressed = {c.key["model"] for c in verdict.regressions}
    assert regressed == {"iris", "mnist"}
    face = [c for c in verdict.comparisons if c.key["model"] == "face" and c.rule.name == "p99"]
    assert face and all(c.verdict == gate.UNCHANGED and c.change_pct < 10 for c in face)


def test_transport_tax_rule(tmp_path: Path) -> None:
    """`tax:+N%` gates the transport tax (p50 minus in-process): +2 ms on every latency adds
    far more than 10% to the sub-millisecond models' tax, under 10% to face's 35 ms."""
    base = load(run_doc(trials=5, noise=0.02, seed=3), tmp_path, "base")
    cur = load(add_delay(run_doc(trials=5, noise=0.02, seed=4), 2.0), tmp_path, "slow")
    verdict = gate.evaluate(base, cur, ["tax:+10%"])
    assert verdict.exit_status == 1 and len(verdict.comparisons) == 27
    assert {c.rule.column for c in verdict.comparisons} == {"transport_tax_ms"}
    assert {c.key["model"] for c in verdict.regressions} == {"iris", "mnist"}
    assert "REGRESSION tax:+10% iris/grpc closed c=1 batch=1 raw" in verdict.summary()


def test_schema_1_files_gate_on_tax(tmp_path: Path) -> None:
    """A schema-1 baseline (no transport_tax_ms recorded) is gated on the tax all the same:
    `records.load` fills it in from p50 and in-process."""
    old = run_doc(trials=5, noise=0.02, seed=3)
    old["schema_version"] = 1
    del old["transports"]
    for c in old["cells"]:
        del c["transport_tax_ms"]
    base = load(old, tmp_path, "old")
    cur = load(run_doc(trials=5, noise=0.02, seed=4), tmp_path, "new")
    verdict = gate.evaluate(base, cur, ["tax:+10%"])
    assert verdict.passed and len(verdict.comparisons) == 27


def test_improvement(tmp_path: Path) -> None:
    base = load(run_doc(trials=5, seed=5), tmp_path, "base")
    cur = load(run_doc(trials=5, seed=6, slowdown=0.8), tmp_path, "fast")
    verdict = gate.evaluate(base, cur)
    assert verdict.passed and len(verdict.improvements) == 54
    assert "🚀 improvement" in verdict.markdown()


@pytest.mark.parametrize("trials", [1, 2])
def test_too_few_trials_are_not_judged_but_loud(tmp_path: Path, trials: int) -> None:
    base = load(run_doc(trials=trials, seed=7), tmp_path, "base")
    cur = load(run_doc(trials=trials, seed=8, slowdown=1.5), tmp_path, "slow")
    verdict = gate.evaluate(base, cur)
    assert verdict.passed and verdict.exit_status == 0
    assert len(verdict.insufficient) == len(verdict.comparisons) == 54
    assert not verdict.regressions
    first = verdict.insufficient[0]
    assert first.min_p == pytest.approx(gate.min_attainable_p(trials, trials))
    assert "would be a regression" in first.note and "need ≥3 per side" in first.note
    loud = "NOT JUDGED: not enough trials"
    assert verdict.markdown().splitlines()[0].startswith("✅ no regression found, but ⚠️ 54 of 54")
    assert loud in verdict.markdown() and "[!WARNING]" in verdict.markdown()
    assert loud in verdict.summary() and "would-be regression" in verdict.summary()
    assert "--repeat 5" in verdict.summary()
    doc = json.loads(verdict.json())
    assert doc["passed"] is True and len(doc["insufficient"]) == 54
    assert loud in doc["headline"]
    suite = ET.fromstring(verdict.junit()).find("testsuite")
    assert suite is not None and suite.get("skipped") == "54" and suite.get("failures") == "0"


def test_three_trials_judge_only_complete_separation(tmp_path: Path) -> None:
    base = load(run_doc(trials=3, noise=0.02, seed=9), tmp_path, "base")
    cur = load(run_doc(trials=3, noise=0.02, seed=10, slowdown=1.5), tmp_path, "slow")
    verdict = gate.evaluate(base, cur)
    assert not verdict.insufficient and len(verdict.regressions) == 54
    assert all(c.p_value == pytest.approx(0.05) for c in verdict.regressions)


def test_conformance_failure(tmp_path: Path) -> None:
    base = load(run_doc(trials=5, seed=1), tmp_path, "base")
    doc = run_doc(trials=5, seed=2)
    doc["conformance"][4].update(passed=False, mismatches=["class 7 != 1 on input 3"])
    verdict = gate.evaluate(base, load(doc, tmp_path, "cur"))
    assert verdict.exit_status == 1 and not verdict.regressions
    (failure,) = verdict.failures
    assert failure.kind == "conformance" and failure.cell == "mnist/msgpack"
    assert "class 7 != 1 on input 3" in failure.message
    assert verdict.markdown().startswith("❌ 1 conformance/validity failure\n")
    assert json.loads(verdict.json())["failures"][0]["kind"] == "conformance"


def test_sample_mismatch_and_invalid_cells(tmp_path: Path) -> None:
    base = load(run_doc(trials=5, seed=1), tmp_path, "base")
    doc = run_doc(trials=5, seed=2)
    assert edit(doc, lambda c: c.update(sample_mismatches=2), model="iris", transport="json",
                concurrency=1, trial=3) == 1  # fmt: skip
    edit(doc, lambda c: c.update(valid=False, invalid_reasons=["ran 2.1 s < 5 s"]),
         model="face", transport="grpc", concurrency=8, trial=0)  # fmt: skip
    edit(doc, lambda c: c.update(errors=7), model="face", transport="grpc", concurrency=8, trial=1)
    verdict = gate.evaluate(base, load(doc, tmp_path, "cur"))
    assert verdict.exit_status == 1
    kinds = {(f.kind, f.cell): f.message for f in verdict.failures}
    assert "2 sampled replies differ" in kinds["conformance", "iris/json closed c=1 batch=1 raw"]
    invalid = kinds["invalid", "face/grpc closed c=8 batch=1 raw"]
    assert "trial 0, 1" in invalid and "ran 2.1 s < 5 s" in invalid and "7 errors" in invalid
    # the invalid trials are left out of the comparison
    face = next(c for c in verdict.comparisons if c.cell == "face/grpc closed c=8 batch=1 raw")
    assert len(face.current) == 3 and len(face.baseline) == 5
    # the CLI says so too
    cur_path = tmp_path / "cur" / records.RESULTS_JSON
    result = wiremark("gate", "--baseline", tmp_path / "base", "--current", cur_path)
    assert result.returncode == 1, result.stderr
    assert "FAILURE face/grpc closed c=8 batch=1 raw: invalid cell" in result.stdout


def test_client_bound_is_a_warning(tmp_path: Path) -> None:
    base = load(run_doc(trials=5, seed=1), tmp_path, "base")
    doc = run_doc(trials=5, seed=2, slowdown=1.5)
    for c in doc["cells"]:
        c["client_bound"] = True
    cur = load(doc, tmp_path, "cur")
    verdict = gate.evaluate(base, cur)
    assert verdict.passed and not verdict.comparisons and len(verdict.skipped) == 54
    assert any(w.kind == "client-bound" and "not compared" in w.message for w in verdict.warnings)
    forced = gate.evaluate(base, cur, include_client_bound=True)
    assert len(forced.regressions) == 54 and forced.exit_status == 1


def test_added_and_removed_cells_are_listed(tmp_path: Path) -> None:
    base_doc = run_doc(trials=5, seed=1)
    base_doc["cells"] = [c for c in base_doc["cells"] if c["model"] != "face"]
    cur_doc = run_doc(trials=5, seed=2)
    cur_doc["cells"] = [c for c in cur_doc["cells"] if c["transport"] != "json"]
    verdict = gate.evaluate(load(base_doc, tmp_path, "b"), load(cur_doc, tmp_path, "c"))
    assert verdict.passed and verdict.cells_in_common == 12
    assert "face/grpc closed c=1 batch=1 raw" in verdict.added and len(verdict.added) == 6
    assert "iris/json closed c=1 batch=1 raw" in verdict.removed and len(verdict.removed) == 6
    assert "cells only in the current run" in verdict.markdown()


def test_meta_differences_are_warnings(tmp_path: Path) -> None:
    base = run_doc(run_id="b", trials=5, seed=1)
    cur = run_doc(run_id="c", trials=5, seed=2)
    cur["machine"] = {**cur["machine"], "cpus": 8}
    cur["versions"] = {**cur["versions"], "grpcio": "1.86.0"}
    cur["finished"] = None
    verdict = gate.evaluate(load(base, tmp_path, "b"), load(cur, tmp_path, "c"))
    assert verdict.passed
    kinds = {w.kind: w.message for w in verdict.warnings}
    assert "cpus 2 -> 8" in kinds["machine"] and "grpcio 1.85.1 -> 1.86.0" in kinds["versions"]
    assert "did not finish" in kinds["run"]


def test_unusable_input_raises(tmp_path: Path) -> None:
    base = run_doc(trials=1)
    cur = run_doc(trials=1)
    for c in cur["cells"]:
        c["batch"] = 64
    with pytest.raises(gate.GateError, match="no cells in common"):
        gate.evaluate(load(base, tmp_path, "b"), load(cur, tmp_path, "c"))
    run = load(base, tmp_path, "b")
    with pytest.raises(gate.GateError, match="alpha"):
        gate.evaluate(run, run, alpha=1.5)


# --- the command -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("gate")
    return {
        "base": write_doc(tmp / "base", run_doc(run_id="base", trials=5, seed=1)),
        "same": write_doc(tmp / "same", run_doc(run_id="same", trials=5, seed=2)),
        "slow": write_doc(tmp / "slow", run_doc(run_id="slow", trials=5, seed=3, slowdown=1.2)),
        "dir": tmp,
    }


def test_cli_slowdown_end_to_end(files: dict[str, Path]) -> None:
    out = files["dir"] / "slow-out"
    out.mkdir()
    result = wiremark(
        "gate",
        "--baseline",
        files["base"],
        "--current",
        files["slow"],
        *("--rule", TAIL[0], "--rule", TAIL[1]),
        "--markdown",
        out / "gate.md",
        "--junit",
        out / "gate.xml",
        "--json",
        out / "gate.json",
    )
    assert result.returncode == 1, result.stderr
    assert result.stdout.startswith("wiremark gate: FAIL: 54 regressions")
    assert "REGRESSION p99:+10% face/json closed c=8 batch=1 raw" in result.stdout
    assert (out / "gate.md").read_text(encoding="utf-8").startswith("❌ 54 regressions")
    suite = ET.parse(out / "gate.xml").getroot().find("testsuite")
    assert suite is not None and int(suite.get("failures", "0")) == 54
    failed = [tc for tc in suite.iter("testcase") if tc.find("failure") is not None]
    assert len(failed) == 54 and failed[0].get("name", "").startswith("p99:+10% ")
    verdict = json.loads((out / "gate.json").read_text(encoding="utf-8"))
    assert verdict["passed"] is False and verdict["exit_status"] == 1
    assert set(verdict) >= {
        "passed", "exit_status", "rules", "regressions", "improvements", "unchanged",
        "insufficient", "failures", "warnings",
    }  # fmt: skip
    assert [r["rule"] for r in verdict["rules"]] == ["p99:+10%", "rps:-5%"]


def test_cli_a_a_json_to_stdout(files: dict[str, Path]) -> None:
    result = wiremark(
        "gate",
        "--baseline",
        files["base"].parent,  # a directory holding results.json works too
        "--current",
        files["same"],
        "--rule",
        "p50:+10%",
        "--rule",
        "p99:+10%",
        "--rule",
        "rps:-5%",
        "--json",
        "-",
    )
    assert result.returncode == 0, result.stderr
    verdict = json.loads(result.stdout)  # stdout is the JSON alone; the summary is on stderr
    assert verdict["passed"] is True and verdict["exit_status"] == 0
    assert len(verdict["unchanged"]) == 81 and not verdict["regressions"]
    assert result.stderr.startswith("wiremark gate: PASS: no regression")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--rule", "p99:10%"], "bad rule 'p99:10%': expected FIELD:+N%"),
        (["--rule", "rps:+5%"], "bad rule 'rps:+5%': rps regresses when it falls; write rps:-5%"),
        (["--alpha", "0"], "alpha must be between 0 and 1"),
        (["--json", "-", "--markdown", "-"], "only one output can go to stdout"),
    ],
)
def test_cli_usage_errors(files: dict[str, Path], args: list[str], says: str) -> None:
    result = wiremark("gate", "--baseline", files["base"], "--current", files["same"], *args)
    assert result.returncode == 2
    assert result.stderr == f"wiremark: error: {result.stderr.split(': ', 2)[2]}"
    assert says in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""


def test_cli_unusable_files(files: dict[str, Path]) -> None:
    tmp = files["dir"]
    missing = wiremark("gate", "--baseline", tmp / "nope.json", "--current", files["same"])
    assert missing.returncode == 2 and "no such result file" in missing.stderr
    other = tmp / "other.json"
    other.write_text(json.dumps({"schema_version": records.SCHEMA_VERSION + 1, "cells": []}))
    schema = wiremark("gate", "--baseline", files["base"], "--current", other)
    assert schema.returncode == 2
    readable = ", ".join(map(str, records.READABLE_SCHEMAS[:-1]))
    assert (
        f"schema_version {records.SCHEMA_VERSION + 1}; this wiremark reads {readable} and "
        f"{records.READABLE_SCHEMAS[-1]}"
    ) in schema.stderr
    for result in (missing, schema):
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


# --- the documented recipe -------------------------------------------------------------------


def _commands(text: str, sub: str) -> list[list[str]]:
    """`wiremark SUB ...` command lines in shell text (backslash continuations joined)."""
    joined = re.sub(r"\\\n\s*", " ", text)
    found = []
    for line in joined.splitlines():
        at = line.find(f"wiremark {sub} ")
        head = re.sub(r"\S*/$", "", line[:at]).strip()  # a venv's bin/ before the command
        if at < 0 or head not in ("", "-", "run:", "$", "nohup"):
            continue
        words = shlex.split(line[at:], comments=True)
        for stop in ("|", "||", "&&", ";", ">", "&"):
            if stop in words:
                words = words[: words.index(stop)]
        found.append(words[2:])
    return found


def _gate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wiremark", exit_on_error=False)
    gate.add_parser(parser.add_subparsers(dest="command"))
    return parser


def _shell_text() -> dict[str, str]:
    """The shell in docs/ci.md's code blocks and in the workflow's `run:` steps."""
    md = (DOCS / "ci.md").read_text(encoding="utf-8")
    blocks = "\n".join(re.findall(r"```sh\n(.*?)```", md, flags=re.S))
    return {"ci.md": blocks, "workflow": (DOCS / "github-actions-gate.yml").read_text()}


def _bench_parser() -> argparse.ArgumentParser:
    from wiremark.harness import bench

    parser = argparse.ArgumentParser(prog="wiremark", exit_on_error=False)
    bench.add_parser(parser.add_subparsers(dest="command"))
    return parser


def _serve_parser() -> argparse.ArgumentParser:
    from wiremark import cli as wiremark_cli

    parser = argparse.ArgumentParser(prog="wiremark", exit_on_error=False)
    wiremark_cli.add_serve(parser.add_subparsers(dest="command"))
    return parser


@pytest.mark.parametrize("source", ["ci.md", "workflow"])
def test_documented_commands_parse(source: str) -> None:
    """Every `wiremark gate`, `bench` and `serve` line of docs/ci.md and the workflow parses
    with the real parsers, and the A/B ones name the files and servers they should."""
    text = _shell_text()[source]
    gates = _commands(text, "gate")
    assert gates, f"no `wiremark gate` command in {source}"
    ab_gates = 0
    for words in gates:
        args = _gate_parser().parse_args(["gate", *words])
        if args.results is not None:  # an A/B run, gated alone
            ab_gates += 1
            assert args.baseline is None and args.current is None
            assert args.results.endswith("results.json")
        else:
            assert all(b.endswith("results.json") for b in args.baseline)
            assert args.current.endswith("results.json")
        for rule in args.rule:
            gate.Rule.parse(rule)
    assert ab_gates, f"no A/B gate (wiremark gate RESULTS) in {source}"
    benches = _commands(text, "bench")
    assert benches
    for words in benches:
        args = _bench_parser().parse_args(["bench", *words])
        ab = args.ab or args.baseline_target
        if ab and args.baseline_target:
            assert dict(args.baseline_target).keys() == dict(args.target).keys()
        if args.scenario == "gate":
            assert ab, f"the gate scenario without an A/B run: {words}"
    assert any(a for a in (_bench_parser().parse_args(["bench", *w]) for w in benches)
               if a.ab or a.baseline_target)  # fmt: skip
    shell = {"$((8000 + i))": "8001", "$((8100 + i))": "8101", '"$t"': "json"}
    shell |= {'"$MODELS"': "iris,mnist"}
    for name, value in shell.items():
        text = text.replace(name, value)
    for words in _commands(text, "serve"):
        _serve_parser().parse_args(["serve", *words])


def test_workflow_yaml() -> None:
    """The workflow runs the A/B recipe: both builds checked out and installed, one server of
    each per transport on the ports the bench step targets, the gate on the A/B file."""
    yaml = pytest.importorskip("yaml")
    doc = yaml.safe_load((DOCS / "github-actions-gate.yml").read_text())
    triggers = doc.get("on", doc.get(True))  # YAML 1.1 reads a bare `on` as true
    assert "pull_request" in triggers
    assert doc["permissions"]["pull-requests"] == "write"
    (job,) = doc["jobs"].values()
    steps = job["steps"]
    checkouts = [s for s in steps if s.get("uses", "").startswith("actions/checkout")]
    assert sorted(s["with"]["path"] for s in checkouts) == ["main", "pr"]
    assert any("base.ref" in str(s["with"].get("ref")) for s in checkouts)
    uses = [s.get("uses", "").split("@")[0] for s in steps]
    for action in ("actions/upload-artifact", "marocchino/sticky-pull-request-comment"):
        assert action in uses
    transports = job["env"]["TRANSPORTS"].split()
    assert set(transports) <= set(TRANSPORTS_REGISTERED)
    start = next(s["run"] for s in steps if "wiremark serve" in s.get("run", ""))
    assert "main/.venv/bin/wiremark serve" in start and "pr/.venv/bin/wiremark serve" in start
    assert "$((8000 + i))" in start and "$((8100 + i))" in start
    assert f"-eq {2 * len(transports)}" in start  # waits for every server's "ready: "
    (bench_words,) = _commands(
        next(s["run"] for s in steps if "wiremark bench" in s.get("run", "")), "bench"
    )
    args = _bench_parser().parse_args(["bench", *bench_words])
    for i, t in enumerate(transports, start=1):  # the ports the start step gave each server
        assert dict(args.baseline_target)[t] == f"127.0.0.1:{8000 + i}"
        assert dict(args.target)[t] == f"127.0.0.1:{8100 + i}"
    gate_step = next(s for s in steps if "wiremark gate" in s.get("run", ""))
    (gate_words,) = _commands(gate_step["run"], "gate")
    assert _gate_parser().parse_args(["gate", *gate_words]).results == f"{args.out}/results.json"
    comment = next(s for s in steps if "sticky-pull-request-comment" in s.get("uses", ""))
    assert comment["with"]["path"] == "gate.md" and "always()" in comment["if"]


def test_many_comparisons_are_adjusted(tmp_path: Path) -> None:
    """54 comparisons at alpha 0.05: one cell that separates completely by chance (5 vs 5,
    p = 0.004) is not a regression once p is adjusted for the number of comparisons
    (Benjamini-Hochberg); the same separation in every cell is."""
    base_doc = run_doc(run_id="a", trials=5, noise=0.0, seed=1)
    lone = run_doc(run_id="b", trials=5, noise=0.0, seed=1)
    hit = edit(
        lone,
        lambda c: c.update(p99_ms=c["p99_ms"] * 1.2),
        model="iris",
        transport="json",
        mode="closed",
        concurrency=8,
    )
    assert hit == 5
    base = load(base_doc, tmp_path, "a")
    verdict = gate.evaluate(base, load(lone, tmp_path, "b"), TAIL)
    (c,) = [c for c in verdict.comparisons if c.change_pct > 1]
    assert c.p_value == pytest.approx(1 / 252) and c.q_value > 0.05
    assert c.verdict == gate.UNCHANGED and verdict.passed
    broad = run_doc(run_id="c", trials=5, noise=0.0, seed=1)
    edit(broad, lambda c: c.update(p99_ms=c["p99_ms"] * 1.2))
    verdict = gate.evaluate(base, load(broad, tmp_path, "c"), TAIL)
    assert len(verdict.regressions) == 27 and not verdict.passed
    assert all(r.q_value <= 0.05 for r in verdict.regressions)
