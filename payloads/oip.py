"""The Open Inference Protocol (KServe v2) <-> the models' batches and predictions: the
`oip-rest` and `oip-grpc` transports, as Triton, MLServer and KServe speak them.

Every model is named and typed in its metadata (`MODELS`):

- tabular (iris, iris_rf): `features` FP32 [-1,4] in; `predict` INT64 [-1] (class ids) and
  `predict_proba` FP32 [-1,3] out, the names MLServer's scikit-learn runtime gives its
  outputs, so one client reaches wiremark's servers and an MLServer serving the same forest;
- digits (mnist): `image` UINT8 [-1,28,28] (0..255) or FP32 (pixel / 255, in [0,1]) in;
  `predict` INT64 [-1] and `predict_proba` FP32 [-1,10] out;
- faces (face): `image` BYTES [-1] (JPEG, PNG, ...) and, optional, `image_id` BYTES [-1] in;
  out, the faces of the whole batch flattened, as `tfs-grpc` gives them: `image_id` [N],
  then per face `face_image` INT32 (which input it was found in), `box` INT32 [F,4]
  (x, y, width, height), `landmarks` INT32 [F,5,2] and `confidence` FP32 [F].

REST bodies are JSON tensors (`"data"`, row-major, flat or nested) or the **binary tensor
data extension**: the JSON header is followed by each binary input's bytes, its length in the
`Inference-Header-Content-Length` header and each input's size in `binary_data_size`;
outputs come back binary when `binary_data` (per output) or `binary_data_output` (for all)
asks. BYTES elements are 4-byte little-endian lengths followed by the bytes in binary, and
strings in JSON (base64 when the input's `content_type` parameter says "base64", MLServer's
convention, since an image is not UTF-8). On gRPC, `raw_input_contents` (one per input, in
the inputs' order) or typed `contents`; the reply follows the request's choice:
`raw_output_contents` in the order of the outputs, or `contents`.

The scenarios' `encodings` choose between them for every model: `raw` sends binary tensors
(REST) and raw contents (gRPC), `list` JSON `data` and typed `contents`.
"""

from __future__ import annotations

import base64
import functools
import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from google.protobuf.message import DecodeError

from . import flat_faces
from .contract import (
    DIGIT_SIDE,
    IRIS_FEATURES,
    LANDMARKS,
    Batch,
    Classes,
    Family,
    Limits,
    PixelEncoding,
    Prediction,
)
from .errors import InvalidInput, MalformedBody, TooLarge, UnknownModel
from .images import encoded_images

SERVER_NAME = "wiremark"
PLATFORM = "wiremark"
MODEL_VERSION = "1"
EXTENSIONS = ("binary_tensor_data",)
HEADER_LENGTH = "inference-header-content-length"  # HTTP header names arrive lower-cased
OCTET = "application/octet-stream"
SERVICE = "inference.GRPCInferenceService"
INFER_PATH = f"/{SERVICE}/ModelInfer"
METADATA_PATH = f"/{SERVICE}/ModelMetadata"
SERVER_READY_PATH = f"/{SERVICE}/ServerReady"
READY_PATH = "/v2/health/ready"


def infer_path(model: str) -> str:
    return f"/v2/models/{model}/infer"


def metadata_path(model: str) -> str:
    return f"/v2/models/{model}"


DATATYPES: dict[str, Any] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
# InferTensorContents' field for each datatype (the narrow integers travel widened)
CONTENTS = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


@dataclass(frozen=True)
class TensorMeta:
    name: str
    datatype: str
    shape: tuple[int, ...]  # -1: any size
    also: tuple[str, ...] = ()  # other datatypes accepted in a request
    required: bool = True

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class ModelMeta:
    inputs: tuple[TensorMeta, ...]
    outputs: tuple[TensorMeta, ...]

    def input(self, name: str) -> TensorMeta | None:
        return next((t for t in self.inputs if t.name == name), None)

    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)


def _classifier(classes: int) -> tuple[TensorMeta, ...]:
    return (
        TensorMeta("predict", "INT64", (-1,)),
        TensorMeta("predict_proba", "FP32", (-1, classes)),
    )


