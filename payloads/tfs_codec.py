"""TF Serving's gRPC messages <-> the models' batches and predictions (the `tfs-grpc`
transport): `tensorflow.serving.PredictRequest` with TensorProto inputs in,
`PredictResponse` out, named and typed as `signatures.py` says; `GetModelMetadata`'s
signature_def and `GetModelStatus`, as TF Serving answers them.

The messages are TF Serving's own (`payloads/tensorflow_serving/`, vendored), TensorProto
TensorFlow's own (`tensorflow_protos.py`): a `tf.make_tensor_proto(...)` tensor goes in as
it is. Errors are TF Serving's: INVALID_ARGUMENT naming the input, NOT_FOUND for a model,
version or signature this server does not have.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError

from . import flat_faces, signatures, tensors
from .contract import (
    DIGIT_SIDE,
    Batch,
    Classes,
    EncodedImage,
    Family,
    Limits,
    PixelEncoding,
    Prediction,
)
from .errors import InvalidInput, MalformedBody, TooLarge, UnknownModel, UnknownSignature
from .images import encoded_images
from .signatures import SIGNATURE_NAME, SIGNATURES, TensorSpec

PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
MODEL_SERVICE = "tensorflow.serving.ModelService"
PREDICT_PATH = f"/{PREDICTION_SERVICE}/Predict"
METADATA_PATH = f"/{PREDICTION_SERVICE}/GetModelMetadata"
STATUS_PATH = f"/{MODEL_SERVICE}/GetModelStatus"
# PredictionService methods wiremark does not serve: they take tf.Example inputs, which
# only a classify or regress signature reads, and every model here has a predict signature
UNSERVED = ("Classify", "Regress", "MultiInference")
METADATA_FIELD = "signature_def"


@functools.cache
def apis() -> Any:
    """TF Serving's message modules, imported on first use (about 0.15 s, no TensorFlow)."""
    from .tensorflow_serving.apis import (
        get_model_metadata_pb2,
        get_model_status_pb2,
        model_pb2,
        predict_pb2,
    )

    return SimpleNamespace(
        predict=predict_pb2,
        metadata=get_model_metadata_pb2,
        status=get_model_status_pb2,
        model=model_pb2,
        meta_graph=_meta_graph(),
    )


def _meta_graph() -> Any:
    from . import tensorflow_protos

    return SimpleNamespace(
        SignatureDef=tensorflow_protos.message("tensorflow.SignatureDef"),
        TensorInfo=tensorflow_protos.message("tensorflow.TensorInfo"),
    )


def parse(message_type: Any, data: bytes) -> Any:
    try:
        return message_type.FromString(data)
    except DecodeError as exc:
        raise MalformedBody(f"not a {message_type.DESCRIPTOR.full_name}: {exc}", "body") from None


# ------------------------------------------------------------------------------- requests


@dataclass(frozen=True, slots=True)
class Spec:
    """What a request names: a model, and what its reply must echo and keep."""

    name: str
    outputs: tuple[str, ...]  # the output filter: empty for all


def check_spec(spec: Any, field: str = "model_spec") -> str:
    """The model a ModelSpec names, once its version, label and signature are ones this
    server has (UnknownModel or UnknownSignature otherwise, as TF Serving's NOT_FOUND)."""
    name = spec.name
    if not name:
        raise InvalidInput("model_spec.name is empty: name the model", f"{field}.name")
    which = spec.WhichOneof("version_choice")
    version = spec.version.value if which == "version" else None
    label = spec.version_label if which == "version_label" else None
    if signatures.resolve_version(version, label) is None:
        raise UnknownModel(
            f"Servable not found for request: {signatures.servable(name[:64], version, label)}",
            f"{field}.{which}",
        )
    if spec.signature_name not in ("", SIGNATURE_NAME):
        raise UnknownSignature(
            f"Serving signature key {spec.signature_name[:64]!r} not found: the model has "
            f"{SIGNATURE_NAME!r}",
            f"{field}.signature_name",
        )
    return str(name)


