"""The cell-process protocol: what a load-generator process is asked to do (`CellRequest`,
its command line) and what it answers (`CellResult`, one JSON object on its last line of
stdout). `bench` and `calibrate` build requests here; `harness/cell.py` reads them back.
Typed both ways, so neither side reads the other's output by string keys.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

MODULE = "wiremark.harness.cell"


@dataclass
class CellRequest:
    """One load-generator process: `users` closed-loop users, or an open loop at `rate`
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
    raw: Path | None = None  # save every latency here (.npy)

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
    """What one load-generator process measured over its window."""

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

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_output(cls, stdout: str) -> CellResult:
        """The result on a cell process's last line of output (a ValueError if none)."""
        lines = stdout.strip().splitlines()
        if not lines:
            raise ValueError("the load process printed no result")
        doc = json.loads(lines[-1])
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in known})
