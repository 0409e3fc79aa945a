from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class IrisRow(_message.Message):
    __slots__ = ("sepal_length", "sepal_width", "petal_length", "petal_width")
    SEPAL_LENGTH_FIELD_NUMBER: _ClassVar[int]
    SEPAL_WIDTH_FIELD_NUMBER: _ClassVar[int]
    PETAL_LENGTH_FIELD_NUMBER: _ClassVar[int]
    PETAL_WIDTH_FIELD_NUMBER: _ClassVar[int]
    sepal_length: float
    sepal_width: float
    petal_length: float
    petal_width: float
    def __init__(self, sepal_length: _Optional[float] = ..., sepal_width: _Optional[float] = ..., petal_length: _Optional[float] = ..., petal_width: _Optional[float] = ...) -> None: ...

class IrisRequest(_message.Message):
    __slots__ = ("model", "rows")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    model: str
    rows: _containers.RepeatedCompositeFieldContainer[IrisRow]
    def __init__(self, model: _Optional[str] = ..., rows: _Optional[_Iterable[_Union[IrisRow, _Mapping]]] = ...) -> None: ...

class Digit(_message.Message):
    __slots__ = ("raw", "values")
    RAW_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    raw: bytes
    values: PixelValues
    def __init__(self, raw: _Optional[bytes] = ..., values: _Optional[_Union[PixelValues, _Mapping]] = ...) -> None: ...

class PixelValues(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, values: _Optional[_Iterable[int]] = ...) -> None: ...

class DigitsRequest(_message.Message):
    __slots__ = ("model", "images")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    model: str
    images: _containers.RepeatedCompositeFieldContainer[Digit]
    def __init__(self, model: _Optional[str] = ..., images: _Optional[_Iterable[_Union[Digit, _Mapping]]] = ...) -> None: ...

class Classification(_message.Message):
    __slots__ = ("class_id", "probabilities")
    CLASS_ID_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    class_id: int
    probabilities: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, class_id: _Optional[int] = ..., probabilities: _Optional[_Iterable[float]] = ...) -> None: ...

class ClassifyResponse(_message.Message):
    __slots__ = ("predictions",)
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    predictions: _containers.RepeatedCompositeFieldContainer[Classification]
    def __init__(self, predictions: _Optional[_Iterable[_Union[Classification, _Mapping]]] = ...) -> None: ...

class EncodedImage(_message.Message):
    __slots__ = ("image_id", "data")
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    image_id: str
    data: bytes
    def __init__(self, image_id: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class FaceRequest(_message.Message):
    __slots__ = ("model", "images")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    model: str
    images: _containers.RepeatedCompositeFieldContainer[EncodedImage]
    def __init__(self, model: _Optional[str] = ..., images: _Optional[_Iterable[_Union[EncodedImage, _Mapping]]] = ...) -> None: ...

class Box(_message.Message):
    __slots__ = ("x", "y", "width", "height")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    x: int
    y: int
    width: int
    height: int
    def __init__(self, x: _Optional[int] = ..., y: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class Point(_message.Message):
    __slots__ = ("x", "y")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    x: int
    y: int
    def __init__(self, x: _Optional[int] = ..., y: _Optional[int] = ...) -> None: ...

class Landmarks(_message.Message):
    __slots__ = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
    LEFT_EYE_FIELD_NUMBER: _ClassVar[int]
    RIGHT_EYE_FIELD_NUMBER: _ClassVar[int]
    NOSE_FIELD_NUMBER: _ClassVar[int]
    MOUTH_LEFT_FIELD_NUMBER: _ClassVar[int]
    MOUTH_RIGHT_FIELD_NUMBER: _ClassVar[int]
    left_eye: Point
    right_eye: Point
    nose: Point
    mouth_left: Point
    mouth_right: Point
    def __init__(self, left_eye: _Optional[_Union[Point, _Mapping]] = ..., right_eye: _Optional[_Union[Point, _Mapping]] = ..., nose: _Optional[_Union[Point, _Mapping]] = ..., mouth_left: _Optional[_Union[Point, _Mapping]] = ..., mouth_right: _Optional[_Union[Point, _Mapping]] = ...) -> None: ...

class Face(_message.Message):
    __slots__ = ("box", "landmarks", "confidence")
    BOX_FIELD_NUMBER: _ClassVar[int]
    LANDMARKS_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    box: Box
    landmarks: Landmarks
    confidence: float
    def __init__(self, box: _Optional[_Union[Box, _Mapping]] = ..., landmarks: _Optional[_Union[Landmarks, _Mapping]] = ..., confidence: _Optional[float] = ...) -> None: ...

class ImageFaces(_message.Message):
    __slots__ = ("image_id", "faces")
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    FACES_FIELD_NUMBER: _ClassVar[int]
    image_id: str
    faces: _containers.RepeatedCompositeFieldContainer[Face]
    def __init__(self, image_id: _Optional[str] = ..., faces: _Optional[_Iterable[_Union[Face, _Mapping]]] = ...) -> None: ...

class FaceResponse(_message.Message):
    __slots__ = ("predictions",)
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    predictions: _containers.RepeatedCompositeFieldContainer[ImageFaces]
    def __init__(self, predictions: _Optional[_Iterable[_Union[ImageFaces, _Mapping]]] = ...) -> None: ...

class MetadataRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class ModelMetadata(_message.Message):
    __slots__ = ("name", "kind", "runtime", "device", "input", "output", "max_batch", "versions")
    class VersionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    runtime: str
    device: str
    input: str
    output: str
    max_batch: int
    versions: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., runtime: _Optional[str] = ..., device: _Optional[str] = ..., input: _Optional[str] = ..., output: _Optional[str] = ..., max_batch: _Optional[int] = ..., versions: _Optional[_Mapping[str, str]] = ...) -> None: ...
