"""The cell-process protocol: what a cell's master process is asked to do (`CellRequest`,
its command line) and what it answers (`CellResult`, one JSON object on its last line of
stdout); and what the master tells each of its workers (`Share`, and the message names).
`bench` and `calibrate` build requests here; `harness/cell.py` reads them back. Typed both
ways, so neither side reads the other's output by string keys. No Locust here: importing it
patches a process for gevent.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field, fields
from typing import Any

MODULE = "wiremark.harness.cell"

# wiremark's messages between a cell's master and its workers, beside Locust's own
# (`harness/worker.py` says what each does)
MSG_PLAN = "wiremark_plan"
MSG_READY = "wiremark_ready"
MSG_OPEN = "wiremark_open"
MSG_MEASURE = "wiremark_measure"
MSG_FINISH = "wiremark_finish"
MSG_RESULT = "wiremark_result"
MSG_REJOIN = "wiremark_rejoin"  # master to an unknown worker: say client_ready again
MSG_ARM = "wiremark_arm"  # master to worker, an interleaved A/B cell: send to this arm now
REPLIES = "wiremark_replies"  # the key of the reply count in a worker's Locust report


@dataclass
class CellRequest:
    """One cell's master process: `users` closed-loop users, or an open loop at `rate`
    requests/s over at most `users` connections, against one server."""

    transport: str
    address: str  # HOST:PORT
    model: str = "iris"
    users: int = 16
    duration: float = 5.0  # the measured window, s
    warmup: float = 1.0
    max_duration: float = 0.0  # run past `duration` until `min_requests`, up to this
    min_requests: int = 0
    batch: int = 1
    encoding: str = "raw"
    compression: str = "none"
    client: str = "lean"  # the load users' client library (transports.base.CLIENTS)
    tls: bool = False  # over TLS, verifying the server's certificate ...
    tls_ca: str | None = None  # ... against this CA file (None: the machine's CA store)
    rate: float = 0.0  # open loop when > 0
    arrival: str = "constant"
    max_wait: float = 1.0  # open loop: a send waiting longer for a connection is dropped
    server_pid: int | None = None  # measure this process's CPU and peak memory
    sample: int = 0  # replies to keep for checking
    wire_requests: int = 0  # first count the bytes on the wire over this many requests
    load_processes: int = 1  # local worker processes
    expect_workers: int = 0  # and this many from other hosts (`wiremark worker --master`)
    master_bind: str = "127.0.0.1:0"  # HOST:PORT where the workers connect
    worker_timeout: float = 30.0  # s to wait for them
    # an interleaved A/B cell: a second arm's server, sent to by turns with `address`, a
    # turn lasting `ab_slot` s, the order of each pair of turns drawn with `ab_seed`;
    # `duration` and `min_requests` hold for each arm
    ab_address: str | None = None
    ab_server_pid: int | None = None
    ab_slot: float = 0.25
    ab_seed: int = 0

    def argv(self, cpus: str | None = None) -> list[str]:
        """The command that runs this request (pinned with taskset to `cpus`)."""
        argv = [sys.executable, "-m", MODULE]
        defaults = CellRequest("", "")
        for f in fields(self):
            value = getattr(self, f.name)
            given = f.name in ("transport", "address") or value != getattr(defaults, f.name)
            flag = f"--{f.name.replace('_', '-')}"
            if isinstance(value, bool):
                argv += [flag] if value else []
            elif given and value is not None:
                argv += [flag, str(value)]
        return ["taskset", "-c", cpus, *argv] if cpus else argv

    @classmethod
    def from_namespace(cls, args: Any) -> CellRequest:
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})


@dataclass
class CellResult:
    """What one cell measured over its window, its workers' figures merged."""

    requests: int
    errors: int
    duration_s: float
    rps: float
    reply_bytes: float  # mean reply body bytes
    client_cpu_s: float
    client_cpu: float  # share of one core
    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None
    p999: float | None = None
    max: float | None = None
    mean: float | None = None
    server_cpu_s: float | None = None
    server_peak_rss_mb: float | None = None
    late: int | None = None  # open loop only
    dropped: int | None = None
    wire_up_bytes: float | None = None
    wire_down_bytes: float | None = None
    wire_error: str = ""
    steal_s: float = 0.0  # what the hypervisor took from this process's cores meanwhile
    first_error: str = ""
    samples: list[dict[str, str]] = field(default_factory=list)  # body (base64), timing
    histogram: str = ""  # every latency (ms, from the intended send), HdrHistogram-encoded
    uncorrected_histogram: str | None = None  # open loop: from the actual send
    workers: list[dict[str, Any]] = field(default_factory=list)  # each worker that finished
    workers_planned: int = 1  # the workers the cell started with

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> CellResult:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in known})

    @classmethod
    def from_output(cls, stdout: str) -> CellResult:
        """The result on a cell process's last line of output (a ValueError if none)."""
        return cls.arms_from_output(stdout)[0]

    @classmethod
    def arms_from_output(cls, stdout: str) -> list[CellResult]:
        """Each arm's result, in the order of the request's addresses (`address`, then
        `ab_address`): one for a plain cell (a ValueError if there is none)."""
        lines = stdout.strip().splitlines()
        if not lines:
            raise ValueError("the load process printed no result")
        doc = json.loads(lines[-1])
        return (
            [cls.from_dict(arm) for arm in doc["arms"]] if "arms" in doc else [cls.from_dict(doc)]
        )


def arms_to_json(results: list[CellResult]) -> str:
    """A cell's output line: one result, or each arm's of an interleaved A/B cell."""
    if len(results) == 1:
        return results[0].to_json()
    return json.dumps({"arms": [dataclasses.asdict(r) for r in results]})


@dataclass
class Share:
    """One worker's part of a cell."""

    index: int  # 0 .. workers - 1
    workers: int
    users: int  # open loop: this worker's connections (closed loop: Locust dispatches users)
    rate: float  # open loop: this worker's requests/s (0: closed loop)
    phase: float  # open loop: seconds by which this worker's schedule starts later
    sample: int  # replies to sample for checking
    wire_requests: int  # first count the wire bytes over this many requests
    seed: int  # open loop: the arrival schedule's seed (Poisson gaps differ per worker)


def shares(workers: int, users: int, rate: float, sample: int, wire_requests: int) -> list[Share]:
    """A cell's load over `workers`: the rate split evenly with schedules offset by
    1/rate each (worker i's sends fall between the others'), as many connections each as
    the whole cell has (each must be able to absorb a stall), sampling and wire bytes on
    the first worker."""
    out = []
    for i in range(workers):
        out.append(
            Share(
                index=i,
                workers=workers,
                users=max(1, users),
                rate=rate / workers if rate else 0.0,
                phase=i / rate if rate else 0.0,
                sample=sample if i == 0 else 0,
                wire_requests=wire_requests if i == 0 else 0,
                seed=i,
            )
        )
    return out


def parse_address(text: str, bind: bool = False) -> tuple[str, int]:
    """HOST:PORT (IPv6 in brackets) as (host, port), port 0 allowed to `bind`; a
    ValueError naming the problem."""
    host, sep, port = text.rpartition(":")
    low = 0 if bind else 1
    if not sep or not host or not port.isdigit() or not low <= int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)