def check_outputs(family: Family, output_filter: Any) -> tuple[str, ...]:
    outputs = SIGNATURES[family].outputs
    for name in output_filter:
        if name not in outputs:
            raise InvalidInput(
                f"output tensor alias not found in signature: {name[:64]}. Outputs expected "
                f"to be in the set {SIGNATURES[family].output_names()}.",
                "output_filter",
            )
    return tuple(output_filter)


def _input(inputs: Any, family: Family, name: str, max_values: int) -> np.ndarray | None:
    spec: TensorSpec = SIGNATURES[family].inputs[name]
    field = f"inputs[{name!r}]"
    if name not in inputs:
        if spec.required:
            raise InvalidInput(
                f"missing input {name!r}: the signature takes {SIGNATURES[family].input_names()}",
                "inputs",
            )
        return None
    tensor = inputs[name]
    dtype = tensors.dtype_name(tensor.dtype)
    if dtype not in (spec.dtype, *spec.also):
        expected = " or ".join((spec.dtype, *spec.also))
        raise InvalidInput(f"expects {expected}, but {dtype} was provided", field)
    return tensors.to_numpy(tensor, field, max_values)


def decode_inputs(family: Family, inputs: Any, limits: Limits) -> Batch:
    """A request's `inputs` map -> the model's batch, each tensor checked against the
    signature (dtype, shape, values) and the limits; InvalidInput names the input."""
    signature = SIGNATURES[family]
    for name in inputs:
        if name not in signature.inputs:
            raise InvalidInput(
                f"input tensor alias not found in signature: {name[:64]}. Inputs expected to "
                f"be in the set {signature.input_names()}.",
                "inputs",
            )
    # the most values a batch of `max_batch` could hold: a bound before anything is copied
    return DECODERS[family](inputs, limits, limits.max_batch * _values_per_item(family))


@functools.cache
def _values_per_item(family: Family) -> int:
    shapes = (spec.shape[1:] for spec in SIGNATURES[family].inputs.values())
    return max(math.prod(abs(d) for d in shape) for shape in shapes)


def _batch_size(n: int, limits: Limits, field: str) -> None:
    if n == 0:
        raise InvalidInput("empty batch: send at least one instance", field)
    if n > limits.max_batch:
        raise TooLarge(f"batch of {n} exceeds the limit of {limits.max_batch}", field)


def _decode_tabular(inputs: Any, limits: Limits, max_values: int) -> np.ndarray:
    field = "inputs['features']"
    rows = _input(inputs, Family.TABULAR, "features", max_values)
    assert rows is not None
    width = SIGNATURES[Family.TABULAR].inputs["features"].shape[1]
    if rows.ndim != 2 or rows.shape[1] != width:
        raise InvalidInput(f"expects shape [N,{width}], got {list(rows.shape)}", field)
    _batch_size(len(rows), limits, field)
    if not np.isfinite(rows).all():
        raise InvalidInput("features must be finite float32 numbers (no NaN or Inf)", field)
    return np.ascontiguousarray(rows, dtype=np.float32)


DIGIT_SHAPES = "[N,28,28,1], [28,28,1] or [N,28,28]"


def _decode_digits(inputs: Any, limits: Limits, max_values: int) -> np.ndarray:
    field = "inputs['image']"
    images = _input(inputs, Family.DIGITS, "image", max_values)
    assert images is not None
    side = (DIGIT_SIDE, DIGIT_SIDE)
    if images.shape[-3:] == (*side, 1) and images.ndim in (3, 4):
        images = images.reshape(-1, *side)  # [28,28,1] is one image, as the tutorial sends
    elif images.ndim != 3 or images.shape[1:] != side:
        raise InvalidInput(f"expects shape {DIGIT_SHAPES}, got {list(images.shape)}", field)
    _batch_size(len(images), limits, field)
    if images.dtype == np.uint8:
        return np.ascontiguousarray(images)
    if not (np.isfinite(images).all() and images.min() >= 0.0 and images.max() <= 1.0):
        raise InvalidInput("DT_FLOAT pixels must be in [0, 1] (pixel / 255)", field)
    # the model reads the 256 grey levels it was trained on: x * 255, rounded to the nearest
    return np.rint(images.astype(np.float64) * 255.0).astype(np.uint8)


