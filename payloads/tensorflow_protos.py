"""TensorFlow's own message types (TensorProto, SignatureDef, ...) without importing TensorFlow.

TF Serving's API is written in terms of TensorFlow's `.proto` files, and `tensorflow-cpu`
ships them compiled (`tensorflow/core/framework/tensor_pb2.py`, ...). Importing one of
those modules imports all of TensorFlow first: 7.9 s and 618 MB here, the cost TF Serving's
users ask a client to be spared (tensorflow/serving#2140). So this module reads the
serialized descriptor each of those files carries, adds it to protobuf's default pool (its
dependencies first), and hands out the message classes protobuf builds from it: about 2 ms,
and the very classes TensorFlow's modules would give (one descriptor, one class), so a
`tf.make_tensor_proto(...)` result goes into a request built here and back out unchanged,
whichever of the two is imported first.

    from wiremark.payloads import tensorflow_protos as tfp
    TensorProto = tfp.message("tensorflow.TensorProto")

Nothing here is a second copy of TensorFlow's protos: the bytes are the installed
`tensorflow-cpu`'s own, read where it put them.
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import re
import threading
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import FileDescriptor

# The files TF Serving's API imports; their dependencies come with them.
ROOTS = (
    "tensorflow/core/framework/tensor.proto",
    "tensorflow/core/protobuf/meta_graph.proto",
    "tensorflow/core/example/example.proto",
    "tensorflow/core/protobuf/error_codes.proto",
)
# Where tensorflow-cpu keeps the compiled files of each proto root (XLA's are inside it).
LOCATIONS = {"xla/": "tensorflow/compiler/xla/", "tsl/": "tensorflow/tsl/"}

_SERIALIZED = re.compile(r"AddSerializedFile\((b'.*?')\)\n", re.S)
_lock = threading.Lock()


class MissingTensorFlow(RuntimeError):
    pass


@functools.cache
def _package_root() -> Path:
    spec = importlib.util.find_spec("tensorflow")  # finds the package, imports nothing
    if spec is None or not spec.submodule_search_locations:
        raise MissingTensorFlow(
            "TF Serving's API needs TensorFlow's .proto messages, which tensorflow-cpu ships: "
            "pip install tensorflow-cpu"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def serialized(name: str) -> bytes:
    """The serialized FileDescriptorProto that TensorFlow's compiled `name` carries."""
    path = name
    for prefix, inside in LOCATIONS.items():
        if name.startswith(prefix):
            path = inside + name.removeprefix(prefix)
    source = _package_root().parent / (path.removesuffix(".proto") + "_pb2.py")
    try:
        text = source.read_text()
    except OSError:
        raise MissingTensorFlow(f"{name}: {source} is not in this tensorflow install") from None
    match = _SERIALIZED.search(text)
    if match is None:
        raise MissingTensorFlow(f"{source}: no serialized descriptor in it")
    return bytes(ast.literal_eval(match.group(1)))


def _dependencies(data: bytes) -> list[str]:
    return list(descriptor_pb2.FileDescriptorProto.FromString(data).dependency)


def load(name: str) -> FileDescriptor:
    """`name` (a TensorFlow .proto path) in the default pool, with its dependencies."""
    pool = descriptor_pool.Default()
    with _lock:
        return _load(pool, name)


def _load(pool: Any, name: str) -> FileDescriptor:
    try:
        return pool.FindFileByName(name)  # already there: TensorFlow's import, or ours
    except KeyError:
        pass
    if name.startswith("google/protobuf/"):  # protobuf's own: its module adds it
        module = importlib.import_module(
            "google.protobuf." + Path(name).name.removesuffix(".proto") + "_pb2"
        )
        return module.DESCRIPTOR  # type: ignore[no-any-return]
    data = serialized(name)
    for dependency in _dependencies(data):
        _load(pool, dependency)
    return pool.AddSerializedFile(data)  # type: ignore[no-any-return]


def message(full_name: str) -> Any:
    """The message class of a TensorFlow message type, e.g. "tensorflow.TensorProto"."""
    for root in ROOTS:
        load(root)
    return message_factory.GetMessageClass(
        descriptor_pool.Default().FindMessageTypeByName(full_name)
    )


def enum(full_name: str) -> Any:
    """An enum of TensorFlow's protos, e.g. "tensorflow.DataType" (a protobuf EnumDescriptor)."""
    for root in ROOTS:
        load(root)
    return descriptor_pool.Default().FindEnumTypeByName(full_name)


def descriptor_set() -> bytes:
    """TensorFlow's files TF Serving's API imports, as a FileDescriptorSet for protoc's
    `--descriptor_set_in` (protobuf's own files are left to protoc's include path)."""
    files: dict[str, bytes] = {}

    def visit(name: str) -> None:
        if name in files or name.startswith("google/protobuf/"):
            return
        data = serialized(name)
        for dependency in _dependencies(data):
            visit(dependency)
        files[name] = data

    for root in ROOTS:
        visit(root)
    out = descriptor_pb2.FileDescriptorSet()
    for data in files.values():
        out.file.add().MergeFromString(data)
    return out.SerializeToString()
