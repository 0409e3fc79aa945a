"""The Open Inference Protocol's REST API on the "fastapi" server kind (the `oip-rest`
transport), as Triton, MLServer and KServe serve it:

    GET  /v2/health/live, /v2/health/ready     200 (ready: 503 while models load)
    GET  /v2                                    server metadata, extensions: binary_tensor_data
    GET  /v2/models/<m>[/versions/<v>]          model metadata: typed inputs and outputs
    GET  /v2/models/<m>[/versions/<v>]/ready    200 when loaded
    POST /v2/models/<m>[/versions/<v>]/infer    JSON tensors, or binary tensor data

A body may be JSON tensors or a JSON header followed by binary tensor data, its length in
`Inference-Header-Content-Length` (what tritonclient.http sends by default); any
Content-Type is read so (tritonclient sends none). A reply with binary outputs is
`application/octet-stream` with its own Inference-Header-Content-Length. gzip and deflate
request bodies are inflated no further than --max-body-bytes. Errors are `{"error": ...}`
(and wiremark's `field`) with a 4xx status naming the problem.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from wiremark import __version__
from wiremark.payloads import oip, rest, schemas
from wiremark.payloads.contract import JSON
from wiremark.payloads.errors import UnknownModel
from wiremark.payloads.transport import OipRestCodec

from .pipeline import Pipeline
from .runner import Runner

if TYPE_CHECKING:
    from fastapi import FastAPI

    from .http_server import Routing
    from .service import ModelService


@dataclass(slots=True)
class Inference:
    """One request on its way through the pipeline: the body, its header length, and the
    form the decoder found (the route reads the reply's header length from it)."""

    body: bytes
    header_length: str | None
    form: oip.Form | None = None


TAG: Any = "open inference protocol"  # the OpenAPI docs' group
HEADER_LENGTH = oip.HEADER_LENGTH.encode()  # as the ASGI scope holds header names


def _json(value: Any, status: int = 200) -> Response:
    return Response(rest.dump_json(value), status_code=status, media_type=JSON)


# The infer routes' bodies in the OpenAPI document (the codec reads them; this documents)
INFER_DOCUMENTED = {
    "requestBody": {
        "required": True,
        "content": {JSON: {"schema": schemas.schema(schemas.OipInferRequest)}},
    },
    "responses": {
        "200": {
            "description": "the outputs: JSON, or application/octet-stream with binary outputs",
            "content": {JSON: {"schema": schemas.schema(schemas.OipInferResponse)}},
        }
    },
}


def add_routes(app: FastAPI, service: ModelService, routing: Routing) -> None:
    codec = OipRestCodec()
    runners = service.runners

    def known(name: str, version: str | None) -> Runner:
        runner = service.runner(name)
        oip.check_version(name, version)
        return runner

    def add_infer_route(name: str) -> None:
        def decode(request: Inference) -> tuple[Runner, Any, Any]:
            runner = runners.get(name) or service.runner(name)
            body = (request.body, request.header_length)
            batch, form = codec.decode_request(runner.family, body, service.limits(runner))
            form.model = name
            request.form = form
            return runner, batch, form

        pipeline = Pipeline(decode, codec.encode_reply, routing.slowdown)

        async def infer(request: Request) -> Response:
            service.runner(name)  # still loading: 503 before anything else
            oip.check_version(name, request.path_params.get("version"))
            headers = request.scope["headers"]
            length = next(
                (
                    v.decode("latin-1")
                    for k, v in headers
                    if k == b"inference-header-content-length"
                ),
                None,
            )
            body = await routing.read_body(request)
            inference = Inference(body, length.strip() if length is not None else None)
            with routing.admission:
                content, laps = await pipeline.run_async(inference)
            reply_headers = {"server-timing": laps.header()}
            assert inference.form is not None
            if inference.form.header_length is None:
                return Response(content, media_type=JSON, headers=reply_headers)
            reply_headers["inference-header-content-length"] = str(inference.form.header_length)
            return Response(content, media_type=oip.OCTET, headers=reply_headers)

        for prefix in (f"/v2/models/{name}", f"/v2/models/{name}/versions/{{version}}"):
            app.add_api_route(
                f"{prefix}/infer",
                infer,
                methods=["POST"],
                tags=[TAG],
                summary=f"Infer with {name} (KServe v2)",
                response_class=Response,
                openapi_extra=INFER_DOCUMENTED,
            )

    async def live(request: Request) -> Response:
        return _json({"live": True})

    async def ready(request: Request) -> Response:
        return _json({"ready": service.ready}, 200 if service.ready else 503)

    async def server_metadata(request: Request) -> Response:
        return _json(
            {"name": oip.SERVER_NAME, "version": __version__, "extensions": list(oip.EXTENSIONS)}
        )

    async def model_metadata(request: Request) -> Response:
        name = request.path_params["model"]
        runner = known(name, request.path_params.get("version"))
        return _json(oip.model_metadata(name, runner.family))

    async def model_ready(request: Request) -> Response:
        name = request.path_params["model"]
        if name not in service.config.models:
            service.runner(name)  # 404, naming the models this server has
        oip.check_version(name, request.path_params.get("version"))
        loaded = name in runners
        return _json({"name": name, "ready": loaded}, 200 if loaded else 503)

    async def unknown_model(request: Request) -> Response:
        name = request.path_params["model"]
        raise UnknownModel(
            f"no model named {name[:64]!r} is loaded (loaded: {', '.join(service.config.models)})",
            "model",
        )

    for name in service.config.models:
        add_infer_route(name)

    def get(path: str, endpoint: Any) -> None:
        app.add_api_route(path, endpoint, methods=["GET"], tags=[TAG], response_class=Response)

    get("/v2/health/live", live)
    get("/v2/health/ready", ready)
    get("/v2", server_metadata)
    for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
        get(prefix, model_metadata)
        get(f"{prefix}/ready", model_ready)
        app.add_api_route(
            f"{prefix}/infer", unknown_model, methods=["POST"], include_in_schema=False
        )
