"""The gate's A/B and run-level modes on synthetic trials (no servers): paired statistics,
drift, real shifts, and the input it refuses."""

from __future__ import annotations

import copy
import functools
import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats

from tests.synthetic import run_doc, write_doc
from wiremark.reports import gate, paired, records

from . import cli

ROOT = Path(__file__).resolve().parent.parent
LATENCY = ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "p999_ms", "max_ms", "mean_ms")
RULES = ("p50:+5%", "rps:-5%")

wiremark = functools.partial(cli.wiremark, cwd=ROOT)


def scale(cell: dict[str, Any], factor: float) -> None:
    """Every latency times `factor`; closed-loop throughput divided by it."""
    for name in LATENCY:
        cell[name] *= factor
    cell["transport_tax_ms"] = records.transport_tax(cell["p50_ms"], cell["inprocess_ms"])
    if cell["mode"] == "closed":
        cell["rps"] /= factor


def ab_doc(
    blocks: int = 6,
    change: float = 1.0,
    drift: tuple[float, ...] | None = None,
    noise: float = 0.01,
    seed: int = 0,
) -> dict[str, Any]:
    """An A/B run: block b of both arms scaled by drift[b] (the machine); the current arm's
    latencies by `change` besides (the code)."""
    base = run_doc(run_id="ab", trials=blocks, noise=noise, seed=seed)
    cur = run_doc(run_id="ab", trials=blocks, noise=noise, seed=seed + 1, slowdown=change)
    drift = drift or (1.0,) * blocks
    cells = []
    for arm, doc in ((records.BASELINE, base), (records.CURRENT, cur)):
        for c in doc["cells"]:
            scale(c, drift[c["trial"]])
            cells.append(c | {"arm": arm, "block": c["trial"]})
    conformance = [e | {"arm": arm} for arm in records.ARMS for e in base["conformance"]]
    return base | {
        "cells": cells,
        "conformance": conformance,
        "ab": {"arms": {a: {} for a in records.ARMS}, "seed": 1, "order": "per cell and block"},
    }


def load(doc: dict[str, Any], tmp: Path, name: str) -> records.Run:
    return records.load(write_doc(tmp / name, doc))


def drifted_run(run_id: str, factor: float, seed: int, trials: int = 5) -> dict[str, Any]:
    doc = run_doc(run_id=run_id, trials=trials, noise=0.01, seed=seed)
    for c in doc["cells"]:
        scale(c, factor)
    return doc


# --- the statistics ------------------------------------------------------------------------


def test_sign_flip_p_is_the_exact_permutation_p() -> None:
    rng = np.random.default_rng(5)
    for n in (1, 3, 6):
        d = rng.normal(0.2, 1.0, n)
        patterns = itertools.product((1, -1), repeat=n)
        sums = [sum(s * x for s, x in zip(signs, d, strict=True)) for signs in patterns]
        want = sum(1 for v in sums if v >= d.sum() - 1e-12) / 2**n
        assert paired.sign_flip_p(d, "greater") == pytest.approx(want)
        assert paired.sign_flip_p(-d, "less") == pytest.approx(want)
    assert paired.sign_flip_p([0.1] * 5, "greater") == pytest.approx(2**-5)
    assert paired.sign_flip_p([0.0] * 5, "greater") == 1.0
    big = rng.normal(0.5, 1.0, 30)  # Monte Carlo beyond EXACT_BLOCKS: close to the t-test
    t = stats.ttest_1samp(big, 0.0, alternative="greater").pvalue
    assert paired.sign_flip_p(big, "greater") == pytest.approx(t, abs=0.02)


