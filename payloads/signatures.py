"""Every model's TF Serving signature: the named, typed tensors it takes and gives, its
version and its labels. The REST transports (row and columnar bodies, `/metadata`) and the
`tfs-grpc` transport (TensorProto inputs and outputs, GetModelMetadata) read them here.

- tabular (iris, iris_rf): `features` DT_FLOAT [-1,4] in; `class_id` DT_INT64 [-1] and
  `probabilities` DT_FLOAT [-1,3] out.
- digits (mnist): `image` DT_FLOAT [-1,28,28,1] in [0,1] (pixel / 255, as the MNIST
  tutorial sends it), or DT_UINT8 0..255; `class_id` and `probabilities` [-1,10] out.
- faces (face): `image` DT_STRING [-1] (JPEG, PNG, ...) and, optional, `image_id`
  DT_STRING [-1] in; out, see below.

A face detector's answer is ragged (any number of faces per image), which no tensor holds.
On `tfs-grpc` the faces of the whole batch are flattened, as TF Serving's detection models
give them: `image_id` [N], then per face `face_image` (which input it was found in),
`box` [F,4] (x, y, width, height), `landmarks` [F,5,2] and `confidence` [F]. REST keeps
one nested object per image (`{"image_id", "faces": [...]}`), wiremark's own form.

Each model serves one version, 1, also reachable as the label "stable"; its one signature is
"serving_default", a predict signature (`tensorflow/serving/predict`).
"""

from __future__ import annotations

from dataclasses import dataclass

from .contract import DIGIT_SIDE, IRIS_FEATURES, LANDMARKS, Family

SIGNATURE_NAME = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
MODEL_VERSION = 1
VERSION_LABELS = {"stable": MODEL_VERSION}
CLASSES = {Family.TABULAR: 3, Family.DIGITS: 10}


@dataclass(frozen=True)
class TensorSpec:
    dtype: str  # TensorFlow's DataType name, e.g. "DT_FLOAT"
    shape: tuple[int, ...]  # -1: any size
    also: tuple[str, ...] = ()  # other dtypes accepted in a request
    required: bool = True


@dataclass(frozen=True)
class Signature:
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    method_name: str = PREDICT_METHOD

    def input_names(self) -> str:
        return "{" + ", ".join(self.inputs) + "}"

    def output_names(self) -> str:
        return "{" + ", ".join(self.outputs) + "}"


def _classes(n: int) -> dict[str, TensorSpec]:
    return {
        "class_id": TensorSpec("DT_INT64", (-1,)),
        "probabilities": TensorSpec("DT_FLOAT", (-1, n)),
    }


SIGNATURES: dict[Family, Signature] = {
    Family.TABULAR: Signature(
        {"features": TensorSpec("DT_FLOAT", (-1, len(IRIS_FEATURES)))}, _classes(3)
    ),
    Family.DIGITS: Signature(
        {"image": TensorSpec("DT_FLOAT", (-1, DIGIT_SIDE, DIGIT_SIDE, 1), also=("DT_UINT8",))},
        _classes(10),
    ),
    Family.FACES: Signature(
        {
            "image": TensorSpec("DT_STRING", (-1,)),
            "image_id": TensorSpec("DT_STRING", (-1,), required=False),
        },
        {
            "image_id": TensorSpec("DT_STRING", (-1,)),
            "face_image": TensorSpec("DT_INT32", (-1,)),
            "box": TensorSpec("DT_INT32", (-1, 4)),
            "landmarks": TensorSpec("DT_INT32", (-1, len(LANDMARKS), 2)),
            "confidence": TensorSpec("DT_FLOAT", (-1,)),
        },
    ),
}


def resolve_version(version: int | None, label: str | None) -> int | None:
    """The version a request names (by number or label), or None when it names one this
    server does not have. Neither named: the latest."""
    if label:
        return VERSION_LABELS.get(label)
    if version is None or version == MODEL_VERSION:
        return MODEL_VERSION
    return None


def servable(name: str, version: int | None, label: str | None) -> str:
    """How TF Serving names a servable in its NOT_FOUND messages."""
    if label:
        return f"Label({name}, {label})"
    return f"Specific({name}, {version})" if version is not None else f"Latest({name})"
