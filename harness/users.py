"""Locust users, one per transport, that report every call the same way.

Each user owns one long-lived connection (a gRPC channel made ready in `on_start`; a
keep-alive HTTP/1.1 connection for HTTP, `harness/http1.py`) and fires `events.request` with
request_type = the transport, name = the model, response_time in ms (measured here with
perf_counter, full resolution), response_length = reply body bytes.

grpcio only cooperates with gevent when `grpc.experimental.gevent.init_gevent()` runs
before any channel exists, and it does not survive fork() once one does: import this module
in a fresh process that makes its channels per user, after any fork (`harness/cell.py`).

Closed loop runs the users through Locust's own runner (a task, no wait). Open loop
(`OpenLoop`) keeps a pool of user instances as connections and schedules sends at a target
rate; each send reports its latency from the time it was *meant* to go out.
"""

from __future__ import annotations

import gzip
import itertools
import random
import time
from typing import Any, ClassVar

import gevent
import gevent.pool
import grpc
import grpc.experimental.gevent as grpc_gevent
import numpy as np
from gevent.queue import Empty, Queue
from locust import User, task

from wiremark.payloads import bodies
from wiremark.payloads.contract import (
    GRPC_METHODS,
    MODEL_FAMILIES,
    SERVER_TIMING,
    Batch,
    PixelEncoding,
    grpc_path,
    predict_path,
)

from .http1 import Connection, prepare

grpc_gevent.init_gevent()


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
    abstract = True
    transport: ClassVar[str]
    address: ClassVar[str] = "127.0.0.1:0"
    workload: ClassVar[Workload] = Workload()

    def wait_time(self) -> float:  # closed loop: the next request as soon as one returns
        return 0.0

    def send(self, sample: bool) -> tuple[bytes, str]:
        """One request; the reply body and (when `sample`) its Server-Timing."""
        raise NotImplementedError

    def request(self, start: float) -> None:
        """Send one request and report it, its latency counted from `start`."""
        sample = self.workload.sampled()
        context: dict[str, Any] = {}
        try:
            reply, timing = self.send(sample)
        except Exception as exc:
            self.fire(start, 0, exc, context)
            return
        if sample:
            context = {"reply": reply, "server_timing": timing}
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


class GrpcUser(TransportUser):
    abstract = True
    transport = "grpc"

    def on_start(self) -> None:
        compression = grpc.Compression.Gzip if self.workload.compression == "gzip" else None
        self.channel = grpc.insecure_channel(
            self.address,
            options=[("grpc.max_receive_message_length", -1)],
            compression=compression,
        )
        grpc.channel_ready_future(self.channel).result(timeout=30)
        family = MODEL_FAMILIES[self.workload.model]
        self.call = self.channel.unary_unary(grpc_path(GRPC_METHODS[family]))
        self.body = bodies.encode(
            "grpc", self.workload.model, self.workload.batch, self.workload.encoding, family
        )

    def on_stop(self) -> None:
        self.channel.close()

    def send(self, sample: bool) -> tuple[bytes, str]:
        try:
            if not sample:
                return self.call(self.body, timeout=30), ""
            reply, call = self.call.with_call(self.body, timeout=30)
        except grpc.RpcError as exc:  # a readable error, as the HTTP users give
            raise RuntimeError(f"gRPC {exc.code().name}: {exc.details()}") from None
        return reply, str(dict(call.trailing_metadata() or ()).get(SERVER_TIMING, ""))


class RestUser(TransportUser):
    abstract = True
    binary: ClassVar[bool] = False

    def on_start(self) -> None:
        host, port = self.address.rsplit(":", 1)
        self.http = Connection(host, int(port), timeout=30)
        body = bodies.encode(
            self.transport, self.workload.model, self.workload.batch, self.workload.encoding
        )
        headers = {"Content-Type": bodies.media_type(self.transport)}
        if self.workload.compression == "gzip":
            body = gzip.compress(body, compresslevel=6)
            headers |= {"Content-Encoding": "gzip", "Accept-Encoding": "gzip"}
        self.request_bytes = prepare(
            "POST", host, int(port), predict_path(self.workload.model), headers, body
        )

    def on_stop(self) -> None:
        self.http.close()

    def send(self, sample: bool) -> tuple[bytes, str]:
        reply = self.http.exchange(self.request_bytes)
        if reply.status != 200:
            raise RuntimeError(f"HTTP {reply.status}: {reply.body[:200]!r}")
        if not sample:
            return reply.body, ""
        data = reply.body
        if reply.header("content-encoding") == "gzip":
            data = gzip.decompress(data)
        return data, reply.header("server-timing") or ""


def user_class(transport: str, address: str, workload: Workload) -> type[TransportUser]:
    """A concrete user class for one target (Locust instantiates classes, not objects)."""
    base: type[TransportUser] = GrpcUser if transport == "grpc" else RestUser
    attrs: dict[str, Any] = {"abstract": False, "address": address, "workload": workload}
    if transport != "grpc":
        attrs.update(transport=transport, binary=transport == "msgpack")
    return type(f"{transport.title()}User", (base,), attrs)


class OpenLoop:
    """Sends at a target rate over a pool of `connections` users, whatever the server does.

    The schedule is fixed up front (evenly spaced, or Poisson: exponential gaps) and each
    send's latency counts from its intended time, so time spent waiting for a free
    connection, or behind a late scheduler, is the server's latency too. A send that starts
    more than LATE_MS behind schedule is `late`; one that found no free connection within
    `max_wait` seconds is `dropped` (never sent).
    """

    LATE_MS = 1.0

    def __init__(
        self,
        environment: Any,
        user_cls: type[TransportUser],
        connections: int,
        rate: float,
        arrival: str = "constant",
        max_wait: float = 1.0,
        seed: int = 0,
    ) -> None:
        self.environment = environment
        self.users = [user_cls(environment) for _ in range(max(1, connections))]
        self.free: Queue = Queue()
        self.rate = rate
        self.arrival = arrival
        self.max_wait = max_wait
        self.rng = np.random.default_rng(seed)
        self.late = 0
        self.dropped = 0
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
        due = time.perf_counter()
        while True:
            for gap in self.gaps(1024):
                due += gap
                wait = due - time.perf_counter()
                if wait > 0:
                    gevent.sleep(wait)
                self.greenlets.spawn(self._send, due)

    def _send(self, due: float) -> None:
        try:
            user = self.free.get(timeout=self.max_wait)
        except Empty:
            self.dropped += 1
            return
        try:
            if (time.perf_counter() - due) * 1000.0 > self.LATE_MS:
                self.late += 1
            user.request(due)
        finally:
            self.free.put(user)

    def reset_counts(self) -> None:
        self.late = self.dropped = 0

    def counts(self) -> dict[str, int]:
        return {"late": self.late, "dropped": self.dropped}

    def stop(self) -> None:
        if self.scheduler is not None:
            self.scheduler.kill()
        self.greenlets.kill(timeout=5)
        for user in self.users:
            user.on_stop()
