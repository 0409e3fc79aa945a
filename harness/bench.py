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
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from wiremark import __version__
from wiremark.payloads import transport as registry
from wiremark.payloads.errors import WiremarkError
from wiremark.reports import records
from wiremark.reports.records import ResultWriter

from . import environment as env
from . import scenario as scenarios
from .clients import CONNECT_TIMEOUT, connect
from .conformance import add_target_option, conform
from .execution import BenchError, Executor, Target
from .launch import ServerProcess, ServerStartError, running
from .record import References
from .scenario import CellSpec, Scenario

COMMON_SETTINGS = {
    "server_timing": "on (decode, infer, encode per reply)",
    "gzip": "gRPC message compression / HTTP Content-Encoding, both ways, every message",
}


def settings(
    names: list[str], external: bool, clients: list[str], delay_ms: float = 0.0
) -> dict[str, str]:
    """How each transport ran, in words, from the server kind and the load driver that ran
    it (not from text written beside them)."""
    from wiremark.servers.serve import ServeOptions, server_kind
    from wiremark.servers.service import ServiceConfig

    from .transports import driver

    out: dict[str, str] = {}
    for name in names:
        options = ServeOptions(name, service=ServiceConfig(inject_delay_ms=delay_ms))
        server = "external (--target)" if external else server_kind(name).describe(options)
        ran = driver(name).clients
        client = "; ".join(f"{c} client: {ran[c]}" for c in clients)
        out[name] = f"{server}; {client}"
    return out | COMMON_SETTINGS | {"access_log": "off"}


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
    """One server per transport and compression setting, up and SERVING, stopped after."""
    procs: dict[tuple[str, str], ServerProcess] = {}
    for compression in compressions:
        for t in transports:
            args = ["--models", ",".join(models), "--compression", compression]
            if delay_ms:
                args += ["--inject-delay-ms", str(delay_ms)]
            procs[(t, compression)] = ServerProcess(t, args, server_cpus)

    def loading() -> None:
        say(f"waiting for {len(procs)} servers to load {', '.join(models)} ...")

    with running(procs.values(), ready_timeout=300, before_ready=loading):
        yield {
            key: Target(key[0], p.address, p.proc.pid if p.proc else None)
            for key, p in procs.items()
        }


def execute(args: argparse.Namespace, scenario: Scenario, out: Path) -> int:
    server_cores, client_cores = env.split_cores()
    shared = server_cores == client_cores
    server_cpus = None if shared else env.cpu_list(server_cores)
    client_cpus = None if shared else env.cpu_list(client_cores)
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
    writer = ResultWriter(
        out,
        {
            "wiremark": __version__,
            "run_id": env.run_id(),
            "started": env.now(),
            "commit": env.git_commit(),
            "scenario": scenario.to_dict() | {"inject_delay_ms": args.inject_delay_ms},
            "machine": env.machine(),
            "versions": env.versions(),
            "placement": {
                "server_cpus": server_cpus,
                "client_cpus": client_cpus,
                "note": env.placement_note(shared, bool(external)),
            },
            "transports": [registry.get(t).describe() for t in transports],
            "settings": settings(transports, bool(external), scenario.client, args.inject_delay_ms),
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
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="wiremark-bench-")))
        executor = Executor(scenario, client_cpus, len(client_cores), tmp)
        for trial in range(scenario.repeat):
            best: dict[tuple[Any, ...], float] = {}  # closed-loop rps per workload, transport
            for spec in specs:
                index += 1
                rate = scenarios.resolve_rate(spec, best, transports)
                progress.describe(spec.label(rate))
                if spec.mode == "open" and rate is None:
                    say(f"[{index:>3}/{total}] {spec.label()}: skipped, no closed-loop rps")
                    progress.advance()
                    continue
                reference = references.get(spec.model, spec.batch, spec.encoding)
                cell = executor.measure(
                    spec,
                    trial,
                    rate,
                    targets[(spec.transport, spec.compression)],
                    reference,
                    (spec.model, spec.transport) in failed,
                )
                writer.add_cell(cell)
                if spec.mode == "closed" and cell["requests"] and not cell["errors"]:
                    key = (spec.workload, spec.transport)
                    best[key] = max(best.get(key, 0.0), cell["rps"])
                say(summary_line(index, total, spec, cell))
                progress.advance()
    writer.set("finished", env.now())
    say(f"results: {writer.json_path} and {out / 'results.csv'}")
    if not args.no_report:
        say(f"report: {write_report(out)}")
    return 1 if failed else 0


def write_report(out: Path) -> Path:
    """`out/report.html` from `out/results.json`, as it is (a cut run's finished cells)."""
    from wiremark.reports import report

    return report.render([records.load(out / records.RESULTS_JSON)], out / "report.html")


def target_problem(transport: str, address: str, models: list[str]) -> str | None:
    """What stops a server that bench did not start from being measured: it does not answer,
    or does not serve one of the models. Checked in seconds, before anything loads; None
    when it serves them all."""
    try:  # at most CONNECT_TIMEOUT for each step: a server that never answers is none
        with connect(transport, address, timeout=CONNECT_TIMEOUT) as client:
            for model in models:
                client.metadata(model)
    except WiremarkError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def run(args: argparse.Namespace) -> int:
    from wiremark.usage import UsageError

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
    out = args.out or Path("wiremark-results") / env.run_id()
    try:
        return execute(args, scenario, out)
    except (BenchError, ServerStartError) as exc:
        print(f"wiremark: error: {exc}", file=sys.stderr)
        print(f"wiremark: cells finished so far are in {out}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\nwiremark: interrupted; cells finished so far are in {out}", file=sys.stderr)
        if not args.no_report and (out / records.RESULTS_JSON).exists():
            try:  # the finished cells are what the user asked to see; a second Ctrl-C skips it
                print(f"wiremark: report of them: {write_report(out)}", file=sys.stderr)
            except KeyboardInterrupt:
                print("wiremark: interrupted again: no report", file=sys.stderr)
            except records.RecordError as exc:
                print(f"wiremark: no report: {exc}", file=sys.stderr)
        return 130
