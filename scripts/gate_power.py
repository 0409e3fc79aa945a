"""How often the gate is wrong on this machine: false alarms on A/A comparisons, and the
share of real regressions it catches, for A/B runs and for separate runs side by side.

    python scripts/gate_power.py [--comparisons 20] [--blocks 10] [--out DIR]
    python scripts/gate_power.py --evaluate DIR          # judge the runs of DIR again
    python scripts/gate_power.py --out DIR --resume      # finish a run that was cut short

1. Calibrates: a plain `wiremark bench` of the power scenario (iris over JSON, 4 users,
   closed loop) gives the iris request's server CPU and p50; short A/B benches find the
   injected delay that raises the p50 by 20% (a delay raises a saturated server's p50 by
   less than itself).
2. Runs A/B benches of three kinds, round robin, each `bench --ab --repeat BLOCKS` with
   both arms' servers started by bench (so their CPU per request is measured), each cell
   sending to both arms by turns: A/A (both arms plain), CPU (the current arm burning 10%
   of the request's server CPU, `--inject-cpu-us`) and p50 (the current arm waiting the
   calibrated delay, `--inject-delay-ms`). `--comparisons` A/A runs, `--regressions` of
   each regression.
3. Judges every run with the gate, under several rule sets:
   * A/B mode: `wiremark gate RUN` on each run's two arms;
   * separate runs: the baseline arm of one run against the current arm of another, as two
     files measured minutes apart (every ordered pair of different runs).
   and prints the false-alarm and catch rates, the measured size of each regression, and
   the time one comparison took. `DIR/summary.json` keeps the figures.

Run it with nothing else on the machine: it takes about a minute per comparison. The
separate-run comparisons pair arms of different A/B runs (minutes apart); CI's separate
runs are hours apart, so drift hurts them more there.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from wiremark.harness.arms import AB_BLOCKS
from wiremark.reports import gate, records

SCENARIO = """\
# gate_power.py's scenario: one small closed-loop cell, the gate's figures on it
[scenario]
name = "gate-power"
models = ["iris"]
transports = ["json"]
concurrency = [4]
rate = []
duration_s = {duration}
warmup_s = 0.5
min_requests = 100
"""

KINDS = ("aa", "cpu", "delay")
CPU_RISE = 10  # per cent of the request's server CPU, burnt on top (--inject-cpu-us)
P50_RISE = 20  # per cent the injected delay is to raise the p50 by (measured, as calibrated)
RULE_SETS = {
    "default (p50:+5% rps:-5%)": gate.DEFAULT_RULES,
    "p99:+10% rps:-5% (the old default)": ("p99:+10%", "rps:-5%"),
    "p50:+10%": ("p50:+10%",),
    "server_cpu:+5%": ("server_cpu:+5%",),
    "p50:+5% rps:-5% server_cpu:+5%": (*gate.DEFAULT_RULES, "server_cpu:+5%"),
}


def bench(*args: str | Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "wiremark", "bench", *map(str, args), "--no-report"]
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def median_of(run: records.Run, column: str) -> float:
    return statistics.median(float(c[column]) for c in run.cells if c.get(column) is not None)


def calibrate(out: Path, scenario: Path) -> dict[str, float]:
    """The CPU regression from a plain bench's server CPU per request; the delay that
    raises the p50 by P50_RISE, found by measuring: at saturation a server serves other
    requests while one waits, so a delay raises the p50 by less than itself (nothing at
    all while it is shorter than the other users' service times)."""
    result = bench("--scenario", scenario, "--repeat", "3", "--out", out / "calibrate")
    if result.returncode != 0:
        sys.exit(f"calibration bench failed:\n{result.stderr[-2000:]}")
    run = records.load(out / "calibrate")
    cpu_ms, p50_ms = median_of(run, "server_cpu_ms"), median_of(run, "p50_ms")
    delay = p50_ms * P50_RISE / 100
    tried: dict[float, float] = {}  # delay (ms) -> the p50 rise it gave (%)
    for step in range(6):
        dest = out / f"calibrate-delay-{step}"
        ab = bench(
            *("--scenario", scenario, "--repeat", "3", "--out", dest),
            *("--ab", "--inject-delay-ms", f"{delay:.3f}"),
        )
        if ab.returncode != 0:
            sys.exit(f"calibration bench failed:\n{ab.stderr[-2000:]}")
        verdict = gate.evaluate_ab(records.load(dest), ("p50:+5%",))
        rise = statistics.median(c.change_pct for c in verdict.comparisons)
        print(f"  delay {delay:.3f} ms: p50 {rise:+.1f}%", flush=True)
        tried[delay] = rise
        if abs(rise - P50_RISE) <= P50_RISE / 5:
            break
        if len(tried) >= 2 and abs(rise - list(tried.values())[-2]) < P50_RISE / 5:
            # the rise did not follow the delay: an event loop's timers are coarser than
            # these delays (uvloop's are 1 ms), so any wait costs one turn of the loop
            break
        delay *= min(4.0, P50_RISE / max(rise, P50_RISE / 4))
    delay = min(tried, key=lambda d: abs(tried[d] - P50_RISE))
    rise = tried[delay]
    return {
        "server_cpu_ms": cpu_ms,
        "p50_ms": p50_ms,
        "inject_cpu_us": round(cpu_ms * 1000 * CPU_RISE / 100, 1),
        "inject_delay_ms": round(delay, 3),
        "delay_p50_rise_pct": round(rise, 1),
    }


def finished(path: Path) -> records.Run | None:
    """The run in `path` if it ran to its end."""
    if not (path / records.RESULTS_JSON).exists():
        return None
    run = records.load(path)
    return run if run.meta.get("finished") else None


def measure(
    out: Path, comparisons: int, regressions: int, blocks: int, duration: float, resume: bool
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    scenario = out / "power.toml"
    walls: list[float] = []
    if resume and (out / "measured.json").exists():
        before = json.loads((out / "measured.json").read_text())
        if before["blocks"] != blocks:
            sys.exit(f"{out} was measured with {before['blocks']} blocks, not {blocks}")
        cal, walls = before["calibration"], before["comparison_wall_s"]
        print(f"resuming {out}: calibration {cal}", flush=True)
    else:
        scenario.write_text(SCENARIO.format(duration=duration))
        print(f"calibrating ({scenario}) ...", flush=True)
        cal = calibrate(out, scenario)
    print(
        f"  iris/json: server CPU {cal['server_cpu_ms']:.3f} ms/request, p50 "
        f"{cal['p50_ms']:.2f} ms -> inject {cal['inject_cpu_us']} us CPU, "
        f"{cal['inject_delay_ms']} ms delay (p50 {cal['delay_p50_rise_pct']:+.1f}%)",
        flush=True,
    )
    inject = {
        "aa": (),
        "cpu": ("--inject-cpu-us", str(cal["inject_cpu_us"])),
        "delay": ("--inject-delay-ms", str(cal["inject_delay_ms"])),
    }
    # round robin, in the proportions asked for, so that a run cut short stays balanced
    plan: list[tuple[int, str]] = []
    done = dict.fromkeys(KINDS, 0)
    wanted = {"aa": comparisons, "cpu": regressions, "delay": regressions}
    while any(done[k] < wanted[k] for k in KINDS):
        for kind in sorted(KINDS, key=lambda k: done[k] / max(wanted[k], 1)):
            if done[kind] < wanted[kind] and done[kind] / wanted[kind] <= min(
                done[k] / wanted[k] for k in KINDS if wanted[k]
            ):
                plan.append((done[kind], kind))
                done[kind] += 1
    for i, kind in plan:
        dest = out / f"{kind}-{i:02d}"
        if resume and finished(dest):
            continue
        shutil.rmtree(dest, ignore_errors=True)  # a run cut short starts again
        start = time.monotonic()
        result = bench(
            *("--scenario", scenario, "--repeat", str(blocks), "--out", dest),
            *("--ab", "--seed", str(i), *inject[kind]),
        )
        walls.append(time.monotonic() - start)
        if result.returncode != 0:
            print(f"  {dest.name}: bench failed:\n{result.stderr[-1500:]}", flush=True)
            continue
        verdict = gate.evaluate_ab(records.load(dest))
        print(
            f"  {dest.name}: {walls[-1]:.0f} s, gate {'PASS' if verdict.passed else 'FAIL'}",
            flush=True,
        )
        (out / "measured.json").write_text(
            json.dumps({"calibration": cal, "blocks": blocks, "comparison_wall_s": walls})
        )


def plain(run: records.Run, arm: str) -> records.Run:
    """One arm of an A/B run as a separate run of its own (trials are its blocks)."""
    meta = dict(run.meta) | {"ab": None, "run_id": f"{run.label}-{arm}"}
    meta["conformance"] = [
        {k: v for k, v in c.items() if k != "arm"} for c in run.conformance if c.get("arm") == arm
    ]
    cells = [c | {"arm": None, "block": None} for c in run.cells if c.get("arm") == arm]
    return records.Run(run.path, meta, cells)


def rate(hits: int, total: int) -> str:
    return f"{hits}/{total} ({100 * hits / total:.0f}%)" if total else "-"


def evaluate(out: Path) -> dict[str, Any]:
    runs: dict[str, list[records.Run]] = {kind: [] for kind in KINDS}
    for path in sorted(out.glob("*-[0-9][0-9]")):
        kind = path.name.rsplit("-", 1)[0]
        if kind in runs and (run := finished(path)):  # a run still going (or cut): left out
            runs[kind].append(run)
    measured = json.loads((out / "measured.json").read_text())
    summary: dict[str, Any] = {"calibration": measured["calibration"], "rules": {}}
    for name, rules in RULE_SETS.items():
        rows: dict[str, dict[str, list[bool]]] = {"A/B": {}, "separate": {}}
        for kind, kind_runs in runs.items():
            rows["A/B"][kind] = [not gate.evaluate_ab(r, rules).passed for r in kind_runs]
            failed = []
            for b, c in itertools.permutations(range(len(kind_runs)), 2):
                base = plain(runs["aa"][b % len(runs["aa"])], records.BASELINE)
                cur = plain(kind_runs[c], records.CURRENT)
                failed.append(not gate.evaluate(base, cur, rules).passed)
            rows["separate"][kind] = failed
        summary["rules"][name] = {
            mode: {kind: [sum(v), len(v)] for kind, v in by_kind.items()}
            for mode, by_kind in rows.items()
        }
    effects: dict[str, dict[str, float]] = {}
    for kind, kind_runs in runs.items():
        changes: dict[str, list[float]] = {"p50": [], "rps": [], "p99": [], "server_cpu": []}
        for r in kind_runs:
            verdict = gate.evaluate_ab(r, ("p50:+5%", "rps:-5%", "p99:+10%", "server_cpu:+5%"))
            for c in verdict.comparisons:
                changes[c.rule.name].append(c.change_pct)
        effects[kind] = {k: statistics.median(v) for k, v in changes.items() if v}
    summary["effects_pct"] = effects
    # the noise the paired test works against: the spread of the arms' per-block log-ratio
    spreads: dict[str, float] = {}
    for column in ("p50_ms", "rps", "server_cpu_ms"):
        per_run = []
        for r in runs["aa"]:
            verdict = gate.evaluate_ab(
                r, (f"{column.removesuffix('_ms')}:+5%" if column != "rps" else "rps:-5%",)
            )
            per_run += [
                statistics.stdev(
                    math.log(c) - math.log(b) for b, c in zip(x.baseline, x.current, strict=True)
                )
                for x in verdict.comparisons
                if len(x.current) > 1
            ]
        if per_run:
            spreads[column] = statistics.median(per_run)
    summary["block_spread"] = spreads
    # blocks for a 10% change at alpha 0.05 (one-sided) with 95% power: ((z + z) s / ln 1.1)^2,
    # and never fewer than the sign-flip test's floor (5 blocks reach p = 2**-5 = 0.031)
    z = statistics.NormalDist().inv_cdf(0.95)
    summary["blocks_for_10pct"] = {
        k: max(5, math.ceil(((2 * z) * v / math.log(1.1)) ** 2)) for k, v in spreads.items()
    }
    walls = measured["comparison_wall_s"]
    summary["comparison_wall_s"] = statistics.median(walls) if walls else None
    summary["blocks"] = measured["blocks"]
    summary["comparisons"] = {kind: len(v) for kind, v in runs.items()}
    return summary


def report(summary: dict[str, Any]) -> str:
    cal = summary["calibration"]
    lines = [
        f"iris/json, 4 users, closed loop, {summary['blocks']} blocks per A/B comparison; "
        f"comparisons: {summary['comparisons']}",
        f"regressions injected: CPU +{cal['inject_cpu_us']} us/request ({CPU_RISE}% of "
        f"{cal['server_cpu_ms']:.3f} ms), delay +{cal['inject_delay_ms']} ms (calibrated to "
        f"raise the p50 by {P50_RISE}%: {cal.get('delay_p50_rise_pct', '?')}%; p50 "
        f"{cal['p50_ms']:.2f} ms)",
        "measured (median A/B estimate): "
        + "; ".join(
            f"{kind}: " + ", ".join(f"{k} {v:+.1f}%" for k, v in eff.items())
            for kind, eff in summary["effects_pct"].items()
        ),
        f"one A/B comparison took {summary['comparison_wall_s']:.0f} s (median)",
        "A/A spread of the arms' per-block log-ratio (median over runs): "
        + ", ".join(f"{k} {100 * v:.1f}%" for k, v in summary["block_spread"].items())
        + "; blocks needed to catch a 10% change 95% of the time at alpha 0.05: "
        + ", ".join(f"{k} {v}" for k, v in summary["blocks_for_10pct"].items()),
        "",
        f"{'rules':<36} {'mode':<9} {'false alarms (A/A)':<20} {'caught: CPU +10%':<18} "
        "caught: delay",
    ]
    for name, modes in summary["rules"].items():
        for mode, kinds in modes.items():
            lines.append(
                f"{name:<36} {mode:<9} {rate(*kinds['aa']):<20} {rate(*kinds['cpu']):<18} "
                f"{rate(*kinds['delay'])}"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comparisons", type=int, default=20, help="A/A runs")
    parser.add_argument("--regressions", type=int, default=20, help="runs of each regression")
    parser.add_argument("--blocks", type=int, default=AB_BLOCKS, help="blocks per A/B run")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per cell")
    parser.add_argument("--out", type=Path, default=Path("wiremark-results/gate-power"))
    parser.add_argument("--evaluate", type=Path, help="judge the runs of this folder again")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep --out's calibration and finished runs, measure only the runs still missing",
    )
    args = parser.parse_args()
    out = args.evaluate or args.out
    if args.evaluate is None:
        measure(out, args.comparisons, args.regressions, args.blocks, args.duration, args.resume)
    summary = evaluate(out)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(report(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
