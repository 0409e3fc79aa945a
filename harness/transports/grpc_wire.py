"""The gRPC wire (HTTP/2): a grpcio client, two Locust users, grpc.health.v1, h2load.

The client for conformance and metadata is a grpcio channel. Calls go through generic
unary-unary methods with bytes in and bytes out, so the codec's encode and decode stay
visible to the caller's clock.

The Locust users, one per client library (`base.CLIENTS`):
- lean (the default): one HTTP/2 connection per user with a prepared call
  (`harness/http2.py`), so the cell measures the server;
- library: grpcio patched for gevent (`grpc.experimental.gevent.init_gevent()`, before any
  channel of the process exists), one channel per user, ready before timing: what a stock
  Python client pays per call.
"""

from __future__ import annotations

import functools
import re
import statistics
from pathlib import Path
from typing import Any, ClassVar

import grpc

from wiremark.payloads import errors
from wiremark.payloads.contract import GRPC_ECHO_PATH, SERVER_TIMING, Family
from wiremark.payloads.timing import parse_server_timing
from wiremark.payloads.transport import WIRE_GRPC, Transport, health_call

from ..tls import Trust
from .base import CONNECT_TIMEOUT, LEAN, LIBRARY, Client, Driver, ToolSample

CHANNEL_OPTIONS = [("grpc.max_receive_message_length", -1)]


def channel(address: str, tls: Trust | None, **kwargs: Any) -> grpc.Channel:
    """A grpcio channel to `address`, over TLS verifying the server when given a `Trust`."""
    if tls is None:
        return grpc.insecure_channel(address, **kwargs)
    return grpc.secure_channel(address, tls.grpc_credentials(), **kwargs)  # type: ignore[arg-type]


