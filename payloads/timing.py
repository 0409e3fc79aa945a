"""The server's own timings, carried in `Server-Timing` (HTTP) and `server-timing` (gRPC
trailing metadata) in the W3C Server-Timing syntax: `decode;dur=0.041, infer;dur=0.512`.
Durations are milliseconds."""

from __future__ import annotations

import time


class Laps:
    """Per-stage wall time of one request, as laps of one stopwatch: `lap("decode")` closes
    the stage that started at the previous lap (or at creation, or at `restart()`)."""

    __slots__ = ("_last", "ms")

    def __init__(self) -> None:
        self.ms: dict[str, float] = {}
        self._last = time.perf_counter()

    def restart(self) -> None:
        """Start the next stage now: time since the last lap belongs to no stage."""
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.ms[stage] = (now - self._last) * 1000.0
        self._last = now

    def header(self) -> str:
        ms = self.ms
        if len(ms) == 3:  # the usual decode, infer, encode: the hot path, spelled out
            (a, x), (b, y), (c, z) = ms.items()
            return f"{a};dur={x:.3f}, {b};dur={y:.3f}, {c};dur={z:.3f}"
        return format_server_timing(ms)


def format_server_timing(ms: dict[str, float]) -> str:
    return ", ".join(f"{name};dur={value:.3f}" for name, value in ms.items())


def parse_server_timing(value: str | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in (value or "").split(","):
        name, _, params = part.strip().partition(";")
        for param in params.split(";"):
            key, _, number = param.strip().partition("=")
            if key == "dur" and name:
                try:
                    out[name] = float(number)
                except ValueError:
                    continue
    return out
