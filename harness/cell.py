"""One closed-loop cell in a fresh process: N Locust users against one server, for a fixed
time after a warm-up, with every latency kept (no histogram buckets).

    python -m wiremark.harness.cell --transport grpc --address 127.0.0.1:50051 \\
        --model iris --users 16 --duration 5 [--warmup 1] [--batch 1] [--encoding raw]

prints one JSON object: requests, errors, rps, p50/p90/p95/p99/p999/max in ms, mean reply
bytes, and the load generator's CPU share. A fresh process because grpcio must be patched
for gevent before any channel exists (see `harness/users.py`).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

PERCENTILES = {"p50": 50, "p90": 90, "p95": 95, "p99": 99, "p999": 99.9}


def batch_for(model: str, size: int) -> Any:
    from wiremark.payloads import samples

    if model in ("iris", "iris_rf"):
        return samples.iris_rows(size)[0]
    if model == "mnist":
        return samples.mnist_digits(size)[0]
    return (samples.face_images(sizes=(160,)) * size)[:size]


def summarise(
    latencies_ms: list[float], errors: int, wall_s: float, reply_bytes: int, cpu_s: float
) -> dict[str, Any]:
    values = np.asarray(latencies_ms, dtype=np.float64)
    out: dict[str, Any] = {
        "requests": int(values.size),
        "errors": errors,
        "duration_s": round(wall_s, 3),
        "rps": round(values.size / wall_s, 1) if wall_s > 0 else 0.0,
        "reply_bytes": round(reply_bytes / values.size, 1) if values.size else 0.0,
        "client_cpu": round(cpu_s / wall_s, 3) if wall_s > 0 else 0.0,
    }
    for key, q in PERCENTILES.items():
        out[key] = round(float(np.percentile(values, q)), 4) if values.size else None
    out["max"] = round(float(values.max()), 4) if values.size else None
    return out


def run_cell(args: argparse.Namespace) -> dict[str, Any]:
    import gevent
    from locust.env import Environment

    from wiremark.payloads.contract import PixelEncoding

    from .users import Workload, user_class

    workload = Workload()
    workload.model, workload.encoding = args.model, PixelEncoding(args.encoding)
    workload.batch = batch_for(args.model, args.batch)
    env = Environment(user_classes=[user_class(args.transport, args.address, workload)])
    latencies: list[float] = []
    state = {"measuring": False, "errors": 0, "bytes": 0}

    def on_request(response_time: float, response_length: int, exception: Any, **_: Any) -> None:
        if not state["measuring"]:
            return
        if exception is not None:
            state["errors"] += 1
        else:
            latencies.append(response_time)
            state["bytes"] += response_length

    env.events.request.add_listener(on_request)
    runner = env.create_local_runner()
    runner.start(args.users, spawn_rate=min(max(args.users * 10, 10), 100))
    gevent.sleep(args.warmup)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    state["measuring"] = True
    start = time.perf_counter()
    gevent.sleep(args.duration)
    state["measuring"] = False
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    runner.quit()
    cpu = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
    return summarise(latencies, int(state["errors"]), wall, int(state["bytes"]), cpu)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m wiremark.harness.cell", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--transport", choices=("grpc", "json", "msgpack"), required=True)
    parser.add_argument("--address", required=True, help="HOST:PORT")
    parser.add_argument("--model", default="iris")
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--encoding", choices=("raw", "list"), default="raw")
    args = parser.parse_args(argv)
    print(json.dumps(run_cell(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
