"""One load cell in a fresh process, the cell's Locust master (`MasterRunner`): its workers
(`harness/worker.py`: local worker processes, and workers on other hosts) load one server for
a fixed time after a warm-up; their latencies come back as HdrHistograms and merge at full
resolution (`harness/histogram.py`).

    python -m wiremark.harness.cell --transport grpc --address 127.0.0.1:50051 \\
        --model iris --users 16 --duration 5 [--warmup 1] [--batch 1] [--encoding raw]
        [--rate 500 [--arrival constant|poisson]] [--compression gzip] [--client library]
        [--tls [--tls-ca CA.pem]] [--server-pid PID] [--sample 20] [--wire-requests 50]
        [--load-processes 2] [--expect-workers 2 --master-bind 0.0.0.0:5557]

The master starts `--load-processes` local workers (fresh processes, never forked: grpcio
does not survive a fork), waits up to `--worker-timeout` s for them and for
`--expect-workers` more from other hosts (`wiremark worker --master HOST:PORT`), and then
starts, times and stops the cell for all of them alike: the warm-up, the measured window of
`--duration` s (longer if it has fewer than `--min-requests` replies by then, up to
`--max-duration`), the end.

Closed loop (no `--rate`): `--users` users, dispatched over the workers by Locust, each
sending its next request as soon as the last one returns. Open loop (`--rate R`): each of
the W workers schedules R/W sends a second (evenly, or as a Poisson process), its schedule
offset by 1/R from the previous worker's, over at most `--users` connections, whatever the
server does; a latency counts from the *intended* send time (coordinated omission), and a
second histogram counts from the actual send (uncorrected), as wrk2 reports both. A send
that starts more than 1 ms behind schedule is counted late; one that waited `--max-wait`
seconds for a free connection is dropped.

Prints one JSON object (`CellResult`): requests, errors, rps, p50/p90/p95/p99/p999/max/mean
in ms from the merged histogram, and the histograms themselves; the mean reply bytes; the
load generator's CPU, summed and per worker (with each worker's host, cores, versions, the
CPU stolen from it, and whether it was client-bound); the server's CPU seconds and peak
memory when `--server-pid` is given; late and dropped sends; how many workers were planned
and how many finished (a worker lost mid-cell leaves the others to finish it); and up to
`--sample` replies (base64, with their Server-Timing) for the caller to check.

`--wire-requests N` has the first worker send N requests first, one at a time, through a
counting TCP relay, and report the bytes on the wire per request each way (see
`harness/worker.py`). A cell whose workers did not all connect exits with status 3 and one
line naming how many came.

**An interleaved A/B cell** (`--ab-address HOST:PORT`, the second arm's server, and
`--ab-server-pid`): the same load goes to both servers by turns (`Alternation`). The master
tells every worker which arm to send to, `--ab-slot` s at a time, in pairs of turns whose
order is drawn at random (`--ab-seed`), from the warm-up to the end; every request counts
for the arm it was sent to (in open loop: the arm of the time it was due), also when it
returns in the other arm's turn. The window lasts whole pairs until each arm has had
`--duration` s (and, with `--min-requests`, until there are that many replies per arm,
up to `--max-duration` per arm). Each arm's result is its own: its histograms, its
requests over the time it was sent to (rps), its server's CPU over the window, its wire
bytes and samples; the load side's CPU is shared between the arms by their time. Prints
`{"arms": [first, second]}`. Both arms then see the same seconds of a machine whose speed
drifts, and their difference is the servers' (`reports/paired.py`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wiremark.reports.records import LEAN, LIBRARY

from .histogram import Latencies
from .protocol import CellRequest, CellResult, arms_to_json

WORKER_MODULE = "wiremark.harness.worker"

CLIENT_BOUND = 0.9  # the cell's CPU per core it has, above which the client is the bottleneck


def batch_for(model: str, size: int) -> Any:
    """`size` inputs of the model's family (looked up, never guessed from the name)."""
    from wiremark.payloads import samples
    from wiremark.payloads.contract import MODEL_FAMILIES

    return samples.batch(MODEL_FAMILIES[model], size)


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


class CellError(RuntimeError):
    """A cell that cannot run: a plan a worker could not run, a local worker that died."""


class WorkersMissing(CellError):
    """The workers the cell waits for did not all connect in time."""


