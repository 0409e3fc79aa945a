"""Scenarios: which cells `wiremark bench` measures, from a TOML file.

    [scenario]
    name = "mine"
    models = ["iris", "mnist"]          # default: all four
    transports = ["grpc", "json"]       # default: every registered transport
    concurrency = [1, 16]               # closed loop: users, no wait; [] for none
    rate = [500, "50%"]                 # open loop: requests/s, or a share of the slowest
                                        # transport's closed-loop throughput for the model
    arrival = "constant"                # or "poisson"
    connections = 32                    # open loop: the most requests in flight
    batch = [1]                         # instances per request
    encodings = ["raw"]                 # MNIST pixels: "raw" bytes and/or "list" of ints;
                                        # on OIP transports, every model's tensors: binary
                                        # (raw) or JSON / typed contents (list)
    compression = ["none"]              # and/or "gzip"
    tls = [false]                       # and/or true: over TLS (a throwaway CA from
                                        # trustme, every client verifying the server)
    client = ["lean"]                   # the load users' client: "lean" (this project's
                                        # lean clients: the cell measures the server)
                                        # and/or "library" (grpcio, httpx: what a stock
                                        # Python client pays per call)
    duration_s = 5                      # measured window per cell
    max_duration_s = 20                 # ... extended up to this for min_requests
    warmup_s = 1                        # excluded from every figure
    min_requests = 100                  # a cell runs on until it has these (up to
                                        # max_duration_s); with fewer it is marked invalid
    wire_requests = 20                  # requests through the byte-counting relay
    sample = 10                         # replies per cell checked against the reference
    repeat = 1                          # the whole matrix, this many trials

Anything left out takes the default above; an unknown key is an error that names it.
`quick` and `full` ship in `harness/scenarios/`.
"""

from __future__ import annotations

import itertools
import tomllib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from wiremark.payloads import transport as transports
from wiremark.payloads.contract import MODEL_FAMILIES, Family
from wiremark.servers import runner

from .transports.base import CLIENTS, LEAN

SHIPPED = Path(__file__).with_name("scenarios")


class ScenarioError(ValueError):
    """A scenario that cannot be run, with the reason."""


@dataclass(frozen=True)
class CellSpec:
    """One measurement: what a cell sends and how hard."""

    model: str
    transport: str
    mode: str  # "closed" | "open"
    concurrency: int  # closed: users; open: connections
    rate: float | str | None  # open loop: req/s, or "50%" until resolved
    arrival: str | None
    batch: int
    encoding: str
    compression: str
    client: str = LEAN
    tls: bool = False

    @property
    def workload(self) -> tuple[str, int, str, str, bool]:
        return (self.model, self.batch, self.encoding, self.compression, self.tls)

    def label(self, rate: float | None = None) -> str:
        """e.g. "mnist json open 750/s (50%) (list pixels)"; `rate`: the resolved rate."""
        if self.mode == "closed":
            load = f"c={self.concurrency}"
        elif isinstance(self.rate, str):
            load = f"{rate:.0f}/s ({self.rate})" if rate else f"{self.rate} of capacity"
        else:
            load = f"{self.rate:g}/s"
        extra = [f"batch {self.batch}"] if self.batch != 1 else []
        if MODEL_FAMILIES.get(self.model) is Family.DIGITS:
            extra.append(f"{self.encoding} pixels")
        elif has_tensor_encodings(self.transport):
            extra.append(f"{self.encoding} tensors")
        if self.compression != "none":
            extra.append(self.compression)
        if self.tls:
            extra.append("TLS")
        if self.client != LEAN:
            extra.append(f"{self.client} client")
        return f"{self.model} {self.transport} {self.mode} {load}" + (
            f" ({', '.join(extra)})" if extra else ""
        )


