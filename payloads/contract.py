"""What crosses the wire for each model: families, shapes, routes, media types and limits.

A *family* is a wire shape shared by models: `iris` and `iris_rf` are both `tabular` (rows of
four features in, a class and probabilities out). Servers and clients look the family up
here and never guess it from a model's name.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np


class Family(enum.StrEnum):
    TABULAR = "tabular"  # rows of 4 float features -> class id + probabilities
    DIGITS = "digits"  # 28x28 uint8 images -> class id + probabilities
    FACES = "faces"  # encoded JPEG/PNG -> boxes, landmarks, confidence


class PixelEncoding(enum.StrEnum):
    """How MNIST pixels travel; the sender picks one per request."""

    RAW = "raw"  # 784 bytes: bytes in protobuf, bin in MessagePack, {"b64": ...} in JSON
    LIST = "list"  # 28x28 numbers 0..255: packed uint32 in protobuf, nested lists in REST


MODEL_FAMILIES: dict[str, Family] = {
    "iris": Family.TABULAR,
    "iris_rf": Family.TABULAR,
    "mnist": Family.DIGITS,
    "face": Family.FACES,
}

IRIS_FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
IRIS_CLASSES = ("setosa", "versicolor", "virginica")
DIGIT_SIDE = 28
DIGIT_PIXELS = DIGIT_SIDE * DIGIT_SIDE
LANDMARKS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")

JSON = "application/json"
MSGPACK = "application/msgpack"
# Content types accepted as MessagePack (there is no single registered one).
MSGPACK_ALIASES = frozenset({MSGPACK, "application/x-msgpack", "application/vnd.msgpack"})

GRPC_SERVICE = "wiremark.v1.Inference"
GRPC_METHODS: dict[Family, str] = {
    Family.TABULAR: "Classify",
    Family.DIGITS: "ClassifyDigits",
    Family.FACES: "DetectFaces",
}
GRPC_METADATA_METHOD = "GetModelMetadata"
# the bare echoes of `wiremark overhead`, one per wire
GRPC_ECHO_SERVICE = "wiremark.v1.Echo"
GRPC_ECHO_METHOD = "Echo"
GRPC_ECHO_PATH = f"/{GRPC_ECHO_SERVICE}/{GRPC_ECHO_METHOD}"
HTTP_ECHO_PATH = "/echo"
SERVER_TIMING = "server-timing"  # HTTP header and gRPC trailing-metadata key

DEFAULT_MAX_BATCH = 256
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
# An HTTP body that stops arriving for this long is answered 408: an idle limit, not a
# deadline, so a slow but steady client (a large image on a thin link) is never cut off.
DEFAULT_BODY_IDLE_S = 10.0
# Predictions in flight per server process past which a request is refused at once (HTTP
# 503 with Retry-After, gRPC RESOURCE_EXHAUSTED) rather than queued without bound. Above
# every load the shipped scenarios offer (64 users); idle keep-alive connections do not count.
DEFAULT_MAX_IN_FLIGHT = 128
# 8 MP: a 4K UHD frame (3840 x 2160) passes; MTCNN's memory grows with the pixels
DEFAULT_MAX_IMAGE_PIXELS = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """What a server accepts in one request for one model, checked while decoding."""

    max_batch: int = DEFAULT_MAX_BATCH
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS


def grpc_path(method: str) -> str:
    return f"/{GRPC_SERVICE}/{method}"


def predict_path(model: str) -> str:
    """TF Serving's REST route: POST /v1/models/<model>:predict."""
    return f"/v1/models/{model}:predict"


def status_path(model: str) -> str:
    """TF Serving's REST model status: GET /v1/models/<model>."""
    return f"/v1/models/{model}"


def metadata_path(model: str) -> str:
    """TF Serving's REST model metadata: GET /v1/models/<model>/metadata."""
    return f"/v1/models/{model}/metadata"


@dataclass(frozen=True, slots=True)
class EncodedImage:
    image_id: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Classes:
    """A classifier's answer for a batch: one class id and one probability row per input."""

    class_ids: np.ndarray  # (N,) int
    probabilities: np.ndarray  # (N, K) float32


@dataclass(frozen=True, slots=True)
class Face:
    box: tuple[int, int, int, int]  # x, y, width, height in pixels
    landmarks: tuple[tuple[int, int], ...]  # 5 points, in LANDMARKS order
    confidence: float  # float32 value


@dataclass(frozen=True, slots=True)
class ImageFaces:
    image_id: str
    faces: tuple[Face, ...]


# What a model takes and gives, per family.
Batch = np.ndarray | list[EncodedImage]
Prediction = Classes | list[ImageFaces]