MODELS: dict[Family, ModelMeta] = {
    Family.TABULAR: ModelMeta(
        (TensorMeta("features", "FP32", (-1, len(IRIS_FEATURES))),), _classifier(3)
    ),
    Family.DIGITS: ModelMeta(
        (TensorMeta("image", "UINT8", (-1, DIGIT_SIDE, DIGIT_SIDE), also=("FP32",)),),
        _classifier(10),
    ),
    Family.FACES: ModelMeta(
        (
            TensorMeta("image", "BYTES", (-1,)),
            TensorMeta("image_id", "BYTES", (-1,), required=False),
        ),
        (
            TensorMeta("image_id", "BYTES", (-1,)),
            TensorMeta("face_image", "INT32", (-1,)),
            TensorMeta("box", "INT32", (-1, 4)),
            TensorMeta("landmarks", "INT32", (-1, len(LANDMARKS), 2)),
            TensorMeta("confidence", "FP32", (-1,)),
        ),
    ),
}


def model_metadata(name: str, family: Family) -> dict[str, Any]:
    """GET /v2/models/<m>: the model's name, versions, platform and typed tensors."""
    meta = MODELS[family]
    return {
        "name": name,
        "versions": [MODEL_VERSION],
        "platform": PLATFORM,
        "inputs": [t.describe() for t in meta.inputs],
        "outputs": [t.describe() for t in meta.outputs],
    }


def check_version(name: str, version: str | None) -> None:
    if version not in (None, "", MODEL_VERSION):
        raise UnknownModel(
            f"model {name[:64]!r} has no version {version[:32]!r} (it has {MODEL_VERSION})",
            "version",
        )


# --------------------------------------------------------------------------- tensors


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list | tuple) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value
    ):
        raise InvalidInput(
            f"shape must be a list of whole numbers >= 0, got {value!r}"[:200], where
        )
    return tuple(value)


def check_tensor(
    family: Family, name: Any, datatype: Any, shape: Any, limits: Limits
) -> tuple[TensorMeta, tuple[int, ...]]:
    """An input's name, datatype and shape checked against the model's metadata (and the
    batch limit) before any of its data is read. Every dimension but the batch is fixed in
    the metadata, so a shape that passes holds no more values than `max_batch` items."""
    meta = MODELS[family]
    if not isinstance(name, str):
        raise InvalidInput('every input needs a "name"', "inputs")
    spec = meta.input(name)
    where = f"inputs[{name[:64]!r}]"
    if spec is None:
        names = ", ".join(t.name for t in meta.inputs)
        raise InvalidInput(f"unknown input {name[:64]!r}: the model takes {names}", where)
    allowed = (spec.datatype, *spec.also)
    if datatype not in allowed:
        raise InvalidInput(
            f"datatype {str(datatype)[:16]!r}, expects {' or '.join(allowed)}", f"{where}.datatype"
        )
    dims = _shape(shape, f"{where}.shape")
    expected = "[" + ",".join(str(d) for d in spec.shape) + "]"
    if len(dims) != len(spec.shape) or any(
        want != -1 and got != want for got, want in zip(dims, spec.shape, strict=True)
    ):
        raise InvalidInput(f"expects shape {expected}, got {list(dims)}", f"{where}.shape")
    if dims[0] == 0:
        raise InvalidInput("empty batch: send at least one item", f"{where}.shape")
    if dims[0] > limits.max_batch:
        raise TooLarge(f"batch of {dims[0]} exceeds the limit of {limits.max_batch}", where)
    return spec, dims


def _from_json(
    data: Any, datatype: str, dims: tuple[int, ...], params: Any, where: str
) -> np.ndarray:
    count = math.prod(dims)
    if not isinstance(data, list):
        raise InvalidInput('"data" must be a list (row-major, flat or nested)', where)
    if datatype == "BYTES":
        flat = _flatten(data, where)
        if len(flat) != count:
            raise InvalidInput(f"{len(flat)} elements for shape {list(dims)}", where)
        b64 = isinstance(params, dict) and params.get("content_type") == "base64"
        out = np.empty(count, dtype=object)
        for i, item in enumerate(flat):
            if not isinstance(item, str):
                raise InvalidInput(f"BYTES elements are strings, got {type(item).__name__}", where)
            try:
                out[i] = base64.b64decode(item, validate=True) if b64 else item.encode("utf-8")
            except ValueError:
                raise InvalidInput(f"element {i} is not base64", where) from None
        return out.reshape(dims)
    try:
        array = np.asarray(data)
    except ValueError:
        raise InvalidInput('"data" is ragged: nested lists of unequal length', where) from None
    kind = array.dtype.kind
    dtype = DATATYPES[datatype]
    if array.size != count:
        raise InvalidInput(f"{array.size} elements for shape {list(dims)}", where)
    if datatype == "BOOL":
        ok = kind == "b"
    elif dtype.kind in "iu":
        ok = kind in "iu"
        if (
            ok
            and array.size
            and (array.min() < np.iinfo(dtype).min or array.max() > np.iinfo(dtype).max)
        ):
            raise InvalidInput(f"a value is out of {datatype}'s range", where)
    else:
        ok = kind in "iuf"
    if not ok:
        raise InvalidInput(f'"data" holds {array.dtype.name} values, not {datatype}', where)
    return array.astype(dtype, copy=False).reshape(dims)


