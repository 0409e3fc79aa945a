"""Regenerate the protobuf and gRPC stubs in payloads/ from payloads/wiremark.proto.

    python scripts/gen_protos.py          # write the stubs
    python scripts/gen_protos.py --check  # exit 1 if the committed stubs are stale

grpc_tools writes `import wiremark_pb2` into the gRPC stub; it is rewritten to a relative
import so the stubs work inside the `wiremark.payloads` package.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

PAYLOADS = Path(__file__).resolve().parent.parent / "payloads"
PROTO = "wiremark.proto"
OUTPUTS = ("wiremark_pb2.py", "wiremark_pb2.pyi", "wiremark_pb2_grpc.py")


def generate(out: Path) -> None:
    from grpc_tools import protoc

    argv = [
        "protoc",
        f"-I{PAYLOADS}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        str(PAYLOADS / PROTO),
    ]
    if protoc.main(argv) != 0:
        raise SystemExit("protoc failed")
    stub = out / "wiremark_pb2_grpc.py"
    stub.write_text(
        re.sub(
            r"^import wiremark_pb2 as",
            "from . import wiremark_pb2 as",
            stub.read_text(),
            flags=re.M,
        )
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    if not args.check:
        generate(PAYLOADS)
        print(f"wrote {', '.join(OUTPUTS)} in {PAYLOADS}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh = descriptor((Path(tmp) / "wiremark_pb2.py").read_text())
    if fresh != descriptor((PAYLOADS / "wiremark_pb2.py").read_text()):
        print(
            "payloads/wiremark_pb2.py is stale: run python scripts/gen_protos.py", file=sys.stderr
        )
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
