"""Protobuf messages <-> the models' numpy batches and predictions.

The servers register their methods with pass-through (bytes) serializers and call `parse`
with the family's `REQUEST_TYPES` entry, its `DECODERS` entry and `encode_prediction`
themselves, so the protobuf parse and serialize are timed as `decode` and `encode`, like the
JSON and MessagePack parses on the REST side.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import numpy as np
from google.protobuf.message import DecodeError, Message

from . import wiremark_pb2 as pb
from .contract import (
    DIGIT_PIXELS,
    DIGIT_SIDE,
    IRIS_FEATURES,
    LANDMARKS,
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
from .errors import InvalidInput, MalformedBody, TooLarge
from .images import check_image

REQUEST_TYPES: dict[Family, type[Message]] = {
    Family.TABULAR: pb.IrisRequest,
    Family.DIGITS: pb.DigitsRequest,
    Family.FACES: pb.FaceRequest,
}
RESPONSE_TYPES: dict[Family, type[Message]] = {
    Family.TABULAR: pb.ClassifyResponse,
    Family.DIGITS: pb.ClassifyResponse,
    Family.FACES: pb.FaceResponse,
}


def parse(message_type: type[Message], data: bytes) -> Message:
    try:
        return message_type.FromString(data)
    except DecodeError as exc:
        raise MalformedBody(f"not a {message_type.DESCRIPTOR.full_name}: {exc}", "body") from None


# A model's name: what `MODEL_FAMILIES` and a plugin's registry hold. A message of another
# type parses as this one more often than not (protobuf skips what it does not know), and
# then its first field, read as `model`, holds that message's bytes: refused, not misread.
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def check_model_name(name: str, message_type: type[Message]) -> str:
    if MODEL_NAME.fullmatch(name) is None:
        shown = name[:32].encode("unicode_escape").decode("ascii")
        raise InvalidInput(
            f"{shown!r} is not a model name (letters, digits, _ . -): is this message a "
            f"{message_type.DESCRIPTOR.full_name}, the type this method takes?",
            "model",
        )
    return name


def _check_batch(n: int, max_batch: int, field: str) -> None:
    if n == 0:
        raise InvalidInput("empty batch: send at least one instance", field)
    if n > max_batch:
        raise TooLarge(f"batch of {n} exceeds the limit of {max_batch}", field)


def decode_tabular(request: pb.IrisRequest, limits: Limits) -> np.ndarray:
    max_batch = limits.max_batch
    _check_batch(len(request.rows), max_batch, "rows")
    rows = [(r.sepal_length, r.sepal_width, r.petal_length, r.petal_width) for r in request.rows]
    for i, row in enumerate(rows):  # plain Python: cheaper than numpy for small batches
        if not all(map(math.isfinite, row)):
            raise InvalidInput("features must be finite numbers (no NaN or Inf)", f"rows[{i}]")
    return np.array(rows, dtype=np.float32)


def decode_digits(request: pb.DigitsRequest, limits: Limits) -> np.ndarray:
    max_batch = limits.max_batch
    _check_batch(len(request.images), max_batch, "images")
    out = np.empty((len(request.images), DIGIT_PIXELS), dtype=np.uint8)
    for i, image in enumerate(request.images):
        kind = image.WhichOneof("pixels")
        if kind == "raw":
            if len(image.raw) != DIGIT_PIXELS:
                raise InvalidInput(
                    f"raw pixels must be {DIGIT_PIXELS} bytes (28x28 uint8); got {len(image.raw)}",
                    f"images[{i}].raw",
                )
            out[i] = np.frombuffer(image.raw, dtype=np.uint8)
        elif kind == "values":
            values = np.asarray(image.values.values, dtype=np.int64)
            if values.size != DIGIT_PIXELS:
                raise InvalidInput(
                    f"pixel values must number {DIGIT_PIXELS} (28x28); got {values.size}",
                    f"images[{i}].values",
                )
            if values.max() > 255:
                raise InvalidInput("pixel values must be integers in 0..255", f"images[{i}].values")
            out[i] = values
        else:
            raise InvalidInput("set raw or values", f"images[{i}]")
    return out.reshape(-1, DIGIT_SIDE, DIGIT_SIDE)


def decode_faces(request: pb.FaceRequest, limits: Limits) -> list[EncodedImage]:
    _check_batch(len(request.images), limits.max_batch, "images")
    images = []
    for i, image in enumerate(request.images):
        if not image.data:
            raise InvalidInput("empty image", f"images[{i}].data")
        check_image(image.data, f"images[{i}].data", limits.max_image_pixels)
        images.append(EncodedImage(image.image_id or str(i), image.data))
    return images


DECODERS: dict[Family, Callable[..., Batch]] = {
    Family.TABULAR: decode_tabular,
    Family.DIGITS: decode_digits,
    Family.FACES: decode_faces,
}


def encode_request(
    family: Family, model: str, batch: Batch, encoding: PixelEncoding = PixelEncoding.RAW
) -> Message:
    if family is Family.TABULAR:
        assert isinstance(batch, np.ndarray)
        return pb.IrisRequest(
            model=model,
            rows=[
                pb.IrisRow(**dict(zip(IRIS_FEATURES, row, strict=True))) for row in batch.tolist()
            ],
        )
    if family is Family.DIGITS:
        assert isinstance(batch, np.ndarray)
        if encoding is PixelEncoding.RAW:
            images = [pb.Digit(raw=img.tobytes()) for img in batch]
        else:
            images = [pb.Digit(values=pb.PixelValues(values=img.ravel().tolist())) for img in batch]
        return pb.DigitsRequest(model=model, images=images)
    assert isinstance(batch, list)
    return pb.FaceRequest(
        model=model, images=[pb.EncodedImage(image_id=i.image_id, data=i.data) for i in batch]
    )


def encode_prediction(prediction: Prediction) -> Message:
    if isinstance(prediction, Classes):
        response = pb.ClassifyResponse()
        add = response.predictions.add  # in place: a constructor's list would be copied in
        for c, p in zip(
            prediction.class_ids.tolist(), prediction.probabilities.tolist(), strict=True
        ):
            add(class_id=c, probabilities=p)
        return response
    return pb.FaceResponse(
        predictions=[
            pb.ImageFaces(
                image_id=image.image_id,
                faces=[
                    pb.Face(
                        box=pb.Box(x=f.box[0], y=f.box[1], width=f.box[2], height=f.box[3]),
                        landmarks=pb.Landmarks(
                            **{
                                n: pb.Point(x=p[0], y=p[1])
                                for n, p in zip(LANDMARKS, f.landmarks, strict=True)
                            }
                        ),
                        confidence=f.confidence,
                    )
                    for f in image.faces
                ],
            )
            for image in prediction
        ]
    )


def metadata_request(model: str) -> bytes:
    return pb.MetadataRequest(model=model).SerializeToString()


def decode_metadata(data: bytes) -> dict[str, object]:
    meta = parse(pb.ModelMetadata, data)
    assert isinstance(meta, pb.ModelMetadata)
    fields = {f.name: getattr(meta, f.name) for f in meta.DESCRIPTOR.fields}
    return fields | {"versions": dict(meta.versions)}


def decode_prediction(family: Family, data: bytes) -> Prediction:
    response = parse(RESPONSE_TYPES[family], data)
    if family is not Family.FACES:
        assert isinstance(response, pb.ClassifyResponse)
        return Classes(
            class_ids=np.asarray([p.class_id for p in response.predictions], dtype=np.int64),
            probabilities=np.asarray(
                [list(p.probabilities) for p in response.predictions], dtype=np.float32
            ),
        )
    assert isinstance(response, pb.FaceResponse)
    return [
        ImageFaces(
            image_id=image.image_id,
            faces=tuple(
                Face(
                    box=(f.box.x, f.box.y, f.box.width, f.box.height),
                    landmarks=tuple(
                        (getattr(f.landmarks, n).x, getattr(f.landmarks, n).y) for n in LANDMARKS
                    ),
                    confidence=f.confidence,
                )
                for f in image.faces
            ),
        )
        for image in response.predictions
    ]