def _flatten(data: list[Any], where: str) -> list[Any]:
    out: list[Any] = []
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        else:
            out.append(item)
        if len(out) > 1 << 20:
            raise TooLarge("too many elements", where)
    return out


def _from_bytes(
    raw: bytes | memoryview, datatype: str, dims: tuple[int, ...], where: str
) -> np.ndarray:
    count = math.prod(dims)
    if datatype == "BYTES":
        out = np.empty(count, dtype=object)
        view, at = memoryview(raw), 0
        for i in range(count):
            if at + 4 > len(view):
                raise InvalidInput(f"BYTES data ends after {i} of {count} elements", where)
            (n,) = struct.unpack_from("<I", view, at)
            at += 4
            if at + n > len(view):
                raise InvalidInput(f"BYTES element {i} runs past the data", where)
            out[i] = bytes(view[at : at + n])
            at += n
        if at != len(view):
            raise InvalidInput(f"{len(view) - at} bytes left after {count} BYTES elements", where)
        return out.reshape(dims)
    dtype = DATATYPES[datatype]
    if len(raw) != count * dtype.itemsize:
        raise InvalidInput(
            f"{len(raw)} bytes of {datatype} data for shape {list(dims)} "
            f"({count * dtype.itemsize} expected)",
            where,
        )
    return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype, copy=False).reshape(dims)


def to_bytes(array: np.ndarray, datatype: str) -> bytes:
    """A tensor's binary form: little-endian, row-major; BYTES length-prefixed."""
    if datatype == "BYTES":
        return b"".join(
            struct.pack("<I", len(v)) + v for v in (bytes(x) for x in array.reshape(-1))
        )
    return np.ascontiguousarray(array, dtype=DATATYPES[datatype].newbyteorder("<")).tobytes()


def _from_contents(contents: Any, datatype: str, dims: tuple[int, ...], where: str) -> np.ndarray:
    name = CONTENTS.get(datatype)
    if name is None:
        raise InvalidInput(f"{datatype} has no typed contents: send raw_input_contents", where)
    values = getattr(contents, name)
    count = math.prod(dims)
    if len(values) != count:
        raise InvalidInput(f"{len(values)} {name} for shape {list(dims)}", where)
    others = [f.name for f, _ in contents.ListFields() if f.name != name]
    if others:
        raise InvalidInput(f"{datatype} data goes in {name}, not {', '.join(others)}", where)
    if datatype == "BYTES":
        return np.array(list(values), dtype=object).reshape(dims)
    array = np.asarray(values)
    dtype = DATATYPES[datatype]
    if dtype.kind in "iu" and array.size:
        info = np.iinfo(dtype)
        if array.min() < info.min or array.max() > info.max:
            raise InvalidInput(f"a value is out of {datatype}'s range", where)
    return array.astype(dtype).reshape(dims)


# --------------------------------------------------------------------- model inputs


