"""The arms of a bench run: one for a plain run; a baseline and a current one for an A/B
run (`bench --ab`, or `--baseline-target` beside `--target`), each with the servers it
measures. `harness/bench.py` runs each cell on both arms at once, interleaved by turns
(`harness/cell.py`'s `Alternation`), and repeats the cells in blocks."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

from wiremark.reports import records
from wiremark.usage import UsageError

# Blocks of an A/B run when neither the scenario nor --repeat asks for more. The gate's
# sign-flip test over n blocks reaches p = 2**-n at best: 5 blocks reach 0.031, which the
# Benjamini-Hochberg adjustment over two rules can push past 0.05. With 6, one block that
# goes the other way (the p50 of iris over JSON here jumps between two modes now and then)
# already costs the verdict: 6 blocks caught a +29% p50 rise 17 times in 20, and resampling
# those blocks, 10 catch it every time (scripts/gate_power.py; docs/ci.md).
AB_BLOCKS = 10
# How long an arm's turn lasts inside an interleaved cell: long against a request (the turn
# is its arm's alone, but for the requests in flight when it begins), short against the
# seconds over which a shared machine's speed drifts (both arms see each second alike).
AB_SLOT_MS = 250.0


@dataclass(frozen=True)
class Arm:
    """What one arm of a run measures: servers bench starts (with an injected slowdown, to
    prove the gate), or running servers (`--target`, `--baseline-target`). A plain run has
    one arm, named None."""

    name: str | None
    delay_ms: float = 0.0
    cpu_us: float = 0.0
    external: dict[str, str] = field(default_factory=dict)  # transport -> HOST:PORT

    def serve_args(self) -> list[str]:
        args = []
        if self.delay_ms:
            args += ["--inject-delay-ms", str(self.delay_ms)]
        if self.cpu_us:
            args += ["--inject-cpu-us", str(self.cpu_us)]
        return args

    def describe(self) -> dict[str, Any]:
        if self.external:
            return {"servers": "external", "targets": dict(self.external)}
        return {
            "servers": "started by bench",
            "inject_delay_ms": self.delay_ms,
            "inject_cpu_us": self.cpu_us,
        }

    def words(self) -> str:
        """What the arm measures, in words, for the run's header lines."""
        if self.external:
            return ", ".join(f"{t}={a}" for t, a in self.external.items())
        slow = [
            f"{what} {value:g} {unit}"
            for what, value, unit in (
                ("delay", self.delay_ms, "ms"),
                ("CPU", self.cpu_us, "us per request"),
            )
            if value
        ]
        return "servers started here" + (f", injected {', '.join(slow)}" if slow else "")


def plan_arms(args: argparse.Namespace) -> list[Arm]:
    """The run's arms from the command line: one, or baseline and current (A/B). Raises
    UsageError for options that do not fit together."""
    current = Arm(records.CURRENT, args.inject_delay_ms, args.inject_cpu_us, dict(args.target))
    baseline = Arm(
        records.BASELINE,
        args.baseline_inject_delay_ms,
        args.baseline_inject_cpu_us,
        dict(args.baseline_target),
    )
    ab = args.ab or bool(args.baseline_target)
    if not ab:
        if args.baseline_inject_delay_ms or args.baseline_inject_cpu_us:
            raise UsageError("--baseline-inject-* options need an A/B run: add --ab")
        for flag, given in (("--ab-slot-ms", args.ab_slot_ms), ("--seed", args.seed)):
            if given is not None:  # the arms' turns and their order: nothing to do alone
                raise UsageError(f"{flag} needs an A/B run: add --ab")
        return [Arm(None, current.delay_ms, current.cpu_us, current.external)]
    for arm in (current, baseline):
        if arm.external and (arm.delay_ms or arm.cpu_us):
            flag = "--inject-*" if arm is current else "--baseline-inject-*"
            where = "--target" if arm is current else "--baseline-target"
            raise UsageError(f"{flag} applies to servers bench starts, not to {where}")
    if bool(current.external) != bool(baseline.external):
        raise UsageError(
            "an A/B run measures running servers on both arms or on neither: give "
            "--baseline-target (main's servers) beside --target (the candidate's), or neither"
        )
    if set(current.external) != set(baseline.external):
        only = sorted(set(current.external) ^ set(baseline.external))
        raise UsageError(
            f"--target and --baseline-target must name the same transports; "
            f"only one of them names {', '.join(only)}"
        )
    return [baseline, current]