def _decode_faces(inputs: Any, limits: Limits, max_values: int) -> list[EncodedImage]:
    field = "inputs['image']"
    data = _input(inputs, Family.FACES, "image", max_values)
    assert data is not None
    if data.ndim == 0:
        data = data.reshape(1)
    if data.ndim != 1:
        shape = list(data.shape)
        raise InvalidInput(f"expects shape [N] (one encoded image each), got {shape}", field)
    _batch_size(len(data), limits, field)
    ids = _input(inputs, Family.FACES, "image_id", max_values)
    if ids is not None and ids.reshape(-1).shape != data.shape:
        raise InvalidInput(f"{ids.size} ids for {len(data)} images", "inputs['image_id']")
    flat_ids = None if ids is None else ids.reshape(-1)
    return encoded_images(data, flat_ids, field, "inputs['image_id']", limits.max_image_pixels)


DECODERS: dict[Family, Callable[[Any, Limits, int], Batch]] = {
    Family.TABULAR: _decode_tabular,
    Family.DIGITS: _decode_digits,
    Family.FACES: _decode_faces,
}


def encode_request(
    family: Family, model: str, batch: Batch, encoding: PixelEncoding = PixelEncoding.RAW
) -> Any:
    """A PredictRequest for a batch, as a TF Serving client builds it. MNIST: `raw` sends
    DT_UINT8 pixels, `list` DT_FLOAT in [0, 1] shaped [N,28,28,1], as the tutorial does."""
    request = apis().predict.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = SIGNATURE_NAME
    inputs = request.inputs
    if family is Family.TABULAR:
        assert isinstance(batch, np.ndarray)
        tensors.from_numpy(batch.astype(np.float32, copy=False), inputs["features"])
    elif family is Family.DIGITS:
        assert isinstance(batch, np.ndarray)
        pixels = batch.reshape(-1, DIGIT_SIDE, DIGIT_SIDE, 1)
        if encoding is not PixelEncoding.RAW:
            pixels = (pixels / 255.0).astype(np.float32)
        tensors.from_numpy(pixels, inputs["image"])
    else:
        assert isinstance(batch, list)
        tensors.from_numpy(np.array([i.data for i in batch], dtype=object), inputs["image"])
        ids = np.array([i.image_id.encode() for i in batch], dtype=object)
        tensors.from_numpy(ids, inputs["image_id"])
    return request


# ----------------------------------------------------------------------------- responses


def _outputs(prediction: Prediction) -> dict[str, np.ndarray]:
    if isinstance(prediction, Classes):
        return {
            "class_id": np.asarray(prediction.class_ids, dtype=np.int64),
            "probabilities": np.asarray(prediction.probabilities, dtype=np.float32),
        }
    return flat_faces.flatten(prediction)


def encode_response(prediction: Prediction, spec: Spec) -> bytes:
    response = apis().predict.PredictResponse()
    response.model_spec.name = spec.name
    response.model_spec.version.value = signatures.MODEL_VERSION
    response.model_spec.signature_name = SIGNATURE_NAME
    outputs = response.outputs
    for name, array in _outputs(prediction).items():
        if not spec.outputs or name in spec.outputs:
            tensors.from_numpy(array, outputs[name], typed=True)  # as TF Serving replies
    return bytes(response.SerializeToString())


def decode_response(family: Family, data: bytes) -> Prediction:
    """A PredictResponse -> the values the in-process runner returns (float32 exact)."""
    response = parse(apis().predict.PredictResponse, data)
    try:
        out = {
            name: tensors.to_numpy(t, f"outputs[{name!r}]", 1 << 30)
            for name, t in response.outputs.items()
        }
        if family is not Family.FACES:
            return Classes(out["class_id"].astype(np.int64), out["probabilities"])
        return flat_faces.unflatten(out)
    except (KeyError, IndexError, ValueError, TypeError, InvalidInput) as exc:
        raise MalformedBody(f"unexpected PredictResponse: {exc!r}", "outputs") from None


