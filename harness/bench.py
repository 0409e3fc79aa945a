"""`wiremark bench`: run a scenario's matrix against real servers and write the results.

    wiremark bench [--scenario quick|full|gate|oip|peer|FILE] [--out DIR] [--repeat N]
                   [--target TRANSPORT=HOST:PORT ...] [--inject-delay-ms MS] [--inject-cpu-us US]
                   [--ab | --baseline-target TRANSPORT=HOST:PORT ...]
                   [--baseline-inject-delay-ms MS] [--baseline-inject-cpu-us US] [--seed N]

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
   After every cell it checks the servers it started (`harness/watch.py`): one that died is
   reported in one line, restarted once, and the cell is marked "server down"; the run then
   exits 1. A cell whose requests were all refused is "server down" too, never client-bound.
4. Writes `DIR/results.json` and `DIR/results.csv` after every cell (an interrupted run
   keeps what it finished), then `DIR/report.html`.

An A/B run (`--ab`, or `--baseline-target` beside `--target`) measures two arms in one run:
a baseline (main's servers, or servers started with the `--baseline-*` options) and the
current build. Each cell's load process sends to both arms' servers by turns
(`--ab-slot-ms`, 250), each pair of turns in an order drawn at random (seeded, `--seed`), so
the drift of a shared machine, from one second to the next, falls on both arms alike; the
cells are repeated in blocks (`--repeat`, 10 by default) and `wiremark gate RESULTS` compares
the arms block by block. Open-loop cells run at the same rate on both arms (from the
baseline's closed loop).
"""

from __future__ import annotations

import argparse
import itertools
import random
import secrets
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
from wiremark.usage import non_negative, positive_number

from . import environment as env
from . import scenario as scenarios
from .arms import AB_BLOCKS, AB_SLOT_MS, Arm, plan_arms
from .clients import CONNECT_TIMEOUT, connect
from .conformance import add_target_option, conform, parse_target
from .execution import BenchError, Executor, Target, Workers
from .launch import ServerProcess, ServerStartError, running
from .record import SERVER_DOWN, References, failed_cell
from .scenario import CellSpec, Scenario
from .signals import TERMINATED_STATUS, Terminated, sigterm_unwinds
from .tls import Certificates, Trust
from .watch import Watch, mark_down

COMMON_SETTINGS = {
    "server_timing": "on (decode, infer, encode per reply)",
    "gzip": "gRPC message compression / HTTP Content-Encoding, both ways, every message",
}


TLS_SETTING = (
    "TLS cells: a throwaway CA (trustme) made for the run; the FastAPI servers on uvicorn with "
    "Python's ssl, the grpcio servers with BoringSSL; every client verifies the certificate "
    "and the address (HTTP/2 offers ALPN h2)"
)


