"""Regenerate the protobuf and gRPC stubs in payloads/: wiremark's own
(payloads/wiremark.proto), TF Serving's vendored API (payloads/tensorflow_serving/) and the
Open Inference Protocol's (payloads/open_inference/).

    python scripts/gen_protos.py          # write the stubs
    python scripts/gen_protos.py --check  # exit 1 if the committed stubs are stale

grpc_tools writes top-level imports (`import wiremark_pb2`, `from tensorflow_serving.apis
import model_pb2`); they are rewritten to this package so the stubs work inside
`wiremark.payloads`. TF Serving's files import TensorFlow's `.proto` files, which
tensorflow-cpu ships only compiled: protoc reads them as a descriptor set built from those
compiled files, and the stubs load them through `payloads/tensorflow_protos.py` rather than
importing TensorFlow. The Open Inference Protocol's messages are built into a descriptor pool
of their own (see payloads/open_inference/README.md), so tritonclient's `inference` package
can be imported beside them.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

PAYLOADS = Path(__file__).resolve().parent.parent / "payloads"
PACKAGE = "wiremark.payloads"
TFS = "tensorflow_serving"
OIP = "open_inference/open_inference_grpc.proto"
# (proto, does it define services)
PROTOS = (
    [("wiremark.proto", True)]
    + [
        (f"{TFS}/apis/{name}.proto", name in ("prediction_service", "model_service"))
        for name in (
            "classification",
            "get_model_metadata",
            "get_model_status",
            "inference",
            "input",
            "model",
            "model_management",
            "model_service",
            "predict",
            "prediction_service",
            "regression",
            "status",
        )
    ]
    + [
        (f"{TFS}/config/{name}.proto", False)
        for name in (
            "file_system_storage_path_source",
            "log_collector_config",
            "logging_config",
            "model_server_config",
        )
    ]
    + [(OIP, False)]
)
PRIVATE_POOL = (
    "# wiremark: a pool of its own, so tritonclient's `inference` package can load beside it\n"
    "POOL = _descriptor_pool.DescriptorPool()\n"
    "DESCRIPTOR = POOL.AddSerializedFile("
)


def stubs(proto: str, services: bool) -> list[str]:
    base = proto.removesuffix(".proto")
    return [f"{base}_pb2.py", f"{base}_pb2.pyi"] + ([f"{base}_pb2_grpc.py"] if services else [])


def rewrite(text: str) -> str:
    # wiremark's gRPC stub: `import wiremark_pb2 as ...`
    text = re.sub(r"^import wiremark_pb2 as", "from . import wiremark_pb2 as", text, flags=re.M)
    # TF Serving's own modules, inside this package
    text = re.sub(
        rf"^from {TFS}\.(\w+) import", rf"from {PACKAGE}.{TFS}.\1 import", text, flags=re.M
    )
    # TensorFlow's messages: from the installed tensorflow-cpu, without importing it
    text, n = re.subn(
        r"^from tensorflow\.([\w.]+) import (\w+)_pb2 as (\w+)$",
        lambda m: f'{m[3]} = _tensorflow.load("tensorflow/{m[1].replace(".", "/")}/{m[2]}.proto")',
        text,
        flags=re.M,
    )
    # protoc aliases a publicly imported file through its importer's module, which the
    # loaded descriptor is not; the alias is unused, and the file is in the pool already
    text = re.sub(
        r"^try:\n  (\w+) = \w+\.\1\nexcept AttributeError:\n  \1 = .*\n",
        "",
        text,
        flags=re.M,
    )
    if n:
        text = re.sub(
            r"^(# @@protoc_insertion_point\(imports\))$",
            rf"\1\nfrom {PACKAGE} import tensorflow_protos as _tensorflow",
            text,
            count=1,
            flags=re.M,
        )
    return text


def generate(out: Path) -> None:
    import grpc_tools
    from grpc_tools import protoc

    from wiremark.payloads import tensorflow_protos

    with tempfile.TemporaryDirectory() as tmp:
        tf_set = Path(tmp) / "tensorflow.pb"
        tf_set.write_bytes(tensorflow_protos.descriptor_set())
        for proto, services in PROTOS:
            argv = [
                "protoc",
                f"-I{PAYLOADS}",
                f"-I{Path(grpc_tools.__file__).parent / '_proto'}",
                f"--descriptor_set_in={tf_set}",
                f"--python_out={out}",
                f"--pyi_out={out}",
            ]
            if services:
                argv.append(f"--grpc_python_out={out}")
            if protoc.main([*argv, str(PAYLOADS / proto)]) != 0:
                raise SystemExit(f"protoc failed on {proto}")
    for proto, services in PROTOS:
        for name in stubs(proto, services):
            path = out / name
            if name.endswith(".py"):
                text = rewrite(path.read_text())
                if proto == OIP:
                    text = text.replace(
                        "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile(", PRIVATE_POOL
                    )
                path.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    if not args.check:
        generate(PAYLOADS)
        print(f"wrote the stubs of {len(PROTOS)} .proto files in {PAYLOADS}")
        return 0
    stale = []
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        for proto, _ in PROTOS:
            name = proto.removesuffix(".proto") + "_pb2.py"
            committed = PAYLOADS / name
            if not committed.exists() or descriptor((Path(tmp) / name).read_text()) != descriptor(
                committed.read_text()
            ):
                stale.append(f"payloads/{name}")
    if stale:
        print(f"stale stubs: {', '.join(stale)}: run python scripts/gen_protos.py", file=sys.stderr)
        return 1
    return 0


def descriptor(stub: str) -> str:
    """The serialized FileDescriptorProto in a _pb2 module: the part that must match the
    .proto, whatever grpcio-tools version wrote the rest."""
    match = re.search(r"AddSerializedFile\((b'.*?')\)", stub)
    if match is None:
        raise SystemExit("no serialized descriptor found in the stub")
    return match.group(1)


if __name__ == "__main__":
    sys.exit(main())
