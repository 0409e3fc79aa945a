"""Drive a server with the C load generators of its wire (`harness/transports/`: wrk for
HTTP/1.1, h2load for gRPC frames).

Servers run on one core and the generator (one thread) on another, pinned with taskset. A
measurement during which the hypervisor stole more than STEAL_LIMIT of either core is run
again (this shared machine loses whole milliseconds in bursts), and every run is checked
for errors: wrk's socket errors and non-2xx answers, h2load's failures and gRPC replies
without data (a gRPC error still answers HTTP 200).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from wiremark.payloads import bodies
from wiremark.payloads import transport as transports
from wiremark.payloads.contract import Family
from wiremark.payloads.errors import WiremarkError
from wiremark.payloads.samples import iris_rows

from .launch import ServerProcess
from .steal import steal_share, steal_ticks
from .transports import DRIVERS, Driver
from .transports import driver as driver_of


def tools() -> dict[str, str]:
    """Each C tool the drivers use, and taskset, with their Debian packages."""
    return {d.tool: d.tool_package for d in DRIVERS.values()} | {"taskset": "util-linux"}


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """--json, --duration and --repeats, as every command that drives the load tools has."""
    from wiremark.usage import positive

    parser.add_argument(
        "--json", action="store_true", help="print a JSON list, one object per transport"
    )
    parser.add_argument(
        "--duration",
        type=positive,
        default=3,
        help="seconds per measurement, whole (wrk's unit), after a 1 s warm-up (default: 3)",
    )
    parser.add_argument(
        "--repeats", type=positive, default=3, help="repetitions; figures are medians (default: 3)"
    )


def check_tools() -> None:
    from wiremark.usage import UsageError

    needed = tools()
    missing = [tool for tool in needed if shutil.which(tool) is None]
    if missing:
        names = ", ".join(f"{tool} (Debian package {needed[tool]})" for tool in missing)
        raise UsageError(
            f"wiremark overhead needs {names} on PATH: "
            f"apt-get install {' '.join(needed[tool] for tool in missing)}"
        )


def placement() -> tuple[str | None, str | None]:
    """(server core, load-generator core), or (None, None) on a single core."""
    cores = sorted(os.sched_getaffinity(0))
    return (str(cores[0]), str(cores[1])) if len(cores) >= 2 else (None, None)


@contextmanager
def pinned(cpu: str | None) -> Iterator[None]:
    """Run this thread (and threads it starts) on `cpu` for the duration."""
    before = os.sched_getaffinity(0)
    if cpu is not None:
        os.sched_setaffinity(0, {int(cpu)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


STEAL_LIMIT = 0.03  # a sample with more of a core stolen by the hypervisor is re-run
MAX_RETRIES = 3


class LoadError(RuntimeError):
    """A server failed to start, or answered wrongly or with errors under load."""


@dataclass
class Sample:
    """One measured run: completed requests per second, median latency, and the CPU share
    the server and the load generator used (a client near 100 % would be the bottleneck)."""

    rps: float
    p50_ms: float
    requests: int
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    steal: float = 0.0  # the most of a core the hypervisor stole meanwhile

    def __str__(self) -> str:
        return (
            f"{self.rps:8.0f} req/s  p50 {self.p50_ms:6.3f} ms  n={self.requests:<6} "
            f"cpu server {self.server_cpu:4.0%} client {self.client_cpu:4.0%} "
            f"stolen {self.steal:3.0%}" + ("  CLIENT-BOUND" if self.client_cpu > 0.9 else "")
        )


@dataclass
class Target:
    """One server, what it is sent and what a correct answer is."""

    server: ServerProcess
    transport: str  # the registered transport whose codec made the body
    path: str
    body: bytes  # the request body (for gRPC the protobuf message, framed in the tool's file)
    echo: bool  # the reply must be the body itself; else a prediction of the in-process class
    file: Path  # the C tool's input (wrk's Lua script, or h2load's framed body)
    reply_len: int = 0  # learnt by verify(): a gRPC reply without data is an error

    @property
    def driver(self) -> Driver:
        return driver_of(self.transport)

    @property
    def media(self) -> str:
        return transports.get(self.transport).media_type

    @property
    def url(self) -> str:
        return f"http://{self.server.address}{self.path}"

    def verify(self, expected_class: int) -> None:
        """One request through a real client (a gRPC error still answers HTTP 200 to h2load)."""
        try:
            codec = transports.get(self.transport).codec
            extra = transports.request_headers(codec, self.body)
            reply = self.driver.send(
                self.server.address, self.path, self.body, self.media, 10, extra
            )
            if self.echo and reply != self.body:
                raise LoadError(f"echoed {reply[:40]!r}, not the {len(self.body)}-byte body")
            if not self.echo:
                codec = transports.get(self.transport).codec
                prediction = codec.decode_reply(Family.TABULAR, reply)
                got = prediction.class_ids.tolist()  # type: ignore[union-attr]
                if got != [expected_class]:
                    raise LoadError(f"predicted classes {got}, in-process [{expected_class}]")
        except (LoadError, RuntimeError, WiremarkError, ValueError) as exc:
            raise LoadError(f"{self.media} {self.url}: {exc}") from None
        self.reply_len = len(reply)


def target(
    server: ServerProcess, transport: str, tmp: Path, model: str = "iris", echo: bool = False
) -> Target:
    """A target sending one row of iris as `transport` encodes it: to the model's route, or
    (`echo`) to the bare echo of the transport's wire."""
    body = bodies.encode(transport, model, iris_rows(1)[0], family=Family.TABULAR)
    drv = driver_of(transport)
    path = drv.echo_path if echo else transports.get(transport).codec.route(Family.TABULAR, model)
    descriptor = transports.get(transport)
    extra = transports.request_headers(descriptor.codec, body)
    file = drv.tool_file(body, descriptor.media_type, tmp, transport, extra)
    return Target(server, transport, path, body, echo, file)


