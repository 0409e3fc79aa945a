"""CPU time the hypervisor took from this machine's cores (/proc/stat's steal column): a
load generator or server that lost it could not run, whatever its own CPU figures say.
Standard library only: every load-generator process reads it."""

from __future__ import annotations

import os

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def steal_ticks(cores: list[int]) -> list[int]:
    """Per core, the clock ticks the hypervisor has stolen so far (/proc/stat, 8th field)."""
    ticks = dict.fromkeys(cores, 0)
    with open("/proc/stat") as stat:
        for line in stat:
            name, *fields = line.split()
            if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in ticks:
                ticks[int(name[3:])] = int(fields[7]) if len(fields) > 7 else 0
    return [ticks[c] for c in cores]


def steal_share(before: list[int], after: list[int], wall: float) -> float:
    """The largest share of wall time stolen from any of the cores."""
    if not before or wall <= 0:
        return 0.0
    return max((a - b) / CLOCK_TICKS / wall for a, b in zip(after, before, strict=True))