class GrpcClient(Client):
    def __init__(
        self, transport: Transport, address: str, timeout: float = 30.0, tls: Trust | None = None
    ) -> None:
        super().__init__(transport, address, timeout, tls)
        wait = min(timeout, CONNECT_TIMEOUT)
        self.channel = channel(address, tls, options=CHANNEL_OPTIONS)
        try:
            grpc.channel_ready_future(self.channel).result(timeout=wait)
        except grpc.FutureTimeoutError:
            why = self._why_not_ready()
            self.channel.close()
            raise errors.Unreachable(
                f"no gRPC server answered at {address} within {wait:g} s"
                + (f" ({why})" if why else "")
            ) from None
        self._calls: dict[str, Any] = {}

    def _why_not_ready(self) -> str:
        """What grpcio says stopped the connection (a refused port, a certificate it could
        not verify), from one call that does not wait for a ready channel."""
        try:
            self.channel.unary_unary("/grpc.health.v1.Health/Check")(b"", timeout=2)
        except grpc.RpcError as exc:
            return str(exc.details() or "")[:300]
        return ""

    def _call(self, path: str) -> Any:
        call = self._calls.get(path)
        if call is None:
            call = self._calls[path] = self.channel.unary_unary(path)
        return call

    def exchange(self, model: str, family: Family, body: bytes) -> tuple[bytes, dict[str, float]]:
        try:
            route = self.codec.route(family, model)
            reply, call = self._call(route).with_call(body, timeout=self.timeout)
        except grpc.RpcError as exc:
            raise errors.from_grpc(exc.code(), exc.details()) from None
        timing = dict(call.trailing_metadata() or ()).get(SERVER_TIMING)
        return reply, parse_server_timing(timing)  # type: ignore[arg-type]

    def metadata(self, model: str) -> dict[str, Any]:
        path, request = self.codec.metadata_call(model)
        try:
            reply = self._call(path)(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            raise errors.from_grpc(exc.code(), exc.details()) from None
        return self.codec.decode_metadata(reply)

    def close(self) -> None:
        self.channel.close()


@functools.cache
def _lean_user() -> type[Any]:
    from ..http2 import Connection
    from ..users import TransportUser

    class LeanGrpcUser(TransportUser):
        """One HTTP/2 connection with a prepared call (`harness/http2.py`)."""

        abstract = True

        def on_start(self) -> None:
            w = self.workload
            host, port = self.address.rsplit(":", 1)
            tls = self.tls.ssl_context(alpn=("h2",)) if self.tls else None
            self.conn = Connection(host, int(port), timeout=30, tls=tls)
            self.conn.connect()  # ready before timing, as a grpcio channel is
            family = self.family
            body = self.codec.encode_request(family, w.model, w.batch, w.encoding)
            path = self.codec.route(family, w.model)
            self.call = self.conn.prepare(path, body, gzip=w.compression == "gzip")

        def on_stop(self) -> None:
            self.conn.close()

        def send(self, sample: bool) -> tuple[bytes, str]:
            reply = self.conn.exchange(self.call)
            if reply.status:  # a readable error, as the HTTP users give
                raise RuntimeError(f"gRPC {reply.code}: {reply.message}")
            return reply.body, (reply.header(SERVER_TIMING) or "") if sample else ""

    return LeanGrpcUser


@functools.cache
def _library_user() -> type[Any]:
    import grpc.experimental.gevent as grpc_gevent

    grpc_gevent.init_gevent()  # before any channel of this process exists
    from ..users import TransportUser

    class GrpcioUser(TransportUser):
        """grpcio, patched for gevent: one channel per user."""

        abstract = True

        def on_start(self) -> None:
            w = self.workload
            compression = grpc.Compression.Gzip if w.compression == "gzip" else None
            self.channel = channel(
                self.address, self.tls, options=CHANNEL_OPTIONS, compression=compression
            )
            grpc.channel_ready_future(self.channel).result(timeout=30)
            family = self.family
            self.call = self.channel.unary_unary(self.codec.route(family, w.model))
            self.body = self.codec.encode_request(family, w.model, w.batch, w.encoding)

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

    return GrpcioUser


class GrpcDriver(Driver):
    wire = WIRE_GRPC
    tool = "h2load"
    tool_package = "nghttp2-client"
    echo_path = GRPC_ECHO_PATH
    clients: ClassVar[dict[str, str]] = {
        LEAN: "one HTTP/2 connection per user, prepared frames, hpack (harness/http2.py)",
        LIBRARY: "grpcio patched for gevent, one channel per user, ready before timing",
    }

    def client(
        self, transport: Transport, address: str, timeout: float = 30.0, tls: Trust | None = None
    ) -> Client:
        return GrpcClient(transport, address, timeout, tls)

    def user_base(self, client: str = LEAN) -> type[Any]:
        return _lean_user() if client == LEAN else _library_user()

    def healthy(self, address: str, codec: Any = None, tls: Trust | None = None) -> bool:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        call = health_call(codec) if codec is not None else None
        with channel(address, tls) as chan:
            if call is not None:
                try:
                    reply = chan.unary_unary(call[0])(call[1], timeout=2)
                except grpc.RpcError:
                    return False
                return bool(codec.healthy_reply(reply))
            stub = health_pb2_grpc.HealthStub(chan)
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
            except grpc.RpcError:
                return False
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def send(
        self,
        address: str,
        path: str,
        body: bytes,
        media: str,
        timeout: float,
        headers: dict[str, str] | None = None,
    ) -> bytes:
        try:
            with grpc.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
                return bytes(channel.unary_unary(path)(body, timeout=timeout))
        except grpc.RpcError as exc:
            raise RuntimeError(f"gRPC {exc.code().name}: {exc.details()}") from None

    def tool_file(
        self, body: bytes, media: str, tmp: Path, name: str, headers: dict[str, str] | None = None
    ) -> Path:
        file = tmp / f"{name}.bin"  # h2load's body: the message with gRPC's 5-byte prefix
        file.write_bytes(b"\x00" + len(body).to_bytes(4, "big") + body)
        return file

    def tool_argv(
        self, url: str, file: Path, conns: int, duration: int, tmp: Path
    ) -> tuple[list[str] | None, list[str]]:
        (tmp / "h2load.log").unlink(missing_ok=True)  # h2load appends to its log
        argv = ["h2load", "-t1", f"-c{conns}", "-m1", f"-D{duration}", "--warm-up-time=1"]
        argv += ["--log-file", str(tmp / "h2load.log"), "-d", str(file)]
        argv += ["-H", "content-type: application/grpc", "-H", "te: trailers", url]
        return None, argv

    def tool_sample(self, out: str, url: str, reply_len: int, tmp: Path) -> ToolSample:
        rps = re.search(r"^finished in \S+, ([\d.]+) req/s", out, re.M)
        counts = re.search(
            r"^requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, "
            r"(\d+) errored, (\d+) timeout",
            out,
            re.M,
        )
        data = re.search(r"^traffic: .*\((\d+)\) data", out, re.M)
        if rps is None or counts is None or data is None:
            raise RuntimeError(f"h2load printed no summary for {url}:\n{out}")
        done, succeeded, failed, errored, timeouts = (int(g) for g in counts.groups())
        if failed or errored or timeouts or not succeeded or succeeded < done:
            raise RuntimeError(f"h2load {url}: {out[out.index('requests:') :][:300]}")
        # Every good reply carries a 5-byte-prefixed message; an error is trailers only.
        if int(data.group(1)) < 0.98 * done * (5 + reply_len):
            raise RuntimeError(f"h2load {url}: replies without data (gRPC errors?)")
        rows = [line.split("\t") for line in (tmp / "h2load.log").read_text().splitlines()]
        if any(row[1] != "200" for row in rows):
            raise RuntimeError(f"h2load {url}: non-200 statuses in its log")
        p50_ms = statistics.median(int(row[2]) for row in rows) / 1000.0
        return ToolSample(float(rps.group(1)), p50_ms, done)
