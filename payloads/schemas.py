"""JSON Schemas of the REST bodies, for OpenAPI docs and for readers. The servers do not
validate through these (the codecs in `rest.py` do, faster); they document the contract."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

FLOAT32_MAX = 3.4028234663852886e38
Float32 = Annotated[float, Field(ge=-FLOAT32_MAX, le=FLOAT32_MAX)]  # finite, as float32
Float4 = Annotated[list[Float32], Field(min_length=4, max_length=4)]
# an object of named inputs: the signature's names only (TF Serving refuses others)
NAMED = ConfigDict(extra="forbid")
Row28 = Annotated[list[Annotated[int, Field(ge=0, le=255)]], Field(min_length=28, max_length=28)]


class B64(BaseModel):
    """A binary value in JSON. In MessagePack the value is a `bin` instead."""

    model_config = ConfigDict(extra="forbid")  # {"b64": ...} alone, or it is no binary value

    b64: str = Field(description="standard base64")


SIGNATURE: Any = Field(
    default="serving_default",
    description='the signature: "serving_default", the only one (or omit it)',
)
SignatureName = Literal["serving_default"]
FORMATS = (
    'Row format: "instances", one item per instance (a value, or an object of named inputs). '
    'Columnar format: "inputs" (a value holding the batch, or an object of named inputs each '
    "holding it). Send one of them, not both (TF Serving's rule)."
)


# TF Serving's rule as a schema: "instances" or "inputs", exactly one of them.
ONE_FORMAT = [{"required": ["instances"]}, {"required": ["inputs"]}]


def request_config() -> ConfigDict:
    extra: dict[str, Any] = {"description": FORMATS, "oneOf": ONE_FORMAT}
    return ConfigDict(json_schema_extra=extra)


class Features(BaseModel):
    model_config = NAMED
    features: Float4


class FeatureColumns(BaseModel):
    model_config = NAMED
    features: Annotated[list[Float4], Field(min_length=1)]


class TabularRequest(BaseModel):
    model_config = request_config()
    signature_name: SignatureName = SIGNATURE
    instances: list[Float4 | Features] = Field(  # type: ignore[assignment]
        default=None,  # type: ignore[arg-type]
        min_length=1,
        description="rows of sepal length, sepal width, petal length, petal width (cm)",
        examples=[[[5.1, 3.5, 1.4, 0.2]]],
    )
    inputs: Annotated[list[Float4], Field(min_length=1)] | FeatureColumns = Field(  # type: ignore[assignment]
        default=None, description='the rows, or {"features": rows}'
    )


class Pixels(BaseModel):
    """784 raw bytes, base64 (1,048 characters, padded)."""

    model_config = ConfigDict(extra="forbid")

    b64: str = Field(pattern=r"^[A-Za-z0-9+/]{1045}[AQgw]==$")


Digit = Pixels | Annotated[list[Row28], Field(min_length=28, max_length=28)]


class DigitInstance(BaseModel):
    """A row-format instance as an object of named inputs."""

    model_config = NAMED
    image: Digit


Digits = Annotated[list[Digit], Field(min_length=1)]


class DigitColumns(BaseModel):
    model_config = NAMED
    image: Digits


class DigitsRequest(BaseModel):
    model_config = request_config()
    signature_name: SignatureName = SIGNATURE
    instances: Annotated[list[Digit | DigitInstance], Field(min_length=1)] = Field(  # type: ignore[assignment]
        default=None,  # type: ignore[arg-type]
        description="28x28 uint8 images: 784 raw bytes ({'b64': ...} / bin) or 28 rows of 28 ints",
    )
    inputs: Digits | DigitColumns = Field(  # type: ignore[assignment]
        default=None, description='the images, or {"image": images}'
    )


class FaceInstance(BaseModel):
    image_id: str = ""
    image: B64 = Field(description="JPEG, PNG, GIF, BMP or WebP file bytes")


class FaceColumns(BaseModel):
    model_config = NAMED
    image: Annotated[list[B64], Field(min_length=1)]
    image_id: list[str] | None = None


class FacesRequest(BaseModel):
    model_config = request_config()
    signature_name: SignatureName = SIGNATURE
    instances: Annotated[list[FaceInstance], Field(min_length=1)] = None  # type: ignore[assignment]
    inputs: FaceColumns = Field(  # type: ignore[assignment]
        default=None, description='{"image": [images], "image_id": [ids]}'
    )


class OipTensor(BaseModel):
    name: str
    shape: list[Annotated[int, Field(ge=0)]]
    datatype: Literal["BOOL", "UINT8", "INT32", "INT64", "FP32", "FP64", "BYTES"]
    data: list[Any] | None = Field(
        default=None, description="row-major values; absent with binary_data_size"
    )
    parameters: dict[str, Any] | None = None


class OipOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = None


class OipInferRequest(BaseModel):
    """KServe v2's inference request, JSON (or a JSON header followed by binary tensor
    data, its length in Inference-Header-Content-Length)."""

    id: str | None = None
    inputs: Annotated[list[OipTensor], Field(min_length=1)]
    outputs: list[OipOutput] | None = None
    parameters: dict[str, Any] | None = None


class OipInferResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    outputs: list[OipTensor]


OIP_BODIES = (OipInferRequest, OipInferResponse)

PROBABILITIES = (
    "float32, one per class; null where the model's arithmetic overflowed (NaN: inputs near "
    "float32's limits), as the model computed it"
)


class Classification(BaseModel):
    class_id: int
    probabilities: list[float | None] = Field(description=PROBABILITIES)


class ClassColumns(BaseModel):
    class_id: list[int]
    probabilities: list[list[float | None]] = Field(description=PROBABILITIES)


class ClassifyResponse(BaseModel):
    """Row format: "predictions"; a columnar ("inputs") request: "outputs"."""

    model_config = ConfigDict(
        json_schema_extra={"oneOf": [{"required": ["predictions"]}, {"required": ["outputs"]}]}
    )
    predictions: list[Classification] | None = None
    outputs: ClassColumns | None = None


class FaceOut(BaseModel):
    box: Annotated[list[int], Field(min_length=4, max_length=4, description="x, y, width, height")]
    landmarks: dict[str, Annotated[list[int], Field(min_length=2, max_length=2)]] = Field(
        description="left_eye, right_eye, nose, mouth_left, mouth_right as [x, y]"
    )
    confidence: float


class ImageFacesOut(BaseModel):
    image_id: str
    faces: list[FaceOut]


class FaceColumnsOut(BaseModel):
    image_id: list[str]
    faces: list[list[FaceOut]]


class FacesResponse(BaseModel):
    """Row format: "predictions"; a columnar ("inputs") request: "outputs"."""

    model_config = ConfigDict(
        json_schema_extra={"oneOf": [{"required": ["predictions"]}, {"required": ["outputs"]}]}
    )
    predictions: list[ImageFacesOut] | None = None
    outputs: FaceColumnsOut | None = None


class ErrorBody(BaseModel):
    error: str = Field(description="what was wrong (TF Serving's error body)")
    field: str | None = Field(
        default=None, description="the part of the request at fault (wiremark's addition)"
    )


def schema(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema(ref_template="#/components/schemas/{model}")
