"""A load worker: a Locust worker runner that takes its part of each cell from a wiremark
cell master (`harness/cell.py`), records every latency in HdrHistograms and ships them back.

    wiremark worker --master HOST:PORT     # on a load host: every cell of a bench run
    python -m wiremark.harness.worker --master 127.0.0.1:PORT --once   # bench's local ones

A worker connects to the master with Locust's own protocol (`WorkerRunner`) and is told
what to do with wiremark's messages beside Locust's (`MSG_*`, `register_message`):

1. PLAN (master to worker): the cell (transport, the server's address or, in an
   interleaved A/B cell, each arm's; model, batch, TLS and its CA as PEM text, so a worker
   on another host needs no files) and this worker's `Share`. The worker builds its users
   and, when asked, first counts the bytes on the wire for each server (`wire_bytes`); it
   answers READY.
2. Closed loop: the master's runner spawns `CellUser`s over the workers (Locust's
   dispatcher). Open loop: OPEN starts this worker's `OpenLoop` at its share of the rate,
   its schedule offset by its index so the workers' sends interleave.
3. MEASURE opens the measured window (warm-up is what came before, on every worker alike);
   the worker's Locust reports carry its reply count so far (`REPLIES`), for the master's
   minimum-requests rule. In an interleaved A/B cell, ARM switches every user (and the
   open loop's sends) to one arm's server, slot by slot, from warm-up to the end.
4. FINISH closes it. The worker answers RESULT: per arm, its histograms encoded
   (`Latencies`), in open loop one from the intended send times (corrected) and one from
   the actual sends (uncorrected), its errors and the replies it sampled for checking; and
   its CPU and the CPU the hypervisor stole from its cores, its host, cores and versions.
5. The master's `quit` ends the cell: `--once` exits, otherwise the worker connects again
   for the next cell, whose master binds the same address.

A worker is a fresh process (never forked from one holding a gRPC channel: grpcio does not
survive a fork), patched for gevent by Locust.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import os
import platform
import random
import resource
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import gevent
import locust.runners
from locust import User, task
from locust.stats import RequestStats

from .histogram import Latencies
from .protocol import (
    MSG_ARM,
    MSG_FINISH,
    MSG_MEASURE,
    MSG_OPEN,
    MSG_PLAN,
    MSG_READY,
    MSG_REJOIN,
    MSG_RESULT,
    REPLIES,
    Share,
    parse_address,
)
from .steal import CLOCK_TICKS, steal_ticks

REPORT_INTERVAL = 0.5  # s between a worker's reports (Locust's default is 3)
CONNECT_TIMEOUT = 300.0  # s a worker keeps trying to reach its master (Locust: 60 x 5 s)


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("wiremark", "locust", "grpcio", "hdrhistogram"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = ""
    return out


class ArmRecord:
    """What one arm's server answered inside the window (a plain cell has one arm)."""

    def __init__(self, sample: int) -> None:
        self.corrected = Latencies()  # closed loop: the only one
        self.uncorrected = Latencies()  # open loop: from the actual send
        self.errors = 0
        self.bytes = 0
        self.first_error = ""
        self.sample = sample
        self.rng = random.Random(1)
        self.samples: list[dict[str, str]] = []

    def keep(self, body: bytes, server_timing: str) -> None:
        kept = {"body": base64.b64encode(body).decode(), "server_timing": server_timing}
        if len(self.samples) < self.sample:
            self.samples.append(kept)
        else:  # a reservoir: an offered reply replaces a random one (see Workload.sampled)
            self.samples[self.rng.randrange(self.sample)] = kept

    def result(self, open_loop: bool) -> dict[str, Any]:
        return {
            "requests": self.corrected.count,
            "errors": self.errors,
            "first_error": self.first_error,
            "reply_bytes": self.bytes,
            "histogram": self.corrected.encode(),
            "uncorrected": self.uncorrected.encode() if open_loop else None,
            "samples": self.samples,
        }


