"""`wiremark bench`: run a scenario's matrix against real servers and write the results.

    wiremark bench [--scenario quick|full|FILE] [--out DIR] [--repeat N]
                   [--target TRANSPORT=HOST:PORT ...] [--inject-delay-ms MS]

1. Starts one server per transport (and per compression setting) as its own process,
   pinned to the first half of the cores, the load generator to the other half; waits
   for health. With `--target` it measures running servers instead.
2. Checks conformance: every model on every transport against the in-process runner.
3. Runs every cell of the scenario (`harness/scenario.py`), each in fresh load-generator
   processes (`harness/cell.py`), with a progress display. A cell whose load generator
   saturated its cores is re-run with one more process while client cores remain; if none
   remain it is flagged client-bound. Replies are sampled and checked against the
   in-process reference during load; the first cell of each workload also counts the bytes
   on the wire through a relay, before its timed load.
4. Writes `DIR/results.json` and `DIR/results.csv` after every cell (an interrupted run
   keeps what it finished), then `DIR/report.html`.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import functools
import json
import math
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wiremark import __version__
from wiremark.payloads import bodies
from wiremark.payloads import transport as registry
from wiremark.payloads.contract import MODEL_FAMILIES, PixelEncoding, Prediction
from wiremark.payloads.errors import WiremarkError
from wiremark.payloads.timing import parse_server_timing
from wiremark.reports import records
from wiremark.reports.records import ResultWriter

from . import scenario as scenarios
from .cell import CLIENT_BOUND, batch_for, percentiles
from .clients import connect
from .conformance import Cell as ConformCell
from .conformance import add_target_option, compare, conform
from .launch import ServerProcess, ServerStartError
from .scenario import CellSpec, Scenario

COMMON_SETTINGS = {
    "server_timing": "on (decode, infer, encode per reply)",
    "gzip": "gRPC message compression / HTTP Content-Encoding, both ways, every message",
}


def settings(names: list[str], external: bool, delay_ms: float = 0.0) -> dict[str, str]:
    """How each transport ran, in words, from the server kind and the load driver that ran
    it (not from text written beside them)."""
    from wiremark.servers.serve import ServeOptions, server_kind
    from wiremark.servers.service import ServiceConfig

    from .transports import driver

    out: dict[str, str] = {}
    for name in names:
        options = ServeOptions(name, service=ServiceConfig(inject_delay_ms=delay_ms))
        server = "external (--target)" if external else server_kind(name).describe(options)
        out[name] = f"{server}; client: {driver(name).settings}"
    return out | COMMON_SETTINGS | {"access_log": "off"}


class BenchError(RuntimeError):
    """A run that cannot go on: a server that will not start, a load process that fails."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="run a scenario against real servers; write results and the report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--scenario",
        default="quick",
        help="quick (default, every model x transport, ~4 min), full (the sweeps), or a TOML file",
    )
    p.add_argument("--out", type=Path, help="results folder (default: wiremark-results/RUN_ID)")
    p.add_argument(
        "--repeat", type=int, help="trials of the whole matrix (the gate wants >= 3; default 1)"
    )
    add_target_option(p, "measure a running server (repeatable) instead of starting them")
    p.add_argument(
        "--inject-delay-ms",
        type=float,
        default=0.0,
        help="start the servers with this artificial delay (to prove the gate catches it)",
    )
    p.add_argument("--no-report", action="store_true", help="write results only")
    p.set_defaults(run=run)


# ---------------------------------------------------------------- run metadata


def run_id() -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    commit = git_commit()
    return f"{stamp}-{commit}" if commit else stamp


@functools.cache
def git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True
        )
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return None
    return sha.stdout.strip() + ("-dirty" if dirty else "")


def machine() -> dict[str, Any]:
    import psutil

    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_model": model,
        "cpus": len(os.sched_getaffinity(0)),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
    }


def versions() -> dict[str, str]:
    import importlib.metadata

    from wiremark.servers.runner import versions as model_versions

    out = {"python": platform.python_version(), "wiremark": __version__, **model_versions()}
    for package in ("msgpack", "orjson", "locust", "httptools", "gevent"):
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out[package] = "unknown"
    return out


