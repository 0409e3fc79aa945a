"""The "grpcio" server kind: grpcio's thread-pool server (default) or its asyncio server,
serving the gRPC services of every API whose transports name this kind: wiremark's own
`wiremark.v1.Inference` (`grpc`, here), TF Serving's PredictionService and ModelService
(`tfs-grpc`, `servers/tfs_grpc.py`) and the Open Inference Protocol's
`inference.GRPCInferenceService` (`oip-grpc`, `servers/oip_grpc.py`). A plugin adds an
API with `register_grpc_api`.

Methods are registered with pass-through (bytes) serializers, so protobuf parsing and
serialization happen inside the handler and are timed as `decode` and `encode`; the timings
travel back in the `server-timing` trailing metadata. Standard health checking
(grpc.health.v1) says SERVING only once every model is loaded and warm; server reflection
is on.

Why the thread pool is the default: on one core here, alternating h2load runs (c16, 2 s,
6 pairs, steal-filtered) gave the thread-pool server 4,080-5,590 req/s as a bare echo and
3,060-3,670 with the iris model, against 2,120-3,400 and 1,360-2,380 for grpc.aio with the
same settings: about 1.6x the throughput. (The asyncio server pays for its event loop and
its poller thread on every call; the thread pool's hand-off is cheaper in grpcio 1.85.)
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import signal
import threading
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from wiremark.payloads import grpc_codec
from wiremark.payloads import transport as transports
from wiremark.payloads import wiremark_pb2 as pb
from wiremark.payloads.contract import (
    GRPC_METADATA_METHOD,
    GRPC_METHODS,
    GRPC_SERVICE,
    SERVER_TIMING,
    Batch,
    Family,
)
from wiremark.payloads.errors import InvalidInput, WiremarkError, grpc_status

from .pipeline import Pipeline, Slowdown
from .runner import Runner
from .service import ModelService

if TYPE_CHECKING:
    from .serve import ServeOptions, TlsFiles

log = logging.getLogger(__name__)

SERVER_KIND = "grpcio"
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
GRPC_MODES = ("threads", "aio")  # the first is the default
DEFAULT_THREADS = 16  # the thread-pool server's workers


def server_options(max_body_bytes: int, reuse_port: bool = False) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", max_body_bytes),
        ("grpc.max_send_message_length", -1),
        # only a worker of --workers N shares its port: otherwise a port another process
        # holds with SO_REUSEPORT would be joined, not refused
        ("grpc.so_reuseport", 1 if reuse_port else 0),
    ]


def new_server(
    mode: str,
    max_body_bytes: int,
    threads: int = DEFAULT_THREADS,
    compression: str = "none",
    reuse_port: bool = False,
    max_in_flight: int | None = None,
) -> tuple[Any, Any]:
    """A grpc server of the mode, with the settings every server here shares (the model
    server and the echo of `wiremark overhead`), and its health servicer, registered.
    In asyncio mode this must run inside the event loop. `max_in_flight`: grpcio refuses
    calls past it with RESOURCE_EXHAUSTED ("Concurrent RPC limit exceeded") instead of
    queueing them."""
    options = server_options(max_body_bytes, reuse_port)
    # compressed requests are always accepted; this compresses every reply
    reply_compression = grpc.Compression.Gzip if compression == "gzip" else None
    if mode == "aio":
        server: Any = grpc.aio.server(
            options=options,
            compression=reply_compression,
            maximum_concurrent_rpcs=max_in_flight,
        )
        servicer: Any = health.aio.HealthServicer()
    else:
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=threads),
            options=options,
            compression=reply_compression,
            maximum_concurrent_rpcs=max_in_flight,
        )
        servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    return server, servicer


def bind_port(server: Any, host: str, port: int, tls: TlsFiles | None = None) -> int:
    """Bind host:port (port 0 picks one), with TLS when given its files, and return the
    port bound."""
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        if tls is None:
            bound = int(server.add_insecure_port(address))
        else:
            credentials = grpc.ssl_server_credentials([tls.pem()])
            bound = int(server.add_secure_port(address, credentials))
    except RuntimeError:  # grpcio's "Failed to bind": the port is taken, or no such address
        bound = 0
    if bound == 0:
        raise OSError(f"could not bind gRPC to {address}: address in use or not available")
    return bound


@dataclass(frozen=True)
class Method:
    """One unary method: a `Pipeline` (decode, infer, encode: timed, its laps sent back as
    `server-timing`) or a plain `handler` (bytes -> bytes: metadata, status)."""

    pipeline: Pipeline | None = None
    handler: Callable[[bytes], bytes] | None = None


# service's full name -> method name -> Method
Services = dict[str, dict[str, Method]]


@dataclass(frozen=True)
class GrpcApi:
    """The gRPC services of one API (a transport's `api`): `module.services(service,
    slowdown)` builds them. Imported on first use, as server kinds are."""

    name: str
    module: str

    def services(self, service: ModelService, slowdown: Slowdown) -> Services:
        built: Services = importlib.import_module(self.module).services(service, slowdown)
        return built


GRPC_APIS: dict[str, GrpcApi] = {}


def register_grpc_api(api: GrpcApi) -> GrpcApi:
    GRPC_APIS[api.name] = api
    return api


def failure(exc: Exception) -> tuple[grpc.StatusCode, str]:
    """A request's failure as the gRPC status it earns (a bug is INTERNAL, and logged)."""
    if isinstance(exc, WiremarkError):
        return grpc_status(exc), str(exc)
    log.exception("internal error while serving a request")
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"


def services(service: ModelService, slowdown: Slowdown) -> Services:
    """wiremark's own API, `wiremark.v1.Inference`: one typed method per model family."""
    codec = transports.ProtobufCodec()
    runners = service.runners

    def decoder(family: Family) -> Callable[[bytes], tuple[Runner, Batch, Any]]:
        """`decode(data) -> (runner, batch, None)` for one method's requests (the model's
        name travels inside the message), with what every request needs looked up once."""
        request_type = grpc_codec.REQUEST_TYPES[family]

        def decode(data: bytes) -> tuple[Runner, Batch, Any]:
            request: Any = grpc_codec.parse(request_type, data)
            name = request.model
            runner = runners.get(name)
            if runner is None:
                runner = service.runner(grpc_codec.check_model_name(name, request_type))
            if runner.family is not family:
                method = GRPC_METHODS[runner.family]
                raise InvalidInput(
                    f"model {runner.name!r} is served by {method}, not this method", "model"
                )
            batch, form = codec.decode_request(family, request, service.limits(runner))
            return runner, batch, form

        return decode

    def metadata(data: bytes) -> bytes:
        request: Any = grpc_codec.parse(pb.MetadataRequest, data)
        name = grpc_codec.check_model_name(request.model, pb.MetadataRequest)
        info = service.runner(name).metadata()
        return pb.ModelMetadata(**_metadata_fields(info)).SerializeToString()  # type: ignore[arg-type]

    methods = {
        name: Method(Pipeline(decoder(family), codec.encode_reply, slowdown))
        for family, name in GRPC_METHODS.items()
    }
    methods[GRPC_METADATA_METHOD] = Method(handler=metadata)
    return {GRPC_SERVICE: methods}


def _metadata_fields(info: dict[str, object]) -> dict[str, object]:
    keep = {f.name for f in pb.ModelMetadata.DESCRIPTOR.fields}
    return {k: v for k, v in info.items() if k in keep}


def _aio(method: Method) -> Callable[..., Any]:
    if method.pipeline is not None:
        run = method.pipeline.run_async

        async def call(data: bytes, context: grpc.aio.ServicerContext) -> bytes:
            try:
                out, laps = await run(data)
            except Exception as exc:
                await context.abort(*failure(exc))
            context.set_trailing_metadata(((SERVER_TIMING, laps.header()),))
            return out

        return call
    handler = method.handler
    assert handler is not None

    async def plain(data: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            return handler(data)
        except Exception as exc:
            await context.abort(*failure(exc))
            raise  # unreachable: abort raises

    return plain


def _threads(method: Method) -> Callable[..., Any]:
    if method.pipeline is not None:
        run = method.pipeline.run

        def call(data: bytes, context: grpc.ServicerContext) -> bytes:
            try:
                out, laps = run(data)
            except Exception as exc:
                context.abort(*failure(exc))
            context.set_trailing_metadata(((SERVER_TIMING, laps.header()),))
            return out

        return call
    handler = method.handler
    assert handler is not None

    def plain(data: bytes, context: grpc.ServicerContext) -> bytes:
        try:
            return handler(data)
        except Exception as exc:
            context.abort(*failure(exc))
            raise

    return plain


def generic_handlers(built: Services, mode: str) -> list[grpc.GenericRpcHandler]:
    wrap = _aio if mode == "aio" else _threads
    return [
        grpc.method_handlers_generic_handler(
            name, {m: grpc.unary_unary_rpc_method_handler(wrap(h)) for m, h in methods.items()}
        )
        for name, methods in built.items()
    ]


register_grpc_api(GrpcApi("wiremark", "wiremark.servers.grpc_server"))
register_grpc_api(GrpcApi("tf-serving", "wiremark.servers.tfs_grpc"))
register_grpc_api(GrpcApi("open-inference", "wiremark.servers.oip_grpc"))


def served_services(service: ModelService, slowdown: Slowdown) -> Services:
    """The services of every API whose transports this server kind serves."""
    built: Services = {}
    for api in dict.fromkeys(t.api for t in transports.served_by(SERVER_KIND)):
        if api not in GRPC_APIS:
            raise ValueError(f"no gRPC API {api!r} is registered (register_grpc_api)")
        built |= GRPC_APIS[api].services(service, slowdown)
    return built


class GrpcServer:
    """Owns a grpc server in either mode; `start()` binds and returns the port."""

    def __init__(
        self,
        service: ModelService,
        host: str,
        port: int,
        mode: str = GRPC_MODES[0],
        threads: int = DEFAULT_THREADS,
        reuse_port: bool = False,
        tls: TlsFiles | None = None,
    ) -> None:
        if mode not in GRPC_MODES:
            raise ValueError(f"unknown gRPC mode {mode!r}: choose {' or '.join(GRPC_MODES)}")
        self.service, self.host, self.port, self.mode, self.threads = (
            service,
            host,
            port,
            mode,
            threads,
        )
        self.reuse_port = reuse_port
        self.tls = tls
        self.server: Any = None
        self.health: Any = None
        self.services: tuple[str, ...] = ()

    def _build(self) -> None:
        """Create the grpc server; in asyncio mode this must run inside the event loop."""
        config = self.service.config
        self.server, self.health = new_server(
            self.mode,
            config.max_body_bytes,
            self.threads,
            config.compression,
            self.reuse_port,
            config.max_in_flight,
        )
        built = served_services(self.service, self.service.config.slowdown)
        self.server.add_generic_rpc_handlers(generic_handlers(built, self.mode))
        self.services = tuple(built)
        reflected = (*self.services, HEALTH_SERVICE, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(reflected, self.server)

    def bind(self) -> int:
        self.port = bind_port(self.server, self.host, self.port, self.tls)
        return self.port

    def set_serving(self, serving: bool) -> list[Any]:
        """Set the overall ("") and every served service's health; the asyncio servicer
        returns coroutines to await."""
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        return [self.health.set(name, status) for name in ("", *self.services)]

    async def run_aio(self, on_bound: Callable[[int], None], grace_s: float) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        self._build()
        port = self.bind()
        await asyncio.gather(*self.set_serving(False))
        await self.server.start()
        on_bound(port)
        loading = asyncio.ensure_future(asyncio.to_thread(self.service.load))
        stopping = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait({loading, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if loading in done:
            if loading.exception() is not None:
                stopping.cancel()
                await self.server.stop(0)
                raise loading.exception()  # type: ignore[misc]  # the process exits non-zero
            await asyncio.gather(*self.set_serving(True))
            await stopping
        log.info("shutting down: finishing in-flight requests (grace %.0f s)", grace_s)
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)

    def run_threads(self, on_bound: Callable[[int], None], grace_s: float) -> None:
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        self._build()
        port = self.bind()
        self.set_serving(False)
        self.server.start()
        on_bound(port)

        def serving() -> None:
            self.set_serving(True)

        self.service.load_in_background(on_ready=serving)
        while not stop.wait(0.2):
            if self.service.error is not None:
                self.server.stop(0)
                raise self.service.error
        log.info("shutting down: finishing in-flight requests (grace %.0f s)", grace_s)
        self.health.enter_graceful_shutdown()
        self.server.stop(grace_s).wait()


def run(service: ModelService, options: ServeOptions, on_bound: Callable[[int], None]) -> None:
    """The "grpcio" server kind: `wiremark serve` for every transport it serves."""
    server = GrpcServer(
        service,
        options.host,
        options.port,
        options.grpc_mode,
        reuse_port=options.reuse_port,
        tls=options.tls,
    )
    if options.grpc_mode == "aio":
        asyncio.run(server.run_aio(on_bound, options.grace_s))
    else:
        server.run_threads(on_bound, options.grace_s)


def describe(options: ServeOptions) -> str:
    """How this kind runs, in words, from the settings it runs with (recorded in results)."""
    if options.grpc_mode == "aio":
        flavour = "grpc.aio server (asyncio)"
    else:
        flavour = f"grpcio thread-pool server ({DEFAULT_THREADS} threads)"
    apis = ", ".join(dict.fromkeys(t.api for t in transports.served_by(SERVER_KIND)))
    if options.tls:
        flavour += ", TLS (grpcio's BoringSSL)"
    return f"{flavour}, protobuf, pass-through serializers (parse, serialize timed); APIs: {apis}"