class Recorder:
    """What this worker's users report through `events.request`, inside the window, per
    arm (the users' context says which)."""

    def __init__(self, sample: int, arms: int = 1) -> None:
        self.measuring = False
        self.arms = [ArmRecord(sample) for _ in range(arms)]

    @property
    def replies(self) -> int:
        return sum(arm.corrected.count for arm in self.arms)

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
        arm = self.arms[context.get("arm", 0)]
        if exception is not None:
            arm.errors += 1
            arm.first_error = arm.first_error or str(exception)[:300]
            return
        arm.corrected.record(response_time)
        behind = context.get("behind_ms")
        if behind is not None:
            arm.uncorrected.record(response_time - behind)
        arm.bytes += response_length
        body = context.get("reply")
        if body is not None and arm.sample:
            arm.keep(body, context.get("server_timing") or "")


class CountingRelay:
    """A TCP relay on loopback that counts the bytes going each way."""

    def __init__(self, upstream: str) -> None:
        from gevent.server import StreamServer

        host, port = upstream.rsplit(":", 1)
        self.upstream = (host.strip("[]"), int(port))
        self.up = self.down = 0
        self.server = StreamServer(("127.0.0.1", 0), self._handle)
        self.server.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_port}"

    def _handle(self, client: Any, _peer: Any) -> None:
        from gevent import socket as gsocket

        server = gsocket.create_connection(self.upstream)

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
                        sock.shutdown(gsocket.SHUT_RDWR)

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
) -> dict[str, Any]:
    """Bytes on the wire per request, each way, through a CountingRelay; a RuntimeError
    when a request fails or the pass takes longer than `timeout` seconds."""
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


class Job:
    """This worker's part of one cell: its users' class, its recorder, its open loop."""

    def __init__(self, env: Any, cell: dict[str, Any], share: Share, ca_pem: str | None) -> None:
        from wiremark.payloads import transport as registry
        from wiremark.payloads.contract import PixelEncoding

        from .cell import batch_for
        from .tls import Trust
        from .users import Clock, Workload, alternating, user_class

        self.env, self.cell, self.share = env, cell, share
        registry.get(cell["transport"])  # first: a look-up loads the plugins (their models too)
        workload = Workload()
        workload.model, workload.encoding = cell["model"], PixelEncoding(cell["encoding"])
        workload.batch = batch_for(cell["model"], cell["batch"])
        workload.compression = cell["compression"]
        workload.sample_size = share.sample
        self.workload = workload
        self.ca_file: Path | None = None
        trust = None
        if cell["tls"]:
            if ca_pem:  # the master's CA, as text: this host need not have the file
                fd, name = tempfile.mkstemp(prefix="wiremark-ca-", suffix=".pem")
                with os.fdopen(fd, "w") as out:
                    out.write(ca_pem)
                self.ca_file = Path(name)
            trust = Trust(self.ca_file)
        # one server, or each arm's of an interleaved A/B cell, sent to as the clock says
        self.arm_classes = [
            user_class(cell["transport"], address, workload, cell["client"], trust, arm)
            for arm, address in enumerate(cell["addresses"])
        ]
        self.clock: Clock | None = Clock() if len(self.arm_classes) > 1 else None
        self.user_cls: type[Any] = (
            alternating(self.arm_classes, self.clock) if self.clock else self.arm_classes[0]
        )
        self.recorder = Recorder(share.sample, len(self.arm_classes))
        env.events.request.add_listener(self.recorder.on_request)
        self.open_loop: Any = None
        self.cores = sorted(os.sched_getaffinity(0))
        self.start = 0.0
        self.usage: Any = None
        self.stolen: list[int] = []

    def open(self) -> None:
        from .users import OpenLoop

        self.open_loop = OpenLoop(
            self.env,
            self.user_cls,
            self.share.users,
            self.share.rate,
            self.cell["arrival"],
            self.cell["max_wait"],
            seed=self.share.seed,
            phase=self.share.phase,
            clock=self.clock,
        )
        self.open_loop.start()

    def switch(self, arm: int) -> None:
        """An interleaved A/B cell: send to `arm` from now on."""
        assert self.clock is not None, "an arm switch in a cell of one server"
        self.clock.arm = arm

    def wire_bytes(self) -> list[dict[str, Any]]:
        """Each arm's bytes on the wire per request (or why they were not counted)."""
        out = []
        for cls in self.arm_classes:
            try:
                out.append(wire_bytes(self.env, cls, self.share.wire_requests))
            except RuntimeError as exc:  # the timed load records the same failure
                out.append({"wire_error": str(exc)[:300]})
        return out

    def begin(self) -> None:
        self.stolen = steal_ticks(self.cores)
        self.usage = resource.getrusage(resource.RUSAGE_SELF)
        if self.open_loop is not None:
            self.open_loop.reset_counts()
        self.workload.calls = itertools.count(1)  # sampling draws from the window only
        self.recorder.measuring = True
        self.start = time.perf_counter()

    def finish(self) -> dict[str, Any]:
        rec = self.recorder
        rec.measuring = False
        wall = time.perf_counter() - self.start
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpu = after.ru_utime + after.ru_stime - self.usage.ru_utime - self.usage.ru_stime
        steal = (sum(steal_ticks(self.cores)) - sum(self.stolen)) / CLOCK_TICKS
        open_loop = self.open_loop
        arms = [
            arm.result(open_loop is not None)
            | (open_loop.counts(i) if open_loop else {"late": None, "dropped": None})
            for i, arm in enumerate(rec.arms)
        ]
        self.stop()
        # a worker's process runs on one thread: its budget is one core, less what the
        # hypervisor took from its cores meanwhile (spread over them)
        available = wall - steal / max(1, len(self.cores))
        return {
            "index": self.share.index,
            "host": socket.gethostname(),
            "cores": len(self.cores),
            "versions": versions(),
            "wall_s": round(wall, 4),
            "client_cpu_s": round(cpu, 4),
            "steal_s": round(steal, 4),
            "client_cpu_share": round(cpu / available, 3) if available > 0 else 0.0,
            "arms": arms,  # what each arm's server answered (one arm: a plain cell)
        }

    def stop(self) -> None:
        if self.open_loop is not None:
            self.open_loop.stop()
            self.open_loop = None

    def close(self) -> None:
        self.stop()
        self.env.events.request.remove_listener(self.recorder.on_request)
        if self.ca_file is not None:
            self.ca_file.unlink(missing_ok=True)


