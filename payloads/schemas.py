"""JSON Schemas of the REST bodies, for OpenAPI docs and for readers. The servers do not
validate through these (the codecs in `rest.py` do, faster); they document the contract."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field

Float4 = Annotated[list[float], Field(min_length=4, max_length=4)]
Row28 = Annotated[list[Annotated[int, Field(ge=0, le=255)]], Field(min_length=28, max_length=28)]


class B64(BaseModel):
    """A binary value in JSON. In MessagePack the value is a `bin` instead."""

    b64: str = Field(description="standard base64")


SIGNATURE = Field(
    default=None, description='the signature: "serving_default", the only one (or omit it)'
)
FORMATS = (
    'Row format: "instances", one item per instance (a value, or an object of named inputs). '
    'Columnar format: "inputs" (a value holding the batch, or an object of named inputs each '
    "holding it). Send one of them, not both (TF Serving's rule)."
)


class Features(BaseModel):
    features: Float4


class TabularRequest(BaseModel):
    model_config = {"json_schema_extra": {"description": FORMATS}}
    signature_name: str | None = SIGNATURE
    instances: list[Float4 | Features] | None = Field(
        default=None,
        description="rows of sepal length, sepal width, petal length, petal width (cm)",
        examples=[[[5.1, 3.5, 1.4, 0.2]]],
    )
    inputs: list[Float4] | dict[str, list[Float4]] | None = Field(
        default=None, description='the rows, or {"features": rows}'
    )


Digit = B64 | Annotated[list[Row28], Field(min_length=28, max_length=28)]


class DigitsRequest(BaseModel):
    model_config = {"json_schema_extra": {"description": FORMATS}}
    signature_name: str | None = SIGNATURE
    instances: list[Digit] | None = Field(
        default=None,
        description="28x28 uint8 images: 784 raw bytes ({'b64': ...} / bin) or 28 rows of 28 ints",
    )
    inputs: list[Digit] | dict[str, list[Digit]] | None = Field(
        default=None, description='the images, or {"image": images}'
    )


class FaceInstance(BaseModel):
    image_id: str = ""
    image: B64 = Field(description="JPEG/PNG file bytes")


class FacesRequest(BaseModel):
    model_config = {"json_schema_extra": {"description": FORMATS}}
    signature_name: str | None = SIGNATURE
    instances: list[FaceInstance] | None = None
    inputs: dict[str, list[Any]] | None = Field(
        default=None, description='{"image": [images], "image_id": [ids]}'
    )


class Classification(BaseModel):
    class_id: int
    probabilities: list[float] = Field(description="float32, one per class")


class ClassifyResponse(BaseModel):
    predictions: list[Classification]


class FaceOut(BaseModel):
    box: Annotated[list[int], Field(min_length=4, max_length=4, description="x, y, width, height")]
    landmarks: dict[str, Annotated[list[int], Field(min_length=2, max_length=2)]] = Field(
        description="left_eye, right_eye, nose, mouth_left, mouth_right as [x, y]"
    )
    confidence: float


class ImageFacesOut(BaseModel):
    image_id: str
    faces: list[FaceOut]


class FacesResponse(BaseModel):
    predictions: list[ImageFacesOut]


class ErrorBody(BaseModel):
    error: str = Field(description="what was wrong (TF Serving's error body)")
    field: str | None = Field(
        default=None, description="the part of the request at fault (wiremark's addition)"
    )


def schema(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema(ref_template="#/components/schemas/{model}")