def settings(
    names: list[str],
    external: bool,
    clients: list[str],
    delay_ms: float = 0.0,
    cpu_us: float = 0.0,
    tls: bool = False,
) -> dict[str, str]:
    """How each transport ran, in words, from the server kind and the load driver that ran
    it (not from text written beside them); with `tls`, how the TLS cells ran."""
    from wiremark.servers.serve import ServeOptions, server_kind
    from wiremark.servers.service import ServiceConfig

    from .transports import driver

    out: dict[str, str] = {}
    for name in names:
        config = ServiceConfig(inject_delay_ms=delay_ms, inject_cpu_us=cpu_us)
        options = ServeOptions(name, service=config)
        server = "external (--target)" if external else server_kind(name).describe(options)
        ran = driver(name).clients
        client = "; ".join(f"{c} client: {ran[c]}" for c in clients)
        out[name] = f"{server}; {client}"
    if tls:
        out["tls"] = TLS_SETTING if not external else "the targets' own certificates, verified"
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
        help="quick (default, every model on grpc, json, msgpack, tfs-grpc, ~10 min), full "
        "(the sweeps), gate (a small matrix for CI's A/B gate), oip (the Open Inference "
        "Protocol's tensors), peer (MLServer beside wiremark), or a TOML file",
    )
    p.add_argument("--out", type=Path, help="results folder (default: wiremark-results/RUN_ID)")
    p.add_argument(
        "--repeat",
        type=int,
        help="trials of the whole matrix, or blocks of an A/B run (the gate judges >= 3 "
        "trials a side or >= 5 blocks; default 1, an A/B run 6)",
    )
    add_target_option(p, "measure a running server (repeatable) instead of starting them")
    p.add_argument(
        "--tls-ca",
        type=Path,
        metavar="PEM",
        help="a scenario's `tls = [true]` on --target servers: verify them against this CA "
        "(default: the machine's CA store); servers bench starts use a throwaway CA",
    )
    p.add_argument(
        "--inject-delay-ms",
        type=non_negative,
        default=0.0,
        metavar="MS",
        help="start the servers with this artificial delay (to prove the gate catches it)",
    )
    p.add_argument(
        "--inject-cpu-us",
        type=non_negative,
        default=0.0,
        metavar="US",
        help="start the servers burning this much CPU per request (a slower codec, for the gate)",
    )
    ab = p.add_argument_group(
        "A/B runs",
        "Measure a baseline arm beside the current one in one run: each cell sends to both "
        "arms' servers by turns, in slots whose order is drawn at random, and is repeated in "
        f"--repeat blocks (at least {AB_BLOCKS} unless asked); gate it with "
        "`wiremark gate RESULTS`.",
    )
    ab.add_argument(
        "--ab",
        action="store_true",
        help="start a second set of servers as the baseline arm (with --baseline-inject-*)",
    )
    ab.add_argument(
        "--baseline-target",
        type=parse_target,
        action="append",
        default=[],
        metavar="TRANSPORT=HOST:PORT",
        help="the baseline arm's running server (repeatable; --target names the current arm's)",
    )
    ab.add_argument(
        "--baseline-inject-delay-ms",
        type=non_negative,
        default=0.0,
        metavar="MS",
        help="the baseline servers' injected delay (default 0)",
    )
    ab.add_argument(
        "--baseline-inject-cpu-us",
        type=non_negative,
        default=0.0,
        metavar="US",
        help="the baseline servers' injected CPU per request (default 0)",
    )
    ab.add_argument(
        "--ab-slot-ms",
        type=positive_number,
        metavar="MS",
        help=f"how long each turn of an arm lasts (default {AB_SLOT_MS:g}; keep it many times "
        "the slowest request's latency)",
    )
    ab.add_argument("--seed", type=int, help="seed of the arms' order (default: random, recorded)")
    load = p.add_argument_group(
        "Load workers",
        "Every cell runs on Locust's master/worker runners: its master on this host, its "
        "workers local processes or `wiremark worker --master HOST:PORT` on other hosts; "
        "their HdrHistograms merge at full resolution.",
    )
    load.add_argument(
        "--load-processes",
        type=int,
        metavar="N",
        help="local worker processes per cell (default: 1, and one more while a cell is "
        "client-bound and load cores remain; 0 with --expect-workers)",
    )
    load.add_argument(
        "--expect-workers",
        type=int,
        default=0,
        metavar="N",
        help="wait for N workers from other hosts in every cell (with --master-bind)",
    )
    load.add_argument(
        "--master-bind",
        metavar="HOST:PORT",
        help="where the workers connect (needed with --expect-workers; default: loopback, "
        "a free port)",
    )
    load.add_argument(
        "--worker-timeout",
        type=non_negative,
        default=30.0,
        metavar="S",
        help="seconds a cell waits for its workers (default: 30)",
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


def summary_line(
    index: int, total: int, spec: CellSpec, cell: dict[str, Any], arm: str | None = None
) -> str:
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
    if arm:
        label = f"{arm:<8} {label}"
    width = 57 if arm else 48
    return f"[{index:>3}/{total}] {label:<{width}} {figures}  {'  '.join(flags)}".rstrip()


ServerKey = tuple[str | None, str, str, bool]  # (arm, transport, compression, tls)


def server_key(arm: str | None, spec: CellSpec) -> ServerKey:
    return (arm, spec.transport, spec.compression, spec.tls)


@contextmanager
def started_servers(
    arms: list[Arm],
    scenario: Scenario,
    transports: list[str],
    server_cpus: str | None,
    certificates: Certificates | None,
    say: Callable[[str], None],
) -> Iterator[dict[ServerKey, ServerProcess]]:
    """One server per arm, transport, compression and TLS setting, up and SERVING (all
    loading at once), stopped after: `ServerKey` -> its process. TLS servers serve
    `certificates`."""
    procs: dict[ServerKey, ServerProcess] = {}
    models = scenario.models
    for arm in arms:
        for compression, tls in itertools.product(scenario.compression, scenario.tls):
            for t in transports:
                if tls and not registry.get(t).tls:
                    continue  # a peer run without TLS: its TLS cells are never made
                args = ["--models", ",".join(models), "--compression", compression]
                procs[(arm.name, t, compression, tls)] = ServerProcess(
                    t, args + arm.serve_args(), server_cpus, tls=certificates if tls else None
                )

    def loading() -> None:
        say(f"waiting for {len(procs)} servers to load {', '.join(models)} ...")

    with running(procs.values(), ready_timeout=300, before_ready=loading):
        yield procs


def execute(args: argparse.Namespace, scenario: Scenario, out: Path, arms: list[Arm]) -> int:
    server_cores, client_cores = env.split_cores()
    shared = server_cores == client_cores
    server_cpus = None if shared else env.cpu_list(server_cores)
    client_cpus = None if shared else env.cpu_list(client_cores)
    ab = len(arms) > 1
    current = arms[-1]
    external = bool(current.external)
    if external:
        missing = [t for t in scenario.transports if t not in current.external]
        transports = [t for t in scenario.transports if t in current.external]
        if not transports:
            raise BenchError(f"no --target for the scenario's transports {scenario.transports}")
    else:
        missing, transports = [], list(scenario.transports)
    specs = [s for s in scenario.cells() if s.transport in transports]
    total = len(specs) * scenario.repeat * len(arms)
    seed = args.seed if args.seed is not None else secrets.randbits(32)
    writer = ResultWriter(
        out,
        {
            "wiremark": __version__,
            "run_id": env.run_id(),
            "started": env.now(),
            "commit": env.git_commit(),
            "scenario": scenario.to_dict()
            | {"inject_delay_ms": current.delay_ms, "inject_cpu_us": current.cpu_us},
            "machine": env.machine(),
            "versions": env.versions(),
            "placement": {
                "server_cpus": server_cpus,
                "client_cpus": client_cpus,
                "note": env.placement_note(shared, external),
            },
            "transports": [registry.get(t).describe() for t in transports],
            "settings": settings(
                transports,
                external,
                scenario.client,
                current.delay_ms,
                current.cpu_us,
                True in scenario.tls,
            ),
            "ab": {
                "arms": {str(arm.name): arm.describe() for arm in arms},
                "seed": seed,
                "order": "interleaved in each cell: turns of slot_ms, each pair's order at random",
                "slot_ms": args.ab_slot_ms,
            }
            if ab
            else None,
        },
    )
    progress = Progress(total)
    say = progress.say
    kind = f"A/B run, {scenario.repeat} blocks, " if ab else ""
    say(f"wiremark bench: scenario {scenario.name}, {kind}{total} cells, results in {out}")
    if missing:
        say(f"  no --target for {', '.join(missing)}: those transports are skipped")
    if shared:
        say("  one core: server and load generator share it; figures will say so")
    if ab:
        for arm in arms:
            say(f"  {arm.name} arm: {arm.words()}")
    watch: Watch | None = None
    with ExitStack() as stack:
        if external:
            trust = target_trust(args, scenario)
            targets = {
                (arm.name, t, c, tls): Target(
                    t, arm.external[t], None, trust if tls else None, arm.name
                )
                for arm in arms
                for t in transports
                for c in scenario.compression
                for tls in scenario.tls
            }
        else:
            certificates = None
            if True in scenario.tls:  # a throwaway CA for this run's TLS servers
                folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="wiremark-tls-"))
                certificates = Certificates.make(Path(folder))
            procs = stack.enter_context(
                started_servers(arms, scenario, transports, server_cpus, certificates, say)
            )
            targets = {
                key: Target(key[1], p.address, p.proc.pid if p.proc else None, p.trust, key[0])
                for key, p in procs.items()
            }
            watch = Watch(procs, targets, stack, say)
        say(
            "checking conformance (every model on every transport against the in-process model) ..."
        )
        references = References(scenario.models)
        entries: list[dict[str, Any]] = []
        failed: set[tuple[str | None, str, str]] = set()
        first = (scenario.compression[0], scenario.tls[0])
        for arm in arms:
            served = [t for t in transports if (arm.name, t, *first) in targets]
            checks = conform(
                {t: targets[(arm.name, t, *first)].address for t in served},
                scenario.models,
                references=references.runners,
                tls=targets[(arm.name, served[0], *first)].tls if served else None,
            )
            for c in checks:
                entry = {
                    "model": c.model,
                    "transport": c.transport,
                    "inputs": c.inputs,
                    "mismatches": c.mismatches[:20],
                    "worst": c.worst,
                    "passed": c.passed,
                }
                entries.append(entry | {"arm": arm.name} if ab else entry)
                if not c.passed:
                    failed.add((arm.name, c.model, c.transport))
                say(
                    f"  {f'{arm.name:<8} ' if ab else ''}{c.model:<8} {c.transport:<8} "
                    f"{c.inputs:>4} inputs  " + ("pass" if c.passed else f"FAIL: {c.mismatches[0]}")
                )
        writer.set("conformance", entries)
        stack.enter_context(progress)
        index = 0
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="wiremark-bench-")))
        # an A/B run's arms share each cell (its load process sends to both by turns)
        executor = Executor(
            scenario, client_cpus, len(client_cores), tmp, load_workers(args), args.ab_slot_ms / 1e3
        )
        order = random.Random(seed)
        for trial in range(scenario.repeat):
            # closed-loop rps per workload and transport, of the first arm (the baseline):
            # open-loop cells run at the same rate on both arms
            best: dict[tuple[Any, ...], float] = {}
            for spec in specs:
                rate = scenarios.resolve_rate(spec, best, transports)
                progress.describe(spec.label(rate))
                if spec.mode == "open" and rate is None:
                    for _ in arms:
                        index += 1
                        say(f"[{index:>3}/{total}] {spec.label()}: skipped, no closed-loop rps")
                        progress.advance()
                    continue
                reference = references.get(spec.model, spec.batch, spec.encoding)
                cells = {}
                up = []  # the arms whose server is there (a lost one's cells are not run)
                for arm in arms:
                    server = server_key(arm.name, spec)
                    if watch is not None and server in watch.down:
                        cell = failed_cell(spec, trial, rate, "", reference)
                        cell["invalid_reasons"] = [f"{SERVER_DOWN}: {watch.down[server]}"]
                        cell["scaling"] = SERVER_DOWN
                        cells[arm.name] = cell
                    else:
                        up.append(arm)
                if up:
                    got = executor.measure(
                        spec,
                        trial,
                        rate,
                        [targets[server_key(arm.name, spec)] for arm in up],
                        reference,
                        [(arm.name, spec.model, spec.transport) in failed for arm in up],
                        seed=order.randrange(2**32),
                    )
                    died = watch.check() if watch is not None else {}
                    for arm, cell in zip(up, got, strict=True):
                        if server_key(arm.name, spec) in died:
                            mark_down(cell, died[server_key(arm.name, spec)])
                        cells[arm.name] = cell
                for arm in arms:
                    index += 1
                    cell = cells[arm.name]
                    if ab:
                        cell |= {"arm": arm.name, "block": trial}
                    writer.add_cell(cell)
                    ok = cell["requests"] and not cell["errors"]
                    if spec.mode == "closed" and ok and arm is arms[0]:
                        key = (spec.workload, spec.transport)
                        best[key] = max(best.get(key, 0.0), cell["rps"])
                    say(summary_line(index, total, spec, cell, arm.name))
                    progress.advance()
    writer.set("finished", env.now())
    say(f"results: {writer.json_path} and {out / 'results.csv'}")
    if ab:
        say(f"gate the arms: wiremark gate {writer.json_path}")
    if not args.no_report:
        say(f"report: {write_report(out)}")
    if watch is not None and watch.deaths:
        lost = sum(1 for c in writer.doc["cells"] if c.get("scaling") == SERVER_DOWN)
        say(
            f"wiremark: {len(watch.deaths)} server death(s) during the run; {lost} cells "
            f"marked {SERVER_DOWN!r}: {'; '.join(watch.deaths)}"
        )
        return 1
    return 1 if failed else 0


