"""`wiremark serve`: one server process (or a supervisor of N) for one transport.

The process binds first and logs `listening on HOST:PORT`, then loads and warms its models
while health says NOT_SERVING; health turns SERVING when they are ready. SIGTERM or SIGINT
stops accepting, lets in-flight requests finish (up to --grace seconds), and exits 0.

`--workers N` starts N copies sharing one port through SO_REUSEPORT (the kernel spreads
connections between them), for gRPC and HTTP alike, each loading its own models.
"""

from __future__ import annotations

import importlib
import logging
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from wiremark.payloads import transport as transports

from .service import ModelService, ServiceConfig

OnBound = Callable[[int], None]

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
    tls: TlsFiles | None = None  # serve TLS with this certificate (chain) and key
    service: ServiceConfig = field(default_factory=ServiceConfig)


@dataclass(frozen=True)
class TlsFiles:
    """A server's certificate chain and private key, PEM files (`--tls-cert`, `--tls-key`)."""

    cert: str
    key: str

    def check(self) -> TlsFiles:
        """Load them once before binding: a ValueError naming what will not load."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(
                f"TLS certificate {self.cert} and key {self.key} will not load: {exc}"
            ) from None
        return self

    def pem(self) -> tuple[bytes, bytes]:
        """(private key, certificate chain) as bytes, as grpcio takes them."""
        with open(self.key, "rb") as key, open(self.cert, "rb") as cert:
            return key.read(), cert.read()


def bind_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


@dataclass(frozen=True)
class ServerKind:
    """One way of serving: `run(service, options, on_bound)` serves until stopped, and
    `describe(options)` says in words how (bench records it). Imported on first use, so a
    process loads only the server it runs."""

    name: str
    module: str  # holds `run` and `describe`

    def _load(self) -> Any:
        return importlib.import_module(self.module)

    def run(self, service: ModelService, options: ServeOptions, on_bound: OnBound) -> None:
        self._load().run(service, options, on_bound)

    def describe(self, options: ServeOptions) -> str:
        return str(self._load().describe(options))

    def prepare(self) -> None:
        """What must happen once before a server of this kind starts (a peer installs its
        virtualenv, with progress, rather than inside a server's start-up timeout)."""
        prepare = getattr(self._load(), "prepare", None)
        if prepare is not None:
            prepare()


SERVER_KINDS: dict[str, ServerKind] = {}


def register_server_kind(kind: ServerKind) -> ServerKind:
    SERVER_KINDS[kind.name] = kind
    return kind


register_server_kind(ServerKind("grpcio", "wiremark.servers.grpc_server"))
register_server_kind(ServerKind("fastapi", "wiremark.servers.http_server"))
# a peer: MLServer in its own virtualenv, standing for the `mlserver-*` transports
register_server_kind(ServerKind("mlserver", "wiremark.servers.mlserver"))


def server_kind(transport: str) -> ServerKind:
    """The server kind of a registered transport (a ValueError naming the choices)."""
    name = transports.get(transport).server
    if name not in SERVER_KINDS:
        raise ValueError(f"transport {transport!r}: no server kind {name!r} is registered")
    return SERVER_KINDS[name]


def serve(options: ServeOptions) -> int:
    kind = server_kind(options.transport)
    if options.tls is not None:
        options.tls.check()
    if options.workers > 1:
        return supervise(options)
    service = ModelService(options.service)
    if options.reuse_port:
        # A worker of --workers N joins the shared port only once its models are warm, so
        # the kernel never hands a connection to a worker that would answer 503.
        service.load()

    def on_bound(port: int) -> None:
        log.info(
            "listening on %s:%d (%s: %s), loading %s",
            options.host,
            port,
            options.transport,
            kind.describe(options),
            ", ".join(options.service.models),
        )

    kind.run(service, options, on_bound)
    if service.error is not None:
        raise service.error
    log.info("stopped")
    return 0


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
        "--body-idle-timeout",
        str(s.body_idle_s),
        "--max-in-flight",
        str(s.max_in_flight),
        "--max-image-pixels",
        str(s.max_image_pixels),
        "--grpc-mode",
        options.grpc_mode,
        "--grace",
        str(options.grace_s),
        "--inject-delay-ms",
        str(s.inject_delay_ms),
        "--inject-cpu-us",
        str(s.inject_cpu_us),
        "--compression",
        s.compression,
        "--workers",
        "1",
        "--reuse-port",
    ]
    if options.access_log:
        argv.append("--access-log")
    if options.tls is not None:
        argv += ["--tls-cert", options.tls.cert, "--tls-key", options.tls.key]
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