def _batch_of(family: Family, tensors: Mapping[str, np.ndarray], limits: Limits) -> Batch:
    """Checked, named input tensors -> the batch the model runs on."""
    meta = MODELS[family]
    for spec in meta.inputs:
        if spec.required and spec.name not in tensors:
            raise InvalidInput(f"missing input {spec.name!r}", "inputs")
    if family is Family.TABULAR:
        rows = tensors["features"]
        if not np.isfinite(rows).all():
            raise InvalidInput(
                "features must be finite numbers (no NaN or Inf)", "inputs['features']"
            )
        return np.ascontiguousarray(rows, dtype=np.float32)
    if family is Family.DIGITS:
        images = tensors["image"]
        if images.dtype == np.uint8:
            return np.ascontiguousarray(images)
        if not (np.isfinite(images).all() and images.min() >= 0.0 and images.max() <= 1.0):
            raise InvalidInput("FP32 pixels must be in [0, 1] (pixel / 255)", "inputs['image']")
        return np.rint(images.astype(np.float64) * 255.0).astype(np.uint8)
    data = tensors["image"]
    ids = tensors.get("image_id")
    if ids is not None and ids.shape != data.shape:
        raise InvalidInput(f"{ids.size} ids for {data.size} images", "inputs['image_id']")
    return encoded_images(
        data, ids, "inputs['image']", "inputs['image_id']", limits.max_image_pixels
    )


def outputs_of(prediction: Prediction) -> dict[str, np.ndarray]:
    if isinstance(prediction, Classes):
        return {
            "predict": np.asarray(prediction.class_ids, dtype=np.int64),
            "predict_proba": np.asarray(prediction.probabilities, dtype=np.float32),
        }
    return flat_faces.flatten(prediction)


OUTPUT_TYPES = {t.name: t.datatype for meta in MODELS.values() for t in meta.outputs}


def prediction_of(family: Family, out: Mapping[str, np.ndarray]) -> Prediction:
    """Named output tensors -> the values the in-process runner returns (float32)."""
    try:
        if family is not Family.FACES:
            return Classes(
                np.asarray(out["predict"]).astype(np.int64).reshape(-1),
                np.asarray(out["predict_proba"]).astype(np.float32),
            )
        return flat_faces.unflatten(out)
    except (KeyError, IndexError, ValueError, TypeError) as exc:
        raise MalformedBody(f"unexpected inference response: {exc!r}", "outputs") from None


def _request_tensors(family: Family, batch: Batch) -> list[tuple[TensorMeta, np.ndarray]]:
    meta = MODELS[family]
    if family is Family.TABULAR:
        assert isinstance(batch, np.ndarray)
        return [(meta.inputs[0], batch.astype(np.float32, copy=False))]
    if family is Family.DIGITS:
        assert isinstance(batch, np.ndarray)
        return [
            (meta.inputs[0], batch.reshape(-1, DIGIT_SIDE, DIGIT_SIDE).astype(np.uint8, copy=False))
        ]
    assert isinstance(batch, list)
    images = np.array([i.data for i in batch], dtype=object)
    ids = np.array([i.image_id.encode() for i in batch], dtype=object)
    return [(meta.inputs[0], images), (meta.inputs[1], ids)]


@dataclass(slots=True)
class Form:
    """What a request asked of its reply: the model and version it named, its id, which
    outputs (empty: all) and whether each comes back binary (REST) or raw (gRPC).
    `header_length` is set by the REST encoder when the reply carries binary data."""

    model: str
    version: str = MODEL_VERSION
    id: str = ""
    outputs: tuple[tuple[str, bool], ...] = ()
    binary: bool = False  # the default for outputs not named (binary_data_output / raw)
    header_length: int | None = field(default=None)


def _chosen(form: Form, out: dict[str, np.ndarray]) -> list[tuple[str, bool]]:
    if form.outputs:
        return list(form.outputs)
    return [(name, form.binary) for name in out]


def _check_outputs(family: Family, names: list[str], where: str) -> None:
    known = MODELS[family].output_names()
    for name in names:
        if name not in known:
            raise InvalidInput(
                f"unknown output {str(name)[:64]!r}: the model gives {', '.join(known)}", where
            )


# ------------------------------------------------------------------------------- REST