def least_disturbed(measure: Callable[[], Sample], cores: list[int], label: str) -> Sample:
    """Run `measure` and re-run it (up to MAX_RETRIES times) while the hypervisor stole more
    than STEAL_LIMIT of any of `cores`, which this shared machine does in bursts. The least
    disturbed sample is kept and carries its steal share."""
    best: Sample | None = None
    for _ in range(MAX_RETRIES + 1):
        before = steal_ticks(cores)
        start = time.perf_counter()
        sample = measure()
        sample.steal = steal_share(before, steal_ticks(cores), time.perf_counter() - start)
        if best is None or sample.steal < best.steal:
            best = sample
        if sample.steal <= STEAL_LIMIT:
            break
        log(f"      {label}: {sample.steal:.0%} of CPU stolen, again")
    assert best is not None
    return best


class LoadGenerator:
    """wrk and h2load on the client core; `load()` measures one target at one concurrency."""

    def __init__(self, tmp: Path, server_cpu: str | None, client_cpu: str | None) -> None:
        self.tmp, self.server_cpu, self.client_cpu = tmp, server_cpu, client_cpu

    @property
    def cores(self) -> list[int]:
        return [int(c) for c in (self.server_cpu, self.client_cpu) if c is not None]

    def load(self, target: Target, conns: int, duration: int) -> Sample:
        """One wrk or h2load measurement, re-run while the hypervisor steals (see
        `least_disturbed`)."""
        label = f"{target.url} c={conns}"
        return least_disturbed(lambda: self._load_once(target, conns, duration), self.cores, label)

    def _load_once(self, target: Target, conns: int, duration: int) -> Sample:
        warmup, argv = target.driver.tool_argv(target.url, target.file, conns, duration, self.tmp)
        if warmup is not None:
            self._run(warmup, duration + 30)  # not measured
        assert target.server.proc is not None
        server = psutil.Process(target.server.proc.pid)  # taskset exec()s: the server itself
        server_before = sum(server.cpu_times()[:2])
        out, client_cpu, wall = self._run(argv, duration + 30)
        server_cpu = (sum(server.cpu_times()[:2]) - server_before) / wall
        try:
            got = target.driver.tool_sample(out, target.url, target.reply_len, self.tmp)
        except RuntimeError as exc:
            raise LoadError(str(exc)) from None
        return Sample(got.rps, got.p50_ms, got.requests, server_cpu, client_cpu)

    def _run(self, argv: list[str], timeout: float) -> tuple[str, float, float]:
        """Run a load generator on its core; (stdout, its CPU share, wall seconds)."""
        if self.client_cpu is not None:
            argv = ["taskset", "-c", self.client_cpu, *argv]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            raise LoadError(f"{argv[0]} failed ({done.returncode}): {done.stderr.strip()[-300:]}")
        cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        return done.stdout, cpu / wall, wall


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
