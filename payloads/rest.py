"""REST bodies, as TF Serving's REST API documents them.

A request is in the row format, `{"instances": [...]}` (each instance a value, or an
object of the signature's named inputs), answered `{"predictions": [...]}`; or in the
columnar format, `{"inputs": ...}` (a value, or an object of named inputs each holding the
batch), answered `{"outputs": {name: [...]}}`. Never both, as TF Serving's documents say.
`signature_name` may name the one signature, "serving_default" (`signatures.py`).

JSON and MessagePack carry the same logical body; they differ only in binary values
(`{"b64": "..."}` in JSON, a `bin` in MessagePack) and in float width (MessagePack keeps
float32 as float32). JSON is TF Serving's dialect: the tokens NaN, Infinity and -Infinity
parse (orjson refuses them, so a body it refuses is read again by the standard library).
`decode_*` turn a parsed body into the model's batch and raise `InvalidInput` naming the
field at fault; `encode_*` build the body from numpy values.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np
import orjson

from .contract import (
    DIGIT_PIXELS,
    DIGIT_SIDE,
    IRIS_FEATURES,
    JSON,
    LANDMARKS,
    MSGPACK_ALIASES,
    Batch,
    Classes,
    EncodedImage,
    Face,
    Family,
    ImageFaces,
    Limits,
    PixelEncoding,
    Prediction,
)
from .errors import InvalidInput, MalformedBody, TooLarge, UnknownSignature, UnsupportedMediaType
from .images import check_image
from .signatures import SIGNATURE_NAME, SIGNATURES

# ---------------------------------------------------------------------------- media types


def parse_body(body: bytes, content_type: str | None) -> Any:
    """Bytes of a request or response body -> Python values, by Content-Type."""
    media = (content_type or JSON).split(";", 1)[0].strip().lower()
    if media == JSON or media in JSON_ALIASES:
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return _json_with_constants(body, exc)
    if media in MSGPACK_ALIASES:
        try:
            return msgpack.unpackb(body, raw=False, strict_map_key=True)
        except (ValueError, msgpack.UnpackException, TypeError) as exc:
            raise MalformedBody(f"invalid MessagePack: {_msgpack_problem(exc)}", "body") from None
    raise UnsupportedMediaType(
        f"unsupported Content-Type {media!r}: use application/json or application/msgpack",
        field="content-type",
    )


def _msgpack_problem(exc: Exception) -> str:
    """What was wrong with a MessagePack body, in words (msgpack's StackError and
    FormatError carry no message)."""
    if isinstance(exc, msgpack.StackError):
        return "nested too deeply"
    if isinstance(exc, msgpack.FormatError):
        return "a reserved or unknown type byte (such as 0xc1)"
    if isinstance(exc, msgpack.ExtraData):
        return "extra bytes after the body's value"
    return str(exc) or type(exc).__name__


# What curl sends by default (-d): TF Serving reads the body as JSON whatever it says.
JSON_ALIASES = frozenset({"application/x-www-form-urlencoded"})


def _json_with_constants(body: bytes, error: Exception) -> Any:
    """A body orjson refused, read by the standard library, which also takes NaN, Infinity
    and -Infinity as TF Serving's parser does; orjson's error when it is not JSON at all."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise MalformedBody(f"invalid JSON: {error}", field="body") from None


def dump_json(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)


def dump_msgpack(value: Any) -> bytes:
    # use_single_float: float32 values stay 4 bytes on the wire (they were float32 already).
    return msgpack.packb(value, use_bin_type=True, use_single_float=True)


# ------------------------------------------------------------------------------ requests


@dataclass(frozen=True, slots=True)
class Form:
    """How a request came, so its reply goes the same way."""

    columnar: bool = False  # "inputs" in, "outputs" out; else "instances" and "predictions"


ROWS = Form(False)
COLUMNS = Form(True)


def _is_value(item: Any) -> bool:
    """A value, not an object of named inputs: {"b64": ...} is JSON's binary value."""
    return not isinstance(item, dict) or (len(item) == 1 and "b64" in item)


