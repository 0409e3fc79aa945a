"""Drive a server with the C load generators: wrk for HTTP, h2load for gRPC frames.

Servers run on one core and the generator (one thread) on another, pinned with taskset. A
measurement during which the hypervisor stole more than STEAL_LIMIT of either core is run
again (this shared machine loses whole milliseconds in bursts), and every run is checked
for errors: wrk's socket errors and non-2xx answers, h2load's failures and gRPC replies
without data (a gRPC error still answers HTTP 200).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import psutil

from wiremark.payloads import bodies
from wiremark.payloads.contract import Family
from wiremark.payloads.samples import iris_rows

from .launch import ServerProcess
from .steal import steal_share, steal_ticks

TOOLS = {"wrk": "wrk", "h2load": "nghttp2-client", "taskset": "util-linux"}


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """--json, --duration and --repeats, as every command that drives the load tools has."""
    from wiremark.cli import _positive

    parser.add_argument(
        "--json", action="store_true", help="print a JSON list, one object per transport"
    )
    parser.add_argument(
        "--duration",
        type=_positive,
        default=3,
        help="seconds per measurement, whole (wrk's unit), after a 1 s warm-up (default: 3)",
    )
    parser.add_argument(
        "--repeats", type=_positive, default=3, help="repetitions; figures are medians (default: 3)"
    )


def check_tools() -> None:
    from wiremark.cli import UsageError

    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        names = ", ".join(f"{tool} (Debian package {TOOLS[tool]})" for tool in missing)
        raise UsageError(
            f"wiremark overhead needs {names} on PATH: "
            f"apt-get install {' '.join(TOOLS[tool] for tool in missing)}"
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
    path: str
    media: str  # "grpc", JSON or MSGPACK
    body: bytes  # the HTTP body; for gRPC the protobuf message (framed in the h2load file)
    echo: bool  # the reply must be the body itself; else a prediction of the in-process class
    file: Path  # wrk's Lua script, or h2load's framed body
    reply_len: int = 0  # learnt by verify(): a gRPC reply without data is an error

    @property
    def grpc(self) -> bool:
        return self.media == "grpc"

    @property
    def url(self) -> str:
        return f"http://{self.server.address}{self.path}"

    def verify(self, expected_class: int) -> None:
        """One request through a real client (a gRPC error still answers HTTP 200 to h2load)."""
        try:
            if self.grpc:
                with grpc.insecure_channel(self.server.address) as channel:
                    reply = channel.unary_unary(self.path)(self.body, timeout=10)
            else:
                headers = {"content-type": self.media}
                response = httpx.post(self.url, content=self.body, headers=headers, timeout=10)
                if response.status_code != 200 or not (
                    self.echo or response.headers.get("content-type", "").startswith(self.media)
                ):
                    raise LoadError(f"{response.status_code} {response.text[:200]}")
                reply = response.content
            if self.echo and reply != self.body:
                raise LoadError(f"echoed {reply[:40]!r}, not the {len(self.body)}-byte body")
            if not self.echo:
                transport = "grpc" if self.grpc else "json"  # REST: read as self.media says
                prediction = bodies.decode(transport, Family.TABULAR, reply, self.media)
                got = prediction.class_ids.tolist()  # type: ignore[union-attr]
                if got != [expected_class]:
                    raise LoadError(f"predicted classes {got}, in-process [{expected_class}]")
        except (LoadError, grpc.RpcError, httpx.HTTPError, ValueError) as exc:
            raise LoadError(f"{self.media} {self.url}: {exc}") from None
        self.reply_len = len(reply)


def _lua(body: bytes, content_type: str) -> str:
    escaped = "".join(f"\\{b:03d}" for b in body)  # Lua decimal escapes: any bytes
    return f"""wrk.method = "POST"
wrk.body = "{escaped}"
wrk.headers["Content-Type"] = "{content_type}"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WIREMARK %d %d %d %d %.1f\\n", summary.requests, summary.duration,
    e.connect + e.read + e.write + e.timeout, e.status, latency:percentile(50)))