def write_report(out: Path) -> Path:
    """`out/report.html` from `out/results.json`, as it is (a cut run's finished cells); an
    A/B run's arms side by side, the baseline first."""
    from wiremark.reports import report

    return report.render(report.arms(records.load(out / records.RESULTS_JSON)), out / "report.html")


def load_workers(args: argparse.Namespace) -> Workers:
    """Where every cell's load comes from (`run` has checked the options)."""
    remote = args.expect_workers
    local = args.load_processes if args.load_processes is not None else (0 if remote else 1)
    return Workers(
        local=local,
        remote=remote,
        master_bind=args.master_bind or "127.0.0.1:0",
        timeout=args.worker_timeout,
        fixed=args.load_processes is not None,
    )


def check_workers(args: argparse.Namespace) -> None:
    """The load-worker options make sense together, or a UsageError says why."""
    from wiremark.usage import UsageError

    from .protocol import parse_address

    if args.load_processes is not None and args.load_processes < 0:
        raise UsageError("--load-processes must be 0 or more")
    if args.expect_workers < 0:
        raise UsageError("--expect-workers must be 0 or more")
    if not args.worker_timeout:
        raise UsageError("--worker-timeout must be more than 0")
    if args.master_bind is not None:
        try:
            parse_address(args.master_bind, bind=True)
        except ValueError as exc:
            raise UsageError(f"--master-bind: {exc}") from None
    if args.expect_workers:
        if not args.target:
            raise UsageError(
                "--expect-workers: workers on other hosts need servers they can reach; "
                "start them there and give --target TRANSPORT=HOST:PORT"
            )
        if args.master_bind is None or args.master_bind.endswith(":0"):
            raise UsageError(
                "--expect-workers needs --master-bind HOST:PORT with a fixed port, which "
                "the workers are started with (wiremark worker --master HOST:PORT)"
            )
    if load_workers(args).local + args.expect_workers == 0:
        raise UsageError("--load-processes 0 needs --expect-workers")


