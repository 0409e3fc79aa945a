"""The server's own timings, carried in `Server-Timing` (HTTP) and `server-timing` (gRPC
trailing metadata) in the W3C Server-Timing syntax: `decode;dur=0.041, infer;dur=0.512`.
Durations are milliseconds."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

STAGES = ("decode", "infer", "encode")


class StageTimer:
    """Collects per-stage wall time for one request."""

    __slots__ = ("ms",)

    def __init__(self) -> None:
        self.ms: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.ms[name] = (time.perf_counter() - start) * 1000.0

    def header(self) -> str:
        return format_server_timing(self.ms)


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
