"""The "mlserver" server kind: a peer, MLServer, standing for the `mlserver-rest` and
`mlserver-grpc` transports. `wiremark serve --transport mlserver-rest` runs MLServer in its
own virtualenv (`harness/peer.py` installs and starts it) and stays in the foreground while
it serves, so bench starts, watches, measures and stops a peer as it does its own servers:
the server CPU it records is this process's and its descendants' (MLServer and its
inference worker).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from wiremark.harness.peer import (
    DEFAULT_WORKERS,
    MLSERVER_VERSION,
    MODEL_WRITERS,
    MODELS,
    PeerStartError,
    ensure_venv,
    free_ports,
    start_mlserver,
)

if TYPE_CHECKING:
    from .serve import ServeOptions
    from .service import ModelService

log = logging.getLogger(__name__)


def prepare() -> None:
    """Before bench or conform starts an `mlserver-*` server: the virtualenv, installed once
    with progress (a RuntimeError, PeerUnavailable, when it cannot be)."""
    ensure_venv(None, sys.stderr)


def describe(options: ServeOptions) -> str:
    return (
        f"MLServer {MLSERVER_VERSION} in its own virtualenv (mlserver_sklearn, "
        f"parallel_workers {DEFAULT_WORKERS}: inference in a worker process; uvicorn on h11; "
        "gzip, metrics and access logs off); serves iris_rf"
    )


def run(service: ModelService, options: ServeOptions, on_bound: Callable[[int], None]) -> None:
    """The "mlserver" server kind: `wiremark serve --transport mlserver-rest` (or -grpc)
    runs MLServer and stands for it, so bench starts, watches, measures (this process's
    CPU and its descendants') and stops a peer like any server. The port asked for is the
    transport's; MLServer's other protocol gets a free one. wiremark's serving options
    (--max-batch, ...) do not apply: MLServer runs with its own defaults, as written above."""
    from wiremark.payloads import transport as registry

    if options.tls is not None:
        raise ValueError(f"{options.transport}: the MLServer peer is run without TLS here")
    rest = registry.get(options.transport).wire == registry.WIRE_HTTP1
    port_rest, port_grpc = free_ports(
        options.host, options.port if rest else 0, 0 if rest else options.port
    )
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    models = tuple(m for m in options.service.models if m in MODEL_WRITERS) or MODELS
    # bound, as far as the harness knows: it polls the protocol's own readiness from here
    on_bound(port_rest if rest else port_grpc)
    with start_mlserver(None, options.host, port_rest, port_grpc, models) as peer:
        log.info("mlserver %s ready: REST %s, gRPC %s", peer.version, peer.rest, peer.grpc)
        while not stopping.wait(0.5):
            if (how := peer.ended()) is not None:
                raise PeerStartError(f"MLServer ended ({how}) while serving; log: {peer.log}")