# ---------------------------------------------------------------------- metadata, status


def signature_def_map(family: Family) -> Any:
    """The model's SignatureDefMap, as GetModelMetadata's `signature_def` holds it."""
    m = apis()
    mapping = m.metadata.SignatureDefMap()
    signature = SIGNATURES[family]
    definition = mapping.signature_def[SIGNATURE_NAME]
    definition.method_name = signature.method_name
    sides = ((definition.inputs, signature.inputs), (definition.outputs, signature.outputs))
    for infos, specs in sides:
        for name, spec in specs.items():
            info = infos[name]
            info.name = f"{name}:0"
            info.dtype = tensors.dtype_value(spec.dtype)
            for size in spec.shape:
                info.tensor_shape.dim.add(size=size)
    return mapping


def metadata_request(model: str) -> Any:
    request = apis().metadata.GetModelMetadataRequest(metadata_field=[METADATA_FIELD])
    request.model_spec.name = model
    return request


def check_metadata_fields(fields: Any) -> None:
    if not fields:
        raise InvalidInput(
            f"GetModelMetadataRequest must specify at least one metadata_field "
            f"({METADATA_FIELD!r})",
            "metadata_field",
        )
    for name in fields:
        if name != METADATA_FIELD:
            raise InvalidInput(
                f"Metadata field {name[:64]} is not supported: ask for {METADATA_FIELD!r}",
                "metadata_field",
            )


def metadata_response(name: str, family: Family) -> Any:
    response = apis().metadata.GetModelMetadataResponse()
    response.model_spec.name = name
    response.model_spec.version.value = signatures.MODEL_VERSION
    response.metadata[METADATA_FIELD].Pack(signature_def_map(family))
    return response


def decode_metadata(data: bytes) -> dict[str, Any]:
    """A GetModelMetadataResponse as plain values (the signature's inputs and outputs)."""
    from google.protobuf import json_format

    m = apis()
    response = parse(m.metadata.GetModelMetadataResponse, data)
    mapping = m.metadata.SignatureDefMap()
    if METADATA_FIELD in response.metadata:
        response.metadata[METADATA_FIELD].Unpack(mapping)
    return {
        "model_spec": json_format.MessageToDict(
            response.model_spec, preserving_proto_field_name=True
        ),
        "signature_def": json_format.MessageToDict(mapping, preserving_proto_field_name=True).get(
            "signature_def", {}
        ),
    }


def status_response(version: int | None, label: str | None, state: str) -> Any:
    """GetModelStatus's answer: the one version, AVAILABLE once warm (LOADING before)."""
    m = apis()
    response = m.status.GetModelStatusResponse()
    status = response.model_version_status.add()
    status.version = signatures.resolve_version(version, label) or signatures.MODEL_VERSION
    status.state = m.status.ModelVersionStatus.State.Value(state)
    status.status.SetInParent()  # error_code OK, written out as TF Serving does
    return response


# ------------------------------------------------------------------ REST, as TF Serving's


def _as_json(message: Any) -> dict[str, Any]:
    """A message as TF Serving's REST API writes it: proto3 JSON, field names as declared,
    defaults included (int64 as strings, enums by name)."""
    from google.protobuf import json_format

    return dict(
        json_format.MessageToDict(
            message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
    )


def rest_status(state: str) -> dict[str, Any]:
    """GET /v1/models/<m>: {"model_version_status": [{"version": "1", "state", "status"}]}."""
    return _as_json(status_response(None, None, state))


def rest_metadata(name: str, family: Family) -> dict[str, Any]:
    """GET /v1/models/<m>/metadata: {"model_spec", "metadata": {"signature_def": {...}}}."""
    return {
        "model_spec": {
            "name": name,
            "signature_name": "",
            "version": str(signatures.MODEL_VERSION),
        },
        "metadata": {METADATA_FIELD: _as_json(signature_def_map(family))},
    }