def split_rest(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    """(JSON header, binary tensor data) of a REST request, from its
    Inference-Header-Content-Length (None: all JSON)."""
    if header_length is None:
        return body, memoryview(b"")
    if not header_length.isdigit():
        raise InvalidInput(
            f"Inference-Header-Content-Length {header_length[:32]!r} is not a number",
            "Inference-Header-Content-Length",
        )
    length = int(header_length)
    if length == 0 or length > len(body):
        raise InvalidInput(
            f"Inference-Header-Content-Length {length} does not fit a body of {len(body)} bytes",
            "Inference-Header-Content-Length",
        )
    return body[:length], memoryview(body)[length:]


def _loads(data: bytes, what: str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        hint = (
            " (binary tensor data needs the Inference-Header-Content-Length header)"
            if what == "body"
            else ""
        )
        raise MalformedBody(f"invalid JSON: {exc}{hint}", what) from None


def _params(item: Mapping[str, Any], where: str) -> dict[str, Any]:
    params = item.get("parameters") or {}
    if not isinstance(params, dict):
        raise InvalidInput('"parameters" must be an object', f"{where}.parameters")
    return params


def decode_rest_request(
    family: Family, model: str, header: bytes, binary: memoryview, limits: Limits, framed: bool
) -> tuple[Batch, Form]:
    """An inference request's JSON header and binary data -> (batch, what the reply must
    follow). `framed`: the request had an Inference-Header-Content-Length header."""
    doc = _loads(header, "inference header" if framed else "body")
    if not isinstance(doc, dict):
        raise InvalidInput('the request must be a JSON object with "inputs"', "body")
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput('"inputs" must be a non-empty list of tensors', "inputs")
    tensors: dict[str, np.ndarray] = {}
    at = 0
    for item in inputs:
        if not isinstance(item, dict):
            raise InvalidInput("every input is an object: name, shape, datatype, data", "inputs")
        spec, dims = check_tensor(
            family, item.get("name"), item.get("datatype"), item.get("shape"), limits
        )
        where = f"inputs[{spec.name!r}]"
        if spec.name in tensors:
            raise InvalidInput("input given twice", where)
        params = _params(item, where)
        size = params.get("binary_data_size")
        if size is not None:
            if not framed:
                raise InvalidInput(
                    "binary_data_size given, but no Inference-Header-Content-Length header "
                    "says where the JSON ends",
                    "Inference-Header-Content-Length",
                )
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise InvalidInput(
                    f"binary_data_size must be a whole number, got {size!r}"[:120], where
                )
            if "data" in item:
                raise InvalidInput('give "data" or binary_data_size, not both', where)
            if at + size > len(binary):
                raise InvalidInput(
                    f"binary_data_size {size} runs past the body: {len(binary) - at} bytes of "
                    "binary data left",
                    f"{where}.parameters.binary_data_size",
                )
            tensors[spec.name] = _from_bytes(binary[at : at + size], item["datatype"], dims, where)
            at += size
        elif "data" in item:
            tensors[spec.name] = _from_json(item["data"], item["datatype"], dims, params, where)
        else:
            raise InvalidInput('no "data" and no binary_data_size', where)
    if at != len(binary):
        raise InvalidInput(
            f"the inputs' binary_data_size add up to {at} bytes, but {len(binary)} follow the "
            "JSON header",
            "Inference-Header-Content-Length",
        )
    _same_batch(tensors)
    form = Form(model, id=str(doc.get("id", ""))[:256])
    params = _params(doc, "request")
    form.binary = bool(params.get("binary_data_output", False))
    wanted = doc.get("outputs")
    if wanted is not None:
        if not isinstance(wanted, list) or not all(isinstance(o, dict) for o in wanted):
            raise InvalidInput('"outputs" must be a list of {"name": ...}', "outputs")
        names = [o.get("name") for o in wanted]
        _check_outputs(family, names, "outputs")
        form.outputs = tuple(
            (n, bool(_params(o, f"outputs[{n!r}]").get("binary_data", form.binary)))
            for n, o in zip(names, wanted, strict=True)
        )
    return _batch_of(family, tensors, limits), form


def _same_batch(tensors: Mapping[str, np.ndarray]) -> None:
    sizes = {name: len(t) for name, t in tensors.items()}
    if len(set(sizes.values())) > 1:
        raise InvalidInput(f"inputs of different batch sizes: {sizes}", "inputs")


def _json_data(array: np.ndarray, datatype: str) -> Any:
    if datatype == "BYTES":
        return [bytes(v).decode("utf-8", "replace") for v in array.reshape(-1)]
    return array.reshape(-1)  # orjson writes numpy arrays (float32 as float32)


def encode_rest_reply(prediction: Prediction, form: Form) -> bytes:
    """The reply's JSON header and binary outputs; sets `form.header_length` when there
    are any (the route sends it as Inference-Header-Content-Length)."""
    out = outputs_of(prediction)
    outputs, blobs = [], []
    for name, binary in _chosen(form, out):
        array = out[name]
        datatype = OUTPUT_TYPES[name]
        tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if binary:
            blob = to_bytes(array, datatype)
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            tensor["data"] = _json_data(array, datatype)
        outputs.append(tensor)
    reply: dict[str, Any] = {"model_name": form.model, "model_version": form.version}
    if form.id:
        reply["id"] = form.id
    reply["outputs"] = outputs
    header = orjson.dumps(reply, option=orjson.OPT_SERIALIZE_NUMPY)
    form.header_length = len(header) if blobs else None
    return header + b"".join(blobs)


def encode_rest_request(
    family: Family, batch: Batch, encoding: PixelEncoding = PixelEncoding.RAW
) -> tuple[bytes, int | None]:
    """(body, Inference-Header-Content-Length or None) of an inference request: `raw`
    binary tensors asking for binary outputs, `list` JSON tensors and JSON outputs."""
    binary = encoding is PixelEncoding.RAW
    inputs, blobs = [], []
    for spec, array in _request_tensors(family, batch):
        tensor: dict[str, Any] = {
            "name": spec.name,
            "shape": list(array.shape),
            "datatype": spec.datatype,
        }
        if binary:
            blob = to_bytes(array, spec.datatype)
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        elif spec.datatype == "BYTES":
            tensor["parameters"] = {"content_type": "base64"}
            tensor["data"] = [base64.b64encode(bytes(v)).decode() for v in array.reshape(-1)]
        else:
            tensor["data"] = array.reshape(-1)
        inputs.append(tensor)
    outputs = [
        {"name": t.name, "parameters": {"binary_data": binary}} for t in MODELS[family].outputs
    ]
    header = orjson.dumps({"inputs": inputs, "outputs": outputs}, option=orjson.OPT_SERIALIZE_NUMPY)
    return header + b"".join(blobs), (len(header) if blobs else None)


def header_length_of(body: bytes) -> int | None:
    """Where the JSON header of a REST body ends, when binary data follows it (None: the
    body is all JSON): for readers that were not told (a reply read without its headers)."""
    try:
        orjson.loads(body)
        return None
    except orjson.JSONDecodeError:
        pass
    try:
        _, end = json.JSONDecoder().raw_decode(body.decode("latin-1"))
    except ValueError as exc:
        raise MalformedBody(f"invalid JSON: {exc}", "body") from None
    except RecursionError:  # a hostile peer's nesting: an error like any other bad body
        raise MalformedBody("invalid JSON: nested too deeply", "body") from None
    return end


def decode_rest_reply(family: Family, body: bytes, header_length: int | None = None) -> Prediction:
    if header_length is None:
        header_length = header_length_of(body)
    header, binary = split_rest(body, None if header_length is None else str(header_length))
    doc = _loads(header, "body")
    if not isinstance(doc, dict) or not isinstance(doc.get("outputs"), list):
        raise MalformedBody(f'an inference response has "outputs": {str(doc)[:200]}', "outputs")
    out, at = {}, 0
    for tensor in doc["outputs"]:
        try:
            name, datatype, dims = tensor["name"], tensor["datatype"], tuple(tensor["shape"])
            size = (tensor.get("parameters") or {}).get("binary_data_size")
            if size is not None:
                out[name] = _from_bytes(binary[at : at + size], datatype, dims, name)
                at += size
            else:
                out[name] = _from_json(
                    tensor["data"], datatype, dims, tensor.get("parameters"), name
                )
        except (KeyError, TypeError, InvalidInput) as exc:
            raise MalformedBody(f"unexpected output tensor: {exc}", "outputs") from None
    return prediction_of(family, out)


# ------------------------------------------------------------------------------- gRPC


@functools.cache
def messages() -> Any:
    """The vendored `inference` messages, in their own descriptor pool (imported on first use)."""
    from .open_inference import open_inference_grpc_pb2

    return open_inference_grpc_pb2


def parse(message_type: Any, data: bytes) -> Any:
    try:
        return message_type.FromString(data)
    except DecodeError as exc:
        raise MalformedBody(f"not a {message_type.DESCRIPTOR.full_name}: {exc}", "body") from None


def _grpc_param(value: Any) -> Any:
    which = value.WhichOneof("parameter_choice")
    return getattr(value, which) if which else None


def decode_grpc_request(family: Family, request: Any, limits: Limits) -> tuple[Batch, Form]:
    """A parsed ModelInferRequest -> (batch, what the reply must follow)."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(
            f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs: give one per input",
            "raw_input_contents",
        )
    if not request.inputs:
        raise InvalidInput("no inputs: send the model's input tensors", "inputs")
    tensors: dict[str, np.ndarray] = {}
    for i, item in enumerate(request.inputs):
        spec, dims = check_tensor(family, item.name, item.datatype, list(item.shape), limits)
        where = f"inputs[{spec.name!r}]"
        if spec.name in tensors:
            raise InvalidInput("input given twice", where)
        if raw:
            if item.HasField("contents"):
                raise InvalidInput("contents and raw_input_contents both given", where)
            tensors[spec.name] = _from_bytes(raw[i], item.datatype, dims, where)
        else:
            tensors[spec.name] = _from_contents(item.contents, item.datatype, dims, where)
    _same_batch(tensors)
    names = [o.name for o in request.outputs]
    _check_outputs(family, names, "outputs")
    form = Form(request.model_name, id=request.id[:256], binary=bool(raw))
    form.outputs = tuple((n, bool(raw)) for n in names)
    return _batch_of(family, tensors, limits), form


def encode_grpc_reply(prediction: Prediction, form: Form) -> bytes:
    m = messages()
    out = outputs_of(prediction)
    reply = m.ModelInferResponse(model_name=form.model, model_version=form.version, id=form.id)
    for name, _ in _chosen(form, out):
        array, datatype = out[name], OUTPUT_TYPES[name]
        tensor = reply.outputs.add(name=name, datatype=datatype, shape=array.shape)
        if form.binary:
            reply.raw_output_contents.append(to_bytes(array, datatype))
        else:
            values = array.reshape(-1)
            getattr(tensor.contents, CONTENTS[datatype]).extend(
                values.tolist() if datatype != "BYTES" else [bytes(v) for v in values]
            )
    return bytes(reply.SerializeToString())


def encode_grpc_request(
    family: Family, model: str, batch: Batch, encoding: PixelEncoding = PixelEncoding.RAW
) -> Any:
    m = messages()
    request = m.ModelInferRequest(model_name=model)
    raw = encoding is PixelEncoding.RAW
    for spec, array in _request_tensors(family, batch):
        tensor = request.inputs.add(name=spec.name, datatype=spec.datatype, shape=array.shape)
        if raw:
            request.raw_input_contents.append(to_bytes(array, spec.datatype))
        else:
            values = array.reshape(-1)
            getattr(tensor.contents, CONTENTS[spec.datatype]).extend(
                values.tolist() if spec.datatype != "BYTES" else [bytes(v) for v in values]
            )
    for spec in MODELS[family].outputs:
        request.outputs.add(name=spec.name)
    return request


def decode_grpc_reply(family: Family, data: bytes) -> Prediction:
    reply = parse(messages().ModelInferResponse, data)
    raw = reply.raw_output_contents
    out = {}
    try:
        for i, tensor in enumerate(reply.outputs):
            dims = tuple(tensor.shape)
            if raw:
                out[tensor.name] = _from_bytes(raw[i], tensor.datatype, dims, tensor.name)
            else:
                out[tensor.name] = _from_contents(
                    tensor.contents, tensor.datatype, dims, tensor.name
                )
    except (IndexError, InvalidInput) as exc:
        raise MalformedBody(f"unexpected ModelInferResponse: {exc}", "outputs") from None
    return prediction_of(family, out)


def grpc_metadata(name: str, family: Family) -> bytes:
    m = messages()
    meta = model_metadata(name, family)
    reply = m.ModelMetadataResponse(name=name, versions=meta["versions"], platform=PLATFORM)
    for t in MODELS[family].inputs:
        reply.inputs.add(name=t.name, datatype=t.datatype, shape=t.shape)
    for t in MODELS[family].outputs:
        reply.outputs.add(name=t.name, datatype=t.datatype, shape=t.shape)
    return bytes(reply.SerializeToString())


def decode_grpc_metadata(data: bytes) -> dict[str, Any]:
    """A ModelMetadataResponse as the REST route's JSON has it."""
    reply = parse(messages().ModelMetadataResponse, data)

    def tensors(items: Any) -> list[dict[str, Any]]:
        return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in items]

    return {
        "name": reply.name,
        "versions": list(reply.versions),
        "platform": reply.platform,
        "inputs": tensors(reply.inputs),
        "outputs": tensors(reply.outputs),
    }