def _named(family: Family, item: dict[str, Any], field: str) -> dict[str, Any]:
    names = SIGNATURES[family].inputs
    for key in item:
        if key not in names:
            raise InvalidInput(
                f"input tensor alias not found in signature: {str(key)[:64]}. Inputs expected "
                f"to be in the set {SIGNATURES[family].input_names()}.",
                field,
            )
    for name, spec in names.items():
        if spec.required and name not in item:
            raise InvalidInput(f"missing input {name!r}", field)
    return item


def _rows_of_columns(family: Family, inputs: Any, max_batch: int) -> list[Any]:
    """The columnar format's `inputs` as the rows it holds."""
    if _is_value(inputs):
        if not isinstance(inputs, list):
            raise InvalidInput("must be a list: the batch, one item per instance", "inputs")
        return inputs
    named = _named(family, inputs, "inputs")
    columns = {}
    for name, column in named.items():
        if not isinstance(column, list):
            raise InvalidInput("must be a list: the batch, one item per instance", f"inputs.{name}")
        columns[name] = column
    sizes = {len(c) for c in columns.values()}
    if len(sizes) > 1:
        raise InvalidInput(
            "named inputs of different batch sizes: "
            + ", ".join(f"{n}: {len(c)}" for n, c in columns.items()),
            "inputs",
        )
    count = sizes.pop()
    if count > max_batch:  # before any row is built
        raise TooLarge(f"batch of {count} exceeds the limit of {max_batch}", "inputs")
    return [{n: c[i] for n, c in columns.items()} for i in range(count)]


def instances_of(family: Family, body: Any, max_batch: int) -> tuple[list[Any], Form]:
    """The instances of a request in either format, each as the family's decoder reads it
    (tabular and digits: the value; faces: the object of named inputs), and its format."""
    if not isinstance(body, dict) or ("instances" not in body and "inputs" not in body):
        raise InvalidInput(
            'the body must be an object with "instances" (row format) or "inputs" '
            "(columnar format)",
            "instances",
        )
    if "instances" in body and "inputs" in body:
        raise InvalidInput(
            'send either "instances" (row format) or "inputs" (columnar format), not both',
            "instances",
        )
    signature = body.get("signature_name", "")
    if not isinstance(signature, str):
        raise InvalidInput("must be a string", "signature_name")
    if signature not in ("", SIGNATURE_NAME):
        raise UnknownSignature(
            f"Serving signature key {signature[:64]!r} not found: the model has {SIGNATURE_NAME!r}",
            "signature_name",
        )
    if "inputs" in body:
        form, field = COLUMNS, "inputs"
        instances = _rows_of_columns(family, body["inputs"], max_batch)
    else:
        instances, form, field = body["instances"], ROWS, "instances"
        if not isinstance(instances, list):
            raise InvalidInput("must be a list", "instances")
    if not instances:
        raise InvalidInput("empty batch: send at least one instance", field)
    if len(instances) > max_batch:
        raise TooLarge(f"batch of {len(instances)} exceeds the limit of {max_batch}", field)
    if family is Family.FACES:
        return instances, form
    # tabular and digits have one input: a named instance holds it under its name
    if not all(map(_is_value, instances)):
        (name,) = SIGNATURES[family].inputs
        instances = [
            item if _is_value(item) else _named(family, item, f"{field}[{i}]")[name]
            for i, item in enumerate(instances)
        ]
    return instances, form


def _numeric(instances: list[Any], kinds: str, what: str) -> np.ndarray:
    try:
        array = np.asarray(instances)
    except ValueError:
        array = None
    if array is None or array.dtype.kind not in kinds:
        raise InvalidInput(f"every instance must be {what}", "instances")
    return array


FLOAT32_MAX = float(np.finfo(np.float32).max)
NUMBER = (float, int)  # exact types: bool, a subclass of int, is not a feature


