"""The Open Inference Protocol's gRPC API on the "grpcio" server kind (the `oip-grpc`
transport): `inference.GRPCInferenceService` — ServerLive, ServerReady, ModelReady,
ServerMetadata (which lists `binary_tensor_data`), ModelMetadata (each model's typed tensors,
`payloads/oip.py`) and ModelInfer, with raw_input_contents or typed contents in, and the
reply in the same form (raw_output_contents in the order of the outputs).

ModelInfer runs the one pipeline every server runs (decode, infer, encode, timed, the laps in
`server-timing` trailing metadata). Errors are gRPC statuses with a message naming the
field: INVALID_ARGUMENT for a wrong datatype, shape or size, NOT_FOUND for a model or version
this server does not have, UNAVAILABLE while models load.
"""

from __future__ import annotations

from typing import Any

from wiremark import __version__
from wiremark.payloads import oip
from wiremark.payloads.errors import InvalidInput
from wiremark.payloads.transport import OipGrpcCodec

from .grpc_server import Method, Services
from .pipeline import Pipeline, Slowdown
from .runner import Runner
from .service import ModelService


def _model_name(name: str, field: str) -> str:
    if not name:
        raise InvalidInput("the model's name is empty: name the model", field)
    return name


def services(service: ModelService, slowdown: Slowdown) -> Services:
    codec = OipGrpcCodec()
    m = oip.messages()
    runners = service.runners

    def decode(data: bytes) -> tuple[Runner, Any, Any]:
        request = oip.parse(m.ModelInferRequest, data)
        name = _model_name(request.model_name, "model_name")
        runner = runners.get(name) or service.runner(name)
        oip.check_version(name, request.model_version)
        batch, form = codec.decode_request(runner.family, request, service.limits(runner))
        return runner, batch, form

    def live(data: bytes) -> bytes:
        oip.parse(m.ServerLiveRequest, data)
        return bytes(m.ServerLiveResponse(live=True).SerializeToString())

    def ready(data: bytes) -> bytes:
        oip.parse(m.ServerReadyRequest, data)
        return bytes(m.ServerReadyResponse(ready=service.ready).SerializeToString())

    def model_ready(data: bytes) -> bytes:
        request = oip.parse(m.ModelReadyRequest, data)
        name = _model_name(request.name, "name")
        if name not in service.config.models:
            service.runner(name)  # NOT_FOUND, naming the models this server has
        oip.check_version(name, request.version)
        return bytes(m.ModelReadyResponse(ready=name in runners).SerializeToString())

    def server_metadata(data: bytes) -> bytes:
        oip.parse(m.ServerMetadataRequest, data)
        reply = m.ServerMetadataResponse(
            name=oip.SERVER_NAME, version=__version__, extensions=oip.EXTENSIONS
        )
        return bytes(reply.SerializeToString())

    def model_metadata(data: bytes) -> bytes:
        request = oip.parse(m.ModelMetadataRequest, data)
        name = _model_name(request.name, "name")
        runner = service.runner(name)
        oip.check_version(name, request.version)
        return oip.grpc_metadata(name, runner.family)

    return {
        oip.SERVICE: {
            "ServerLive": Method(handler=live),
            "ServerReady": Method(handler=ready),
            "ModelReady": Method(handler=model_ready),
            "ServerMetadata": Method(handler=server_metadata),
            "ModelMetadata": Method(handler=model_metadata),
            "ModelInfer": Method(Pipeline(decode, codec.encode_reply, slowdown)),
        }
    }
