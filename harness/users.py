"""Locust users over any registered transport, reporting every call the same way, and the
open-loop scheduler.

Each user owns one long-lived connection, made by its wire's user class
(`harness/transports/`: a ready gRPC channel, or a keep-alive HTTP/1.1 connection), and
fires `events.request` with request_type = the transport, name = the model, response_time
in ms (measured here with perf_counter, full resolution), response_length = reply body bytes.

Importing Locust patches the process for gevent, and grpcio only cooperates with gevent
when patched before any channel exists and does not survive fork() once one does: use
this module in a fresh load-worker process (`harness/worker.py`), never in one that
already holds a channel.

Closed loop runs the users through Locust's own runner (a task, no wait). Open loop
(`OpenLoop`) keeps a pool of user instances as connections and schedules sends at a target
rate; each send reports its latency from the time it was *meant* to go out.
"""

from __future__ import annotations

import itertools
import random
import time
from typing import Any, ClassVar

import gevent
import gevent.pool
import numpy as np
from gevent.queue import Empty, Queue
from locust import User, task

from wiremark.payloads.contract import MODEL_FAMILIES, Batch, Family, PixelEncoding
from wiremark.payloads.transport import BodyCodec
from wiremark.reports.records import LEAN

from .tls import Trust


class Workload:
    """What every user sends: one model, one batch, one pixel encoding, prepared once."""

    model: str = "iris"
    batch: Batch | None = None
    encoding: PixelEncoding = PixelEncoding.RAW
    compression: str = "none"  # or "gzip": compressed requests, compressed replies accepted
    sample_size: int = 0  # replies to pass to the listeners, spread over the run; 0: none

    def __init__(self) -> None:
        self.calls = itertools.count(1)  # shared by the users
        self.rng = random.Random(0)

    def sampled(self) -> bool:
        """Whether the next call is offered as a sample: call i with probability k / i, which
        with the listener's reservoir keeps k replies drawn evenly from every call so far
        (decided before the call: a sampled gRPC call also fetches its trailing metadata)."""
        k = self.sample_size
        if not k:
            return False
        i = next(self.calls)
        return i <= k or self.rng.random() < k / i


class TransportUser(User):
    """The wire's user (`harness/transports/`) adds `on_start`, `on_stop` and `send`."""

    abstract = True
    transport: ClassVar[str]
    codec: ClassVar[BodyCodec]
    address: ClassVar[str] = "127.0.0.1:0"
    tls: ClassVar[Trust | None] = None  # over TLS, verifying the server against this
    workload: ClassVar[Workload] = Workload()
    arm: ClassVar[int] = 0  # which arm of an interleaved A/B cell this server is

    @property
    def family(self) -> Family:
        return MODEL_FAMILIES[self.workload.model]

    def wait_time(self) -> float:  # closed loop: the next request as soon as one returns
        return 0.0

    def send(self, sample: bool) -> tuple[bytes, str]:
        """One request; the reply body and (when `sample`) its Server-Timing."""
        raise NotImplementedError

    def request(self, start: float, behind_ms: float | None = None) -> None:
        """Send one request and report it, its latency counted from `start`; `behind_ms`
        (open loop): how late after `start` it was actually sent, for the listeners'
        uncorrected latency."""
        sample = self.workload.sampled()
        context: dict[str, Any] = {"arm": self.arm}
        if behind_ms is not None:
            context["behind_ms"] = behind_ms
        try:
            reply, timing = self.send(sample)
        except Exception as exc:
            self.fire(start, 0, exc, context)
            return
        if sample:
            context |= {"reply": reply, "server_timing": timing}
        self.fire(start, len(reply), None, context)

    @task
    def predict(self) -> None:
        self.request(time.perf_counter())

    def fire(self, start: float, length: int, exc: Exception | None, context: dict) -> None:
        self.environment.events.request.fire(
            request_type=self.transport,
            name=self.workload.model,
            response_time=(time.perf_counter() - start) * 1000.0,
            response_length=length,
            exception=exc,
            context=context,
        )


def user_class(
    transport: str,
    address: str,
    workload: Workload,
    client: str = LEAN,
    tls: Trust | None = None,
    arm: int = 0,
) -> type[TransportUser]:
    """A concrete user class for one target (Locust instantiates classes, not objects), on
    the Locust user of the transport's wire for the `client` library (`base.CLIENTS`), over
    TLS when given a `Trust`."""
    from wiremark.payloads import transport as transports

    from .transports import for_wire

    descriptor = transports.get(transport)
    base: type[TransportUser] = for_wire(descriptor.wire).user_base(client)
    attrs: dict[str, Any] = {
        "abstract": False,
        "address": address,
        "tls": tls,
        "workload": workload,
        "transport": descriptor.name,
        "codec": descriptor.codec,
        "arm": arm,
    }
    return type(f"{descriptor.name.title().replace('-', '')}User", (base,), attrs)


