"""The result file: what `wiremark bench` writes and what the report and the gate read.

`DIR/results.json` is one JSON object, rewritten whole (atomically) after every cell, so an
interrupted run keeps every cell it finished; `DIR/results.csv` holds the same cells, one
row each. Fields (schema_version 6; `load` reads 1 to 6):

    schema_version   6
    wiremark         the wiremark version that wrote the file
    run_id           e.g. "20261122T103800Z-3f5060c"
    started, finished  ISO-8601 UTC; finished is null while the run is going (or was cut)
    commit           git commit of the working tree, or null
    scenario         the scenario as run (name and every setting, defaults filled in)
    machine          hostname, platform, cpu_model, cpus, memory_gib
    versions         python, grpcio, protobuf, tensorflow, fastapi, uvicorn, msgpack, locust, ...
    placement        server_cpus, client_cpus (taskset lists or null), and a note
    transports       the transports of the run, in display order: one object each, with
                     name (as the cells name it), label (as the report writes it),
                     short_label (table headers, plot ticks), wire (WIRE_GRPC or
                     WIRE_HTTP1), server (the server kind), api (whose API the bodies
                     follow), media_type and peer (the other project whose server it is,
                     e.g. "MLServer"; "" for wiremark's own, and for files from before
                     peers, which lack the key). The report takes every transport's label,
                     order and colour from here and compares transports by wire; a
                     transport in the cells but not here sorts last, labelled by its name.
                     Schema 1 had no such key: `load` supplies LEGACY_TRANSPORTS.
    settings         how each transport was run (server flavour, event loop, codecs, client)
    ab               an A/B run (`bench --ab`, `--baseline-target`): {"arms": {ARM: how its
                     servers ran}, "seed": the order's seed, "order": how the arms were
                     interleaved, "slot_ms": the length of an arm's turn inside a cell
                     (runs before turns, which ran each cell on one arm after the other,
                     lack it)}; null for a plain run. Schemas 1-3 had no such key.
    conformance      [{model, transport, inputs, mismatches: [str], worst, passed}]
    cells            [cell, ...] in the order they finished

The wires (a transport descriptor's `wire`):

    WIRE_GRPC        "grpc-h2": gRPC framing over HTTP/2
    WIRE_HTTP1       "http1.1": REST over HTTP/1.1

A cell (None where not measured):

    trial            0-based repetition (`bench --repeat N` runs the matrix N times)
    arm, block       an A/B run's arm (ARMS: "baseline" or "current") and block: in block
                     b every cell sent to both arms by turns (earlier runs: back to back, in
                     a random order); block equals trial. Both null in a plain run (and in
                     schemas 1-3).
    model, transport  e.g. mnist, and a transport's name
    mode             "closed" (N users, no wait) or "open" (a target arrival rate)
    concurrency      closed loop: users; open loop: the most requests in flight allowed
    rate, arrival    open loop: target requests/s and "constant" or "poisson"
    batch, encoding, compression   instances per request, "raw"/"list" pixels, "none"/"gzip"
    tls              true: over TLS, the client verifying the server's certificate. Schemas
                     1 to 4 had no such field: `load` fills in false.
    client           the load users' client library: LEAN or LIBRARY. Schemas 1 and 2 had
                     no such field: `load` fills it in (`legacy_client`).
    duration_s       the measured window (warm-up excluded)
    requests, errors completed requests and failed ones in the window
    rps              completed requests per second
    p50_ms p90_ms p95_ms p99_ms p999_ms   the latency percentiles (PERCENTILES), and
    max_ms mean_ms   from every latency: the load workers' HdrHistograms merged (3
                     significant digits; schemas 1-5 kept every latency as a float); open
                     loop counts from the intended send time
    uncorrected_p50_ms ... uncorrected_max_ms   open loop: the same (UNCORRECTED) counted
                     from the actual send, as wrk2 reports beside the corrected ones; null
                     in closed loop and in schemas 1-5
    latency_hdr, latency_hdr_uncorrected   those histograms, HdrHistogram's compressed
                     base64 encoding (µs; `harness/histogram.py` reads it): the JSON file
                     only, not the CSV
    workers, workers_planned   load workers that finished the cell, of those it started
                     with (fewer: the cell is invalid); schemas 1-5 had neither
    load_workers     each finished worker: index, host, cores, versions, requests, errors,
                     wall_s, client_cpu_s, steal_s (CPU the hypervisor took from its
                     cores), client_cpu_share (of its one core), late, dropped,
                     client_bound. The JSON file only
    late, dropped    open loop: sends more than 1 ms behind schedule, and sends skipped
                     because `concurrency` requests were already in flight
    request_bytes, response_bytes   body bytes per request (protobuf message / JSON / msgpack)
    wire_up_bytes, wire_down_bytes  bytes on the TCP connection per request, each way
                     (headers and framing included), from a separate relay pass
    client_cpu_ms, server_cpu_ms    CPU time per request (user+system) of the load generator
                     and of the server process
    client_cpu_share CPU used by the load generator / cores it had (1.0 = saturated); from
                     schema 6, the busiest worker's share of its core
    server_peak_rss_mb   the server's peak resident memory so far (VmHWM)
    server_decode_ms, server_infer_ms, server_encode_ms  medians of the Server-Timing of
                     sampled replies
    client_encode_ms, client_decode_ms  the client codec's own cost for this payload, timed
                     in-process
    inprocess_ms     the same model on the same batch called in-process (median)
    transport_tax_ms what the transport adds: p50_ms - inprocess_ms (`transport_tax`),
                     rounded to 4 places; None where either is missing. Schema 1 had no
                     such field: `load` fills it in from those two.
    processes        load-generator processes used (from schema 6: local load workers)
    client_bound     the load generator, not the server, was the bottleneck (from schema
                     6: at least one worker was)
    scaling          what worker scaling concluded, in words
    sampled, sample_mismatches   replies checked against the in-process reference during load
    valid            False when the cell missed its minimum duration or request count, had
                     errors, or a sampled reply did not conform
    invalid_reasons  why, in words

This module is cheap to import (the load-generator process imports PERCENTILES from it):
pandas is imported only by `Run.frame` and `ResultWriter.flush`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

SCHEMA_VERSION = 6
READABLE_SCHEMAS = (1, 2, 3, 4, 5, 6)  # the schema versions `load` reads
RESULTS_JSON = "results.json"
RESULTS_CSV = "results.csv"

# The wires a transport descriptor names (payloads/transport.py writes the same words).
WIRE_GRPC = "grpc-h2"  # gRPC framing over HTTP/2
WIRE_HTTP1 = "http1.1"  # REST over HTTP/1.1
WIRES = (WIRE_GRPC, WIRE_HTTP1)

# The client libraries of the load users, as cells name them (harness/transports/base.py).
LEAN = "lean"  # the project's lean clients: the cell measures the server
LIBRARY = "library"  # the wire's stock Python library (grpcio, httpx)

# The arms of an A/B run, as cells name them.
BASELINE = "baseline"
CURRENT = "current"
ARMS = (BASELINE, CURRENT)

# The fields of a transport descriptor in the run document's "transports" list.
TRANSPORT_FIELDS = ("name", "label", "short_label", "wire", "server", "api", "media_type", "peer")

# The transports of schema-1 files, which did not record them. Read only by `load`, for
# those files: everything else takes the transports from the file.
LEGACY_TRANSPORTS: tuple[dict[str, str], ...] = (
    {
        "name": "grpc",
        "label": "gRPC",
        "short_label": "gRPC",
        "wire": WIRE_GRPC,
        "server": "grpcio",
        "api": "wiremark",
        "peer": "",
        "media_type": "application/grpc",
    },
    {
        "name": "json",
        "label": "JSON",
        "short_label": "JSON",
        "wire": WIRE_HTTP1,
        "server": "fastapi",
        "api": "wiremark",
        "peer": "",
        "media_type": "application/json",
    },
    {
        "name": "msgpack",
        "label": "MessagePack",
        "short_label": "MsgPack",
        "wire": WIRE_HTTP1,
        "server": "fastapi",
        "api": "wiremark",
        "peer": "",
        "media_type": "application/msgpack",
    },
)

# The latency percentiles every cell records: (key, quantile in per cent, label). A cell
# carries each as the field f"{key}_ms"; the report, the plots and the gate's rules (the
# key is the rule's name: p99:+10%) all follow this list.
PERCENTILES: tuple[tuple[str, float, str], ...] = (
    ("p50", 50.0, "p50"),
    ("p90", 90.0, "p90"),
    ("p95", 95.0, "p95"),
    ("p99", 99.0, "p99"),
    ("p999", 99.9, "p99.9"),
)
PERCENTILE_FIELDS: tuple[str, ...] = tuple(f"{key}_ms" for key, _, _ in PERCENTILES)
# The open-loop figures a cell also records from the actual send: f"uncorrected_{key}_ms".
UNCORRECTED: tuple[str, ...] = (*(key for key, _, _ in PERCENTILES), "max")

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
    "tls",
    "client",
)

CELL_FIELDS = (
    "trial",
    "arm",
    "block",
    *CELL_KEY,
    "duration_s",
    "requests",
    "errors",
    "rps",
    *PERCENTILE_FIELDS,
    "max_ms",
    "mean_ms",
    *(f"uncorrected_{key}_ms" for key in UNCORRECTED),
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
    "transport_tax_ms",
    "processes",
    "workers",
    "workers_planned",
    "client_bound",
    "scaling",
    "sampled",
    "sample_mismatches",
    "valid",
    "invalid_reasons",
)

# The cell fields of the JSON file only: lists and encoded histograms, not CSV columns.
JSON_CELL_FIELDS = ("load_workers", "latency_hdr", "latency_hdr_uncorrected")


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def transport_tax(p50_ms: Any, inprocess_ms: Any) -> float | None:
    """What the transport adds to a cell: its end-to-end p50 minus the in-process p50 of the
    same model and batch, rounded to 4 places; None when either is missing."""
    p50, inprocess = _number(p50_ms), _number(inprocess_ms)
    if p50 is None or inprocess is None:
        return None
    return round(p50 - inprocess, 4)


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

    @property
    def transports(self) -> list[dict[str, Any]]:
        """The run's transport descriptors, in display order (see the module docstring):
        the file's "transports", LEGACY_TRANSPORTS for a schema-1 run that has none."""
        given = self.meta.get("transports")
        if isinstance(given, list):
            return [{"peer": "", **t} for t in given if isinstance(t, dict) and t.get("name")]
        if self.meta.get("schema_version") == 1:
            return [dict(t) for t in LEGACY_TRANSPORTS]
        return []

    @property
    def is_ab(self) -> bool:
        """An A/B run: both arms measured in one run (`bench --ab`)."""
        return bool(self.meta.get("ab")) or any(
            isinstance(c, dict) and c.get("arm") for c in self.cells
        )

    def arm(self, name: str) -> Run:
        """One arm of an A/B run as a run of its own (the report shows the arms side by side,
        labelled `RUN_ID baseline` and `RUN_ID current`)."""
        meta = dict(self.meta)
        meta["run_id"] = f"{self.label} {name}"
        meta["arm_of"] = self.label
        meta["conformance"] = [
            c for c in self.conformance if not isinstance(c, dict) or c.get("arm") in (None, name)
        ]
        return Run(self.path, meta, [c for c in self.cells if c.get("arm") == name])

    def frame(self) -> pd.DataFrame:
        """The cells as a DataFrame, every field a column (missing ones as None)."""
        import pandas as pd

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
        """Append a cell; `transport_tax_ms`, when the cell does not carry it, is worked out
        from its `p50_ms` and `inprocess_ms`."""
        unknown = set(cell) - set(CELL_FIELDS) - set(JSON_CELL_FIELDS)
        if unknown:
            raise ValueError(f"unknown cell field(s): {', '.join(sorted(unknown))}")
        row = {name: cell.get(name) for name in CELL_FIELDS}
        row |= {name: cell[name] for name in JSON_CELL_FIELDS if name in cell}
        if "transport_tax_ms" not in cell:
            row["transport_tax_ms"] = transport_tax(cell.get("p50_ms"), cell.get("inprocess_ms"))
        self.doc["cells"].append(row)
        self.flush()

    def flush(self) -> None:
        import pandas as pd

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
    """Read one result file (or a directory holding `results.json`), of schema 1 to 6.

    A schema-1 file is brought up to schema 2 as it is read: every cell gets its
    `transport_tax_ms` (`transport_tax`), and the run its "transports" (LEGACY_TRANSPORTS)
    where it has none; `meta["schema_version"]` still says what the file was."""
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
    version = doc["schema_version"]
    if isinstance(version, bool) or version not in READABLE_SCHEMAS:
        raise RecordError(
            f"{path}: schema_version {version!r}; this wiremark reads "
            f"{', '.join(str(v) for v in READABLE_SCHEMAS[:-1])} and {READABLE_SCHEMAS[-1]}"
        )
    cells = doc.pop("cells", None)
    if not isinstance(cells, list):
        raise RecordError(f"{path}: 'cells' is not a list")
    transports = doc.get("transports")
    if transports is not None and not _descriptors(transports):
        raise RecordError(f"{path}: 'transports' is not a list of objects with a name")
    if version == 1:
        if transports is None:
            doc["transports"] = [dict(t) for t in LEGACY_TRANSPORTS]
        for cell in cells:
            if isinstance(cell, dict) and "transport_tax_ms" not in cell:
                cell["transport_tax_ms"] = transport_tax(
                    cell.get("p50_ms"), cell.get("inprocess_ms")
                )
    if version < 3:
        wires = {t["name"]: t.get("wire") for t in Run(path, doc).transports}
        for cell in cells:
            if isinstance(cell, dict) and "client" not in cell:
                cell["client"] = legacy_client(wires.get(cell.get("transport")))
    for cell in cells:  # schemas 1-4 had no `tls`: plaintext, as every cell was then
        if isinstance(cell, dict) and cell.get("tls") is None:
            cell["tls"] = False
    return Run(path, doc, cells)


def legacy_client(wire: Any) -> str:
    """The client library a cell of a schema-1 or -2 file was measured with, which it did
    not record: grpcio for gRPC (LIBRARY), this project's HTTP/1.1 connection for REST
    (LEAN; the oldest schema-1 files used geventhttpclient, which is neither)."""
    return LIBRARY if wire == WIRE_GRPC else LEAN


def _descriptors(value: Any) -> bool:
    """A list of transport descriptors, each an object with a name."""
    return isinstance(value, list) and all(
        isinstance(t, dict) and isinstance(t.get("name"), str) and t["name"] for t in value
    )


def load_all(paths: Iterable[str | Path]) -> list[Run]:
    return [load(p) for p in paths]
