"""Running one cell: its master process (`harness/cell.py`, through the typed protocol of
`harness/protocol.py`), which runs it on Locust workers and merges their histograms, and
worker scaling: a client-bound cell is re-run with one more local worker while load cores
remain."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cell import READY_TIMEOUT, WORKERS_MISSING_EXIT
from .histogram import Latencies
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
    arm: str | None = None  # the arm of an A/B run it serves


@dataclass
class Workers:
    """Where a cell's load comes from: local worker processes (scaled up while the cell is
    client-bound, unless `fixed`) and workers on other hosts that connect to `master_bind`
    (`wiremark worker --master HOST:PORT`), waited for up to `timeout` s."""

    local: int = 1
    remote: int = 0
    master_bind: str = "127.0.0.1:0"
    timeout: float = 30.0
    fixed: bool = False  # the user chose --load-processes: no scaling


def request(
    spec: CellSpec,
    target: Target,
    rate: float | None,
    processes: int,
    scenario: Scenario,
    wire: bool,
    workers: Workers | None = None,
    other: Target | None = None,
) -> CellRequest:
    """One cell as its master process is asked for it: over `processes` local workers (and
    the remote ones); its master watches the server, its first worker samples replies and
    (`wire`) counts wire bytes. With an `other` target, an interleaved A/B cell: both
    servers sent to by turns (`ab_slot`, `ab_seed`)."""
    workers = workers or Workers()
    # an open loop sends `rate` a second whatever happens: give it the time its minimum
    # takes at that rate (and a margin), so a slow model's low rate can still be valid
    longest = scenario.max_duration_s
    if rate:
        longest = max(longest, OPEN_LOOP_MARGIN * scenario.min_requests / rate)
    return CellRequest(
        transport=spec.transport,
        address=target.address,
        model=spec.model,
        users=spec.concurrency,
        duration=scenario.duration_s,
        warmup=scenario.warmup_s,
        max_duration=round(longest, 3),
        min_requests=scenario.min_requests,
        batch=spec.batch,
        encoding=spec.encoding,
        compression=spec.compression,
        client=spec.client,
        tls=target.tls is not None,
        tls_ca=str(target.tls.ca) if target.tls and target.tls.ca else None,
        rate=float(rate or 0.0),
        arrival=spec.arrival or "constant",
        server_pid=target.pid,
        sample=scenario.sample,
        wire_requests=scenario.wire_requests if wire else 0,
        load_processes=processes,
        expect_workers=workers.remote,
        master_bind=workers.master_bind,
        worker_timeout=workers.timeout,
        ab_address=other.address if other else None,
        ab_server_pid=other.pid if other else None,
    )


def measured(result: CellResult) -> Measured:
    """What the cell's master merged, as the record reads it."""
    return Measured(
        histogram=Latencies.decode(result.histogram),
        uncorrected=Latencies.decode(result.uncorrected_histogram)
        if result.uncorrected_histogram
        else None,
        encoded=result.histogram,
        encoded_uncorrected=result.uncorrected_histogram,
        duration_s=result.duration_s,
        errors=result.errors,
        first_error=result.first_error,
        client_cpu_s=result.client_cpu_s,
        reply_bytes=result.reply_bytes,
        server_cpu_s=result.server_cpu_s,
        server_peak_rss_mb=result.server_peak_rss_mb,
        late=result.late,
        dropped=result.dropped,
        samples=result.samples,
        wire_up_bytes=result.wire_up_bytes,
        wire_down_bytes=result.wire_down_bytes,
        workers=result.workers,
        workers_planned=result.workers_planned,
    )


class WorkersMissing(BenchError):
    """The workers a cell waited for did not all come: the run cannot go on without them."""