class CellUser(User):
    """The one user class master and workers share by name (Locust dispatches classes by
    name): each instance drives a user of the current job's transport."""

    job: ClassVar[Job | None] = None

    def wait_time(self) -> float:
        return 0.0

    def on_start(self) -> None:
        assert self.job is not None, "spawned before the master sent a plan"
        self.inner = self.job.user_cls(self.environment)
        self.inner.on_start()

    def on_stop(self) -> None:
        self.inner.on_stop()

    @task
    def predict(self) -> None:
        self.inner.predict()


class WorkerRunner(locust.runners.WorkerRunner):
    """Locust's worker runner with wiremark's message handlers in place before it first
    says client_ready. Locust's constructor connects, so handlers registered after it come
    too late when this process is slow to be scheduled: the master's PLAN, sent as soon as
    the master counts this worker, can arrive in the same read as the ack and is then
    dropped as an unknown message, and the cell waits for a READY that never comes."""

    def __init__(
        self, env: Any, host: str, port: int, handlers: dict[str, tuple[Any, bool]]
    ) -> None:
        self.handlers = handlers
        env.stats = RequestStats(use_response_times_cache=False)  # as create_worker_runner
        env.runner = self  # a handler may run (and send) before the constructor returns
        super().__init__(env, host, port)

    def connect_to_master(self) -> None:  # called again on every retry
        for kind, (handler, concurrent) in self.handlers.items():
            if kind not in self.custom_messages:
                self.register_message(kind, handler, concurrent=concurrent)
        super().connect_to_master()