def decode_tabular(instances: list[Any], limits: Limits | None = None) -> np.ndarray:
    # Checked in plain Python, then one numpy call: for the small batches a server mostly
    # sees this is 3x cheaper than numpy's own type discovery, and it names the bad row.
    width = len(IRIS_FEATURES)
    for i, row in enumerate(instances):
        if type(row) is not list or len(row) != width:
            raise InvalidInput(
                f"must be a list of {width} numbers ({', '.join(IRIS_FEATURES)})",
                f"instances[{i}]",
            )
        for value in row:
            if type(value) not in NUMBER:
                raise InvalidInput(f"features must be numbers, not {value!r}", f"instances[{i}]")
            # False for NaN and for what float32 cannot hold (it would become Inf)
            if not -FLOAT32_MAX <= value <= FLOAT32_MAX:
                raise InvalidInput(
                    "features must be finite float32 numbers (no NaN or Inf)", f"instances[{i}]"
                )
    return np.array(instances, dtype=np.float32)


def binary_value(value: Any, field: str) -> bytes:
    """A binary value: bytes (MessagePack bin) or {"b64": "..."} (JSON)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, dict) and isinstance(value.get("b64"), str) and len(value) == 1:
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput("invalid base64 in b64", field) from None
    raise InvalidInput('binary values are {"b64": "..."} in JSON or bin in MessagePack', field)


def decode_digits(instances: list[Any], limits: Limits | None = None) -> np.ndarray:
    first = instances[0]
    if isinstance(first, bytes | dict):  # raw pixels
        raws = [binary_value(item, f"instances[{i}]") for i, item in enumerate(instances)]
        for i, raw in enumerate(raws):
            if len(raw) != DIGIT_PIXELS:
                raise InvalidInput(
                    f"raw pixels must be {DIGIT_PIXELS} bytes (28x28 uint8); got {len(raw)}",
                    f"instances[{i}]",
                )
        return np.frombuffer(b"".join(raws), dtype=np.uint8).reshape(-1, DIGIT_SIDE, DIGIT_SIDE)
    array = _numeric(instances, "iu", "28x28 integers 0..255, or raw bytes")
    if array.shape[1:] != (DIGIT_SIDE, DIGIT_SIDE):
        raise InvalidInput(
            f"pixel lists must have shape [28, 28]; got {list(array.shape[1:])}", "instances"
        )
    if array.size and (array.min() < 0 or array.max() > 255):
        raise InvalidInput("pixel values must be integers in 0..255", "instances")
    return array.astype(np.uint8)


def decode_faces(instances: list[Any], limits: Limits | None = None) -> list[EncodedImage]:
    limits = limits or Limits()
    images = []
    for i, item in enumerate(instances):
        if not isinstance(item, dict) or "image" not in item:
            raise InvalidInput(
                'each instance is {"image_id": str, "image": binary}', f"instances[{i}]"
            )
        image_id = item.get("image_id", str(i))
        if not isinstance(image_id, str):
            raise InvalidInput("must be a string", f"instances[{i}].image_id")
        data = binary_value(item["image"], f"instances[{i}].image")
        if not data:
            raise InvalidInput("empty image", f"instances[{i}].image")
        check_image(data, f"instances[{i}].image", limits.max_image_pixels)
        images.append(EncodedImage(image_id, data))
    return images


DECODERS: dict[Family, Callable[[list[Any], Limits], Batch]] = {
    Family.TABULAR: decode_tabular,
    Family.DIGITS: decode_digits,
    Family.FACES: decode_faces,
}


def decode_request(family: Family, body: Any, limits: Limits) -> tuple[Batch, Form]:
    instances, form = instances_of(family, body, limits.max_batch)
    try:
        return DECODERS[family](instances, limits), form
    except InvalidInput as exc:
        if form.columnar and exc.field and exc.field.startswith("instances"):
            exc.field = "inputs" + exc.field.removeprefix("instances")  # row i of the columns
        raise


def encode_request(
    family: Family, batch: Batch, *, binary: bool, encoding: PixelEncoding = PixelEncoding.RAW
) -> dict[str, Any]:
    """The request body for a batch. `binary`: bin values (MessagePack) instead of b64 (JSON)."""

    def blob(data: bytes) -> Any:
        return data if binary else {"b64": base64.b64encode(data).decode("ascii")}

    if family is Family.TABULAR:
        assert isinstance(batch, np.ndarray)
        return {"instances": batch.tolist()}
    if family is Family.DIGITS:
        assert isinstance(batch, np.ndarray)
        if encoding is PixelEncoding.RAW:
            return {"instances": [blob(img.tobytes()) for img in batch]}
        return {"instances": batch.tolist()}
    assert isinstance(batch, list)
    return {"instances": [{"image_id": img.image_id, "image": blob(img.data)} for img in batch]}


# ----------------------------------------------------------------------------- responses


def encode_prediction(prediction: Prediction, form: Form | None = None) -> dict[str, Any]:
    """The reply body: {"predictions": [...]} for a row-format request, {"outputs": {...}}
    (each output holding the batch) for a columnar one."""
    columnar = form is not None and form.columnar
    if isinstance(prediction, Classes):
        if columnar:
            return {
                "outputs": {
                    "class_id": prediction.class_ids.tolist(),
                    "probabilities": prediction.probabilities,
                }
            }
        return {
            "predictions": [
                {"class_id": int(c), "probabilities": p}
                for c, p in zip(
                    prediction.class_ids.tolist(), prediction.probabilities, strict=True
                )
            ]
        }
    predictions = [
        {
            "image_id": image.image_id,
            "faces": [
                {
                    "box": list(face.box),
                    "landmarks": {
                        n: list(p) for n, p in zip(LANDMARKS, face.landmarks, strict=True)
                    },
                    "confidence": np.float32(face.confidence),
                }
                for face in image.faces
            ],
        }
        for image in prediction
    ]
    if columnar:
        return {
            "outputs": {
                "image_id": [p["image_id"] for p in predictions],
                "faces": [p["faces"] for p in predictions],
            }
        }
    return {"predictions": predictions}


def to_plain(body: dict[str, Any]) -> dict[str, Any]:
    """numpy values -> lists and floats, for MessagePack (JSON's orjson takes numpy as is)."""
    outputs = body.get("outputs")
    if outputs is not None:
        if "probabilities" in outputs:
            outputs["probabilities"] = outputs["probabilities"].tolist()
        else:
            for faces in outputs["faces"]:
                for face in faces:
                    face["confidence"] = float(face["confidence"])
        return body
    for item in body["predictions"]:
        if "probabilities" in item:
            item["probabilities"] = item["probabilities"].tolist()
        else:
            for face in item["faces"]:
                face["confidence"] = float(face["confidence"])
    return body


def _predictions(body: Any) -> list[Any]:
    """A reply's predictions, row by row, in either format."""
    if "predictions" in body:
        return list(body["predictions"])
    outputs = body["outputs"]
    names = list(outputs)
    return [dict(zip(names, row, strict=True)) for row in zip(*outputs.values(), strict=True)]


def decode_prediction(family: Family, body: Any) -> Prediction:
    """A response body -> the same values the in-process runner returns (float32 exact)."""
    try:
        predictions = _predictions(body)
        if family is not Family.FACES:
            return Classes(
                class_ids=np.asarray([p["class_id"] for p in predictions], dtype=np.int64),
                probabilities=np.asarray(
                    [p["probabilities"] for p in predictions], dtype=np.float32
                ),
            )
        return [
            ImageFaces(
                image_id=p["image_id"],
                faces=tuple(
                    Face(
                        box=tuple(f["box"]),
                        landmarks=tuple(tuple(f["landmarks"][n]) for n in LANDMARKS),
                        confidence=float(np.float32(f["confidence"])),
                    )
                    for f in p["faces"]
                ),
            )
            for p in predictions
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedBody(f"unexpected response body: {exc!r}", "predictions") from None
