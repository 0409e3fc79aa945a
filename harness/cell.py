"""One load cell in a fresh process: Locust users against one server, for a fixed time after
a warm-up, with every latency kept (no histogram buckets).

    python -m wiremark.harness.cell --transport grpc --address 127.0.0.1:50051 \\
        --model iris --users 16 --duration 5 [--warmup 1] [--batch 1] [--encoding raw]
        [--rate 500 [--arrival constant|poisson]] [--compression gzip] [--client library]
        [--tls [--tls-ca CA.pem]] [--server-pid PID] [--sample 20] [--raw latencies.npy]
        [--wire-requests 50]

The measured window lasts `--duration` seconds, and longer if it has fewer than
`--min-requests` replies by then, up to `--max-duration`.

Closed loop (no `--rate`): `--users` users, each sending its next request as soon as the
last one returns. Open loop (`--rate R`): sends are scheduled at R per second (evenly, or
as a Poisson process) whatever the server does, over at most `--users` connections; the
latency of each counts from its *intended* send time, so a stalled server cannot hide its
own latency (coordinated omission). A send that starts more than 1 ms behind schedule is
counted late; one that waited `--max-wait` seconds for a free connection is dropped.

Prints one JSON object: requests, errors, rps, p50/p90/p95/p99/p999/max/mean in ms, the
mean reply bytes, the load generator's CPU (seconds and share of a core), the server's CPU
seconds and peak memory when `--server-pid` is given, late and dropped sends, and up to
`--sample` replies (base64, with their Server-Timing) for the caller to check. `--raw FILE`
saves every latency (float64 ms, numpy .npy) so several processes can be merged.

`--wire-requests N` first sends N requests, one at a time, through a counting TCP relay
(after a few uncounted ones that open the connection) and reports the bytes on the wire per
request each way, headers and framing included: a separate pass on its own connection, so
the timed load never goes through the relay.

A fresh process because grpcio must be patched for gevent before any channel exists (see
`harness/users.py`).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import itertools
import os
import random
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wiremark.reports.records import LEAN, LIBRARY, PERCENTILES

from .protocol import CellRequest, CellResult
from .steal import CLOCK_TICKS, steal_ticks

CLIENT_BOUND = 0.9  # the cell's CPU per core it has, above which the client is the bottleneck


def batch_for(model: str, size: int) -> Any:
    """`size` inputs of the model's family (looked up, never guessed from the name)."""
    from wiremark.payloads import samples
    from wiremark.payloads.contract import MODEL_FAMILIES

    return samples.batch(MODEL_FAMILIES[model], size)


def percentiles(latencies_ms: Any) -> dict[str, float | None]:
    values = np.asarray(latencies_ms, dtype=np.float64)
    out: dict[str, float | None] = {}
    for key, q, _ in PERCENTILES:
        out[key] = round(float(np.percentile(values, q)), 4) if values.size else None
    out["max"] = round(float(values.max()), 4) if values.size else None
    out["mean"] = round(float(values.mean()), 4) if values.size else None
    return out


def summarise(
    latencies_ms: Sequence[float], errors: int, wall_s: float, reply_bytes: int, cpu_s: float
) -> dict[str, Any]:
    n = len(latencies_ms)
    return {
        "requests": n,
        "errors": errors,
        "duration_s": round(wall_s, 3),
        "rps": round(n / wall_s, 1) if wall_s > 0 else 0.0,
        "reply_bytes": round(reply_bytes / n, 1) if n else 0.0,
        "client_cpu_s": round(cpu_s, 4),
        "client_cpu": round(cpu_s / wall_s, 3) if wall_s > 0 else 0.0,
        **percentiles(latencies_ms),
    }


class ServerWatch:
    """The server's CPU seconds over the measured window, and its peak memory: its process
    and every process under it (the workers of `--workers N`, a peer's inference workers)."""

    def __init__(self, pid: int | None) -> None:
        import psutil

        self.proc = psutil.Process(pid) if pid else None
        self.start = 0.0

    def tree(self) -> list[Any]:
        import psutil

        if self.proc is None:
            return []
        try:
            return [self.proc, *self.proc.children(recursive=True)]
        except psutil.Error:
            return [self.proc]

    def cpu(self) -> float:
        import psutil

        used = 0.0
        for proc in self.tree():
            with contextlib.suppress(psutil.Error):  # ended meanwhile
                used += sum(proc.cpu_times()[:2])
        return used

    def begin(self) -> None:
        self.start = self.cpu()

    def end(self) -> dict[str, Any]:
        if self.proc is None:
            return {"server_cpu_s": None, "server_peak_rss_mb": None}
        used = self.cpu() - self.start
        peaks = []
        for proc in self.tree():
            try:
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peaks.append(int(line.split()[1]) / 1024)
            except OSError:
                pass
        peak = round(sum(peaks), 1) if peaks else None  # each process's peak, summed
        return {"server_cpu_s": round(used, 4), "server_peak_rss_mb": peak}