def test_paired_estimate_interval_and_detectable() -> None:
    base = [100.0, 120.0, 90.0, 110.0, 105.0, 95.0]
    cur = [v * 1.1 for v in base]
    est = paired.paired(base, cur, 0.05, 5.0)
    assert est.change_pct == pytest.approx(10.0)
    assert est.ci_pct == pytest.approx((10.0, 10.0))  # no spread in the log-ratios
    assert est.p_greater == pytest.approx(2**-6) and est.p_less == 1.0
    assert est.detectable_pct == 5.0  # the threshold: nothing smaller counts anyway
    noisy = [v * f for v, f in zip(cur, (1.05, 0.96, 1.04, 0.97, 1.02, 0.98), strict=True)]
    est = paired.paired(base, noisy, 0.05, 1.0)
    low, high = est.ci_pct or (0, 0)
    assert low < est.change_pct < high and 5 < est.change_pct < 15
    assert est.detectable_pct > 1.0 and math.isfinite(est.detectable_pct)
    few = paired.paired(base[:4], cur[:4], 0.05, 5.0)
    assert few.min_p == 1 / 16 and few.detectable_pct == math.inf


def test_pooled_matches_scipy() -> None:
    base, cur = [10.0, 10.5, 9.8, 10.2], [11.0]
    est = paired.pooled(base, cur, 0.05, 1.0)
    logs_b, logs_c = np.log(base), np.log(cur)
    # one current run: the pooled t-test is the prediction interval of the next run
    t = (logs_c.mean() - logs_b.mean()) / (logs_b.std(ddof=1) * math.sqrt(1 + 1 / 4))
    assert est.p_greater == pytest.approx(stats.t.sf(t, 3))
    two = paired.pooled(base, [11.0, 11.2], 0.05, 1.0)
    want = stats.ttest_ind(np.log([11.0, 11.2]), logs_b, alternative="greater").pvalue
    assert two.p_greater == pytest.approx(want)


# --- drift and real shifts ------------------------------------------------------------------


def test_drift_fails_separate_runs_but_not_ab(tmp_path: Path) -> None:
    """The machine got 15% slower between two runs of the same code: two files read it as a
    regression. In an A/B run the same drift, block to block, falls on both arms alike."""
    base = load(drifted_run("monday", 1.0, seed=1), tmp_path, "monday")
    later = load(drifted_run("tuesday", 1.15, seed=2), tmp_path, "tuesday")
    separate = gate.evaluate(base, later, RULES)
    assert not separate.passed and separate.regressions
    assert any(w.kind == "drift" for w in separate.warnings)

    drift = (1.0, 1.15, 0.95, 1.2, 1.05, 1.1)
    ab = gate.evaluate_ab(load(ab_doc(drift=drift, seed=3), tmp_path, "ab"), RULES)
    assert ab.passed, ab.summary()
    assert ab.unit == gate.BLOCKS and not ab.insufficient
    assert all(abs(c.change_pct) < 3 for c in ab.comparisons)


def test_a_real_shift_inside_interleaved_blocks_fails(tmp_path: Path) -> None:
    drift = (1.0, 1.15, 0.95, 1.2, 1.05, 1.1)
    run = load(ab_doc(change=1.10, drift=drift, seed=4), tmp_path, "ab")
    verdict = gate.evaluate_ab(run, RULES)
    assert not verdict.passed and verdict.exit_status == 1
    p50 = [c for c in verdict.comparisons if c.rule.name == "p50"]
    assert p50 and all(c.verdict == gate.REGRESSION for c in p50)
    for c in p50:
        low, high = c.ci_pct or (0.0, 0.0)
        assert low < c.change_pct < high and 6 < c.change_pct < 14
        assert c.trials == "6 blocks" and c.p_worse == pytest.approx(2**-6)
    line = next(x for x in verdict.summary().splitlines() if "REGRESSION p50:+5%" in x)
    assert "95% CI" in line and "6 blocks" in line and "detectable ±" in line
    assert "sign-flip" in verdict.summary()
    md = verdict.markdown()
    assert "| Change [95% CI] |" in md and "Detectable" in md
    doc = json.loads(verdict.json())
    row = doc["regressions"][0]
    assert row["unit"] == "blocks" and len(row["ci_pct"]) == 2 and row["detectable_pct"] >= 5


def test_too_few_blocks_are_not_judged(tmp_path: Path) -> None:
    run = load(ab_doc(blocks=4, change=1.3, seed=5), tmp_path, "ab")
    verdict = gate.evaluate_ab(run, RULES)
    assert verdict.passed and len(verdict.insufficient) == len(verdict.comparisons)
    assert "too few blocks" in verdict.summary() and "≥5 blocks" in verdict.summary()