@dataclass
class Executor:
    """Runs the cells of one bench run on the load generator's cores."""

    scenario: Scenario
    client_cpus: str | None  # taskset list, or None: unpinned
    client_cores: int
    tmp: Path
    workers: Workers = field(default_factory=Workers)
    slot: float = 0.25  # s per arm per turn in an interleaved A/B cell
    # (workload, transport, arm) -> wire bytes up, down: counted once per workload and arm
    wired: dict[tuple[Any, ...], tuple[float | None, float | None]] = field(default_factory=dict)

    def load(
        self,
        spec: CellSpec,
        targets: list[Target],
        rate: float | None,
        processes: int,
        wire: bool,
        seed: int = 0,
    ) -> list[Measured]:
        """Run one cell over `processes` local workers (and the remote ones), against one
        target or, interleaved, two; what each target answered."""
        other = targets[1] if len(targets) > 1 else None
        asked = request(spec, targets[0], rate, processes, self.scenario, wire, self.workers, other)
        asked.ab_slot, asked.ab_seed = self.slot, seed
        arms = len(targets)
        limit = arms * asked.max_duration + asked.warmup + asked.worker_timeout
        limit += READY_TIMEOUT + 60
        try:
            done = subprocess.run(
                asked.argv(self.client_cpus), capture_output=True, text=True, timeout=limit
            )
        except subprocess.TimeoutExpired:
            raise BenchError(f"{spec.label()}: the cell did not end within {limit:.0f} s") from None
        problem = done.stderr.strip()
        if done.returncode == WORKERS_MISSING_EXIT:
            last = problem.splitlines()[-1] if problem else "workers missing"
            raise WorkersMissing(last.removeprefix("wiremark cell: "))
        try:
            if done.returncode != 0:
                raise ValueError(f"exit {done.returncode}")
            return [measured(r) for r in CellResult.arms_from_output(done.stdout)]
        except ValueError:
            raise BenchError(f"{spec.label()}: load process failed:\n{problem[-1500:]}") from None

    def measure(
        self,
        spec: CellSpec,
        trial: int,
        rate: float | None,
        targets: list[Target],
        reference: Reference,
        conformance_failed: list[bool],
        seed: int = 0,
    ) -> list[dict[str, Any]]:
        """One cell on one target, or interleaved on two (an A/B run's arms), adding local
        load workers while it is client-bound and cores remain (unless their number was
        fixed or the load is remote); the result-file cell of each target, with what
        scaling concluded."""
        first = processes = self.workers.local
        keys = [(spec.workload, spec.transport, t.arm) for t in targets]
        wire = any(key not in self.wired for key in keys)
        while True:
            try:
                got = self.load(spec, targets, rate, processes, wire and processes == first, seed)
            except WorkersMissing:
                raise
            except BenchError as exc:  # one broken cell does not end a long run
                return [failed_cell(spec, trial, rate, str(exc), reference) for _ in targets]
            cells = []
            for key, one, failed in zip(keys, got, conformance_failed, strict=True):
                if processes == first and wire:
                    self.wired[key] = (one.wire_up_bytes, one.wire_down_bytes)
                one.wire_up_bytes, one.wire_down_bytes = self.wired.get(key, (None, None))
                cells.append(
                    record(spec, trial, rate, one, processes, reference, self.scenario, failed)
                )
            if not any(cell["client_bound"] for cell in cells):
                for cell, one in zip(cells, got, strict=True):
                    cell["scaling"] = (
                        "server-bound"
                        if processes == 1 and not self.workers.remote
                        else f"server-bound with {one.workers_planned} load workers"
                    )
                return cells
            if self.workers.fixed or self.workers.remote:
                return scaled(cells, "client-bound: the load workers asked for were not enough")
            if processes >= self.client_cores:
                return scaled(
                    cells,
                    f"client-bound: out of cores ({self.client_cores} for the load generator, "
                    f"{processes} process{'es' if processes > 1 else ''})",
                )
            processes += 1


def scaled(cells: list[dict[str, Any]], scaling: str) -> list[dict[str, Any]]:
    """The cells of one load process, with what scaling concluded for it."""
    for cell in cells:
        cell["scaling"] = scaling
    return cells
