"""TensorFlow's TensorProto <-> numpy, without TensorFlow.

`tf.make_tensor_proto` and `tf.make_ndarray` do this in TensorFlow; a client or a server of
TF Serving's API should not have to import TensorFlow for it (see `tensorflow_protos.py`).
Both of TensorProto's forms are read: `tensor_content` (raw little-endian bytes, what
`tf.make_tensor_proto` writes for a numpy array) and the typed `*_val` fields (one value
broadcast to the whole shape, as TensorFlow allows). Writes use `tensor_content` for numbers
and `string_val` for strings, as `tf.make_tensor_proto` does.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from . import tensorflow_protos
from .errors import InvalidInput, TooLarge

# DataType name -> (numpy dtype, the typed field its values go in)
NUMERIC: dict[str, tuple[Any, str]] = {
    "DT_FLOAT": (np.float32, "float_val"),
    "DT_DOUBLE": (np.float64, "double_val"),
    "DT_HALF": (np.float16, "half_val"),
    "DT_INT8": (np.int8, "int_val"),
    "DT_INT16": (np.int16, "int_val"),
    "DT_INT32": (np.int32, "int_val"),
    "DT_INT64": (np.int64, "int64_val"),
    "DT_UINT8": (np.uint8, "int_val"),
    "DT_UINT16": (np.uint16, "int_val"),
    "DT_UINT32": (np.uint32, "uint32_val"),
    "DT_UINT64": (np.uint64, "uint64_val"),
    "DT_BOOL": (np.bool_, "bool_val"),
}
STRING = "DT_STRING"
MAX_DIMS = 8


@functools.cache
def tensor_proto() -> Any:
    """TensorFlow's TensorProto class (the very one `tf.make_tensor_proto` returns)."""
    return tensorflow_protos.message("tensorflow.TensorProto")


@functools.cache
def _data_type() -> Any:
    return tensorflow_protos.enum("tensorflow.DataType")


def dtype_name(value: int) -> str:
    found = _data_type().values_by_number.get(value)
    return str(found.name) if found is not None else f"DataType {value}"


def dtype_value(name: str) -> int:
    return int(_data_type().values_by_name[name].number)


@functools.cache
def _by_numpy() -> dict[Any, str]:
    return {np.dtype(dtype): name for name, (dtype, _) in NUMERIC.items()}


def shape_of(tensor: Any, field: str) -> tuple[int, ...]:
    shape = tensor.tensor_shape
    if shape.unknown_rank:
        raise InvalidInput("tensor_shape has unknown rank: give every dimension", field)
    dims = tuple(int(d.size) for d in shape.dim)
    if len(dims) > MAX_DIMS or any(d < 0 for d in dims):
        raise InvalidInput(f"tensor_shape {list(dims)} is not a concrete shape", field)
    return dims


def to_numpy(tensor: Any, field: str, max_values: int) -> np.ndarray:
    """A request's tensor as a numpy array (strings: an object array of bytes). Raises
    InvalidInput naming `field` when its values do not fill its shape, and TooLarge when it
    holds more than `max_values` (checked before anything is copied)."""
    name = dtype_name(tensor.dtype)
    shape = shape_of(tensor, field)
    size = math.prod(shape)
    if size > max_values:
        raise TooLarge(
            f"tensor of shape {list(shape)} holds {size:,} values, more than the {max_values:,} "
            "of a batch at the limit",
            field,
        )
    if name == STRING:
        values = list(tensor.string_val)
        if len(values) == 1 and size > 1:
            values *= size
        if len(values) != size:
            raise InvalidInput(f"{len(values)} strings for shape {list(shape)}", field)
        out = np.empty(size, dtype=object)
        out[:] = values
        return out.reshape(shape)
    if name not in NUMERIC:
        raise InvalidInput(f"dtype {name} is not supported here", field)
    dtype, values_field = NUMERIC[name]
    wire = np.dtype(dtype).newbyteorder("<")
    content = tensor.tensor_content
    if content:
        if len(content) != size * wire.itemsize:
            raise InvalidInput(
                f"tensor_content holds {len(content)} bytes; shape {list(shape)} of {name} "
                f"needs {size * wire.itemsize}",
                field,
            )
        return np.frombuffer(content, dtype=wire).astype(dtype, copy=False).reshape(shape)
    values = getattr(tensor, values_field)
    if len(values) not in (size, 1) or (len(values) == 1 and size == 0):
        raise InvalidInput(f"{len(values)} values in {values_field} for shape {list(shape)}", field)
    if name == "DT_HALF":  # half_val holds the float16 bit patterns as ints
        array = np.asarray(values, dtype=np.uint16).view(np.float16)
    else:
        array = np.asarray(values, dtype=dtype)
    if len(values) == 1 and size != 1:
        array = np.full(size, array[0], dtype=dtype)
    return array.reshape(shape)


def from_numpy(array: np.ndarray, out: Any = None, typed: bool = False) -> Any:
    """A TensorProto of `array` (written into `out` when given, e.g. a map entry): numbers
    in `tensor_content`, as `tf.make_tensor_proto` writes a request's, or with `typed` in
    the typed field (`float_val`, `int64_val`, ...), as TF Serving writes its replies (a
    client reading `outputs[name].float_val` finds them there)."""
    tensor = tensor_proto()() if out is None else out
    for size in array.shape:
        tensor.tensor_shape.dim.add(size=int(size))
    if array.dtype == object or array.dtype.kind in "SU":
        tensor.dtype = dtype_value(STRING)
        tensor.string_val.extend(v if isinstance(v, bytes) else str(v).encode() for v in array.flat)
        return tensor
    name = _by_numpy().get(array.dtype)
    if name is None:
        raise ValueError(f"no TensorFlow dtype for numpy {array.dtype}")
    tensor.dtype = dtype_value(name)
    if typed:
        values = getattr(tensor, NUMERIC[name][1])
        if name == "DT_HALF":
            values.extend(array.astype(np.float16).view(np.uint16).ravel().tolist())
        else:
            values.extend(array.ravel().tolist())
        return tensor
    little = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    tensor.tensor_content = little.tobytes()
    return tensor