class CountingRelay:
    """A TCP relay on loopback that counts the bytes going each way."""

    def __init__(self, upstream: str) -> None:
        from gevent.server import StreamServer

        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.up = self.down = 0
        self.server = StreamServer(("127.0.0.1", 0), self._handle)
        self.server.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_port}"

    def _handle(self, client: Any, _peer: Any) -> None:
        import gevent
        from gevent import socket

        server = socket.create_connection(self.upstream)

        def pump(src: Any, dst: Any, up: bool) -> None:
            try:
                while data := src.recv(65536):
                    if up:
                        self.up += len(data)
                    else:
                        self.down += len(data)
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for sock in (src, dst):
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)

        gevent.joinall(
            [gevent.spawn(pump, client, server, True), gevent.spawn(pump, server, client, False)]
        )
        server.close()
        client.close()

    def reset(self) -> None:
        self.up = self.down = 0

    def close(self) -> None:
        self.server.stop()


def wire_bytes(
    env: Any, cls: Any, requests: int, warm: int = 5, timeout: float = 60.0
) -> dict[str, float]:
    """Bytes on the wire per request, each way, through a CountingRelay; a RuntimeError
    when a request fails or the pass takes longer than `timeout` seconds."""
    import gevent

    relay = CountingRelay(cls.address)
    try:
        user = type(cls.__name__, (cls,), {"address": relay.address})(env)
        user.on_start()
        failures: list[Any] = []

        def on_request(exception: Any, **_: Any) -> None:
            if exception is not None:
                failures.append(exception)

        env.events.request.add_listener(on_request)
        overdue = RuntimeError(f"wire pass: not done within {timeout:.0f} s")
        try:
            with gevent.Timeout(timeout, overdue):
                for _ in range(warm):
                    user.predict()
                relay.reset()
                for _ in range(requests):
                    user.predict()
            up, down = relay.up, relay.down
        finally:
            env.events.request.remove_listener(on_request)
            user.on_stop()
        if failures:
            raise RuntimeError(f"wire pass: {failures[0]}")
        return {
            "wire_up_bytes": round(up / requests, 1),
            "wire_down_bytes": round(down / requests, 1),
        }
    finally:
        relay.close()


class Recorder:
    """Collects what users report through `events.request`, inside the measured window."""

    def __init__(self, sample: int) -> None:
        self.measuring = False
        self.latencies: list[float] = []
        self.errors = 0
        self.bytes = 0
        self.first_error = ""
        self.sample = sample
        self.rng = random.Random(1)
        self.samples: list[dict[str, str]] = []

    def on_request(
        self,
        response_time: float,
        response_length: int,
        exception: Any,
        context: dict[str, Any],
        **_: Any,
    ) -> None:
        if not self.measuring:
            return
        if exception is not None:
            self.errors += 1
            self.first_error = self.first_error or str(exception)[:300]
            return
        self.latencies.append(response_time)
        self.bytes += response_length
        body = context.get("reply")
        if body is None or not self.sample:
            return
        kept = {
            "body": base64.b64encode(body).decode(),
            "server_timing": context.get("server_timing") or "",
        }
        if len(self.samples) < self.sample:
            self.samples.append(kept)
        else:  # a reservoir: an offered reply replaces a random one (see Workload.sampled)
            self.samples[self.rng.randrange(self.sample)] = kept


