"""The "fastapi" server kind: one FastAPI app on uvicorn (uvloop, httptools) speaking
every transport registered with this kind (JSON with orjson and MessagePack with msgpack,
built in), chosen per request by Content-Type; each route and codec runs the one pipeline
of `servers/pipeline.py`.

Routes are TF Serving's REST API: `POST /v1/models/<m>[/versions/<v>|/labels/<l>]:predict`
in the row (`instances` -> `predictions`) or columnar (`inputs` -> `outputs`) format,
`GET /v1/models/<m>[...]` for the model's status and `.../metadata` for its signature;
`:classify` and `:regress` answer 400 (no model here has their signatures). wiremark adds
`GET /healthz` (200 SERVING once every model is loaded and warm, 503 before), `GET
/v1/models` and the OpenAPI docs at /docs. Bodies are parsed by the codecs in
`wiremark.payloads.transport`, not by pydantic on the request path; the pydantic schemas only
document each model's request and response. Every prediction carries a `Server-Timing`
header: decode, infer, encode.

Other APIs add their routes to the same app: the Open Inference Protocol's `/v2` routes
(`oip-rest`, `servers/oip_rest.py`); a plugin adds one with `register_http_api`.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import re
import zlib
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from wiremark.payloads import rest, schemas, signatures, tfs_codec
from wiremark.payloads import transport as transports
from wiremark.payloads.contract import (
    DEFAULT_BODY_IDLE_S,
    JSON,
    MODEL_FAMILIES,
    MSGPACK_ALIASES,
    Family,
)
from wiremark.payloads.errors import (
    InvalidInput,
    MalformedBody,
    Overloaded,
    ServerFault,
    SlowBody,
    TooLarge,
    UnknownModel,
    UnsupportedMediaType,
    WiremarkError,
    http_status,
)

from .pipeline import Pipeline, Slowdown
from .runner import Runner
from .service import ModelService

if TYPE_CHECKING:
    from .serve import ServeOptions, TlsFiles

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


SERVER_KIND = "fastapi"


def media_codecs() -> dict[str, transports.BodyCodec]:
    """Media type -> codec, for every transport this server kind serves on TF Serving's REST
    routes (MessagePack's unregistered aliases too): an HTTP server speaks them all and
    answers in the request's. Transports of an API with routes of its own are not here."""
    codecs: dict[str, transports.BodyCodec] = {}
    for t in transports.served_by(SERVER_KIND):
        if t.api in HTTP_APIS:
            continue
        codecs[t.media_type] = t.codec
        if t.media_type in MSGPACK_ALIASES:
            codecs.update(dict.fromkeys(MSGPACK_ALIASES, t.codec))
        if t.media_type == JSON:  # what curl sends by default, read as JSON, as TF Serving does
            codecs.update(dict.fromkeys(rest.JSON_ALIASES, t.codec))
    return codecs


def unsupported(media: str) -> UnsupportedMediaType:
    medias = dict.fromkeys(c.media_type for c in media_codecs().values())
    return UnsupportedMediaType(
        f"unsupported Content-Type {media!r}: use {' or '.join(medias)}", field="content-type"
    )


@dataclass(frozen=True)
class HttpApi:
    """The routes of one API (a transport's `api`) beside TF Serving's REST shape:
    `module.add_routes(app, service, routing)`. Imported on first use."""

    name: str
    module: str

    def add_routes(self, app: FastAPI, service: ModelService, routing: Routing) -> None:
        importlib.import_module(self.module).add_routes(app, service, routing)


HTTP_APIS: dict[str, HttpApi] = {}


def register_http_api(api: HttpApi) -> HttpApi:
    HTTP_APIS[api.name] = api
    return api


register_http_api(HttpApi("open-inference", "wiremark.servers.oip_rest"))


def error_response(exc: WiremarkError) -> Response:
    return Response(rest.dump_json(exc.to_dict()), status_code=http_status(exc), media_type=JSON)


class Admission:
    """At most `limit` predictions in progress (on one event loop, so a plain counter);
    one more is refused at once with Overloaded (503, Retry-After) rather than queued.
    Requests count from when their body has arrived: idle keep-alive connections and
    bodies still on the way take no place."""

    __slots__ = ("busy", "limit")

    def __init__(self, limit: int) -> None:
        self.limit, self.busy = limit, 0

    def __enter__(self) -> None:
        if self.busy >= self.limit:
            raise Overloaded(
                f"{self.busy} predictions in progress, the server's limit "
                f"(--max-in-flight {self.limit}): retry later",
                "server",
            )
        self.busy += 1

    def __exit__(self, *exc: object) -> None:
        self.busy -= 1


@dataclass(frozen=True)
class Routing:
    """What every route of the app shares: the body reader (size limit, idle timeout,
    Content-Encoding), the admission limit and the injected slowdown."""

    read_body: Callable[[Request], Awaitable[bytes]]
    admission: Admission
    slowdown: Slowdown


def body_headers(scope: MutableMapping[str, Any]) -> tuple[str, int | None, str]:
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


async def read_body(
    request: Request, limit: int, declared: int | None, encoding: str, idle_s: float
) -> bytes:
    """The request body, refused past `limit` bytes (declared or sent), and answered 408
    when no byte of it arrives for `idle_s` seconds (0: wait for ever). The idle timer is
    rescheduled on every chunk, so it costs one timer per request."""
    if declared is not None and declared > limit:
        raise TooLarge(f"body of {declared} bytes exceeds the limit of {limit}", "body")
    chunks, size = [], 0
    loop = asyncio.get_running_loop()
    stream = request.stream()
    try:
        async with asyncio.timeout(idle_s or None) as idle:
            async for chunk in stream:
                size += len(chunk)
                if size > limit:
                    raise TooLarge(f"body exceeds the limit of {limit} bytes", "body")
                chunks.append(chunk)
                if idle_s:
                    idle.reschedule(loop.time() + idle_s)
    except TimeoutError:
        of = f" of the {declared} declared" if declared is not None else ""
        raise SlowBody(
            f"the body stopped arriving: no bytes for {idle_s:g} s after {size}{of}", "body"
        ) from None
    body = b"".join(chunks)
    if encoding == "identity":
        return body
    if encoding not in INFLATE_WBITS:
        raise UnsupportedMediaType(
            f"Content-Encoding {encoding!r}: send gzip, deflate or identity", "content-encoding"
        )
    return inflate(body, limit, encoding)


# zlib's window bits per Content-Encoding: gzip's header, and HTTP's "deflate", which is the
# zlib format (RFC 9110 8.4.1.2; what tritonclient and browsers send)
INFLATE_WBITS = {"gzip": 31, "deflate": 15}


def inflate(body: bytes, limit: int, encoding: str = "gzip") -> bytes:
    """A gzip or deflate request body, inflated no further than `limit` bytes (no zip
    bombs)."""
    stream = zlib.decompressobj(wbits=INFLATE_WBITS[encoding])
    try:
        out = stream.decompress(body, limit + 1)
    except zlib.error as exc:
        raise MalformedBody(
            f"Content-Encoding {encoding}, but the body is not {encoding}: {exc}"
        ) from None
    if len(out) > limit or stream.unconsumed_tail:
        raise TooLarge(f"inflated body exceeds the limit of {limit} bytes", "body")
    if not stream.eof:
        raise MalformedBody(f"Content-Encoding {encoding}, but the stream is truncated")
    return out


UNSERVED_VERBS = ("classify", "regress")  # TF Serving's verbs for tf.Example signatures


def model_paths(name: str) -> tuple[str, ...]:
    """A model's REST paths, as TF Serving's: latest, a version, a label."""
    base = f"/v1/models/{name}"
    return (base, f"{base}/versions/{{version}}", f"{base}/labels/{{label}}")


def error_responses(*codes: tuple[int, str]) -> dict[str, Any]:
    return {
        str(code): {
            "description": text,
            "content": {JSON: {"schema": schemas.schema(schemas.ErrorBody)}},
        }
        for code, text in codes
    }


# The path parameters of every route, as the server reads them: a model's name, a version
# (digits: TF Serving's and KServe's), a label (TF Serving's, any text without "/" or ":").
PATH_PARAMETERS = {
    "model": {"type": "string", "pattern": "^[^/:]+$"},
    "version": {"type": "string", "pattern": "^[0-9]+$"},
    "label": {"type": "string", "pattern": "^[^/:]+$"},
}
# What any route may answer besides its own: a malformed request, an unknown model,
# version or label, models still loading or the server full.
EVERY_ROUTE_ERRORS = (
    (400, "invalid request: a value is wrong"),
    (404, "no such model, version or label"),
    (503, "models still loading, or --max-in-flight reached (Retry-After)"),
)
GET_ERRORS = ((405, "a predict route asked with GET (Allow: POST)"),)


def document_every_route(spec: dict[str, Any]) -> None:
    """The OpenAPI document as the server behaves (schemathesis holds it to that): every
    `{name}` in a path declared a path parameter, and the errors any route may answer
    listed on every operation."""
    errors = error_responses(*EVERY_ROUTE_ERRORS)
    for path, operations in spec.get("paths", {}).items():
        names = re.findall(r"{(\w+)}", path)
        for method, operation in operations.items():
            declared = {p.get("name") for p in operation.get("parameters", [])}
            operation.setdefault("parameters", []).extend(
                {"name": n, "in": "path", "required": True, "schema": PATH_PARAMETERS[n]}
                for n in names
                if n not in declared and n in PATH_PARAMETERS
            )
            if not operation["parameters"]:
                del operation["parameters"]
            responses = operation.setdefault("responses", {})
            extra = error_responses(*GET_ERRORS) if method == "get" and names else {}
            for code, response in (errors | extra).items():
                responses.setdefault(code, response)


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
    slowdown = service.config.slowdown
    limit = service.config.max_body_bytes
    idle_s = service.config.body_idle_s
    admission = Admission(service.config.max_in_flight)

    @app.exception_handler(WiremarkError)
    async def _wiremark_error(request: Request, exc: WiremarkError) -> Response:
        response = error_response(exc)
        if isinstance(exc, SlowBody):  # the rest of its body may still come: do not reuse
            response.headers["connection"] = "close"
        elif isinstance(exc, Overloaded):
            response.headers["retry-after"] = "1"
        return response

    @app.exception_handler(ClientDisconnect)
    async def _client_gone(request: Request, exc: ClientDisconnect) -> Response:
        # the client left mid-request: nothing to answer, and not the server's fault
        client = f"{request.client.host}:{request.client.port}" if request.client else "?"
        log.info("client %s went away before its request to %s was read", client, request.url.path)
        return Response(status_code=400)

    @app.exception_handler(Exception)
    async def _server_fault(request: Request, exc: Exception) -> Response:
        log.exception("internal error while serving %s", request.url.path)
        return error_response(ServerFault(f"internal error: {type(exc).__name__}: {exc}"))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        body = {"error": str(exc.detail), "field": "path"}
        return Response(
            rest.dump_json(body),
            status_code=exc.status_code,
            media_type=JSON,
            headers=getattr(exc, "headers", None),
        )

    @app.get("/healthz", tags=["health"])
    async def healthz() -> Response:
        if service.ready:
            return Response(b'{"status":"SERVING"}', media_type=JSON)
        status = "FAILED" if service.error is not None else "NOT_SERVING"
        return Response(rest.dump_json({"status": status}), status_code=503, media_type=JSON)

    @app.get("/v1/models", tags=["models"])
    async def models() -> Response:
        return Response(rest.dump_json({"models": list(service.runners)}), media_type=JSON)

    codecs = media_codecs()
    runners = service.runners
    medias = tuple(dict.fromkeys(codec.media_type for codec in codecs.values()))

    def add_predict_route(name: str, family: Family) -> None:
        def decoder(codec: transports.BodyCodec) -> Callable[[bytes], tuple[Runner, Any, Any]]:
            def decode(body: bytes) -> tuple[Runner, Any, Any]:
                runner = runners.get(name) or service.runner(name)
                batch, form = codec.decode_request(family, body, service.limits(runner))
                return runner, batch, form

            return decode

        # one pipeline per media type this server speaks, chosen by the request's
        pipelines = {
            media: (Pipeline(decoder(codec), codec.encode_reply, slowdown), codec.media_type)
            for media, codec in codecs.items()
        }

        async def predict(request: Request) -> Response:
            service.runner(name)  # still loading: 503 before anything else
            params = request.path_params
            if params:
                check_version(name, params)
            media, declared, encoding = body_headers(request.scope)
            body = await read_body(request, limit, declared, encoding, idle_s)
            chosen = pipelines.get(media)
            if chosen is None:
                raise unsupported(media)
            # the body's arrival is the network's time, not the server's: laps start here
            with admission:
                content, laps = await chosen[0].run_async(body)
            return Response(content, media_type=chosen[1], headers={"server-timing": laps.header()})

        content = {m: {"schema": schemas.schema(REQUEST_SCHEMAS[family])} for m in medias}
        documented = {
            "requestBody": {"required": True, "content": content},
            "responses": {
                "200": {
                    "description": "predictions, in the request's media type",
                    "content": {
                        m: {"schema": schemas.schema(RESPONSE_SCHEMAS[family])} for m in medias
                    },
                },
                **error_responses(
                    (400, "invalid body, or a value is wrong: shape, type, NaN, bad image"),
                    (404, "no such model, version, label or signature"),
                    (415, "unsupported Content-Type"),
                    (408, "the body stopped arriving (--body-idle-timeout)"),
                    (429, "batch or body above the limit (TF Serving's RESOURCE_EXHAUSTED)"),
                    (503, "models still loading, or --max-in-flight reached (Retry-After)"),
                ),
            },
        }
        for prefix in model_paths(name):
            app.add_api_route(
                f"{prefix}:predict",
                predict,
                methods=["POST"],
                tags=["predict"],
                summary=f"Predict with {name}",
                response_class=Response,
                openapi_extra=documented,
            )
            for verb in UNSERVED_VERBS:
                app.add_api_route(
                    f"{prefix}:{verb}", unserved(verb), methods=["POST"], include_in_schema=False
                )

    def check_version(name: str, params: Mapping[str, str]) -> None:
        """A version or label in the path: one this server has, or UnknownModel (404)."""
        text, label = params.get("version"), params.get("label")
        version = None
        if text is not None:
            if not text.isdigit():
                raise InvalidInput(f"version {text[:32]!r} is not a number", "version")
            version = int(text)
        if signatures.resolve_version(version, label) is None:
            raise UnknownModel(
                "Servable not found for request: "
                + signatures.servable(name, version, label and label[:64]),
                "version" if text is not None else "label",
            )

    def unserved(verb: str) -> Callable[..., Any]:
        async def refuse(request: Request) -> Response:
            raise InvalidInput(
                f"Expected a {verb} signature (method_name tensorflow/serving/{verb}); the "
                f"model has one predict signature ({signatures.SIGNATURE_NAME!r}): use :predict",
                "signature_name",
            )

        return refuse

    def known(model: str, params: Mapping[str, str]) -> Runner:
        if ":" in model or any(":" in v for v in params.values()):
            # a predict route asked with GET: it matched no POST route, and matches this
            raise StarletteHTTPException(405, "use POST for :predict", headers={"Allow": "POST"})
        runner = service.runner(model)
        check_version(model, params)
        return runner

    async def status(request: Request) -> Response:
        params = dict(request.path_params)
        model = params.pop("model")
        loading = not service.ready and model in service.config.models
        if not loading:
            known(model, params)
        state = "LOADING" if loading else "AVAILABLE"
        return Response(rest.dump_json(tfs_codec.rest_status(state)), media_type=JSON)

    async def metadata(request: Request) -> Response:
        params = dict(request.path_params)
        model = params.pop("model")
        runner = known(model, params)
        body = tfs_codec.rest_metadata(model, runner.family)
        body["metadata"]["wiremark"] = runner.metadata()  # wiremark's own, beside TF Serving's
        return Response(rest.dump_json(body), media_type=JSON)

    for name in service.config.models:
        add_predict_route(name, MODEL_FAMILIES[name])

    for prefix in model_paths("{model}"):
        app.add_api_route(
            prefix,
            status,
            methods=["GET"],
            tags=["models"],
            summary="Model status (TF Serving's model_version_status)",
            response_class=Response,
        )
        app.add_api_route(
            f"{prefix}/metadata",
            metadata,
            methods=["GET"],
            tags=["models"],
            summary="Model metadata: signature_def, and wiremark's own under 'wiremark'",
            response_class=Response,
        )

    @app.post("/v1/models/{path:path}", include_in_schema=False)
    async def unknown(path: str) -> Response:
        model = re.split(r"[/:]", path, maxsplit=1)[0]
        if model in service.runners or model in service.config.models:
            raise StarletteHTTPException(
                404, f"no such route; POST /v1/models/{model}:predict", headers=None
            )
        raise UnknownModel(
            f"no model named {model[:64]!r} is loaded (loaded: {', '.join(service.config.models)})",
            "model",
        )

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(title=app.title, version="1", summary=app.summary, routes=app.routes)
            components = spec.setdefault("components", {}).setdefault("schemas", {})
            documented = (*REQUEST_SCHEMAS.values(), *RESPONSE_SCHEMAS.values(), schemas.ErrorBody)
            for model in (*documented, *schemas.OIP_BODIES):
                for key, value in schemas.schema(model).get("$defs", {}).items():
                    components.setdefault(key, value)
            document_every_route(spec)
            app.openapi_schema = spec
        return app.openapi_schema

    async def read(request: Request) -> bytes:
        _, declared, encoding = body_headers(request.scope)
        return await read_body(request, limit, declared, encoding, idle_s)

    routing = Routing(read, admission, slowdown)
    for api in dict.fromkeys(t.api for t in transports.served_by(SERVER_KIND)):
        if api in HTTP_APIS:
            HTTP_APIS[api].add_routes(app, service, routing)

    app.openapi = openapi  # type: ignore[method-assign]
    # Starlette tries the routes in order on every request, and FastAPI put its docs routes
    # first: predictions go first (the catch-alls for unknown models stay last among them).
    app.router.routes.sort(key=lambda route: not is_prediction(getattr(route, "path", "")))
    return app


def is_prediction(path: str) -> bool:
    return path.endswith((":predict", "/infer"))


def uvicorn_config(
    app: Any,
    access_log: bool,
    grace_s: float,
    header_idle_s: float = DEFAULT_BODY_IDLE_S,
    tls: TlsFiles | None = None,
) -> Any:
    """The uvicorn settings of every HTTP server here (the model server and the echo in
    `wiremark overhead`): uvloop, httptools with an idle limit on request headers
    (`servers/slow_headers.py`), no access log unless asked, TLS when given files."""
    import uvicorn

    from .slow_headers import protocol

    return uvicorn.Config(
        app,
        loop="uvloop",
        http=protocol(header_idle_s),
        access_log=access_log,
        log_level="info" if access_log else "warning",
        timeout_graceful_shutdown=int(grace_s),
        lifespan="on",
        ssl_certfile=tls.cert if tls else None,
        ssl_keyfile=tls.key if tls else None,
    )


def run(service: ModelService, options: ServeOptions, on_bound: Callable[[int], None]) -> None:
    """The "fastapi" server kind: `wiremark serve` for every transport it serves."""
    import uvicorn

    from .serve import bind_socket

    class _GracefulServer(uvicorn.Server):
        """uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown, so the process would
        die by the signal; a completed graceful stop should exit 0, as the gRPC server does."""

        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            self._captured_signals.clear()

    sock = bind_socket(options.host, options.port, options.reuse_port)
    sock.listen(2048)
    on_bound(sock.getsockname()[1])
    server: uvicorn.Server | None = None

    def stop() -> None:
        if server is not None:
            server.should_exit = True

    config = uvicorn_config(
        create_app(service, on_load_failure=stop),
        options.access_log,
        options.grace_s,
        service.config.body_idle_s,
        options.tls,
    )
    server = _GracefulServer(config)
    server.run(sockets=[sock])


def describe(options: ServeOptions) -> str:
    """How this kind runs, in words, from the settings it runs with (recorded in results)."""
    medias = ", ".join(dict.fromkeys(c.media_type for c in media_codecs().values()))
    log_text = "access log on" if options.access_log else "no access log"
    tls = ", TLS (Python's ssl)" if options.tls else ""
    return f"FastAPI on uvicorn (uvloop, httptools, {log_text}{tls}); bodies: {medias}"
