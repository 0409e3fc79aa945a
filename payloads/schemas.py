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


class TabularRequest(BaseModel):
    instances: list[Float4] = Field(
        description="rows of sepal length, sepal width, petal length, petal width (cm)",
        examples=[[[5.1, 3.5, 1.4, 0.2]]],
    )


class DigitsRequest(BaseModel):
    instances: list[B64 | Annotated[list[Row28], Field(min_length=28, max_length=28)]] = Field(
        description="28x28 uint8 images: 784 raw bytes ({'b64': ...} / bin) or 28 rows of 28 ints"
    )


class FaceInstance(BaseModel):
    image_id: str = ""
    image: B64 = Field(description="JPEG/PNG file bytes")


class FacesRequest(BaseModel):
    instances: list[FaceInstance]


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
    error: str = Field(description="the error class, e.g. InvalidInput")
    message: str
    field: str | None = Field(default=None, description="the part of the request at fault")


def schema(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema(ref_template="#/components/schemas/{model}")
