"""Locust users, one per transport, that report every call the same way.

Each user owns one long-lived connection (a gRPC channel made ready in `on_start`; a
keep-alive geventhttpclient connection for HTTP) and fires `events.request` with
request_type = the transport, name = the model, response_time in ms (measured here with
perf_counter, full resolution), response_length = reply body bytes.

grpcio only cooperates with gevent when `grpc.experimental.gevent.init_gevent()` runs
before any channel exists, and it does not survive fork() once one does: import this module
in a fresh process that makes its channels per user, after any fork (`harness/cell.py`).
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import grpc
import grpc.experimental.gevent as grpc_gevent
from geventhttpclient import HTTPClient
from locust import User, task

from wiremark.payloads import grpc_codec, rest
from wiremark.payloads.contract import (
    GRPC_METHODS,
    JSON,
    MODEL_FAMILIES,
    MSGPACK,
    Batch,
    PixelEncoding,
    grpc_path,
    predict_path,
)

grpc_gevent.init_gevent()


class Workload:
    """What every user sends: one model, one batch, one pixel encoding, prepared once."""

    model: str = "iris"
    batch: Batch | None = None
    encoding: PixelEncoding = PixelEncoding.RAW


class TransportUser(User):
    abstract = True
    transport: ClassVar[str]
    address: ClassVar[str] = "127.0.0.1:0"
    workload: ClassVar[Workload] = Workload()

    def fire(self, start: float, length: int, exc: Exception | None) -> None:
        self.environment.events.request.fire(
            request_type=self.transport,
            name=self.workload.model,
            response_time=(time.perf_counter() - start) * 1000.0,
            response_length=length,
            exception=exc,
            context={},
        )


class GrpcUser(TransportUser):
    abstract = True
    transport = "grpc"

    def on_start(self) -> None:
        self.channel = grpc.insecure_channel(self.address)
        grpc.channel_ready_future(self.channel).result(timeout=30)
        family = MODEL_FAMILIES[self.workload.model]
        self.call = self.channel.unary_unary(grpc_path(GRPC_METHODS[family]))
        self.body = grpc_codec.encode_request(
            family,
            self.workload.model,
            self.workload.batch,
            self.workload.encoding,  # type: ignore[arg-type]
        ).SerializeToString()

    def on_stop(self) -> None:
        self.channel.close()

    def wait_time(self) -> float:  # closed loop: the next request as soon as one returns
        return 0.0

    @task
    def predict(self) -> None:
        start = time.perf_counter()
        try:
            reply = self.call(self.body, timeout=30)
        except grpc.RpcError as exc:
            self.fire(start, 0, exc)
            return
        self.fire(start, len(reply), None)


class RestUser(TransportUser):
    abstract = True
    binary: ClassVar[bool] = False

    def on_start(self) -> None:
        host, port = self.address.rsplit(":", 1)
        self.http = HTTPClient(
            host, int(port), concurrency=1, network_timeout=30, connection_timeout=30
        )
        family = MODEL_FAMILIES[self.workload.model]
        body: Any = rest.encode_request(
            family,
            self.workload.batch,
            binary=self.binary,
            encoding=self.workload.encoding,  # type: ignore[arg-type]
        )
        self.body = rest.dump_msgpack(body) if self.binary else rest.dump_json(body)
        self.headers = {"Content-Type": MSGPACK if self.binary else JSON}
        self.path = predict_path(self.workload.model)

    def on_stop(self) -> None:
        self.http.close()

    def wait_time(self) -> float:
        return 0.0

    @task
    def predict(self) -> None:
        start = time.perf_counter()
        try:
            response = self.http.post(self.path, body=self.body, headers=self.headers)
            data = response.read()
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code}: {data[:200]!r}")
        except Exception as exc:
            self.fire(start, 0, exc)
            return
        self.fire(start, len(data), None)


def user_class(transport: str, address: str, workload: Workload) -> type[TransportUser]:
    """A concrete user class for one target (Locust instantiates classes, not objects)."""
    base: type[TransportUser] = GrpcUser if transport == "grpc" else RestUser
    attrs: dict[str, Any] = {"abstract": False, "address": address, "workload": workload}
    if transport != "grpc":
        attrs.update(transport=transport, binary=transport == "msgpack")
    return type(f"{transport.title()}User", (base,), attrs)
