"""One client per transport over the codecs in `wiremark.payloads`, behind one interface.

    client = connect("grpc", "127.0.0.1:50051")     # or "json", "msgpack"
    reply = client.predict("iris", rows)            # Reply: prediction, timings, bytes
    client.close()

gRPC keeps one channel, ready before the first call; HTTP keeps one pooled keep-alive
httpx client. Every foreign failure (grpc.RpcError, an HTTP error status, a timeout, a
refused connection) is raised as a `wiremark.payloads.errors.WiremarkError` subclass, so
callers handle one hierarchy whatever the transport.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx

from wiremark.payloads import bodies, errors
from wiremark.payloads import wiremark_pb2 as pb
from wiremark.payloads.contract import (
    GRPC_METADATA_METHOD,
    GRPC_METHODS,
    MODEL_FAMILIES,
    SERVER_TIMING,
    TRANSPORTS,
    Batch,
    Family,
    PixelEncoding,
    Prediction,
    grpc_path,
    metadata_path,
    predict_path,
)
from wiremark.payloads.timing import parse_server_timing

CONNECT_TIMEOUT = 10.0  # the most seconds to wait for a server to answer at all


@dataclass
class Reply:
    prediction: Prediction
    server_ms: dict[str, float] = field(default_factory=dict)  # decode / infer / encode
    request_bytes: int = 0  # the body (the protobuf message for gRPC)
    response_bytes: int = 0


class Client(ABC):
    transport: str

    def __init__(self, address: str, timeout: float = 30.0) -> None:
        self.address = address
        self.timeout = timeout

    @abstractmethod
    def predict(
        self,
        model: str,
        batch: Batch,
        encoding: PixelEncoding = PixelEncoding.RAW,
        family: Family | None = None,
    ) -> Reply:
        """One request. `family` defaults to the model's own (a model this project does not
        know needs it named)."""

    @abstractmethod
    def metadata(self, model: str) -> dict[str, Any]: ...

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class GrpcClient(Client):
    transport = "grpc"

    def __init__(self, address: str, timeout: float = 30.0) -> None:
        super().__init__(address, timeout)
        wait = min(timeout, CONNECT_TIMEOUT)
        self.channel = grpc.insecure_channel(
            address, options=[("grpc.max_receive_message_length", -1)]
        )
        try:
            grpc.channel_ready_future(self.channel).result(timeout=wait)
        except grpc.FutureTimeoutError:
            self.channel.close()
            raise errors.Unreachable(
                f"no gRPC server answered at {address} within {wait:g} s"
            ) from None
        # bytes in, bytes out: encoding and decoding stay visible to the caller's clock
        self._calls = {m: self.channel.unary_unary(grpc_path(m)) for m in GRPC_METHODS.values()}
        self._metadata = self.channel.unary_unary(grpc_path(GRPC_METADATA_METHOD))

    def predict(
        self,
        model: str,
        batch: Batch,
        encoding: PixelEncoding = PixelEncoding.RAW,
        family: Family | None = None,
    ) -> Reply:
        family = family or MODEL_FAMILIES[model]
        data = bodies.encode("grpc", model, batch, encoding, family)
        try:
            reply, call = self._calls[GRPC_METHODS[family]].with_call(data, timeout=self.timeout)
        except grpc.RpcError as exc:
            raise errors.from_grpc(exc.code(), exc.details()) from None
        timing = dict(call.trailing_metadata() or ()).get(SERVER_TIMING)
        return Reply(
            bodies.decode("grpc", family, reply),
            parse_server_timing(timing),  # type: ignore[arg-type]
            len(data),
            len(reply),
        )

    def metadata(self, model: str) -> dict[str, Any]:
        try:
            reply = self._metadata(
                pb.MetadataRequest(model=model).SerializeToString(), timeout=self.timeout
            )
        except grpc.RpcError as exc:
            raise errors.from_grpc(exc.code(), exc.details()) from None
        meta = pb.ModelMetadata.FromString(reply)
        return {f.name: getattr(meta, f.name) for f in meta.DESCRIPTOR.fields} | {
            "versions": dict(meta.versions)
        }

    def close(self) -> None:
        self.channel.close()


class HttpClient(Client):
    def __init__(self, address: str, timeout: float = 30.0, *, binary: bool) -> None:
        super().__init__(address, timeout)
        self.binary = binary
        self.transport = "msgpack" if binary else "json"
        self.media = bodies.media_type(self.transport)
        self.http = httpx.Client(
            base_url=f"http://{address}",
            timeout=httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT)),
            trust_env=False,
        )

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise errors.DeadlineExceeded(
                f"no answer from {self.address} in {self.timeout} s"
            ) from None
        except httpx.TransportError as exc:
            raise errors.Unreachable(f"{self.address}: {exc}") from None
        if response.status_code != 200:
            try:
                body = response.json()
            except ValueError:
                body = None
            raise errors.from_http(response.status_code, body)
        return response

    def predict(
        self,
        model: str,
        batch: Batch,
        encoding: PixelEncoding = PixelEncoding.RAW,
        family: Family | None = None,
    ) -> Reply:
        family = family or MODEL_FAMILIES[model]
        data = bodies.encode(self.transport, model, batch, encoding, family)
        response = self._send(
            "POST", predict_path(model), content=data, headers={"content-type": self.media}
        )
        return Reply(
            bodies.decode(
                self.transport, family, response.content, response.headers.get("content-type")
            ),
            parse_server_timing(response.headers.get("server-timing")),
            len(data),
            len(response.content),
        )

    def metadata(self, model: str) -> dict[str, Any]:
        return self._send("GET", metadata_path(model)).json()  # type: ignore[no-any-return]

    def close(self) -> None:
        self.http.close()


def connect(transport: str, address: str, timeout: float = 30.0) -> Client:
    if transport == "grpc":
        return GrpcClient(address, timeout)
    if transport in ("json", "msgpack"):
        return HttpClient(address, timeout, binary=transport == "msgpack")
    raise ValueError(f"unknown transport {transport!r}: choose from {', '.join(TRANSPORTS)}")
