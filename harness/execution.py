"""Running one cell: its load-generator processes (`harness/cell.py`, through the typed
protocol of `harness/protocol.py`), their latencies merged at full resolution, and worker
scaling: a client-bound cell is re-run with one more process while load cores remain."""

from __future__ import annotations

import math
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .protocol import CellRequest, CellResult
from .record import Measured, Reference, failed_cell, record
from .scenario import CellSpec, Scenario
from .tls import Trust

OPEN_LOOP_MARGIN = 1.25  # open loop: time for 1.25x the minimum of requests at the rate


class BenchError(RuntimeError):
    """A run that cannot go on: a server that will not start, a load process that fails."""


@dataclass
class Target:
    transport: str
    address: str
    pid: int | None  # None: a server this run did not start (no CPU or memory figures)
    tls: Trust | None = None  # it serves TLS: clients verify it against this


def split(total: int | float, parts: int) -> list[Any]:
    if isinstance(total, float):
        return [total / parts] * parts
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def requests(
    spec: CellSpec,
    target: Target,
    rate: float | None,
    processes: int,
    scenario: Scenario,
    wire: bool,
    tmp: Path,
) -> list[CellRequest]:
    """One cell as `processes` load-generator requests: users (or the rate) shared out; the
    first also watches the server, samples replies and (`wire`) counts wire bytes."""
    users = (
        split(spec.concurrency, processes)
        if rate is None
        else [max(1, math.ceil(spec.concurrency / processes))] * processes
    )
    rates = split(float(rate), processes) if rate is not None else [0.0] * processes
    # an open loop sends `rate` a second whatever happens: give it the time its minimum
    # takes at that rate (and a margin), so a slow model's low rate can still be valid
    longest = scenario.max_duration_s
    if rate:
        longest = max(longest, OPEN_LOOP_MARGIN * scenario.min_requests / rate)
    out = []
    for i in range(processes):
        first = i == 0
        out.append(
            CellRequest(
                transport=spec.transport,
                address=target.address,
                model=spec.model,
                users=max(1, users[i]),
                duration=scenario.duration_s,
                warmup=scenario.warmup_s,
                max_duration=round(longest, 3),
                min_requests=math.ceil(scenario.min_requests / processes),
                batch=spec.batch,
                encoding=spec.encoding,
                compression=spec.compression,
                client=spec.client,
                tls=target.tls is not None,
                tls_ca=str(target.tls.ca) if target.tls and target.tls.ca else None,
                rate=rates[i],
                arrival=spec.arrival or "constant",
                server_pid=target.pid if first and target.pid else None,
                sample=scenario.sample if first else 0,
                wire_requests=scenario.wire_requests if first and wire else 0,
                raw=tmp / f"lat{i}.npy",
            )
        )
    return out


def merge(results: list[CellResult], latencies: Any, open_loop: bool) -> Measured:
    """Several processes' results as one: every latency, sums of counts and CPU, the
    first process's server figures, samples and wire bytes."""
    first = results[0]
    return Measured(
        latencies=latencies,
        duration_s=max(r.duration_s for r in results),
        errors=sum(r.errors for r in results),
        first_error=next((r.first_error for r in results if r.first_error), ""),
        client_cpu_s=sum(r.client_cpu_s for r in results),
        steal_s=first.steal_s,
        reply_bytes=first.reply_bytes,
        server_cpu_s=first.server_cpu_s,
        server_peak_rss_mb=first.server_peak_rss_mb,
        late=sum(r.late or 0 for r in results) if open_loop else None,
        dropped=sum(r.dropped or 0 for r in results) if open_loop else None,
        samples=first.samples,
        wire_up_bytes=first.wire_up_bytes,
        wire_down_bytes=first.wire_down_bytes,
    )


@dataclass
class Executor:
    """Runs the cells of one bench run on the load generator's cores."""

    scenario: Scenario
    client_cpus: str | None  # taskset list, or None: unpinned
    client_cores: int
    tmp: Path
    # (workload, transport) -> wire bytes up, down: counted once per workload
    wired: dict[tuple[Any, ...], tuple[float | None, float | None]] = field(default_factory=dict)

    def load(
        self, spec: CellSpec, target: Target, rate: float | None, processes: int, wire: bool
    ) -> Measured:
        """Run one cell over `processes` load-generator processes; merge their latencies."""
        asked = requests(spec, target, rate, processes, self.scenario, wire, self.tmp)
        procs = [
            subprocess.Popen(
                r.argv(self.client_cpus), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            for r in asked
        ]
        results = []
        limit = max(r.max_duration for r in asked) + self.scenario.warmup_s + 180
        try:
            for proc in procs:
                stdout, stderr = proc.communicate(timeout=limit)
                try:
                    if proc.returncode != 0:
                        raise ValueError(f"exit {proc.returncode}")
                    results.append(CellResult.from_output(stdout))
                except ValueError:
                    raise BenchError(
                        f"{spec.label()}: load process failed:\n{stderr.strip()[-1500:]}"
                    ) from None
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
        latencies = np.concatenate([np.load(r.raw) for r in asked if r.raw is not None])
        return merge(results, latencies, rate is not None)

    def measure(
        self,
        spec: CellSpec,
        trial: int,
        rate: float | None,
        target: Target,
        reference: Reference,
        conformance_failed: bool,
    ) -> dict[str, Any]:
        """One cell, adding load-generator processes while it is client-bound and cores
        remain; the result-file cell, with what scaling concluded."""
        processes = 1
        key = (spec.workload, spec.transport)
        wire = key not in self.wired
        while True:
            try:
                got = self.load(spec, target, rate, processes, wire and processes == 1)
            except BenchError as exc:  # one broken cell does not end a long run
                return failed_cell(spec, trial, rate, str(exc), reference)
            if processes == 1 and wire:
                self.wired[key] = (got.wire_up_bytes, got.wire_down_bytes)
            got.wire_up_bytes, got.wire_down_bytes = self.wired.get(key, (None, None))
            cell = record(
                spec,
                trial,
                rate,
                got,
                processes,
                self.client_cores,
                reference,
                self.scenario,
                conformance_failed,
            )
            if not cell["client_bound"]:
                cell["scaling"] = (
                    "server-bound"
                    if processes == 1
                    else f"server-bound with {processes} load-generator processes"
                )
                return cell
            if processes >= self.client_cores:
                cell["scaling"] = (
                    f"client-bound: out of cores ({self.client_cores} for the load generator, "
                    f"{processes} process{'es' if processes > 1 else ''})"
                )
                return cell
            processes += 1