def run_cell(args: CellRequest) -> CellResult:
    import gevent
    from locust.env import Environment

    from wiremark.payloads.contract import PixelEncoding

    from .tls import Trust
    from .users import OpenLoop, Workload, user_class

    workload = Workload()
    workload.model, workload.encoding = args.model, PixelEncoding(args.encoding)
    workload.batch = batch_for(args.model, args.batch)
    workload.compression = args.compression
    workload.sample_size = args.sample
    trust = Trust(Path(args.tls_ca) if args.tls_ca else None) if args.tls else None
    cls = user_class(args.transport, args.address, workload, args.client, trust)
    env = Environment(user_classes=[cls])
    wire: dict[str, Any] = {}
    if args.wire_requests:
        try:
            wire = wire_bytes(env, cls, args.wire_requests)
        except RuntimeError as exc:  # the timed load below records the same failure
            wire = {"wire_error": str(exc)[:300]}
    recorder = Recorder(args.sample)
    env.events.request.add_listener(recorder.on_request)
    watch = ServerWatch(args.server_pid)
    open_loop: OpenLoop | None = None
    if args.rate:
        open_loop = OpenLoop(env, cls, args.users, args.rate, args.arrival, args.max_wait)
        open_loop.start()
    else:
        runner = env.create_local_runner()
        runner.start(args.users, spawn_rate=min(max(args.users * 10, 10), 100))
    gevent.sleep(args.warmup)
    cores = sorted(os.sched_getaffinity(0))
    stolen = steal_ticks(cores)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    watch.begin()
    if open_loop is not None:
        open_loop.reset_counts()
    workload.calls = itertools.count(1)  # sampling draws from the measured window only
    recorder.measuring = True
    start = time.perf_counter()
    gevent.sleep(args.duration)
    # slow cells run on until they have `--min-requests` replies, up to `--max-duration`
    limit = start + max(args.duration, args.max_duration)
    while len(recorder.latencies) < args.min_requests and time.perf_counter() < limit:
        gevent.sleep(min(0.25, max(0.0, limit - time.perf_counter())))
    recorder.measuring = False
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    steal_s = sum(steal_ticks(cores)) - sum(stolen)
    server = watch.end()
    counts: dict[str, Any] = open_loop.counts() if open_loop else {"late": None, "dropped": None}
    if open_loop is not None:
        open_loop.stop()
    else:
        runner.quit()
    cpu = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
    out = summarise(recorder.latencies, recorder.errors, wall, recorder.bytes, cpu)
    if args.raw:
        np.save(args.raw, np.asarray(recorder.latencies, dtype=np.float64))
    return CellResult(
        **out,
        **server,
        **counts,
        **wire,
        # what the hypervisor took from this process's cores meanwhile: CPU it could not use
        steal_s=round(steal_s / CLOCK_TICKS, 4),
        first_error=recorder.first_error,
        samples=recorder.samples,
    )


def build_parser() -> argparse.ArgumentParser:
    from wiremark.payloads import transport as transports

    parser = argparse.ArgumentParser(
        prog="python -m wiremark.harness.cell", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--transport", choices=transports.names(peers=True), required=True)
    parser.add_argument("--address", required=True, help="HOST:PORT")
    parser.add_argument("--model", default="iris")
    parser.add_argument(
        "--users", type=int, default=16, help="closed loop: users; open loop: connections"
    )
    parser.add_argument("--rate", type=float, default=0.0, help="open loop: requests/s")
    parser.add_argument("--arrival", choices=("constant", "poisson"), default="constant")
    parser.add_argument("--max-wait", type=float, default=1.0, help="open loop: drop after (s)")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument(
        "--min-requests", type=int, default=0, help="run past --duration until this many replies"
    )
    parser.add_argument(
        "--max-duration", type=float, default=0.0, help="but no longer than this (s)"
    )
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--encoding", choices=("raw", "list"), default="raw")
    parser.add_argument("--compression", choices=("none", "gzip"), default="none")
    parser.add_argument("--tls", action="store_true", help="over TLS, verifying the server")
    parser.add_argument("--tls-ca", help="verify against this CA file (default: the system's)")
    parser.add_argument(
        "--client", choices=(LEAN, LIBRARY), default=LEAN, help="the users' client library"
    )
    parser.add_argument("--server-pid", type=int, default=None)
    parser.add_argument("--sample", type=int, default=0, help="replies to keep for checking")
    parser.add_argument(
        "--wire-requests", type=int, default=0, help="first count wire bytes over N requests"
    )
    parser.add_argument("--raw", type=Path, default=None, help="save every latency here (.npy)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    request = CellRequest.from_namespace(build_parser().parse_args(argv))
    print(run_cell(request).to_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
