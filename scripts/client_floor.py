"""What one gRPC call costs the client, by client kind: the floor under the harness's
concurrency-1 latencies (README, `wiremark calibrate`).

    python scripts/client_floor.py [--rounds 3] [--calls 3000]

Starts the iris gRPC server on core 0, then, pinned to core 1, one call at a time, in
alternating rounds: the lean connection (`harness/http2.py`) on a plain blocking socket and
on gevent's sockets, and grpcio without and with gevent; h2load -c1 beside them. Prints
p50 and CPU per call of each (h2load: its mean time per request). Each client kind runs in
a process of its own (gevent patches the whole process).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KINDS = ("lean", "lean-gevent", "grpcio", "grpcio-gevent")


def one(address: str, kind: str, calls: int) -> str:
    """Run in the child process: `calls` calls of one client kind; its figures as a line."""
    if kind.endswith("gevent"):
        from gevent import monkey

        monkey.patch_all()
        if kind.startswith("grpcio"):
            import grpc.experimental.gevent as grpc_gevent

            grpc_gevent.init_gevent()
    from wiremark.payloads import samples, transport
    from wiremark.payloads.contract import GRPC_METHODS, MODEL_FAMILIES, PixelEncoding, grpc_path

    family = MODEL_FAMILIES["iris"]
    codec = transport.get("grpc").codec
    body = codec.encode_request(family, "iris", samples.iris_rows(1)[0], PixelEncoding.RAW)
    path = grpc_path(GRPC_METHODS[family])
    if kind.startswith("lean"):
        from wiremark.harness.http2 import Connection

        host, port = address.rsplit(":", 1)
        conn = Connection(host, int(port))
        conn.connect()
        call = conn.prepare(path, body)

        def once() -> object:
            return conn.exchange(call)
    else:
        import grpc

        channel = grpc.insecure_channel(address)
        grpc.channel_ready_future(channel).result(timeout=10)
        method = channel.unary_unary(path)

        def once() -> object:
            return method(body)

    for _ in range(300):  # warm
        once()
    latencies = []
    cpu = time.process_time()
    for _ in range(calls):
        start = time.perf_counter()
        once()
        latencies.append(time.perf_counter() - start)
    per_call = (time.process_time() - cpu) / calls * 1e6
    latencies.sort()
    return f"{kind:<14} p50 {latencies[calls // 2] * 1e3:.3f} ms  CPU/call {per_call:4.0f} us"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--child", nargs=2, metavar=("ADDRESS", "KIND"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(one(args.child[0], args.child[1], args.calls))
        return 0

    from wiremark.harness.launch import ServerProcess
    from wiremark.payloads import samples, transport
    from wiremark.payloads.contract import GRPC_METHODS, MODEL_FAMILIES, PixelEncoding, grpc_path

    family = MODEL_FAMILIES["iris"]
    codec = transport.get("grpc").codec
    body = codec.encode_request(family, "iris", samples.iris_rows(1)[0], PixelEncoding.RAW)
    server = ServerProcess("grpc", ("--models", "iris"), "0")
    with tempfile.TemporaryDirectory() as tmp, server as s:
        message = Path(tmp) / "iris.grpc"
        message.write_bytes(b"\x00" + len(body).to_bytes(4, "big") + body)
        url = f"http://{s.address}{grpc_path(GRPC_METHODS[family])}"
        pin = ["taskset", "-c", "1"]
        for r in range(1, args.rounds + 1):
            for kind in KINDS:
                child = [sys.executable, __file__, "--calls", str(args.calls)]
                done = subprocess.run(
                    [*pin, *child, "--child", s.address, kind], capture_output=True, text=True
                )
                print(f"[{r}] " + (done.stdout.strip() or done.stderr.strip()[-400:]), flush=True)
            h2load = [*pin, "h2load", "-t1", "-c1", "-m1", "-D3", "--warm-up-time=1"]
            h2load += ["-d", str(message), "-H", "content-type: application/grpc"]
            out = subprocess.run(
                [*h2load, "-H", "te: trailers", url], capture_output=True, text=True
            ).stdout
            mean = re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", out)
            print(f"[{r}] {'h2load -c1':<14} mean {mean.group(1) if mean else '?'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