class Worker:
    """One connection to one master: the handlers of wiremark's messages."""

    def __init__(self, master_host: str, master_port: int) -> None:
        from locust.env import Environment

        locust.runners.WORKER_REPORT_INTERVAL = REPORT_INTERVAL
        self.env = Environment(user_classes=[CellUser])
        self.job: Job | None = None
        self.env.events.report_to_master.add_listener(self.on_report)
        handlers = {
            MSG_PLAN: (self.on_plan, True),  # builds users, may count wire bytes: not inline
            MSG_OPEN: (self.on_open, False),
            MSG_MEASURE: (self.on_measure, False),
            MSG_FINISH: (self.on_finish, False),
            MSG_ARM: (self.on_arm, False),
            MSG_REJOIN: (self.on_rejoin, False),
        }
        WorkerRunner(self.env, master_host, master_port, handlers)  # it is self.env.runner

    @property
    def connection(self) -> WorkerRunner:
        """The runner, also while its constructor is still connecting (`WorkerRunner`)."""
        assert isinstance(self.env.runner, WorkerRunner)
        return self.env.runner

    def send(self, kind: str, data: dict[str, Any]) -> None:
        self.connection.send_message(kind, data)

    def on_plan(self, msg: Any, **_: Any) -> None:
        if self.job is not None:
            self.job.close()
        share = Share(**msg.data["share"])
        try:
            self.job = Job(self.env, msg.data["cell"], share, msg.data.get("ca_pem"))
            CellUser.job = self.job
            wire = self.job.wire_bytes() if share.wire_requests else []
        except Exception as exc:  # a plan this worker cannot run: the master says why
            self.send(MSG_READY, {"index": share.index, "error": f"{type(exc).__name__}: {exc}"})
            return
        self.send(MSG_READY, {"index": share.index, "error": "", "wire": wire})

    def on_open(self, **_: Any) -> None:
        assert self.job is not None
        self.job.open()

    def on_measure(self, **_: Any) -> None:
        assert self.job is not None
        self.job.begin()

    def on_finish(self, **_: Any) -> None:
        assert self.job is not None
        self.send(MSG_RESULT, self.job.finish())

    def on_arm(self, msg: Any, **_: Any) -> None:
        assert self.job is not None
        self.job.switch(msg.data["arm"])

    def on_rejoin(self, **_: Any) -> None:
        from locust import __version__ as locust_version
        from locust.rpc import Message

        runner = self.connection
        runner.client.send(Message("client_ready", locust_version, runner.client_id))

    def on_report(self, data: dict[str, Any], **_: Any) -> None:
        data[REPLIES] = self.job.recorder.replies if self.job is not None else 0

    def run(self) -> None:
        """Until the master says quit."""
        self.connection.greenlet.join()
        if self.job is not None:
            self.job.close()
            self.job = None
        CellUser.job = None


def exit_when_orphaned(parent: int) -> None:
    """Exit once the process that started this one is gone (killed before it could stop
    its workers): a local worker outliving its cell would load the next one's server."""
    while os.getppid() == parent:
        gevent.sleep(0.5)
    os._exit(1)


def serve(master: str, once: bool) -> int:
    """Work for the master at `master`, cell after cell (or for one, `once`)."""
    host, port = parse_address(master)
    # Locust gives up after CONNECT_RETRY_COUNT tries of CONNECT_TIMEOUT s each
    locust.runners.CONNECT_RETRY_COUNT = int(CONNECT_TIMEOUT / locust.runners.CONNECT_TIMEOUT)
    if once:  # a cell's local worker: it ends with the cell's process, however that ends
        gevent.spawn(exit_when_orphaned, os.getppid())
    while True:
        try:
            worker = Worker(host, port)
        except ConnectionError:
            print(
                f"wiremark worker: no master answered at {master} within {CONNECT_TIMEOUT:.0f} s",
                file=sys.stderr,
            )
            return 1
        worker.run()
        if once:
            return 0


def main(argv: Sequence[str] | None = None) -> int:
    from .worker_command import build_parser

    args = build_parser().parse_args(argv)
    try:
        return serve(args.master, args.once)
    except ValueError as exc:
        print(f"wiremark worker: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
