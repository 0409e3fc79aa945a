"""`wiremark calibrate`: can the Locust harness be trusted to measure these servers?

Drives the same iris servers with the harness (Locust users, `harness/cell.py`) and with
the C tools (wrk for HTTP, h2load for gRPC frames) and prints, per transport, throughput at
16 concurrent requests and p50 at 1, side by side. Servers on one core, the load
generator (either kind) on the other; harness and tool alternate per repetition; medians.
A harness whose client CPU nears 100% is the bottleneck, not the server: the table says so.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from wiremark.payloads import transport as transports

from .cell import CLIENT_BOUND
from .launch import ServerProcess, ServerStartError, running
from .loadgen import (
    LoadError,
    LoadGenerator,
    Sample,
    Target,
    add_run_options,
    check_tools,
    least_disturbed,
    log,
    placement,
    target,
)
from .protocol import CellRequest, CellResult
from .transports.base import CLIENTS, LEAN

MODEL = "iris"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate",
        help="the Locust harness beside wrk/h2load on the same servers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_options(p)
    p.add_argument(
        "--client",
        choices=CLIENTS,
        default=LEAN,
        help="the harness users' client library: lean (default: the cell measures the "
        "server) or library (grpcio, httpx)",
    )
    p.set_defaults(run=run)


def harness_sample(
    transport: str,
    server: ServerProcess,
    users: int,
    duration: int,
    cpu: str | None,
    client: str = LEAN,
) -> Sample:
    """One Locust cell (`harness/cell.py`) in its own process, pinned to `cpu`, asked for
    through the same protocol as bench's cells, its users on the `client` library."""
    request = CellRequest(
        transport, server.address, MODEL, users=users, duration=duration, client=client
    )
    assert server.proc is not None
    server_proc = psutil.Process(server.proc.pid)
    server_before, start = sum(server_proc.cpu_times()[:2]), time.perf_counter()
    done = subprocess.run(
        request.argv(cpu), capture_output=True, text=True, timeout=duration + 120, check=False
    )
    server_cpu = (sum(server_proc.cpu_times()[:2]) - server_before) / (time.perf_counter() - start)
    try:
        if done.returncode != 0:
            raise ValueError(f"exit {done.returncode}")
        out = CellResult.from_output(done.stdout)
    except ValueError:
        raise LoadError(f"harness cell failed: {done.stderr.strip()[-400:]}") from None
    if out.errors or not out.requests or out.p50 is None:
        raise LoadError(f"harness cell {transport}: {out.requests} requests, {out.errors} errors")
    # server CPU over the cell's whole process life (warm-up and start-up included)
    return Sample(out.rps, out.p50, out.requests, server_cpu, out.client_cpu)


@dataclass
class Row:
    transport: str
    harness_rps: float
    tool_rps: float
    harness_p50_ms: float
    tool_p50_ms: float
    harness_client_cpu: float
    client: str = LEAN

    def to_dict(self) -> dict[str, Any]:
        return {
            "transport": self.transport,
            "client": self.client,
            "harness_rps": self.harness_rps,
            "tool_rps": self.tool_rps,
            "harness_p50_ms": self.harness_p50_ms,
            "tool_p50_ms": self.tool_p50_ms,
            "harness_client_cpu": self.harness_client_cpu,
        }


def run(args: argparse.Namespace) -> int:
    check_tools()
    server_cpu, client_cpu = placement()
    log(
        f"wiremark calibrate: {MODEL}, servers on core {server_cpu}, load on core {client_cpu}, "
        f"harness on the {args.client} client"
    )
    try:
        names = transports.names()
        servers = {t: ServerProcess(t, ("--models", MODEL), server_cpu) for t in names}
        with (
            tempfile.TemporaryDirectory(prefix="wiremark-calibrate-") as tmp,
            running(servers.values()),
        ):
            loadgen = LoadGenerator(Path(tmp), server_cpu, client_cpu)
            targets = {}
            for t, server in servers.items():
                targets[t] = target(server, t, Path(tmp), MODEL)
                targets[t].verify(expected_class=0)  # iris row 0 is a setosa
            rows = [measure(t, targets[t], loadgen, args) for t in names]
    except (LoadError, ServerStartError) as exc:
        print(f"wiremark: error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([r.to_dict() for r in rows], indent=2))
    else:
        print(table(rows, args))
    return 0


def measure(
    transport: str, target: Target, loadgen: LoadGenerator, args: argparse.Namespace
) -> Row:
    runs: dict[str, list[Sample]] = {"h16": [], "t16": [], "h1": [], "t1": []}
    for r in range(1, args.repeats + 1):
        for conns in (16, 1):

            def harness(users: int = conns) -> Sample:
                cpu = loadgen.client_cpu
                return harness_sample(
                    transport, target.server, users, args.duration, cpu, args.client
                )

            label = f"{transport} harness c={conns}"
            runs[f"h{conns}"].append(least_disturbed(harness, loadgen.cores, label))
            runs[f"t{conns}"].append(loadgen.load(target, conns, args.duration))
            log(f"[{r}/{args.repeats}] {transport:<7} c={conns:<2} harness {runs[f'h{conns}'][-1]}")
            log(f"[{r}/{args.repeats}] {transport:<7} c={conns:<2} tool    {runs[f't{conns}'][-1]}")
    med = statistics.median
    return Row(
        transport,
        harness_rps=round(med(s.rps for s in runs["h16"]), 1),
        tool_rps=round(med(s.rps for s in runs["t16"]), 1),
        harness_p50_ms=round(med(s.p50_ms for s in runs["h1"]), 4),
        tool_p50_ms=round(med(s.p50_ms for s in runs["t1"]), 4),
        harness_client_cpu=round(med(s.client_cpu for s in runs["h16"]), 2),
        client=args.client,
    )


def table(rows: list[Row], args: argparse.Namespace) -> str:
    head = (
        f"{'transport':<9} {'harness rps':>11} {'tool rps':>9} {'ratio':>6} "
        f"{'harness p50':>11} {'tool p50':>9} {'ratio':>6}  harness client CPU"
    )
    lines = [
        f"iris, 1 row; c16 throughput and c1 p50 (ms); medians of {args.repeats} x "
        f"{args.duration} s; harness: the {args.client} client; tool: wrk (HTTP), h2load (gRPC)",
        "",
        head,
        "-" * len(head),
    ]
    for r in rows:
        bound = "  CLIENT-BOUND" if r.harness_client_cpu >= CLIENT_BOUND else ""
        rps_ratio = r.harness_rps / r.tool_rps
        p50_ratio = r.harness_p50_ms / r.tool_p50_ms
        lines.append(
            f"{r.transport:<9} {r.harness_rps:>11.0f} {r.tool_rps:>9.0f} {rps_ratio:>6.2f} "
            f"{r.harness_p50_ms:>11.3f} {r.tool_p50_ms:>9.3f} {p50_ratio:>6.2f}  "
            f"{r.harness_client_cpu:.0%}{bound}"
        )
    lines.append("target: harness within 10% of the tool (ratios 0.90-1.10)")
    return "\n".join(lines)