def target_trust(args: argparse.Namespace, scenario: Scenario) -> Trust | None:
    """What clients verify --target servers against: `--tls-ca` (or the machine's store)
    when the scenario runs over TLS (a target speaks one setting, `run` checks)."""
    return Trust(args.tls_ca) if True in scenario.tls else None


def target_problem(
    transport: str, address: str, models: list[str], tls: Trust | None = None
) -> str | None:
    """What stops a server that bench did not start from being measured: it does not answer
    (over TLS, verified, with a `Trust`), or does not serve one of the models. Checked in
    seconds, before anything loads; None when it serves them all."""
    try:  # at most CONNECT_TIMEOUT for each step: a server that never answers is none
        with connect(transport, address, timeout=CONNECT_TIMEOUT, tls=tls) as client:
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
    if args.target and (args.inject_delay_ms or args.inject_cpu_us):
        raise UsageError("--inject-* applies to servers bench starts, not to --target")
    check_workers(args)
    arms = plan_arms(args)
    if len(arms) > 1 and args.repeat is None and scenario.repeat < AB_BLOCKS:
        scenario.repeat = AB_BLOCKS
    if args.ab_slot_ms is None:
        args.ab_slot_ms = AB_SLOT_MS
    if (args.target or args.baseline_target) and len(scenario.tls) > 1:
        raise UsageError(
            f"scenario {scenario.name!r}: a --target serves TLS or does not; "
            "give tls = [true] or [false] for it, not both"
        )
    if args.tls_ca is not None and not args.tls_ca.is_file():
        raise UsageError(f"--tls-ca {args.tls_ca}: no such file")
    trust = target_trust(args, scenario)
    for flag, given in (("--target", args.target), ("--baseline-target", args.baseline_target)):
        for transport, address in given:
            if transport in scenario.transports:
                problem = target_problem(transport, address, scenario.models, trust)
                if problem:
                    raise UsageError(f"{flag} {transport}={address}: {problem}")
    out = args.out or Path("wiremark-results") / env.run_id()
    try:
        with sigterm_unwinds():
            return execute(args, scenario, out, arms)
    except (BenchError, ServerStartError) as exc:
        print(f"wiremark: error: {exc}", file=sys.stderr)
        print(f"wiremark: cells finished so far are in {out}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as stop:
        terminated = isinstance(stop, Terminated)
        how = "terminated" if terminated else "interrupted"
        print(f"\nwiremark: {how}; cells finished so far are in {out}", file=sys.stderr)
        if not args.no_report and (out / records.RESULTS_JSON).exists():
            try:  # the finished cells are what the user asked to see; a second Ctrl-C skips it
                print(f"wiremark: report of them: {write_report(out)}", file=sys.stderr)
            except KeyboardInterrupt:
                print("wiremark: interrupted again: no report", file=sys.stderr)
            except records.RecordError as exc:
                print(f"wiremark: no report: {exc}", file=sys.stderr)
        return TERMINATED_STATUS if terminated else 130
