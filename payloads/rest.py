"""REST bodies, TF Serving's shape: {"instances": [...]} in, {"predictions": [...]} out.

JSON and MessagePack carry the same logical body; they differ only in binary values
(`{"b64": "..."}` in JSON, a `bin` in MessagePack) and in float width (MessagePack keeps
float32 as float32). `decode_*` turn a parsed body into the model's batch and raise
`InvalidInput` naming the field at fault; `encode_*` build the body from numpy values.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any

import msgpack
import numpy as np
import orjson

from .contract import (
    DIGIT_PIXELS,
    DIGIT_SIDE,
    IRIS_FEATURES,
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
from .errors import InvalidInput, MalformedBody, TooLarge, UnsupportedMediaType
from .images import check_image

# ---------------------------------------------------------------------------- media types


def parse_body(body: bytes, content_type: str | None) -> Any:
    """Bytes of a request or response body -> Python values, by Content-Type."""
    media = (content_type or "application/json").split(";", 1)[0].strip().lower()
    if media == "application/json":
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise MalformedBody(f"invalid JSON: {exc}", field="body") from None
    if media in MSGPACK_ALIASES:
        try:
            return msgpack.unpackb(body, raw=False, strict_map_key=True)
        except (ValueError, msgpack.UnpackException, TypeError) as exc:
            raise MalformedBody(f"invalid MessagePack: {exc}", field="body") from None
    raise UnsupportedMediaType(
        f"unsupported Content-Type {media!r}: use application/json or application/msgpack",
        field="content-type",
    )


def dump_json(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)


def dump_msgpack(value: Any) -> bytes:
    # use_single_float: float32 values stay 4 bytes on the wire (they were float32 already).
    return msgpack.packb(value, use_bin_type=True, use_single_float=True)


# ------------------------------------------------------------------------------ requests


def instances_of(body: Any, max_batch: int) -> list[Any]:
    if not isinstance(body, dict) or "instances" not in body:
        raise InvalidInput('the body must be an object with an "instances" list', "instances")
    instances = body["instances"]
    if not isinstance(instances, list):
        raise InvalidInput("must be a list", "instances")
    if not instances:
        raise InvalidInput("empty batch: send at least one instance", "instances")
    if len(instances) > max_batch:
        raise TooLarge(f"batch of {len(instances)} exceeds the limit of {max_batch}", "instances")
    return instances


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


def decode_request(family: Family, body: Any, limits: Limits) -> Batch:
    return DECODERS[family](instances_of(body, limits.max_batch), limits)


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


def encode_prediction(prediction: Prediction) -> dict[str, Any]:
    if isinstance(prediction, Classes):
        return {
            "predictions": [
                {"class_id": int(c), "probabilities": p}
                for c, p in zip(
                    prediction.class_ids.tolist(), prediction.probabilities, strict=True
                )
            ]
        }
    return {
        "predictions": [
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
    }


def to_plain(body: dict[str, Any]) -> dict[str, Any]:
    """numpy values -> lists and floats, for MessagePack (JSON's orjson takes numpy as is)."""
    predictions = body["predictions"]
    for item in predictions:
        if "probabilities" in item:
            item["probabilities"] = item["probabilities"].tolist()
        else:
            for face in item["faces"]:
                face["confidence"] = float(face["confidence"])
    return body


def decode_prediction(family: Family, body: Any) -> Prediction:
    """A response body -> the same values the in-process runner returns (float32 exact)."""
    try:
        predictions = body["predictions"]
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
