"""Synthetic result files for testing the report and the gate without running a benchmark.

The figures are plausible, not measured: latency grows with concurrency and payload, gRPC
is a little faster than MessagePack, which is a little faster than JSON. `slowdown` scales
every latency (and divides throughput), as a regression would; `noise` is the relative
spread between trials. The files are of the current schema, as `bench` writes them for a
plain run (no arm or block): the run's `transports`, and `transport_tax_ms`, `client` and
`tls` (false) in every cell.
`clients` names the load users' client libraries; a library client costs more client CPU
per request (LIBRARY_CPU) than the lean one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from wiremark.payloads import transport as registry
from wiremark.reports.records import (
    CELL_FIELDS,
    RESULTS_JSON,
    SCHEMA_VERSION,
    transport_tax,
)

MODELS = {"iris": (0.35, 90, 60), "mnist": (0.9, 1100, 120), "face": (45.0, 21000, 300)}
SPEED = {"grpc": 1.0, "msgpack": 1.08, "json": 1.3}
# Client CPU per request, ms: the lean client's, and each library client's by transport.
LEAN_CPU = 0.2
LIBRARY_CPU = {"grpc": 0.55, "msgpack": 0.45, "json": 0.5}
# The run document's "transports", as `bench` writes them.
TRANSPORTS = [registry.get(name).describe() for name in ("grpc", "json", "msgpack")]


def meta(run_id: str) -> dict[str, Any]:
    return {
        "wiremark": "0.1.0",
        "run_id": run_id,
        "started": "2026-11-22T10:00:00Z",
        "commit": "0000000",
        "scenario": {"name": "synthetic", "models": list(MODELS), "duration_s": 5},
        "machine": {"hostname": "test", "platform": "Linux", "cpu_model": "x", "cpus": 2},
        "versions": {"python": "3.11", "grpcio": "1.85.1", "protobuf": "7.35.1"},
        "placement": {"server_cpus": "0", "client_cpus": "1", "note": "synthetic"},
        "transports": [dict(t) for t in TRANSPORTS],
        "settings": {"grpc": "threads", "json": "uvicorn+uvloop+httptools"},
    }


def cell(
    model: str,
    transport: str,
    users: int,
    trial: int,
    rng: Any,
    slowdown: float,
    noise: float,
    mode: str = "closed",
    rate: float | None = None,
    client: str = "lean",
) -> dict[str, Any]:
    base, req_bytes, resp_bytes = MODELS[model]
    p50 = base * SPEED[transport] * (1 + 0.08 * users) * slowdown * (1 + noise * rng.normal())
    rps = users / p50 * 1000.0
    body = req_bytes * (1.35 if transport == "json" else 1.0)
    return {
        "trial": trial,
        "model": model,
        "transport": transport,
        "mode": mode,
        "concurrency": users,
        "rate": rate,
        "arrival": "constant" if rate else None,
        "batch": 1,
        "encoding": "raw",
        "compression": "none",
        "tls": False,
        "client": client,
        "duration_s": 5.0,
        "requests": int(rps * 5),
        "errors": 0,
        "rps": round(rps, 1),
        "p50_ms": p50,
        "p90_ms": p50 * 1.4,
        "p95_ms": p50 * 1.6,
        "p99_ms": p50 * 2.2,
        "p999_ms": p50 * 3.5,
        "max_ms": p50 * 6,
        "mean_ms": p50 * 1.1,
        "late": 0 if rate else None,
        "dropped": 0 if rate else None,
        "request_bytes": body,
        "response_bytes": resp_bytes,
        "wire_up_bytes": body + 120,
        "wire_down_bytes": resp_bytes + 140,
        "client_cpu_ms": LEAN_CPU if client == "lean" else LIBRARY_CPU[transport],
        "server_cpu_ms": 0.3 * SPEED[transport],
        "client_cpu_share": 0.6,
        "server_peak_rss_mb": 900.0,
        "server_decode_ms": 0.02,
        "server_infer_ms": base * 0.3,
        "server_encode_ms": 0.01,
        "client_encode_ms": 0.01,
        "client_decode_ms": 0.01,
        "inprocess_ms": base * 0.3,
        "transport_tax_ms": transport_tax(p50, base * 0.3),
        "processes": 1,
        "client_bound": False,
        "scaling": "server-bound",
        "sampled": 10,
        "sample_mismatches": 0,
        "valid": True,
        "invalid_reasons": [],
    }


def write_run(out_dir: Path, **options: Any) -> Path:
    """Write a synthetic run (`run_doc(**options)`) as `out_dir/results.json`, as `bench`
    would; returns the path."""
    return write_doc(Path(out_dir), run_doc(**options))


def run_doc(
    *,
    run_id: str = "synthetic",
    trials: int = 3,
    slowdown: float = 1.0,
    noise: float = 0.02,
    seed: int = 0,
    concurrency: tuple[int, ...] = (1, 8),
    clients: tuple[str, ...] = ("lean",),
) -> dict[str, Any]:
    """A synthetic run's document, built in memory (same cells for the same arguments), to
    edit before `write_doc`."""
    rng = np.random.default_rng(seed)
    library_rng = np.random.default_rng(seed + 1000)  # the lean cells do not depend on it
    conformance = [
        {"model": m, "transport": t, "inputs": 10, "mismatches": [], "worst": 1e-8, "passed": True}
        for m in MODELS
        for t in SPEED
    ]
    cells = []
    for trial in range(trials):
        for model in MODELS:
            for transport in SPEED:
                for client in clients:
                    draw = rng if client == "lean" else library_rng
                    for users in concurrency:
                        args = (model, transport, users, trial, draw, slowdown, noise)
                        cells.append(cell(*args, client=client))
                cells.append(
                    cell(model, transport, 4, trial, rng, slowdown, noise, mode="open", rate=100.0)
                )
    return {
        "schema_version": SCHEMA_VERSION,
        **meta(run_id),
        "finished": "2026-11-22T10:05:00Z",
        "conformance": conformance,
        "cells": [{name: c.get(name) for name in CELL_FIELDS} for c in cells],
    }


def write_doc(out_dir: Path, doc: dict[str, Any]) -> Path:
    """Write a `run_doc` document as `out_dir/results.json`; returns the path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / RESULTS_JSON
    path.write_text(json.dumps(doc, indent=1))
    return path