def split_cores() -> tuple[list[int], list[int]]:
    """(server cores, load-generator cores): the first half and the rest; one core: shared."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return cores, cores
    half = len(cores) // 2
    return cores[:half], cores[half:]


def cpu_list(cores: list[int]) -> str:
    return ",".join(map(str, cores))


# ---------------------------------------------------------------- references


@dataclass
class Reference:
    """The in-process answer and costs for one workload (model, batch, pixel encoding)."""

    prediction: Prediction
    inprocess_ms: float
    request_bytes: dict[str, int] = field(default_factory=dict)
    client_encode_ms: dict[str, float] = field(default_factory=dict)


def timed(fn: Callable[[], Any], budget_s: float = 0.3, most: int = 500) -> float:
    """Median milliseconds of `fn()`, over as many calls as fit in the budget."""
    times: list[float] = []
    end = time.perf_counter() + budget_s
    while len(times) < most and (len(times) < 5 or time.perf_counter() < end):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


class References:
    def __init__(self, models: list[str]) -> None:
        from wiremark.servers.runner import build_all

        self.runners = build_all(models)[0]
        self.cache: dict[tuple[str, int, str], Reference] = {}

    def get(self, model: str, batch_size: int, encoding: str) -> Reference:
        key = (model, batch_size, encoding)
        if key not in self.cache:
            batch = batch_for(model, batch_size)
            run = self.runners[model]
            ref = Reference(run.predict(batch), timed(lambda: run.predict(batch)))
            pixels = PixelEncoding(encoding)
            for t in registry.names():
                ref.request_bytes[t] = len(bodies.encode(t, model, batch, pixels))
                ref.client_encode_ms[t] = timed(
                    functools.partial(bodies.encode, t, model, batch, pixels)
                )
            self.cache[key] = ref
        return self.cache[key]


# ---------------------------------------------------------------- one cell


@dataclass
class Target:
    transport: str
    address: str
    pid: int | None  # None: a server this run did not start (no CPU or memory figures)


def cell_argv(
    spec: CellSpec, target: Target, rate: float | None, users: int, scenario: Scenario
) -> list[str]:
    argv = [sys.executable, "-m", "wiremark.harness.cell", "--transport", spec.transport]
    argv += ["--address", target.address, "--model", spec.model, "--users", str(users)]
    argv += ["--duration", str(scenario.duration_s), "--warmup", str(scenario.warmup_s)]
    argv += ["--max-duration", str(scenario.max_duration_s)]
    argv += ["--batch", str(spec.batch), "--encoding", spec.encoding]
    argv += ["--compression", spec.compression]
    if rate is not None:
        argv += ["--rate", str(rate), "--arrival", spec.arrival or "constant"]
    return argv


def split(total: int | float, parts: int) -> list[Any]:
    if isinstance(total, float):
        return [total / parts] * parts
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def load_processes(
    spec: CellSpec,
    target: Target,
    rate: float | None,
    processes: int,
    client_cpus: str | None,
    scenario: Scenario,
    wire: bool,
    tmp: Path,
) -> dict[str, Any]:
    """Run one cell over `processes` load-generator processes; merge their latencies."""
    users = (
        split(spec.concurrency, processes)
        if rate is None
        else [max(1, math.ceil(spec.concurrency / processes))] * processes
    )
    rates = split(float(rate), processes) if rate is not None else [None] * processes
    procs = []
    for i in range(processes):
        argv = cell_argv(spec, target, rates[i], max(1, users[i]), scenario)
        argv += ["--raw", str(tmp / f"lat{i}.npy")]
        argv += ["--min-requests", str(math.ceil(scenario.min_requests / processes))]
        if i == 0:
            if target.pid:
                argv += ["--server-pid", str(target.pid)]
            argv += ["--sample", str(scenario.sample)]
            if wire and scenario.wire_requests:
                argv += ["--wire-requests", str(scenario.wire_requests)]
        if client_cpus:
            argv = ["taskset", "-c", client_cpus, *argv]
        procs.append(
            subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    outs = []
    limit = scenario.max_duration_s + scenario.warmup_s + 180
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=limit)
            if proc.returncode != 0 or not stdout.strip():
                raise BenchError(f"{spec.label()}: load process failed:\n{stderr.strip()[-1500:]}")
            outs.append(json.loads(stdout.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    latencies = np.concatenate([np.load(tmp / f"lat{i}.npy") for i in range(processes)])
    wall = max(o["duration_s"] for o in outs)
    first = outs[0]
    return {
        "latencies": latencies,
        "duration_s": wall,
        "errors": sum(o["errors"] for o in outs),
        "first_error": next((o["first_error"] for o in outs if o["first_error"]), ""),
        "client_cpu_s": sum(o["client_cpu_s"] for o in outs),
        "steal_s": first["steal_s"],
        "reply_bytes": first["reply_bytes"],
        "server_cpu_s": first["server_cpu_s"],
        "server_peak_rss_mb": first["server_peak_rss_mb"],
        "late": None if rate is None else sum(o["late"] for o in outs),
        "dropped": None if rate is None else sum(o["dropped"] for o in outs),
        "samples": first["samples"],
        "wire_up_bytes": first.get("wire_up_bytes"),
        "wire_down_bytes": first.get("wire_down_bytes"),
    }


def check_samples(
    spec: CellSpec, samples: list[dict[str, str]], reference: Reference
) -> tuple[int, list[str], dict[str, float], float | None, int | None]:
    """Sampled replies against the reference: (checked, mismatches, server-timing medians,
    client decode ms, reply body bytes)."""
    checker = ConformCell(spec.model, spec.transport)
    family = MODEL_FAMILIES[spec.model]
    timings: dict[str, list[float]] = {}
    decode_ms = body_bytes = None
    for i, sample in enumerate(samples):
        body = base64.b64decode(sample["body"])
        try:
            got = bodies.decode(spec.transport, family, body)
        except Exception as exc:  # a reply that does not even decode is a mismatch
            checker.mismatches.append(f"sample {i}: undecodable reply: {exc}")
            continue
        compare(f"sample {i}", got, reference.prediction, checker)
        for stage, ms in parse_server_timing(sample["server_timing"]).items():
            timings.setdefault(stage, []).append(ms)
        if decode_ms is None:
            body_bytes = len(body)
            decode_ms = timed(functools.partial(bodies.decode, spec.transport, family, body))
    medians = {k: statistics.median(v) for k, v in timings.items()}
    return len(samples), checker.mismatches, medians, decode_ms, body_bytes


def identity(spec: CellSpec, trial: int, rate: float | None) -> dict[str, Any]:
    """The fields that say which measurement a cell is (records.CELL_KEY, and the trial)."""
    return {
        "trial": trial,
        "model": spec.model,
        "transport": spec.transport,
        "mode": spec.mode,
        "concurrency": spec.concurrency,
        "rate": None if rate is None else round(rate, 2),
        "arrival": spec.arrival,
        "batch": spec.batch,
        "encoding": spec.encoding,
        "compression": spec.compression,
    }


def record(
    spec: CellSpec,
    trial: int,
    rate: float | None,
    merged: dict[str, Any],
    processes: int,
    client_cores: int,
    reference: Reference,
    scenario: Scenario,
    conformance_failed: bool,
) -> dict[str, Any]:
    lat = merged["latencies"]
    wall = merged["duration_s"]
    n = int(lat.size)
    # the load generator's CPU over what its cores could give it (less hypervisor steal)
    available = wall * min(processes, client_cores) - merged["steal_s"]
    share = merged["client_cpu_s"] / available if available > 0 else 0.0
    sampled, mismatches, timing, decode_ms, body_bytes = check_samples(
        spec, merged["samples"], reference
    )
    reasons = []
    if wall < scenario.duration_s * 0.9:
        reasons.append(f"measured {wall:.1f} s of {scenario.duration_s} s")
    if n < scenario.min_requests:
        reasons.append(f"{n} requests, fewer than {scenario.min_requests}")
    if merged["errors"]:
        reasons.append(f"{merged['errors']} errors (first: {merged['first_error'][:160]})")
    if mismatches:
        reasons.append(f"{len(mismatches)} sampled replies differ from the reference")
    if conformance_failed:
        reasons.append("conformance check failed for this model and transport")
    pct = percentiles(lat)
    server_cpu = merged["server_cpu_s"]
    return {
        **identity(spec, trial, rate),
        "duration_s": round(wall, 3),
        "requests": n,
        "errors": merged["errors"],
        "rps": round(n / wall, 1) if wall else 0.0,
        **{f"{k}_ms": v for k, v in pct.items()},
        "late": merged["late"],
        "dropped": merged["dropped"],
        "request_bytes": reference.request_bytes[spec.transport],
        "response_bytes": body_bytes if body_bytes is not None else merged["reply_bytes"],
        "wire_up_bytes": merged["wire_up_bytes"],
        "wire_down_bytes": merged["wire_down_bytes"],
        "client_cpu_ms": round(merged["client_cpu_s"] * 1000 / n, 4) if n else None,
        "server_cpu_ms": round(server_cpu * 1000 / n, 4) if n and server_cpu is not None else None,
        "client_cpu_share": round(share, 3),
        "server_peak_rss_mb": merged["server_peak_rss_mb"],
        "server_decode_ms": timing.get("decode"),
        "server_infer_ms": timing.get("infer"),
        "server_encode_ms": timing.get("encode"),
        "client_encode_ms": round(reference.client_encode_ms[spec.transport], 4),
        "client_decode_ms": None if decode_ms is None else round(decode_ms, 4),
        "inprocess_ms": round(reference.inprocess_ms, 4),
        "transport_tax_ms": records.transport_tax(pct["p50"], reference.inprocess_ms),
        "processes": processes,
        "client_bound": share >= CLIENT_BOUND,
        "scaling": "",
        "sampled": sampled,
        "sample_mismatches": len(mismatches),
        "valid": not reasons,
        "invalid_reasons": reasons,
    }


# ---------------------------------------------------------------- the run


class Progress:
    """A progress bar with an ETA on a terminal (rich), one line per cell either way."""

    def __init__(self, total: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as Bar

        self.console = Console(stderr=True, highlight=False, soft_wrap=True)
        self.bar = Bar(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self.task = self.bar.add_task("cells", total=total)

    def __enter__(self) -> Progress:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def say(self, text: str) -> None:
        self.console.print(text, markup=False)

    def describe(self, text: str) -> None:
        self.bar.update(self.task, description=text)

    def advance(self) -> None:
        self.bar.advance(self.task)


def summary_line(index: int, total: int, spec: CellSpec, cell: dict[str, Any]) -> str:
    flags = []
    if cell["client_bound"]:
        flags.append("CLIENT-BOUND")
    if not cell["valid"]:
        flags.append("INVALID: " + "; ".join(cell["invalid_reasons"]))
    figures = "no replies"
    if cell["requests"]:
        figures = (
            f"{cell['rps']:>8.0f} rps  p50 {cell['p50_ms']:>7.2f}  p99 {cell['p99_ms']:>7.2f} ms"
        )
    label = spec.label(cell["rate"])
    return f"[{index:>3}/{total}] {label:<48} {figures}  {'  '.join(flags)}".rstrip()


@contextmanager
def started_servers(
    transports: list[str],
    compressions: list[str],
    models: list[str],
    server_cpus: str | None,
    delay_ms: float,
    say: Callable[[str], None],
) -> Iterator[dict[tuple[str, str], Target]]:
    with ExitStack() as stack:
        procs: dict[tuple[str, str], ServerProcess] = {}
        for compression in compressions:
            for t in transports:
                args = ["--models", ",".join(models), "--compression", compression]
                if delay_ms:
                    args += ["--inject-delay-ms", str(delay_ms)]
                proc = ServerProcess(t, args, server_cpus)
                stack.callback(proc.stop)
                proc.start()
                procs[(t, compression)] = proc
        say(f"waiting for {len(procs)} servers to load {', '.join(models)} ...")
        for proc in procs.values():
            proc.wait_ready(timeout=300)
        yield {
            key: Target(key[0], p.address, p.proc.pid if p.proc else None)
            for key, p in procs.items()
        }


def placement_note(shared: bool, external: bool) -> str:
    if shared:
        return "one core, shared by the servers and the load generator"
    if external:
        return "servers not started by bench (--target); load generator pinned (taskset)"
    return "servers pinned apart from the load generator (taskset)"


def resolve_rate(
    spec: CellSpec, best: dict[tuple[Any, ...], float], transports: list[str]
) -> float | None:
    """The open-loop rate in requests/s: as given, or a share of the closed-loop throughput
    of the slowest transport for this workload, so every transport gets the same rate."""
    fraction = scenarios.share(spec.rate)
    if fraction is None:
        return float(spec.rate)  # type: ignore[arg-type]
    measured = [best[(spec.workload, t)] for t in transports if (spec.workload, t) in best]
    return max(1.0, min(measured) * fraction) if measured else None


def execute(args: argparse.Namespace, scenario: Scenario, out: Path) -> int:
    server_cores, client_cores = split_cores()
    shared = server_cores == client_cores
    server_cpus = None if shared else cpu_list(server_cores)
    client_cpus = None if shared else cpu_list(client_cores)
    external = dict(args.target)
    if external:
        missing = [t for t in scenario.transports if t not in external]
        transports = [t for t in scenario.transports if t in external]
        if not transports:
            raise BenchError(f"no --target for the scenario's transports {scenario.transports}")
    else:
        missing, transports = [], list(scenario.transports)
    specs = [s for s in scenario.cells() if s.transport in transports]
    total = len(specs) * scenario.repeat
    rid = run_id()
    writer = ResultWriter(
        out,
        {
            "wiremark": __version__,
            "run_id": rid,
            "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "commit": git_commit(),
            "scenario": scenario.to_dict() | {"inject_delay_ms": args.inject_delay_ms},
            "machine": machine(),
            "versions": versions(),
            "placement": {
                "server_cpus": server_cpus,
                "client_cpus": client_cpus,
                "note": placement_note(shared, bool(external)),
            },
            "transports": [registry.get(t).describe() for t in transports],
            "settings": settings(transports, bool(external), args.inject_delay_ms),
        },
    )
    progress = Progress(total)
    say = progress.say
    say(f"wiremark bench: scenario {scenario.name}, {total} cells, results in {out}")
    if missing:
        say(f"  no --target for {', '.join(missing)}: those transports are skipped")
    if shared:
        say("  one core: server and load generator share it; figures will say so")
    with ExitStack() as stack:
        if external:
            targets = {
                (t, c): Target(t, external[t], None)
                for t in transports
                for c in scenario.compression
            }
        else:
            targets = stack.enter_context(
                started_servers(
                    transports,
                    scenario.compression,
                    scenario.models,
                    server_cpus,
                    args.inject_delay_ms,
                    say,
                )
            )
        say(
            "checking conformance (every model on every transport against the in-process model) ..."
        )
        references = References(scenario.models)
        checks = conform(
            {t: targets[(t, scenario.compression[0])].address for t in transports},
            scenario.models,
            references=references.runners,
        )
        writer.set(
            "conformance",
            [
                {
                    "model": c.model,
                    "transport": c.transport,
                    "inputs": c.inputs,
                    "mismatches": c.mismatches[:20],
                    "worst": c.worst,
                    "passed": c.passed,
                }
                for c in checks
            ],
        )
        failed = {(c.model, c.transport) for c in checks if not c.passed}
        for c in checks:
            say(
                f"  {c.model:<8} {c.transport:<8} {c.inputs:>4} inputs  "
                + ("pass" if c.passed else f"FAIL: {c.mismatches[0]}")
            )
        stack.enter_context(progress)
        index = 0
        wired: dict[tuple[Any, ...], tuple[float | None, float | None]] = {}
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="wiremark-bench-")))
        for trial in range(scenario.repeat):
            best: dict[tuple[Any, ...], float] = {}  # closed-loop rps per workload, transport
            for spec in specs:
                index += 1
                rate = None if spec.mode == "closed" else resolve_rate(spec, best, transports)
                progress.describe(spec.label(rate))
                if spec.mode == "open" and rate is None:
                    say(f"[{index:>3}/{total}] {spec.label()}: skipped, no closed-loop rps")
                    progress.advance()
                    continue
                reference = references.get(spec.model, spec.batch, spec.encoding)
                cell = measure(
                    spec,
                    trial,
                    rate,
                    targets[(spec.transport, spec.compression)],
                    client_cpus,
                    len(client_cores),
                    scenario,
                    reference,
                    (spec.model, spec.transport) in failed,
                    wired,
                    tmp,
                )
                writer.add_cell(cell)
                if spec.mode == "closed" and cell["requests"] and not cell["errors"]:
                    key = (spec.workload, spec.transport)
                    best[key] = max(best.get(key, 0.0), cell["rps"])
                say(summary_line(index, total, spec, cell))
                progress.advance()
    writer.set("finished", dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    say(f"results: {writer.json_path} and {out / 'results.csv'}")
    if not args.no_report:
        from wiremark.reports import report

        path = report.render([records.load(writer.json_path)], out / "report.html")
        say(f"report: {path}")
    return 1 if failed else 0


def measure(
    spec: CellSpec,
    trial: int,
    rate: float | None,
    target: Target,
    client_cpus: str | None,
    client_cores: int,
    scenario: Scenario,
    reference: Reference,
    conformance_failed: bool,
    wired: dict[tuple[Any, ...], tuple[float | None, float | None]],
    tmp: Path,
) -> dict[str, Any]:
    """One cell, adding load-generator processes while it is client-bound and cores remain."""
    processes = 1
    wire = (spec.workload, spec.transport) not in wired
    while True:
        try:
            merged = load_processes(
                spec, target, rate, processes, client_cpus, scenario, wire and processes == 1, tmp
            )
        except BenchError as exc:  # one broken cell does not end a long run
            return failed_cell(spec, trial, rate, str(exc), reference)
        if processes == 1 and wire:
            wired[(spec.workload, spec.transport)] = (
                merged["wire_up_bytes"],
                merged["wire_down_bytes"],
            )
        up_down = wired.get((spec.workload, spec.transport), (None, None))
        merged["wire_up_bytes"], merged["wire_down_bytes"] = up_down
        cell = record(
            spec,
            trial,
            rate,
            merged,
            processes,
            client_cores,
            reference,
            scenario,
            conformance_failed,
        )
        if not cell["client_bound"]:
            cell["scaling"] = (
                "server-bound"
                if processes == 1
                else f"server-bound with {processes} load-generator processes"
            )
            return cell
        if processes >= client_cores:
            cell["scaling"] = (
                f"client-bound: out of cores ({client_cores} for the load generator, "
                f"{processes} process{'es' if processes > 1 else ''})"
            )
            return cell
        processes += 1


def failed_cell(
    spec: CellSpec, trial: int, rate: float | None, message: str, reference: Reference
) -> dict[str, Any]:
    """The record of a cell whose load processes failed: no figures, and why."""
    last = message.strip().splitlines()[-1] if message.strip() else "unknown failure"
    return {
        **identity(spec, trial, rate),
        "requests": 0,
        "errors": 0,
        "rps": 0.0,
        "request_bytes": reference.request_bytes[spec.transport],
        "processes": 1,
        "client_bound": False,
        "scaling": "",
        "sampled": 0,
        "sample_mismatches": 0,
        "valid": False,
        "invalid_reasons": [f"the load process failed: {last[:300]}"],
    }


def target_problem(transport: str, address: str, models: list[str]) -> str | None:
    """What stops a server that bench did not start from being measured: it does not answer,
    or does not serve one of the models. Checked in seconds, before anything loads; None
    when it serves them all."""
    try:
        with connect(transport, address) as client:
            for model in models:
                client.metadata(model)
    except WiremarkError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def run(args: argparse.Namespace) -> int:
    from wiremark.cli import UsageError

    try:
        scenario = scenarios.load(args.scenario)
    except scenarios.ScenarioError as exc:
        raise UsageError(str(exc)) from None
    if args.repeat is not None:
        if args.repeat < 1:
            raise UsageError("--repeat must be at least 1")
        scenario.repeat = args.repeat
    if args.target and args.inject_delay_ms:
        raise UsageError("--inject-delay-ms applies to servers bench starts, not to --target")
    for transport, address in args.target:
        if transport in scenario.transports:
            problem = target_problem(transport, address, scenario.models)
            if problem:
                raise UsageError(f"--target {transport}={address}: {problem}")
    out = args.out or Path("wiremark-results") / run_id()
    try:
        return execute(args, scenario, out)
    except (BenchError, ServerStartError) as exc:
        print(f"wiremark: error: {exc}", file=sys.stderr)
        print(f"wiremark: cells finished so far are in {out}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\nwiremark: interrupted; cells finished so far are in {out}", file=sys.stderr)
        return 130
