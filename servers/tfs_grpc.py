"""TF Serving's gRPC API on the "grpcio" server kind (the `tfs-grpc` transport):
`tensorflow.serving.PredictionService` (Predict; GetModelMetadata with `signature_def`)
and `tensorflow.serving.ModelService` (GetModelStatus), with TensorProto inputs and outputs
named and typed by each model's signature (`payloads/signatures.py`).

Predict runs the one pipeline every server runs (decode, infer, encode, timed, the laps in
`server-timing` trailing metadata). Errors are TF Serving's: INVALID_ARGUMENT naming the
input, NOT_FOUND for an unknown model, version or signature. Classify, Regress and
MultiInference read tf.Example inputs through a classify or regress signature, which no
model here has, so they answer INVALID_ARGUMENT as TF Serving does for a predict signature;
HandleReloadConfigRequest is UNIMPLEMENTED (wiremark serves a fixed set of models).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from wiremark.payloads import signatures, tfs_codec
from wiremark.payloads.errors import InvalidInput, Unimplemented
from wiremark.payloads.transport import TensorProtoCodec

from .grpc_server import Method, Services
from .pipeline import Pipeline, Slowdown
from .runner import Runner
from .service import ModelService


def services(service: ModelService, slowdown: Slowdown) -> Services:
    codec = TensorProtoCodec()
    m = tfs_codec.apis()
    runners = service.runners

    def decode(data: bytes) -> tuple[Runner, Any, Any]:
        request = tfs_codec.parse(m.predict.PredictRequest, data)
        name = tfs_codec.check_spec(request.model_spec)
        runner = runners.get(name) or service.runner(name)
        batch, spec = codec.decode_request(runner.family, request, service.limits(runner))
        return runner, batch, spec

    def metadata(data: bytes) -> bytes:
        request = tfs_codec.parse(m.metadata.GetModelMetadataRequest, data)
        name = tfs_codec.check_spec(request.model_spec)
        tfs_codec.check_metadata_fields(request.metadata_field)
        runner = service.runner(name)
        return bytes(tfs_codec.metadata_response(name, runner.family).SerializeToString())

    def status(data: bytes) -> bytes:
        request = tfs_codec.parse(m.status.GetModelStatusRequest, data)
        name = tfs_codec.check_spec(request.model_spec)
        spec = request.model_spec
        which = spec.WhichOneof("version_choice")
        version = spec.version.value if which == "version" else None
        label = spec.version_label if which == "version_label" else None
        loading = not service.ready and name in service.config.models
        if not loading:
            service.runner(name)  # NOT_FOUND for a model this server does not have
        state = "LOADING" if loading else "AVAILABLE"
        return bytes(tfs_codec.status_response(version, label, state).SerializeToString())

    def unserved(method: str) -> Callable[[bytes], bytes]:
        def refuse(data: bytes) -> bytes:
            raise InvalidInput(
                f"{method} needs a {method.lower()} signature; every model here has one "
                f"predict signature ({signatures.PREDICT_METHOD!r}, "
                f"{signatures.SIGNATURE_NAME!r}): call Predict",
                "model_spec.signature_name",
            )

        return refuse

    def reload(data: bytes) -> bytes:
        raise Unimplemented(
            "HandleReloadConfigRequest: wiremark serves the models it started with "
            "(wiremark serve --models)"
        )

    prediction: dict[str, Method] = {
        "Predict": Method(Pipeline(decode, codec.encode_reply, slowdown)),
        "GetModelMetadata": Method(handler=metadata),
    }
    prediction |= {name: Method(handler=unserved(name)) for name in tfs_codec.UNSERVED}
    return {
        tfs_codec.PREDICTION_SERVICE: prediction,
        tfs_codec.MODEL_SERVICE: {
            "GetModelStatus": Method(handler=status),
            "HandleReloadConfigRequest": Method(handler=reload),
        },
    }
