"""`wiremark overhead`: how close each server comes to what its stack plus the model allow.

For `iris` (one row) and each transport it measures, in one run, the model server's
throughput at 16 connections and its p50 at 1 connection, beside a bare echo on the same
stack (`wiremark.servers.echo`) and the model's in-process p50:

    efficiency = rps_c16 / (1 / (1/echo_rps + inproc_p50))     target >= 0.80
    tax_ratio  = (p50_c1 - inproc_p50) / echo_p50_c1            target <= 1.3

Servers run on one core and the load generator (h2load for gRPC, wrk for HTTP, one thread
each) on another, pinned with taskset. This machine's speed drifts, so every repetition
measures echo and model back to back (echo c16, model c16, echo c1, model c1, per transport)
and the figures are medians over repetitions.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wiremark.payloads import transport as transports
from wiremark.payloads.samples import iris_rows

from .launch import ServerProcess, ServerStartError, running
from .loadgen import (
    LoadError,
    LoadGenerator,
    Sample,
    Target,
    add_run_options,
    check_tools,
    log,
    pinned,
    placement,
    target,
)
from .signals import TERMINATED_STATUS, Terminated, sigterm_unwinds
from .transports import driver, for_wire

MODEL = "iris"
EFFICIENCY_TARGET = 0.80
TAX_TARGET = 1.3
INPROC_CALLS = 2000


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "overhead",
        help="each server's throughput and latency beside a bare echo and the model in-process",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_options(p)
    p.add_argument(
        "--grpc-mode",
        choices=("threads", "aio"),
        default="threads",
        help="grpcio server flavour, for the model server and its echo (default: threads)",
    )
    p.set_defaults(run=run)


class InProcess:
    """The model's own latency: the iris runner built in this process, on the server core."""

    def __init__(self, cpu: str | None) -> None:
        from wiremark.servers import device, runner

        self.cpu = cpu
        self.batch = iris_rows(1)[0]
        with pinned(cpu):  # TensorFlow sizes its thread pools to this core, like the server
            self.runner = runner.build(MODEL, device.configure("cpu"))

    def predicted_class(self) -> int:
        return int(self.runner.predict(self.batch).class_ids[0])  # type: ignore[union-attr]

    def p50_ms(self, calls: int = INPROC_CALLS) -> float:
        with pinned(self.cpu):
            for _ in range(calls // 10):
                self.runner.predict(self.batch)
            times = []
            for _ in range(calls):
                start = time.perf_counter()
                self.runner.predict(self.batch)
                times.append(time.perf_counter() - start)
        return statistics.median(times) * 1000.0


class EchoProcess(ServerProcess):
    """`python -m wiremark.servers.echo` for one wire, started and stopped like a model
    server (its `transport` field holds the wire)."""

    def entry(self) -> list[str]:
        return [sys.executable, "-m", "wiremark.servers.echo"]

    def command(self) -> list[str]:
        return [arg if arg != "--transport" else "--wire" for arg in super().command()]

    def healthy(self) -> bool:
        return for_wire(self.transport).healthy(self.address)


class Bench:
    """Every server of the run, up at once, and the load generators that drive them."""

    def __init__(self, tmp: Path, server_cpu: str | None, client_cpu: str | None, mode: str):
        self.loadgen = LoadGenerator(tmp, server_cpu, client_cpu)
        self.expected_class = -1
        self.transports = transports.names()
        mode_args = ("--grpc-mode", mode)  # the HTTP servers ignore it
        wires = dict.fromkeys(driver(t).wire for t in self.transports)
        echoes = {w: EchoProcess(w, mode_args, server_cpu) for w in wires}
        models = {
            t: ServerProcess(t, ("--models", MODEL, *mode_args), server_cpu)
            for t in self.transports
        }
        self.servers = [*echoes.values(), *models.values()]
        self.targets: dict[tuple[str, str], Target] = {}
        for t in self.transports:
            echo = echoes[driver(t).wire]
            self.targets[t, "echo"] = target(echo, t, tmp, MODEL, echo=True)
            self.targets[t, "model"] = target(models[t], t, tmp, MODEL)

    def check(self, expected_class: int) -> None:
        """Every target answers correctly (the model ones with the in-process class)."""
        self.expected_class = expected_class
        self.verify_all()

    def verify_all(self) -> None:
        for each in self.targets.values():
            each.verify(self.expected_class)

    def load(self, transport: str, kind: str, conns: int, duration: int) -> Sample:
        return self.loadgen.load(self.targets[transport, kind], conns, duration)


@dataclass(frozen=True)
class Result:
    transport: str
    echo_rps: float
    echo_p50_ms: float
    inproc_p50_ms: float
    rps_c16: float
    p50_c1_ms: float

    @property
    def efficiency(self) -> float:
        return self.rps_c16 / (1.0 / (1.0 / self.echo_rps + self.inproc_p50_ms / 1000.0))

    @property
    def tax_ratio(self) -> float:
        return (self.p50_c1_ms - self.inproc_p50_ms) / self.echo_p50_ms

    @property
    def met(self) -> bool:
        return self.efficiency >= EFFICIENCY_TARGET and self.tax_ratio <= TAX_TARGET

    def to_dict(self) -> dict[str, Any]:
        return {
            "transport": self.transport,
            "echo_rps": self.echo_rps,
            "echo_p50_ms": self.echo_p50_ms,
            "inproc_p50_ms": self.inproc_p50_ms,
            "rps_c16": self.rps_c16,
            "p50_c1_ms": self.p50_c1_ms,
            "efficiency": round(self.efficiency, 4),
            "tax_ratio": round(self.tax_ratio, 4),
        }


def summarise(
    transport: str, runs: dict[tuple[str, int], list[Sample]], inproc: list[float]
) -> Result:
    def rps(kind: str) -> float:
        return round(statistics.median(s.rps for s in runs[kind, 16]), 1)

    def p50(kind: str) -> float:
        return round(statistics.median(s.p50_ms for s in runs[kind, 1]), 4)

    return Result(
        transport,
        echo_rps=rps("echo"),
        echo_p50_ms=p50("echo"),
        inproc_p50_ms=round(statistics.median(inproc), 4),
        rps_c16=rps("model"),
        p50_c1_ms=p50("model"),
    )


def run(args: argparse.Namespace) -> int:
    check_tools()
    server_cpu, client_cpu = placement()
    where = (
        f"servers on core {server_cpu}, load generator on core {client_cpu} (taskset)"
        if server_cpu is not None
        else "one core: servers and load generator unpinned, sharing it"
    )
    log(f"wiremark overhead: {MODEL}, {where}; {args.repeats} x {args.duration} s per measurement")
    try:
        with sigterm_unwinds(), tempfile.TemporaryDirectory(prefix="wiremark-overhead-") as tmp:
            bench = Bench(Path(tmp), server_cpu, client_cpu, args.grpc_mode)
            built: list[InProcess] = []
            # the in-process model builds while the servers load
            with running(bench.servers, before_ready=lambda: built.append(InProcess(server_cpu))):
                inproc = built[0]
                bench.check(inproc.predicted_class())
                results = measure(bench, inproc, args.repeats, args.duration)
    except (LoadError, ServerStartError) as exc:
        print(f"wiremark: error: {exc}", file=sys.stderr)
        return 1
    except Terminated:
        return TERMINATED_STATUS  # every server started is stopped by now
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        print(table(results, where, args))
    return 0


def measure(bench: Bench, inproc: InProcess, repeats: int, duration: int) -> list[Result]:
    """Per repetition: the in-process p50, then per transport echo c16, model c16, echo c1,
    model c1, one server loaded at a time; medians over the repetitions."""
    runs: dict[str, dict[tuple[str, int], list[Sample]]] = {
        t: {(k, c): [] for k in ("echo", "model") for c in (16, 1)} for t in bench.transports
    }
    inproc_ms: list[float] = []
    for r in range(1, repeats + 1):
        inproc_ms.append(inproc.p50_ms())
        log(f"[{r}/{repeats}] in-process p50 {inproc_ms[-1]:.3f} ms ({INPROC_CALLS} calls)")
        for transport in bench.transports:
            for conns in (16, 1):
                for kind in ("echo", "model"):
                    sample = bench.load(transport, kind, conns, duration)
                    runs[transport][kind, conns].append(sample)
                    log(f"[{r}/{repeats}] {transport:<7} {kind:<5} c={conns:<2} {sample}")
    bench.verify_all()  # the servers still answer correctly after the load
    return [summarise(t, runs[t], inproc_ms) for t in bench.transports]


def table(results: list[Result], where: str, args: argparse.Namespace) -> str:
    head = (
        f"{'transport':<9} {'echo rps':>9} {'echo p50':>9} {'in-proc':>8} {'rps c16':>9} "
        f"{'p50 c1':>8} {'efficiency':>10} {'tax ratio':>9}  targets"
    )
    lines = [
        f"iris, 1 row; {where}; gRPC server mode {args.grpc_mode}",
        f"c16: 16 connections x 1 stream (h2load -t1 -m1, wrk -t1); c1: 1 connection; "
        f"medians of {args.repeats} x {args.duration} s (1 s warm-up excluded); ms are p50",
        "",
        head,
        "-" * len(head),
    ]
    for r in results:
        lines.append(
            f"{r.transport:<9} {r.echo_rps:>9.0f} {r.echo_p50_ms:>9.3f} {r.inproc_p50_ms:>8.3f} "
            f"{r.rps_c16:>9.0f} {r.p50_c1_ms:>8.3f} {r.efficiency:>10.2f} {r.tax_ratio:>9.2f}  "
            f"{'met' if r.met else 'MISSED'}"
        )
    lines.append(
        f"targets: efficiency >= {EFFICIENCY_TARGET:.2f}, tax ratio <= {TAX_TARGET:.1f}; "
        "efficiency = rps_c16 / (1 / (1/echo_rps + in-proc)); "
        "tax = (p50_c1 - in-proc) / echo p50"
    )
    return "\n".join(lines)