class Clock:
    """Which arm an interleaved A/B cell sends to now: the master says when it changes."""

    def __init__(self) -> None:
        self.arm = 0


def alternating(arms: list[type[TransportUser]], clock: Clock) -> type[User]:
    """A user that holds a connection to each arm's server and sends each request to the
    arm the clock names: the closed loop's users and the open loop's connections alike.
    A request in flight when the arm changes finishes on the arm it was sent to, and
    counts there (each arm's users say so in their reports' context)."""

    class AlternatingUser(User):
        abstract = False

        def __init__(self, environment: Any) -> None:
            super().__init__(environment)
            self.inners = [cls(environment) for cls in arms]

        def wait_time(self) -> float:
            return 0.0

        def on_start(self) -> None:
            for inner in self.inners:
                inner.on_start()

        def on_stop(self) -> None:
            for inner in self.inners:
                inner.on_stop()

        def request(
            self, start: float, behind_ms: float | None = None, arm: int | None = None
        ) -> None:
            """One request to `arm` (the open loop's: the arm when it was due), or to the
            arm of now."""
            self.inners[clock.arm if arm is None else arm].request(start, behind_ms)

        @task
        def predict(self) -> None:
            self.inners[clock.arm].predict()

    return AlternatingUser


class OpenLoop:
    """Sends at a target rate over a pool of `connections` users, whatever the server does.

    The schedule is fixed up front (evenly spaced, or Poisson: exponential gaps) and each
    send's latency counts from its intended time, so time spent waiting for a free
    connection, or behind a late scheduler, is the server's latency too. A send that starts
    more than LATE_MS behind schedule is `late`; one that found no free connection within
    `max_wait` seconds is `dropped` (never sent). Each send also tells the listeners how far
    behind schedule it went out (`behind_ms`), for the uncorrected latency. The schedule
    starts `phase` seconds late (several workers' schedules interleave).
    """

    LATE_MS = 1.0

    def __init__(
        self,
        environment: Any,
        user_cls: type[Any],  # a TransportUser, or an `alternating` one (with `clock`)
        connections: int,
        rate: float,
        arrival: str = "constant",
        max_wait: float = 1.0,
        seed: int = 0,
        phase: float = 0.0,
        clock: Clock | None = None,
    ) -> None:
        self.environment = environment
        # interleaved A/B: each send goes to the arm of its due time, and counts there
        self.clock = clock
        self.users = [user_cls(environment) for _ in range(max(1, connections))]
        self.free: Queue = Queue()
        self.rate = rate
        self.arrival = arrival
        self.max_wait = max_wait
        self.rng = np.random.default_rng(seed)
        self.phase = phase
        self.late = [0, 0]  # per arm
        self.dropped = [0, 0]
        self.greenlets = gevent.pool.Group()
        self.scheduler: gevent.Greenlet | None = None

    def start(self) -> None:
        for user in self.users:
            user.on_start()
            self.free.put(user)
        self.scheduler = gevent.spawn(self._schedule)

    def gaps(self, n: int) -> Any:
        if self.arrival == "poisson":
            return self.rng.exponential(1.0 / self.rate, n)
        return np.full(n, 1.0 / self.rate)

    def _schedule(self) -> None:
        due = time.perf_counter() + self.phase
        while True:
            for gap in self.gaps(1024):
                due += gap
                wait = due - time.perf_counter()
                if wait > 0:
                    gevent.sleep(wait)
                self.greenlets.spawn(self._send, due)

    def _send(self, due: float) -> None:
        arm = self.clock.arm if self.clock else 0
        try:
            user = self.free.get(timeout=self.max_wait)
        except Empty:
            self.dropped[arm] += 1
            return
        try:
            behind = (time.perf_counter() - due) * 1000.0
            if behind > self.LATE_MS:
                self.late[arm] += 1
            if self.clock:
                user.request(due, max(0.0, behind), arm=arm)
            else:
                user.request(due, max(0.0, behind))
        finally:
            self.free.put(user)

    def reset_counts(self) -> None:
        self.late, self.dropped = [0, 0], [0, 0]

    def counts(self, arm: int = 0) -> dict[str, int]:
        return {"late": self.late[arm], "dropped": self.dropped[arm]}

    def stop(self) -> None:
        if self.scheduler is not None:
            self.scheduler.kill()
        self.greenlets.kill(timeout=5)
        for user in self.users:
            user.on_stop()