end
"""


def payload(transport: str, tmp: Path, model: str = "iris") -> tuple[str, bytes, Path]:
    """(media, body, load-generator file) for one row of iris: h2load's body with the gRPC
    5-byte prefix, or a wrk script that POSTs the JSON or MessagePack body."""
    body = bodies.encode(transport, model, iris_rows(1)[0], family=Family.TABULAR)
    if transport == "grpc":
        file = tmp / "grpc.bin"
        file.write_bytes(b"\x00" + len(body).to_bytes(4, "big") + body)
        return "grpc", body, file
    media = bodies.media_type(transport)
    file = tmp / f"{transport}.lua"
    file.write_text(_lua(body, media))
    return media, body, file


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
        if target.grpc:
            (self.tmp / "h2load.log").unlink(missing_ok=True)  # h2load appends to its log
            argv = ["h2load", "-t1", f"-c{conns}", "-m1", f"-D{duration}", "--warm-up-time=1"]
            argv += ["--log-file", str(self.tmp / "h2load.log"), "-d", str(target.file)]
            argv += ["-H", "content-type: application/grpc", "-H", "te: trailers", target.url]
        else:
            argv = ["wrk", "-t1", f"-c{conns}", "-s", str(target.file), target.url]
            self._run([*argv, "-d1s"], duration + 30)  # warm-up, not measured
            argv.append(f"-d{duration}s")
        assert target.server.proc is not None
        server = psutil.Process(target.server.proc.pid)  # taskset exec()s: the server itself
        server_before = sum(server.cpu_times()[:2])
        out, client_cpu, wall = self._run(argv, duration + 30)
        server_cpu = (sum(server.cpu_times()[:2]) - server_before) / wall
        sample = self._h2load(out, target) if target.grpc else self._wrk(out, target.url)
        sample.server_cpu, sample.client_cpu = server_cpu, client_cpu
        return sample

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

    @staticmethod
    def _wrk(out: str, url: str) -> Sample:
        match = re.search(r"^WIREMARK (\d+) (\d+) (\d+) (\d+) ([\d.]+)$", out, re.M)
        if match is None:
            raise LoadError(f"wrk printed no summary for {url}:\n{out}")
        requests, duration_us, errors, non_2xx = (int(g) for g in match.groups()[:4])
        if errors or non_2xx or not requests:
            raise LoadError(
                f"wrk {url}: {requests} requests, {non_2xx} non-2xx, {errors} socket errors"
            )
        return Sample(requests / (duration_us / 1e6), float(match.group(5)) / 1000.0, requests)

    def _h2load(self, out: str, target: Target) -> Sample:
        rps = re.search(r"^finished in \S+, ([\d.]+) req/s", out, re.M)
        counts = re.search(
            r"^requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, "
            r"(\d+) errored, (\d+) timeout",
            out,
            re.M,
        )
        data = re.search(r"^traffic: .*\((\d+)\) data", out, re.M)
        if rps is None or counts is None or data is None:
            raise LoadError(f"h2load printed no summary for {target.path}:\n{out}")
        done, succeeded, failed, errored, timeouts = (int(g) for g in counts.groups())
        if failed or errored or timeouts or not succeeded or succeeded < done:
            raise LoadError(f"h2load {target.path}: {out[out.index('requests:') :][:300]}")
        # Every good reply carries a 5-byte-prefixed message; an error is trailers only.
        if int(data.group(1)) < 0.98 * done * (5 + target.reply_len):
            raise LoadError(f"h2load {target.path}: replies without data (gRPC errors?)")
        rows = [line.split("\t") for line in (self.tmp / "h2load.log").read_text().splitlines()]
        if any(row[1] != "200" for row in rows):
            raise LoadError(f"h2load {target.path}: non-200 statuses in its log")
        p50_ms = statistics.median(int(row[2]) for row in rows) / 1000.0
        return Sample(float(rps.group(1)), p50_ms, done)


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
