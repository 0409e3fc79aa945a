"""The HTTP transports: one FastAPI app speaking JSON (orjson) and MessagePack (msgpack),
chosen per request by Content-Type, on uvicorn with uvloop and httptools.

Routes follow TF Serving: `POST /v1/models/<model>:predict` with {"instances": [...]} ->
{"predictions": [...]}, `GET /v1/models/<model>` for metadata, `GET /healthz` (200 SERVING
once every model is loaded and warm, 503 before). Bodies are parsed by the codecs in
`wiremark.payloads.rest`, not by pydantic on the request path; the pydantic schemas only
document each model's request and response in the OpenAPI docs at /docs. Every prediction
carries a `Server-Timing` header: decode, infer, encode.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.gzip import GZipMiddleware
from starlette.responses import Response

from wiremark.payloads import rest, schemas
from wiremark.payloads.contract import JSON, MODEL_FAMILIES, MSGPACK, MSGPACK_ALIASES, Family
from wiremark.payloads.errors import (
    MalformedBody,
    ServerFault,
    TooLarge,
    UnknownModel,
    UnsupportedMediaType,
    WiremarkError,
    http_status,
)
from wiremark.payloads.timing import Laps

from .runner import Runner
from .service import ModelService

log = logging.getLogger(__name__)

REQUEST_SCHEMAS = {
    Family.TABULAR: schemas.TabularRequest,
    Family.DIGITS: schemas.DigitsRequest,
    Family.FACES: schemas.FacesRequest,
}
RESPONSE_SCHEMAS = {
    Family.TABULAR: schemas.ClassifyResponse,
    Family.DIGITS: schemas.ClassifyResponse,
    Family.FACES: schemas.FacesResponse,
}


def error_response(exc: WiremarkError) -> Response:
    return Response(rest.dump_json(exc.to_dict()), status_code=http_status(exc), media_type=JSON)


def body_headers(scope: dict[str, Any]) -> tuple[str, int | None, str]:
    """(media type, declared length or None, content encoding) of a request, read from its
    raw ASGI headers (names arrive lower-cased) in one pass rather than three look-ups."""
    media, declared, encoding = JSON, None, "identity"
    for name, value in scope["headers"]:
        if name == b"content-type":
            media = value.decode("latin-1").split(";", 1)[0].strip().lower()
        elif name == b"content-length":
            declared = int(value) if value.isdigit() else None
        elif name == b"content-encoding":
            encoding = value.decode("latin-1").strip().lower()
    return media, declared, encoding


async def read_body(request: Request, limit: int, declared: int | None, encoding: str) -> bytes:
    if declared is not None and declared > limit:
        raise TooLarge(f"body of {declared} bytes exceeds the limit of {limit}", "body")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"body exceeds the limit of {limit} bytes", "body")
        chunks.append(chunk)
    body = b"".join(chunks)
    if encoding == "gzip":
        return gunzip(body, limit)
    if encoding != "identity":
        raise UnsupportedMediaType(
            f"Content-Encoding {encoding!r}: send gzip or identity", "content-encoding"
        )
    return body


def gunzip(body: bytes, limit: int) -> bytes:
    """A gzip request body, inflated no further than `limit` bytes (no zip bombs)."""
    inflate = zlib.decompressobj(wbits=31)
    try:
        out = inflate.decompress(body, limit + 1)
    except zlib.error as exc:
        raise MalformedBody(f"Content-Encoding gzip, but the body is not gzip: {exc}") from None
    if len(out) > limit or inflate.unconsumed_tail:
        raise TooLarge(f"inflated body exceeds the limit of {limit} bytes", "body")
    if not inflate.eof:
        raise MalformedBody("Content-Encoding gzip, but the gzip stream is truncated")
    return out


def create_app(service: ModelService, on_load_failure: Callable[[], None] | None = None) -> FastAPI:
    """The app for a service whose models may still be loading; the lifespan loads them.
    `on_load_failure` runs if loading fails (the server process uses it to exit)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        loading = asyncio.ensure_future(asyncio.to_thread(service.load))
        loading.add_done_callback(_report_load_failure)
        yield
        if not loading.done():
            loading.cancel()

    def _report_load_failure(task: asyncio.Future[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            service.error = task.exception()
            log.error("loading models failed: %s", service.error)
            if on_load_failure is not None:
                on_load_failure()

    app = FastAPI(
        title="wiremark model server",
        summary="Iris, MNIST and face models over JSON or MessagePack (TF Serving's REST shape).",
        lifespan=lifespan,
    )
    if service.config.compression == "gzip":
        # every reply, however small, as gRPC's message compression does
        app.add_middleware(GZipMiddleware, minimum_size=0)
    delay_s = service.config.inject_delay_ms / 1000.0
    limit = service.config.max_body_bytes

    @app.exception_handler(WiremarkError)
    async def _wiremark_error(request: Request, exc: WiremarkError) -> Response:
        return error_response(exc)

    @app.exception_handler(Exception)
    async def _server_fault(request: Request, exc: Exception) -> Response:
        log.exception("internal error while serving %s", request.url.path)
        return error_response(ServerFault(f"internal error: {type(exc).__name__}: {exc}"))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        body = {"error": "HTTPError", "message": str(exc.detail), "field": "path"}
        return Response(rest.dump_json(body), status_code=exc.status_code, media_type=JSON)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> Response:
        if service.ready:
            return Response(b'{"status":"SERVING"}', media_type=JSON)
        status = "FAILED" if service.error is not None else "NOT_SERVING"
        return Response(rest.dump_json({"status": status}), status_code=503, media_type=JSON)

    @app.get("/v1/models", tags=["models"])
    async def models() -> Response:
        return Response(rest.dump_json({"models": list(service.runners)}), media_type=JSON)

    def add_predict_route(name: str, family: Family) -> None:
        async def predict(request: Request) -> Response:
            runner = service.runner(name)
            media, declared, encoding = body_headers(request.scope)
            body = await read_body(request, limit, declared, encoding)
            laps = Laps()  # the body's arrival is the network's time, not the server's
            parsed = rest.parse_body(body, media)
            batch = rest.decode_request(family, parsed, service.max_batch(runner))
            laps.lap("decode")
            if delay_s:
                await asyncio.sleep(delay_s)
                laps.restart()
            prediction = await infer(runner, batch, laps)
            if media in MSGPACK_ALIASES:
                out_type = MSGPACK
                content = rest.dump_msgpack(rest.to_plain(rest.encode_prediction(prediction)))
            else:
                out_type = JSON
                content = rest.dump_json(rest.encode_prediction(prediction))
            laps.lap("encode")
            return Response(content, media_type=out_type, headers={"server-timing": laps.header()})

        content = {m: {"schema": schemas.schema(REQUEST_SCHEMAS[family])} for m in (JSON, MSGPACK)}
        app.add_api_route(
            f"/v1/models/{name}:predict",
            predict,
            methods=["POST"],
            tags=["predict"],
            summary=f"Predict with {name}",
            response_class=Response,
            openapi_extra={
                "requestBody": {"required": True, "content": content},
                "responses": {
                    "200": {
                        "description": "predictions, in the request's media type",
                        "content": {
                            m: {"schema": schemas.schema(RESPONSE_SCHEMAS[family])}
                            for m in (JSON, MSGPACK)
                        },
                    },
                    **{
                        str(code): {
                            "description": text,
                            "content": {JSON: {"schema": schemas.schema(schemas.ErrorBody)}},
                        }
                        for code, text in (
                            (400, "invalid JSON or MessagePack"),
                            (413, "batch or body above the limit"),
                            (415, "unsupported Content-Type"),
                            (422, "a value is wrong: shape, type, NaN, undecodable image"),
                            (503, "models still loading"),
                        )
                    },
                },
            },
        )

    async def infer(runner: Runner, batch: Any, laps: Laps) -> Any:
        if runner.offload:
            return await run_in_threadpool(_timed_predict, runner, batch, laps)
        return _timed_predict(runner, batch, laps)

    @app.get("/v1/models/{model}", tags=["models"])
    async def metadata(model: str) -> Response:
        return Response(rest.dump_json(service.runner(model).metadata()), media_type=JSON)

    for name in service.config.models:
        add_predict_route(name, MODEL_FAMILIES[name])

    @app.post("/v1/models/{model}:predict", include_in_schema=False)
    async def unknown(model: str) -> Response:
        raise UnknownModel(
            f"no model named {model!r} is loaded (loaded: {', '.join(service.config.models)})",
            "model",
        )

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(title=app.title, version="1", summary=app.summary, routes=app.routes)
            components = spec.setdefault("components", {}).setdefault("schemas", {})
            for model in (*REQUEST_SCHEMAS.values(), *RESPONSE_SCHEMAS.values(), schemas.ErrorBody):
                for key, value in schemas.schema(model).get("$defs", {}).items():
                    components.setdefault(key, value)
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    # Starlette tries the routes in order on every request, and FastAPI put its docs routes
    # first: predictions go first (the catch-all for unknown models stays last among them).
    app.router.routes.sort(key=lambda route: not getattr(route, "path", "").endswith(":predict"))
    return app


def _timed_predict(runner: Runner, batch: Any, laps: Laps) -> Any:
    prediction = runner.predict(batch)
    laps.lap("infer")
    return prediction
