"""`wiremark serve`: one server process (or a supervisor of N) for one transport.

The process binds first and logs `listening on HOST:PORT`, then loads and warms its models
while health says NOT_SERVING; health turns SERVING when they are ready. SIGTERM or SIGINT
stops accepting, lets in-flight requests finish (up to --grace seconds), and exits 0.

`--workers N` starts N copies sharing one port through SO_REUSEPORT (the kernel spreads
connections between them), for gRPC and HTTP alike, each loading its own models.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

from wiremark.payloads.contract import TRANSPORTS

from .service import ModelService, ServiceConfig

log = logging.getLogger("wiremark.serve")


@dataclass(frozen=True)
class ServeOptions:
    transport: str
    host: str = "127.0.0.1"
    port: int = 0
    workers: int = 1
    grpc_mode: str = "threads"
    access_log: bool = False
    grace_s: float = 10.0
    reuse_port: bool = False
    service: ServiceConfig = field(default_factory=ServiceConfig)


def bind_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def serve(options: ServeOptions) -> int:
    if options.transport not in TRANSPORTS:
        raise ValueError(
            f"unknown transport {options.transport!r}: choose from {', '.join(TRANSPORTS)}"
        )
    if options.workers > 1:
        return supervise(options)
    service = ModelService(options.service)
    if options.reuse_port:
        # A worker of --workers N joins the shared port only once its models are warm, so
        # the kernel never hands a connection to a worker that would answer 503.
        service.load()

    def on_bound(port: int) -> None:
        log.info(
            "listening on %s:%d (%s%s), loading %s",
            options.host,
            port,
            options.transport,
            f" {options.grpc_mode}" if options.transport == "grpc" else "",
            ", ".join(options.service.models),
        )

    if options.transport == "grpc":
        from .grpc_server import GrpcServer

        server = GrpcServer(service, options.host, options.port, options.grpc_mode)
        if options.grpc_mode == "aio":
            asyncio.run(server.run_aio(on_bound, options.grace_s))
        else:
            server.run_threads(on_bound, options.grace_s)
    else:
        run_http(service, options, on_bound)
    if service.error is not None:
        raise service.error
    log.info("stopped")
    return 0


def run_http(service: ModelService, options: ServeOptions, on_bound: object) -> None:
    import uvicorn

    class _GracefulServer(uvicorn.Server):
        """uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown, so the process would
        die by the signal; a completed graceful stop should exit 0, as the gRPC server does."""

        def handle_exit(self, sig: int, frame: object) -> None:
            super().handle_exit(sig, frame)  # type: ignore[arg-type]
            self._captured_signals.clear()

    from .http_server import create_app

    sock = bind_socket(options.host, options.port, options.reuse_port)
    sock.listen(2048)
    on_bound(sock.getsockname()[1])  # type: ignore[operator]
    server: uvicorn.Server | None = None

    def stop() -> None:
        if server is not None:
            server.should_exit = True

    config = uvicorn_config(
        create_app(service, on_load_failure=stop), options.access_log, options.grace_s
    )
    server = _GracefulServer(config)
    server.run(sockets=[sock])


def uvicorn_config(app: Any, access_log: bool, grace_s: float) -> Any:
    """The uvicorn settings of every HTTP server here (the model server and the echo in
    `wiremark overhead`): uvloop, httptools, no access log unless asked."""
    import uvicorn

    return uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        access_log=access_log,
        log_level="info" if access_log else "warning",
        timeout_graceful_shutdown=int(grace_s),
        lifespan="on",
    )


def worker_argv(options: ServeOptions, port: int) -> list[str]:
    s = options.service
    argv = [
        sys.executable,
        "-m",
        "wiremark",
        "serve",
        "--transport",
        options.transport,
        "--host",
        options.host,
        "--port",
        str(port),
        "--models",
        ",".join(s.models),
        "--device",
        s.device,
        "--max-batch",
        str(s.max_batch),
        "--max-body-bytes",
        str(s.max_body_bytes),
        "--grpc-mode",
        options.grpc_mode,
        "--grace",
        str(options.grace_s),
        "--inject-delay-ms",
        str(s.inject_delay_ms),
        "--compression",
        s.compression,
        "--workers",
        "1",
        "--reuse-port",
    ]
    if options.access_log:
        argv.append("--access-log")
    for name, model in s.serve_as:
        argv += ["--serve-as", f"{name}={model}"]
    return argv


def supervise(options: ServeOptions) -> int:
    # Hold the port (bound, not listening) so port 0 resolves once for every worker.
    reservation = bind_socket(options.host, options.port, reuse_port=True)
    port = reservation.getsockname()[1]
    log.info(
        "listening on %s:%d (%s, %d workers)",
        options.host,
        port,
        options.transport,
        options.workers,
    )
    children = [subprocess.Popen(worker_argv(options, port)) for _ in range(options.workers)]

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [child.wait() for child in children]
    reservation.close()
    return max(codes)