def test_a_cut_block_is_left_out(tmp_path: Path) -> None:
    """An interrupted A/B run: the last block has the baseline arm only for some cells."""
    doc = ab_doc(blocks=6, seed=6)
    doc["cells"] = [c for c in doc["cells"] if not (c["block"] == 5 and c["arm"] == "current")]
    doc["finished"] = None
    verdict = gate.evaluate_ab(load(doc, tmp_path, "ab"), RULES)
    assert all(c.trials == "5 blocks" for c in verdict.comparisons)
    assert any("did not finish" in w.message for w in verdict.warnings)


def test_current_arm_conformance_fails_baseline_arm_warns(tmp_path: Path) -> None:
    doc = ab_doc(seed=7)
    for entry in doc["conformance"]:
        if entry["model"] == "iris" and entry["transport"] == "json":
            entry["passed"] = False
    verdict = gate.evaluate_ab(load(doc, tmp_path, "both"), RULES)
    assert [f.cell for f in verdict.failures] == ["iris/json"]
    assert [w.cell for w in verdict.warnings if w.kind == "baseline"] == ["iris/json"]


def test_requests_long_against_the_turns_are_a_warning(tmp_path: Path) -> None:
    """A cell whose p99 is over a tenth of the arms' turn gets a warning naming it and the
    flag to lengthen the turns; short requests, and runs without turns, get none."""
    doc = ab_doc(seed=9)
    slowest = max(c["p99_ms"] for c in doc["cells"])  # face's, about 160 ms
    doc["ab"] |= {"slot_ms": 20 * slowest}
    assert not any(w.kind == "turns" for w in gate.evaluate_ab(load(doc, tmp_path, "a")).warnings)
    for c in doc["cells"]:
        if c["model"] == "iris" and c["transport"] == "json":
            c["p99_ms"] = 4 * slowest
    verdict = gate.evaluate_ab(load(doc, tmp_path, "b"), RULES)
    turns = [w for w in verdict.warnings if w.kind == "turns"]
    assert turns and {w.cell.split()[0] for w in turns if w.cell} == {"iris/json"}
    assert f"{4 * slowest:.1f} ms" in turns[0].message and "--ab-slot-ms" in turns[0].message
    del doc["ab"]["slot_ms"]  # a run from before the turns: its arms ran back to back
    assert not any(w.kind == "turns" for w in gate.evaluate_ab(load(doc, tmp_path, "c")).warnings)


def test_several_baseline_runs_take_drift_as_noise(tmp_path: Path) -> None:
    """Runs as the unit: a current run within the baselines' run-to-run drift passes; one
    far beyond it fails."""
    factors = (1.0, 1.12, 0.94, 1.06, 1.0)
    bases = [load(drifted_run(f"b{i}", f, seed=10 + i), tmp_path, f"b{i}") for i, f in
             enumerate(factors)]  # fmt: skip
    within = load(drifted_run("c", 1.1, seed=20), tmp_path, "c")
    verdict = gate.evaluate_runs(bases, within, RULES)
    assert verdict.passed, verdict.summary()
    assert verdict.unit == gate.RUNS and not any(w.kind == "drift" for w in verdict.warnings)
    assert all(c.trials == "5 vs 1" for c in verdict.comparisons)
    slow = load(drifted_run("slow", 1.6, seed=21), tmp_path, "slow")
    failed = gate.evaluate_runs(bases, slow, RULES)
    assert not failed.passed and failed.regressions
    assert "pooled t-test" in failed.summary()


# --- input the gate refuses -------------------------------------------------------------------