WORKERS_MISSING_EXIT = 3  # the exit status of a cell whose workers did not all connect
READY_TIMEOUT = 75.0  # s for every worker to build its users (the wire pass: 60 s at most)
RESULT_TIMEOUT = 15.0  # s for the workers' results after the window closes


def make_master(env: Any, host: str, port: int) -> Any:
    """Locust's master runner, which also asks a worker it does not know (one that joined
    the previous cell's master on this address as it quit) to say client_ready again."""
    from locust.rpc import Message
    from locust.runners import MasterRunner

    from .protocol import MSG_REJOIN

    class Master(MasterRunner):
        def handle_message(self, client_id: str, msg: Any) -> None:
            if msg.type == "heartbeat" and msg.node_id not in self.clients:
                self.server.send_to_client(Message(MSG_REJOIN, None, msg.node_id))
            super().handle_message(client_id, msg)

    env.runner = Master(env, host, port)
    return env.runner


class LocalWorkers:
    """Worker processes on this host (`--load-processes`), started fresh (never forked
    from this one) with their stderr kept for the error of a worker that failed."""

    def __init__(self, count: int, master: str) -> None:
        # closed in close(), after the processes end
        self.logs = [tempfile.TemporaryFile(mode="w+") for _ in range(count)]  # noqa: SIM115
        self.procs = [
            subprocess.Popen(
                [sys.executable, "-m", WORKER_MODULE, "--master", master, "--once"],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
            for log in self.logs
        ]

    def failed(self) -> str:
        """The first worker that exited, and how, or ''."""
        for proc, log in zip(self.procs, self.logs, strict=True):
            if proc.poll() is not None:
                log.seek(0)
                return f"a local load worker exited ({proc.returncode}): {log.read()[-800:]}"
        return ""

    def said(self) -> str:
        """What the local workers have written to stderr so far, last lines first cut."""
        parts = []
        for i, log in enumerate(self.logs):
            log.seek(0)
            if text := log.read().strip():
                parts.append(f"worker {i}: {text[-800:]}")
            log.seek(0, 2)
        return "; ".join(parts)

    def close(self) -> None:
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in self.logs:
            log.close()


def wait_until(done: Any, timeout: float, check: Any = None) -> bool:
    """Sleep (in gevent) until `done()` or `timeout` s; `check()` may raise meanwhile."""
    import gevent

    deadline = time.perf_counter() + timeout
    while not done():
        if time.perf_counter() >= deadline:
            return False
        if check is not None:
            check()
        gevent.sleep(0.05)
    return True


class Alternation:
    """The turns of an interleaved A/B cell: every worker sends to one arm's server for
    `slot` seconds, then to the other's, in pairs of turns whose order is drawn at random
    (seeded), so that what the machine does at the scale of seconds falls on both arms
    alike and an arm's place in a pair is chance. Counts each arm's time in measured turns."""

    def __init__(self, switch: Any, slot: float, seed: int) -> None:
        self.switch = switch  # switch(arm): tell every worker
        self.slot = slot
        self.rng = random.Random(seed)
        self.counting = False
        self.active = [0.0, 0.0]  # s each arm was sent to while counting
        self.pairs = 0  # measured pairs

    def pair(self) -> None:
        import gevent

        for arm in self.rng.sample((0, 1), 2):
            self.switch(arm)
            began = time.perf_counter()
            gevent.sleep(self.slot)
            if self.counting:
                self.active[arm] += time.perf_counter() - began
        self.pairs += self.counting

    def warm(self, seconds: float) -> None:
        """Whole pairs, at least one, until `seconds` have passed (not counted)."""
        end = time.perf_counter() + seconds
        self.pair()
        while time.perf_counter() < end:
            self.pair()

    def measure(self, seconds: float) -> None:
        """Whole pairs, counted, until each arm has had `seconds`."""
        self.counting = True
        self.pair()
        while min(self.active) < seconds:
            self.pair()


def run_cell(args: CellRequest) -> list[CellResult]:
    """The cell's result: one, or each arm's of an interleaved A/B cell (`ab_address`)."""
    import gevent
    from locust.env import Environment

    from .protocol import (
        MSG_ARM,
        MSG_FINISH,
        MSG_MEASURE,
        MSG_OPEN,
        MSG_PLAN,
        MSG_READY,
        MSG_RESULT,
        REPLIES,
        parse_address,
        shares,
    )
    from .worker import CellUser

    host, port = parse_address(args.master_bind, bind=True)
    env = Environment(user_classes=[CellUser])
    master = make_master(env, host, port)
    ready: dict[int, dict[str, Any]] = {}
    results: dict[int, dict[str, Any]] = {}
    replies: dict[str, int] = {}
    master.register_message(
        MSG_READY, lambda msg, **_: ready.__setitem__(msg.data["index"], msg.data)
    )
    master.register_message(
        MSG_RESULT, lambda msg, **_: results.__setitem__(msg.data["index"], msg.data)
    )
    env.events.worker_report.add_listener(
        lambda client_id, data, **_: replies.__setitem__(client_id, data.get(REPLIES, 0))
    )
    dial = "127.0.0.1" if host in ("*", "0.0.0.0", "::") else host
    local = LocalWorkers(args.load_processes, f"{dial}:{master.server.port}")

    def local_failed() -> None:
        if problem := local.failed():
            raise CellError(problem)

    try:
        expected = args.load_processes + args.expect_workers
        if not wait_until(
            lambda: master.worker_count >= expected, args.worker_timeout, local_failed
        ):
            came = master.worker_count
            remote = (
                f"; start them on the load hosts with: wiremark worker --master {args.master_bind}"
                if args.expect_workers
                else ""
            )
            raise WorkersMissing(
                f"{came} of {expected} load workers connected to {args.master_bind} within "
                f"{args.worker_timeout:g} s{remote}"
            )
        ids = [client.id for client in master.clients.ready]
        plan = shares(len(ids), args.users, args.rate, args.sample, args.wire_requests)
        addresses = [args.address] + ([args.ab_address] if args.ab_address else [])
        cell = {
            "transport": args.transport,
            "addresses": addresses,
            "model": args.model,
            "batch": args.batch,
            "encoding": args.encoding,
            "compression": args.compression,
            "client": args.client,
            "tls": args.tls,
            "arrival": args.arrival,
            "max_wait": args.max_wait,
        }
        ca_pem = Path(args.tls_ca).read_text() if args.tls and args.tls_ca else None
        for client_id, share in zip(ids, plan, strict=True):
            data = {"cell": cell, "share": dataclasses.asdict(share), "ca_pem": ca_pem}
            master.send_message(MSG_PLAN, data, client_id=client_id)
        if not wait_until(lambda: len(ready) == len(ids), READY_TIMEOUT, local_failed):
            said = local.said()
            raise CellError(
                f"{len(ids) - len(ready)} of {len(ids)} load workers never got ready"
                f" within {READY_TIMEOUT:g} s" + (f" (local workers said: {said})" if said else "")
            )
        for index, answer in sorted(ready.items()):
            if answer["error"]:
                raise CellError(f"load worker {index}: {answer['error']}")
        pids = [args.server_pid] + ([args.ab_server_pid] if args.ab_address else [])
        watches = [ServerWatch(pid) for pid in pids]

        def tell(kind: str, data: Any = None) -> None:
            for client_id in ids:
                master.send_message(kind, data, client_id=client_id)

        alternation = (
            Alternation(lambda arm: tell(MSG_ARM, {"arm": arm}), args.ab_slot, args.ab_seed)
            if args.ab_address
            else None
        )
        if args.rate:
            tell(MSG_OPEN)
        else:
            master.start(args.users, spawn_rate=min(max(args.users * 10, 10), 100))
        if alternation:  # both arms warm, alike
            alternation.warm(args.warmup)
        else:
            gevent.sleep(args.warmup)
        for watch in watches:
            watch.begin()
        tell(MSG_MEASURE)
        start = time.perf_counter()
        # `duration` and `min_requests` hold for each arm
        arms = len(addresses)
        if alternation:
            alternation.measure(args.duration)
        else:
            gevent.sleep(args.duration)
        # slow cells run on until they have `--min-requests` replies, up to `--max-duration`
        limit = start + arms * max(args.duration, args.max_duration)
        while sum(replies.values()) < arms * args.min_requests and time.perf_counter() < limit:
            if alternation:
                alternation.pair()
            else:
                gevent.sleep(min(0.25, max(0.0, limit - time.perf_counter())))
        tell(MSG_FINISH)
        wall = time.perf_counter() - start
        servers = [watch.end() for watch in watches]

        def settled() -> bool:  # every worker has answered, or is gone (missing, quit)
            alive = {c.id for c in master.clients.ready + master.clients.running}
            alive |= {c.id for c in master.clients.spawning}
            return all(i in results or cid not in alive for i, cid in enumerate(ids))

        wait_until(settled, RESULT_TIMEOUT)
        master.quit()
    finally:
        local.close()
    wire = ready.get(0, {}).get("wire") or [{} for _ in addresses]
    if alternation is None:
        return [merge(results, len(ids), wall, servers[0], wire[0], bool(args.rate))]
    return [  # each arm over its own slots, the load side's CPU shared out by time
        merge(
            results,
            len(ids),
            active,
            servers[arm],
            wire[arm],
            bool(args.rate),
            arm=arm,
            cpu_share=active / sum(alternation.active),
        )
        for arm, active in enumerate(alternation.active)
    ]


def merge(
    results: dict[int, dict[str, Any]],
    planned: int,
    wall: float,
    server: dict[str, Any],
    wire: dict[str, Any],
    open_loop: bool,
    arm: int = 0,
    cpu_share: float = 1.0,
) -> CellResult:
    """The workers' results for one arm (one server) as the cell's: their histograms
    merged, counts and CPU summed (the `cpu_share` of it that was this arm's), each worker's
    own figures kept (and whether it was client-bound)."""
    got = [results[i] | results[i]["arms"][arm] for i in sorted(results)]
    hist = Latencies.merged([r["histogram"] for r in got])
    uncorrected = Latencies.merged([r["uncorrected"] for r in got if r["uncorrected"]])
    n = hist.count
    cpu = sum(r["client_cpu_s"] for r in got) * cpu_share
    workers = [
        {k: r[k] for k in WORKER_FIELDS} | {"client_bound": r["client_cpu_share"] >= CLIENT_BOUND}
        for r in got
    ]
    first = results[0]["arms"][arm] if 0 in results else {}  # the worker that samples
    return CellResult(
        requests=n,
        errors=sum(r["errors"] for r in got),
        duration_s=round(wall, 3),
        rps=round(n / wall, 1) if wall > 0 else 0.0,
        reply_bytes=round(sum(r["reply_bytes"] for r in got) / n, 1) if n else 0.0,
        client_cpu_s=round(cpu, 4),
        client_cpu=round(cpu / wall, 3) if wall > 0 else 0.0,
        **hist.summary(),
        **server,
        late=sum(r["late"] or 0 for r in got) if open_loop else None,
        dropped=sum(r["dropped"] or 0 for r in got) if open_loop else None,
        wire_up_bytes=wire.get("wire_up_bytes"),
        wire_down_bytes=wire.get("wire_down_bytes"),
        wire_error=wire.get("wire_error", ""),
        steal_s=round(sum(r["steal_s"] for r in got), 4),
        first_error=next((r["first_error"] for r in got if r["first_error"]), ""),
        samples=first.get("samples", []),
        histogram=hist.encode(),
        uncorrected_histogram=uncorrected.encode() if open_loop else None,
        workers=workers,
        workers_planned=planned,
    )


# what the cell's record keeps of each worker's result (not its histograms or samples)
WORKER_FIELDS = (
    "index",
    "host",
    "cores",
    "versions",
    "requests",
    "errors",
    "wall_s",
    "client_cpu_s",
    "steal_s",
    "client_cpu_share",
    "late",
    "dropped",
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
    parser.add_argument(
        "--load-processes", type=int, default=1, help="local worker processes (default 1)"
    )
    parser.add_argument(
        "--expect-workers", type=int, default=0, help="workers from other hosts to wait for"
    )
    parser.add_argument(
        "--master-bind",
        default="127.0.0.1:0",
        metavar="HOST:PORT",
        help="where workers connect (port 0: a free one, for local workers only)",
    )
    parser.add_argument(
        "--worker-timeout", type=float, default=30.0, help="s to wait for the workers"
    )
    ab = parser.add_argument_group("an interleaved A/B cell: a second server, sent to by turns")
    ab.add_argument("--ab-address", help="HOST:PORT of the second arm's server")
    ab.add_argument("--ab-server-pid", type=int, default=None)
    ab.add_argument("--ab-slot", type=float, default=0.25, help="s per arm per turn")
    ab.add_argument("--ab-seed", type=int, default=0, help="seed of each pair's order")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    request = CellRequest.from_namespace(build_parser().parse_args(argv))
    try:
        print(arms_to_json(run_cell(request)))
    except WorkersMissing as exc:
        print(f"wiremark cell: {exc}", file=sys.stderr)
        return WORKERS_MISSING_EXIT
    except CellError as exc:
        print(f"wiremark cell: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
