"""The result file: what `wiremark bench` writes and what the report and the gate read.

`DIR/results.json` is one JSON object, rewritten whole (atomically) after every cell, so an
interrupted run keeps every cell it finished; `DIR/results.csv` holds the same cells, one
row each. Fields (schema_version 1):

    schema_version   1
    wiremark         the wiremark version that wrote the file
    run_id           e.g. "20261122T103800Z-3f5060c"
    started, finished  ISO-8601 UTC; finished is null while the run is going (or was cut)
    commit           git commit of the working tree, or null
    scenario         the scenario as run (name and every setting, defaults filled in)
    machine          hostname, platform, cpu_model, cpus, memory_gib
    versions         python, grpcio, protobuf, tensorflow, fastapi, uvicorn, msgpack, locust, ...
    placement        server_cpus, client_cpus (taskset lists or null), and a note
    settings         how each transport was run (server flavour, event loop, codecs, client)
    conformance      [{model, transport, inputs, mismatches: [str], worst, passed}]
    cells            [cell, ...] in the order they finished

A cell (None where not measured):

    trial            0-based repetition (`bench --repeat N` runs the matrix N times)
    model, transport  e.g. "mnist", "grpc"
    mode             "closed" (N users, no wait) or "open" (a target arrival rate)
    concurrency      closed loop: users; open loop: the most requests in flight allowed
    rate, arrival    open loop: target requests/s and "constant" or "poisson"
    batch, encoding, compression   instances per request, "raw"/"list" pixels, "none"/"gzip"
    duration_s       the measured window (warm-up excluded)
    requests, errors completed requests and failed ones in the window
    rps              completed requests per second
    p50_ms p90_ms p95_ms p99_ms p999_ms max_ms mean_ms   from every latency (no buckets);
                     open loop counts from the intended send time
    late, dropped    open loop: sends more than 1 ms behind schedule, and sends skipped
                     because `concurrency` requests were already in flight
    request_bytes, response_bytes   body bytes per request (protobuf message / JSON / msgpack)
    wire_up_bytes, wire_down_bytes  bytes on the TCP connection per request, each way
                     (headers and framing included), from a separate relay pass
    client_cpu_ms, server_cpu_ms    CPU time per request (user+system) of the load generator
                     and of the server process
    client_cpu_share CPU used by the load generator / cores it had (1.0 = saturated)
    server_peak_rss_mb   the server's peak resident memory so far (VmHWM)
    server_decode_ms, server_infer_ms, server_encode_ms  medians of the Server-Timing of
                     sampled replies
    client_encode_ms, client_decode_ms  the client codec's own cost for this payload, timed
                     in-process
    inprocess_ms     the same model on the same batch called in-process (median)
    processes        load-generator processes used
    client_bound     the load generator, not the server, was the bottleneck
    scaling          what worker scaling concluded, in words
    sampled, sample_mismatches   replies checked against the in-process reference during load
    valid            False when the cell missed its minimum duration or request count, had
                     errors, or a sampled reply did not conform
    invalid_reasons  why, in words
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

SCHEMA_VERSION = 1
RESULTS_JSON = "results.json"
RESULTS_CSV = "results.csv"

# What makes two cells the same measurement, across trials and across runs.
CELL_KEY = (
    "model",
    "transport",
    "mode",
    "concurrency",
    "rate",
    "arrival",
    "batch",
    "encoding",
    "compression",
)

CELL_FIELDS = (
    "trial",
    *CELL_KEY,
    "duration_s",
    "requests",
    "errors",
    "rps",
    "p50_ms",
    "p90_ms",
    "p95_ms",
    "p99_ms",
    "p999_ms",
    "max_ms",
    "mean_ms",
    "late",
    "dropped",
    "request_bytes",
    "response_bytes",
    "wire_up_bytes",
    "wire_down_bytes",
    "client_cpu_ms",
    "server_cpu_ms",
    "client_cpu_share",
    "server_peak_rss_mb",
    "server_decode_ms",
    "server_infer_ms",
    "server_encode_ms",
    "client_encode_ms",
    "client_decode_ms",
    "inprocess_ms",
    "processes",
    "client_bound",
    "scaling",
    "sampled",
    "sample_mismatches",
    "valid",
    "invalid_reasons",
)


class RecordError(ValueError):
    """A result file that cannot be read: missing, not JSON, or of another schema."""


@dataclass
class Run:
    """One result file, read back."""

    path: Path
    meta: dict[str, Any]
    cells: list[dict[str, Any]] = field(default_factory=list)

    @property
    def label(self) -> str:
        return str(self.meta.get("run_id") or self.path.parent.name or self.path.name)

    @property
    def conformance(self) -> list[dict[str, Any]]:
        return list(self.meta.get("conformance") or [])

    def frame(self) -> pd.DataFrame:
        """The cells as a DataFrame, every field a column (missing ones as None)."""
        frame = pd.DataFrame(self.cells, columns=list(CELL_FIELDS))
        frame.insert(0, "run", self.label)
        return frame


class ResultWriter:
    """Keeps `results.json` and `results.csv` in DIR current after every cell."""

    def __init__(self, out_dir: Path, meta: dict[str, Any]) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.doc: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            **meta,
            "finished": None,
            "cells": [],
        }
        self.doc.setdefault("conformance", [])
        self.flush()

    @property
    def json_path(self) -> Path:
        return self.out_dir / RESULTS_JSON

    def set(self, key: str, value: Any) -> None:
        self.doc[key] = value
        self.flush()

    def add_cell(self, cell: dict[str, Any]) -> None:
        unknown = set(cell) - set(CELL_FIELDS)
        if unknown:
            raise ValueError(f"unknown cell field(s): {', '.join(sorted(unknown))}")
        self.doc["cells"].append({name: cell.get(name) for name in CELL_FIELDS})
        self.flush()

    def flush(self) -> None:
        _atomic_write(self.json_path, json.dumps(self.doc, indent=1, default=str))
        frame = pd.DataFrame(self.doc["cells"], columns=list(CELL_FIELDS))
        if not frame.empty:
            frame["invalid_reasons"] = frame["invalid_reasons"].map(lambda r: "; ".join(r or ()))
        _atomic_write(self.out_dir / RESULTS_CSV, frame.to_csv(index=False))


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def load(path: str | Path) -> Run:
    """Read one result file (or a directory holding `results.json`)."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_JSON
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise RecordError(f"{path}: no such result file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RecordError(f"{path}: not a wiremark result file ({exc})") from None
    if not isinstance(doc, dict) or "schema_version" not in doc:
        raise RecordError(f"{path}: not a wiremark result file (no schema_version)")
    if doc["schema_version"] != SCHEMA_VERSION:
        raise RecordError(
            f"{path}: schema_version {doc['schema_version']!r}; this wiremark reads "
            f"{SCHEMA_VERSION}"
        )
    cells = doc.pop("cells", None)
    if not isinstance(cells, list):
        raise RecordError(f"{path}: 'cells' is not a list")
    return Run(path, doc, cells)


def load_all(paths: Iterable[str | Path]) -> list[Run]:
    return [load(p) for p in paths]