@dataclass
class Scenario:
    name: str = "custom"
    models: list[str] = field(default_factory=lambda: list(runner.models()))
    transports: list[str] = field(default_factory=lambda: list(transports.names()))
    concurrency: list[int] = field(default_factory=lambda: [8])
    rate: list[float | str] = field(default_factory=list)
    arrival: str = "constant"
    connections: int = 32
    batch: list[int] = field(default_factory=lambda: [1])
    encodings: list[str] = field(default_factory=lambda: ["raw"])
    compression: list[str] = field(default_factory=lambda: ["none"])
    tls: list[bool] = field(default_factory=lambda: [False])
    client: list[str] = field(default_factory=lambda: [LEAN])
    duration_s: float = 5.0
    max_duration_s: float = 20.0
    warmup_s: float = 1.0
    min_requests: int = 100
    wire_requests: int = 20
    sample: int = 10
    repeat: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self) -> Scenario:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ScenarioError(f"scenario {self.name!r}: {message}")

        for key, allowed in (
            ("models", runner.models()),
            ("transports", transports.names(peers=True)),
            ("encodings", ("raw", "list")),
            ("compression", ("none", "gzip")),
            ("client", CLIENTS),
        ):
            values = getattr(self, key)
            need(isinstance(values, list) and bool(values), f"{key} must be a non-empty list")
            bad = [v for v in values if v not in allowed]
            need(not bad, f"unknown {key} {bad}: choose from {', '.join(allowed)}")
        need(
            isinstance(self.tls, list)
            and bool(self.tls)
            and all(isinstance(v, bool) for v in self.tls)
            and len(set(self.tls)) == len(self.tls),
            "tls must be [false], [true] or [false, true]",
        )
        need(bool(self.concurrency or self.rate), "give concurrency, rate, or both")
        need(
            all(isinstance(c, int) and c >= 1 for c in self.concurrency),
            "concurrency must be whole numbers >= 1",
        )
        need(all(isinstance(b, int) and b >= 1 for b in self.batch), "batch must be >= 1")
        for r in self.rate:
            need(
                (isinstance(r, int | float) and r > 0) or (share(r) is not None),
                f'rate {r!r}: a number of requests/s, or a share like "50%"',
            )
        need(
            not any(isinstance(r, str) for r in self.rate) or bool(self.concurrency),
            'a rate like "50%" is a share of closed-loop throughput: give concurrency too',
        )
        need(self.arrival in ("constant", "poisson"), "arrival is constant or poisson")
        need(self.max_duration_s >= self.duration_s, "max_duration_s is below duration_s")
        for key in ("duration_s", "connections", "repeat"):
            need(getattr(self, key) > 0, f"{key} must be above 0")
        for key in ("warmup_s", "min_requests", "wire_requests", "sample"):
            need(getattr(self, key) >= 0, f"{key} must not be negative")
        return self

    def cells(self) -> Iterator[CellSpec]:
        """Closed-loop cells of a model first (open-loop shares need their throughput),
        transports (and client libraries) interleaved at every level so drift does not favour
        one of them."""
        for model in self.models:
            digits = MODEL_FAMILIES[model] is Family.DIGITS
            for batch, encoding, compression, tls in itertools.product(
                self.batch, self.encodings, self.compression, self.tls
            ):
                workload = (batch, encoding, compression)
                # an encoding other than raw means something only for MNIST's pixels and on
                # transports with tensor encodings (the Open Inference Protocol's JSON tensors)
                # (and a peer's transport only for the models and encodings it serves, and
                # over TLS only where its server serves TLS)
                chosen = [
                    t.name
                    for t in map(transports.get, self.transports)
                    if (digits or encoding == "raw" or t.tensor_encodings)
                    and t.serves(model)
                    and encoding in t.encodings
                    and (t.tls or not tls)
                ]
                for users in self.concurrency:
                    for client, t in itertools.product(self.client, chosen):
                        yield CellSpec(
                            model, t, "closed", users, None, None, *workload, client, tls
                        )
                for rate in self.rate:
                    for client, t in itertools.product(self.client, chosen):
                        load = (self.connections, rate, self.arrival)
                        yield CellSpec(model, t, "open", *load, *workload, client, tls)


def has_tensor_encodings(transport: str) -> bool:
    """Whether `encodings` choose the tensor form of every model on this transport."""
    try:
        return transports.get(transport).tensor_encodings
    except transports.UnknownTransport:
        return False


def share(value: object) -> float | None:
    """ "50%" -> 0.5; anything else -> None."""
    if isinstance(value, str) and value.endswith("%"):
        try:
            fraction = float(value[:-1]) / 100.0
        except ValueError:
            return None
        return fraction if 0 < fraction <= 10 else None
    return None


def load(name_or_path: str) -> Scenario:
    """A shipped scenario by name (`quick`, `full`) or a TOML file."""
    path = SHIPPED / f"{name_or_path}.toml"
    if not path.exists():
        path = Path(name_or_path)
        if not path.exists():
            shipped = ", ".join(sorted(p.stem for p in SHIPPED.glob("*.toml")))
            raise ScenarioError(f"no scenario {name_or_path!r}: name one of {shipped}, or a file")
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ScenarioError(f"{path}: {exc}") from None
    return parse(doc, default_name=path.stem, origin=str(path))


def parse(doc: dict[str, Any], default_name: str = "custom", origin: str = "scenario") -> Scenario:
    extra = set(doc) - {"scenario"}
    if extra:
        raise ScenarioError(
            f"{origin}: unknown table(s) {', '.join(sorted(extra))}; use [scenario]"
        )
    table = doc.get("scenario")
    if not isinstance(table, dict):
        raise ScenarioError(f"{origin}: no [scenario] table")
    known = {f.name for f in fields(Scenario)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ScenarioError(
            f"{origin}: unknown key(s) {', '.join(unknown)} in [scenario]; "
            f"known: {', '.join(sorted(known))}"
        )
    values = {"name": default_name, **table}
    for key in (
        "models",
        "transports",
        "concurrency",
        "rate",
        "batch",
        "encodings",
        "compression",
        "tls",
        "client",
    ):
        if key in values and not isinstance(values[key], list):
            values[key] = [values[key]]
    return Scenario(**values).validate()


def resolve_rate(
    spec: CellSpec, best: dict[tuple[Any, ...], float], transports: list[str]
) -> float | None:
    """The open-loop rate of a cell in requests/s (None for a closed-loop cell, or when no
    closed-loop figure to take a share of was measured): as given, or a share of the
    closed-loop throughput of the slowest transport for this workload in this trial, so
    every transport gets the same rate."""
    if spec.mode == "closed":
        return None
    fraction = share(spec.rate)
    if fraction is None:
        return float(spec.rate)  # type: ignore[arg-type]
    measured = [best[(spec.workload, t)] for t in transports if (spec.workload, t) in best]
    return max(1.0, min(measured) * fraction) if measured else None
