"""Bare echo servers on the model servers' own stacks, the baseline of `wiremark overhead`.

- gRPC: a grpcio server (thread pool or asyncio, as `wiremark serve --grpc-mode`) with the
  model server's options (`grpc_server.server_options`) and one generic unary-unary method,
  `/wiremark.v1.Echo/Echo`, with pass-through (bytes) serializers that returns the request
  bytes; grpc.health.v1 says SERVING once it listens.
- HTTP: a FastAPI app whose `POST /echo` returns the request body as a raw starlette
  `Response` (same Content-Type), on the model server's uvicorn settings
  (`http_server.uvicorn_config`: uvloop, httptools, no access log); `GET /healthz` answers 200.

Each logs `listening on HOST:PORT` on stderr once bound, like `wiremark serve`:

    python -m wiremark.servers.echo --wire grpc-h2|http1.1 [--port 0] [--grpc-mode threads|aio]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import threading
from collections.abc import Sequence
from typing import Any

import grpc
from fastapi import FastAPI, Request
from grpc_health.v1 import health_pb2
from starlette.responses import Response

from wiremark.payloads.contract import (
    DEFAULT_MAX_BODY_BYTES,
    GRPC_ECHO_METHOD,
    GRPC_ECHO_SERVICE,
    HTTP_ECHO_PATH,
)
from wiremark.payloads.transport import WIRE_GRPC, WIRE_HTTP1, WIRES

from .grpc_server import GRPC_MODES, bind_port, new_server
from .http_server import uvicorn_config
from .serve import bind_socket

log = logging.getLogger("wiremark.echo")

SERVING = health_pb2.HealthCheckResponse.SERVING


def _grpc_server(mode: str) -> tuple[Any, Any]:
    """The grpc server and its health servicer, built as the model server builds them."""
    server, servicer = new_server(mode, DEFAULT_MAX_BODY_BYTES)
    if mode == "aio":

        async def echo(data: bytes, context: grpc.aio.ServicerContext) -> bytes:
            return data

    else:

        def echo(data: bytes, context: grpc.ServicerContext) -> bytes:  # type: ignore[misc]
            return data

    handler = grpc.unary_unary_rpc_method_handler(echo)
    generic = grpc.method_handlers_generic_handler(GRPC_ECHO_SERVICE, {GRPC_ECHO_METHOD: handler})
    server.add_generic_rpc_handlers((generic,))
    return server, servicer


def _bind(server: Any, host: str, port: int) -> int:
    bound = bind_port(server, host, port)
    log.info("listening on %s:%d (echo %s)", host, bound, WIRE_GRPC)
    return bound


async def run_grpc_aio(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server, servicer = _grpc_server("aio")
    _bind(server, host, port)
    await server.start()
    await servicer.set("", SERVING)
    await stop.wait()
    await server.stop(1.0)


def run_grpc_threads(host: str, port: int) -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server, servicer = _grpc_server("threads")
    _bind(server, host, port)
    server.start()
    servicer.set("", SERVING)
    stop.wait()
    server.stop(1.0).wait()


def create_http_app() -> FastAPI:
    app = FastAPI(title="wiremark echo", openapi_url=None)

    # the first route, as the model server's predictions are first in theirs
    @app.post(HTTP_ECHO_PATH)
    async def echo(request: Request) -> Response:
        return Response(await request.body(), media_type=request.headers.get("content-type"))

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response(b'{"status":"SERVING"}', media_type="application/json")

    return app


def run_http(host: str, port: int) -> None:
    import uvicorn

    sock = bind_socket(host, port, reuse_port=False)
    sock.listen(2048)
    log.info("listening on %s:%d (echo %s)", host, sock.getsockname()[1], WIRE_HTTP1)
    uvicorn.Server(uvicorn_config(create_http_app(), access_log=False, grace_s=1.0)).run(
        sockets=[sock]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wiremark.servers.echo", description=__doc__)
    parser.add_argument("--wire", choices=WIRES, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--grpc-mode", choices=GRPC_MODES, default=GRPC_MODES[0])
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.wire == WIRE_HTTP1:
        run_http(args.host, args.port)
    elif args.grpc_mode == "aio":
        asyncio.run(run_grpc_aio(args.host, args.port))
    else:
        run_grpc_threads(args.host, args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