def test_refused_input(tmp_path: Path) -> None:
    plain = load(run_doc(run_id="plain", trials=5), tmp_path, "plain")
    with pytest.raises(gate.GateError, match="not an A/B run"):
        gate.evaluate_ab(plain)
    one_arm = ab_doc(seed=8)
    one_arm["cells"] = [c for c in one_arm["cells"] if c["arm"] == "baseline"]
    with pytest.raises(gate.GateError, match="without cells of its current arm"):
        gate.evaluate_ab(load(one_arm, tmp_path, "one"))
    plans = ab_doc(seed=9)
    for c in plans["cells"]:
        if c["arm"] == "current" and c["model"] == "face":
            c["batch"] = 8
    with pytest.raises(gate.GateError, match="the arms ran different cells"):
        gate.evaluate_ab(load(plans, tmp_path, "plans"))
    ab = load(ab_doc(seed=10), tmp_path, "ab")
    with pytest.raises(gate.GateError, match="is an A/B run"):
        gate.evaluate(ab, plain)
    old = run_doc(run_id="old", trials=5)
    old["schema_version"] = 3
    mixed = [load(old, tmp_path, "old"), plain]
    with pytest.raises(gate.GateError, match="mix schema versions"):
        gate.evaluate_runs(mixed, plain)
    other = copy.deepcopy(run_doc(run_id="other", trials=5))
    other["scenario"]["name"] = "full"
    with pytest.raises(gate.GateError, match="mix scenarios"):
        gate.evaluate_runs([plain, load(other, tmp_path, "other")], plain)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["{ab}", "--baseline", "{plain}", "--current", "{plain}"], "not both"),
        (["{plain}"], "not an A/B run"),
        (["--baseline", "{plain}"], "--current C"),
        (["--baseline", "{ab}", "--current", "{plain}"], "is an A/B run"),
        (["--baseline", "{old}", "{plain}", "--current", "{plain}"], "mix schema versions"),
    ],
)
def test_cli_refusals_are_one_line(tmp_path: Path, args: list[str], says: str) -> None:
    old = run_doc(run_id="old", trials=5)
    old["schema_version"] = 3
    paths = {
        "ab": write_doc(tmp_path / "ab", ab_doc(seed=11)),
        "plain": write_doc(tmp_path / "plain", run_doc(run_id="plain", trials=5)),
        "old": write_doc(tmp_path / "old", old),
    }
    result = wiremark("gate", *(a.format(**paths) for a in args))
    assert result.returncode == 2, result.stdout + result.stderr
    assert says in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_gates_an_ab_file(tmp_path: Path) -> None:
    drift = (1.0, 1.1, 0.9, 1.2, 1.0, 1.05)
    same = write_doc(tmp_path / "same", ab_doc(drift=drift, seed=12))
    slow = write_doc(tmp_path / "slow", ab_doc(change=1.2, drift=drift, seed=13))
    passed = wiremark("gate", same)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert passed.stdout.startswith("wiremark gate: PASS")
    failed = wiremark("gate", slow.parent, "--json", "-")
    assert failed.returncode == 1
    assert json.loads(failed.stdout)["unit"] == "blocks"
    assert "REGRESSION p50:+5%" in failed.stderr


def test_the_report_shows_the_arms_and_judges_them_paired(tmp_path: Path) -> None:
    """`wiremark report AB` shows the two arms as two runs, the baseline first, and colours a
    change as `wiremark gate AB` (paired) judges it, not as two separate files would."""
    from wiremark.reports import analysis, report

    drift = (1.0, 1.15, 0.95, 1.2, 1.05, 1.1)
    run = load(ab_doc(change=1.10, drift=drift, seed=14), tmp_path, "ab")
    arms = report.arms(run)
    assert [a.label for a in arms] == ["ab baseline", "ab current"]
    assert all(
        {c["arm"] for c in a.cells} == {name} for a, name in zip(arms, records.ARMS, strict=True)
    )
    _, judged = analysis.judgements(arms, RULES)
    paired_verdict = gate.evaluate_ab(run, RULES)
    want = {(analysis.key_id(c.key), c.rule.column): c.verdict for c in paired_verdict.comparisons}
    assert judged == want and gate.REGRESSION in judged.values()
    html = tmp_path / "r.html"
    report.write_report([run.path], html)
    assert "ab baseline" in html.read_text(encoding="utf-8")
