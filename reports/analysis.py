"""Result records -> pandas frames -> the findings of the report, as data.

Everything here reads `records.Run` objects only (never a live server) and tolerates the
gaps real runs have: one trial, some models only, no open loop, fields left None. What it
returns is numbers, keys and flags (dataclasses and frames); `wording` makes the sentences
of the report from them.

Transports are what the result files say they are (`records.Run.transports`): their
labels, their order and their wires, combined across the runs shown (`Transports`). The
"7-10x" claim compares the transports on `records.WIRE_GRPC` with those on
`records.WIRE_HTTP1`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from wiremark.reports import gate, records

WITHIN = 0.05  # a difference under 5% is "within X%", not "faster"
CLAIM_FACTOR = 7.0  # the tutorials' "7-10x": the claim holds where gRPC is this much faster
FEW_REQUESTS = 1000  # below this a p99.9 rests on no sample beyond it
CI_LEVEL = 95
BOOTSTRAP_SAMPLES = 4000
BOOTSTRAP_SEED = 20261122
PIXEL_MODELS = ("mnist",)  # the models whose payload has a pixel encoding

NUMERIC_KEYS = ("concurrency", "rate", "batch")
TEXT_KEYS = ("model", "transport", "mode", "arrival", "encoding", "compression", "client")
VARIANT_KEYS = ("batch", "encoding", "compression")
_NOT_MEASURES = {
    "trial",
    *records.CELL_KEY,
    "client_bound",
    "scaling",
    "valid",
    "invalid_reasons",
}
MEASURES = tuple(f for f in records.CELL_FIELDS if f not in _NOT_MEASURES)

# The claim's two sides, and what its figures measure.
THROUGHPUT = "throughput"
P50 = "p50"
CLAIM_YES = "yes"  # gRPC is CLAIM_FACTOR times faster somewhere
CLAIM_NO = "no"  # faster, by less than that
CLAIM_NOT_FASTER = "not_faster"  # nowhere more than WITHIN faster
CLAIM_UNMEASURED = "unmeasured"  # cells to compare, but no throughput or latency in them
CLAIM_NO_CELLS = "no_cells"  # no cell with both sides at the same load

Pair = tuple[str, str]  # (a gRPC-wire transport, an HTTP/1.1 transport)


# ---------------------------------------------------------------------------------------
# values


def is_num(value: Any) -> bool:
    """A finite number (not None, not NaN, not a bool)."""
    if value is None or isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def fmt_key(value: Any) -> str:
    """A key value (concurrency, rate, batch) as written: 8, not 8.0; "" where missing."""
    if not is_num(value):
        return (
            "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
        )
    x = float(value)
    return f"{x:g}" if x != int(x) else str(int(x))


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def variant_key(
    batch: Any, encoding: Any, compression: Any, model: Any = None, tls: Any = False
) -> str:
    """The payload variant of a cell as one key, "BATCH|ENCODING|COMPRESSION|TLS": the batch
    as written, the pixel encoding where the model has one, a tensor encoding other than raw
    where it has none (the Open Inference Protocol's JSON tensors: "list tensors"), the
    compression unless "none", "tls" over TLS. A key without TLS ends at its compression,
    as keys did before TLS."""
    text = _text(encoding) if encoding else ""
    if model is not None and model not in PIXEL_MODELS:
        text = f"{text} {TENSORS}" if text and text != "raw" else ""
    parts = [
        fmt_key(batch) if is_num(batch) else "",
        text,
        _text(compression) if compression and compression != "none" else "",
    ]
    if _flag(tls, False):
        parts.append(TLS)
    return "|".join(parts)


TENSORS = "tensors"  # how a non-pixel model's encoding reads in a variant key
TLS = "tls"  # a variant key's fourth part, over TLS


def variant_parts(key: str) -> tuple[str, str, str, bool]:
    """A `variant_key` taken apart: (batch, encoding, compression, over TLS), "" where
    absent."""
    parts = [*str(key).split("|"), "", "", "", ""][:4]
    return parts[0], parts[1], parts[2], parts[3] == TLS


# ---------------------------------------------------------------------------------------
# transports


@dataclass(frozen=True)
class TransportInfo:
    """A transport as the report shows it."""

    name: str
    label: str
    short_label: str
    wire: str | None = None
    described: bool = True  # False: in the cells, but in no file's "transports"


class Transports:
    """The transports of the runs shown, in display order: each run's "transports" in turn
    (the first run's order first, what later runs add after it), then transports that only
    the cells or the conformance entries name, in the order first seen, labelled by name."""

    def __init__(self, items: Iterable[TransportInfo] = ()) -> None:
        self.items = list(items)
        self._index = {t.name: i for i, t in enumerate(self.items)}

    @classmethod
    def of_runs(cls, runs: Sequence[records.Run]) -> Transports:
        found: dict[str, TransportInfo] = {}
        for run in runs:
            for d in run.transports:
                name = str(d["name"])
                if name not in found:
                    label = str(d.get("label") or name)
                    wire = d.get("wire")
                    found[name] = TransportInfo(
                        name,
                        label,
                        str(d.get("short_label") or label),
                        str(wire) if wire else None,
                    )
        for run in runs:
            named = [c.get("transport") for c in run.cells if isinstance(c, dict)]
            named += [e.get("transport") for e in run.conformance if isinstance(e, dict)]
            for value in named:
                name = _text(value)
                if name and name not in found:
                    found[name] = TransportInfo(name, name, name, None, described=False)
        return cls(found.values())

    def __iter__(self) -> Iterator[TransportInfo]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, name: object) -> bool:
        return name in self._index

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.items]

    def get(self, name: str) -> TransportInfo:
        if name in self._index:
            return self.items[self._index[name]]
        return TransportInfo(name, name or "?", name or "?", None, described=False)

    def label(self, name: str) -> str:
        return self.get(name).label

    def short_label(self, name: str) -> str:
        return self.get(name).short_label

    def rank(self, name: str) -> int:
        """The position in display order (after every known one where not known)."""
        return self._index.get(name, len(self.items))

    def sort(self, names: Iterable[str]) -> list[str]:
        return sorted(dict.fromkeys(names), key=self.rank)

    def on_wire(self, wire: str) -> list[str]:
        return [t.name for t in self.items if t.wire == wire]


def transports(runs: Sequence[records.Run]) -> Transports:
    return Transports.of_runs(runs)


# ---------------------------------------------------------------------------------------
# frames


def run_names(runs: Sequence[records.Run]) -> list[str]:
    """One distinct name per run (the run_id, numbered where two files share one)."""
    names: list[str] = []
    for run in runs:
        name = run.label
        if name in names:
            n = 2
            while f"{name} ({n})" in names:
                n += 1
            name = f"{name} ({n})"
        names.append(name)
    return names


def tag(index: int) -> str:
    """A, B, C...: the short name of the run at `index` in tables and plots (A: baseline)."""
    return chr(ord("A") + index) if index < 26 else str(index + 1)


def run_tags(runs: Sequence[str]) -> list[str]:
    return [tag(i) for i in range(len(runs))]


def run_tag(row: Any) -> str:
    """The tag of the run a row belongs to (from its `run_index`)."""
    return tag(int(row["run_index"]))


def _flag(value: Any, default: bool) -> bool:
    if value is None or isinstance(value, list | tuple):
        return default
    try:
        if pd.isna(value):
            return default
    except (TypeError, ValueError):
        return default
    return bool(value)


def _reasons(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list | tuple):
        return [str(v) for v in value if v]
    return []


def _variants(df: pd.DataFrame) -> pd.Series:
    tls = df["tls"] if "tls" in df else [False] * len(df)
    return pd.Series(
        [
            variant_key(b, e, c, m, t)
            for b, e, c, m, t in zip(
                df["batch"], df["encoding"], df["compression"], df["model"], tls, strict=True
            )
        ],
        index=df.index,
        dtype=object,
    )


def cells_frame(runs: Sequence[records.Run]) -> pd.DataFrame:
    """Every cell of every run, one row per trial, with `run` and `run_index` columns.

    Numbers are floats (NaN where not measured), text keys are "" where None, `valid` is
    False only where the file says so, `client_bound` True only where it says so;
    `variant` is the payload's `variant_key`, `transport_order` the transport's place in
    the runs' combined order (`Transports`).
    """
    order = Transports.of_runs(runs)
    frames = []
    for index, (name, run) in enumerate(zip(run_names(runs), runs, strict=True)):
        if not run.cells:
            continue
        frame = run.frame()
        frame["run"] = name
        frame.insert(0, "run_index", index)
        frames.append(frame)
    if frames:
        df = pd.concat(frames, ignore_index=True)
    else:
        df = pd.DataFrame(columns=["run_index", "run", *records.CELL_FIELDS])
    for col in (*MEASURES, *NUMERIC_KEYS, "trial", "run_index"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    for col in (*TEXT_KEYS, "scaling"):
        df[col] = pd.Series([_text(v) for v in df[col]], index=df.index, dtype=object)
    df["trial"] = df["trial"].fillna(0)
    df["run_index"] = df["run_index"].astype("int64")
    df["valid"] = pd.Series([_flag(v, True) for v in df["valid"]], index=df.index, dtype=bool)
    df["client_bound"] = pd.Series(
        [_flag(v, False) for v in df["client_bound"]], index=df.index, dtype=bool
    )
    df["tls"] = pd.Series([_flag(v, False) for v in df["tls"]], index=df.index, dtype=bool)
    df["invalid_reasons"] = pd.Series(
        [_reasons(v) for v in df["invalid_reasons"]], index=df.index, dtype=object
    )
    df["variant"] = _variants(df)
    df["transport_order"] = pd.Series(
        [order.rank(t) for t in df["transport"]], index=df.index, dtype="int64"
    )
    return df


def _ranks(df: pd.DataFrame) -> dict[str, int]:
    """transport -> its place in display order, from a frame's `transport_order`."""
    if df.empty or "transport_order" not in df:
        return {}
    pairs = df[["transport", "transport_order"]].drop_duplicates("transport")
    return {
        str(t): int(r) for t, r in zip(pairs["transport"], pairs["transport_order"], strict=True)
    }


def _order(df: pd.DataFrame) -> pd.DataFrame:
    """Sort by run, model (as first seen), load, payload, transport (in display order)."""
    if df.empty:
        return df
    models = {m: i for i, m in enumerate(pd.unique(df["model"]))}
    if "transport_order" in df:
        ranks = df["transport_order"]
    else:
        first = {t: i for i, t in enumerate(pd.unique(df["transport"]))}
        ranks = df["transport"].map(first)
    keyed = df.assign(
        _m=df["model"].map(models),
        _t=ranks,
        _mode=(df["mode"] != "closed").astype(int),
    )
    keyed = keyed.sort_values(
        ["run_index", "_m", "_mode", "variant", "concurrency", "rate", "_t"],
        kind="stable",
        na_position="first",
    )
    return keyed.drop(columns=["_m", "_t", "_mode"]).reset_index(drop=True)


def medians(df: pd.DataFrame, valid_only: bool = False) -> pd.DataFrame:
    """One row per run and cell key: the median of each measure across trials.

    `trials` counts the trials, `errors`, `sampled` and `sample_mismatches` are totals,
    `valid` is True when every trial was, `client_bound` when any was, `rps_min` and
    `rps_max` the spread across trials.
    """
    ranks = _ranks(df)
    if valid_only:
        df = df[df["valid"]]
    keys = ["run_index", "run", *records.CELL_KEY]
    columns = [*keys, *MEASURES, "trials", "rps_min", "rps_max", "valid", "client_bound"]
    if df.empty:
        return pd.DataFrame(columns=[*columns, "variant", "transport_order"])
    grouped = df.groupby(keys, dropna=False, sort=False)
    out = grouped[list(MEASURES)].median()
    out["trials"] = grouped.size()
    for total in ("errors", "sampled", "sample_mismatches"):
        out[total] = grouped[total].sum(min_count=1)
    out["rps_min"] = grouped["rps"].min()
    out["rps_max"] = grouped["rps"].max()
    out["valid"] = grouped["valid"].all()
    out["client_bound"] = grouped["client_bound"].any()
    out = out.reset_index()
    out["variant"] = _variants(out)
    out["transport_order"] = [ranks.get(str(t), len(ranks)) for t in out["transport"]]
    return _order(out)


def key_id(row: Mapping[str, Any] | pd.Series) -> str:
    """A cell key as one string, to match cells across runs: numbers as written (8, not
    8.0), missing values (None, NaN) as "". A frame row and a gate comparison's `key` of the
    same cell give the same string."""
    return "|".join(
        fmt_key(row[k]) if k in NUMERIC_KEYS else _text(row[k]) for k in records.CELL_KEY
    )


def main_variant(df: pd.DataFrame, run_index: int, model: str) -> str | None:
    """The payload variant a model was measured with most (the one the plots show)."""
    sub = df[(df["run_index"] == run_index) & (df["model"] == model)]
    if sub.empty:
        return None
    counts = sub["variant"].value_counts(sort=False)
    return str(counts.idxmax())


def models_of(df: pd.DataFrame) -> list[str]:
    return [str(m) for m in pd.unique(df["model"])] if not df.empty else []


def transports_of(df: pd.DataFrame) -> list[str]:
    """The transports in a frame, in display order."""
    if df.empty:
        return []
    ranks = _ranks(df)
    present = [str(t) for t in pd.unique(df["transport"])]
    return sorted(present, key=lambda t: ranks.get(t, len(ranks)))


def server_view(df: pd.DataFrame) -> pd.DataFrame:
    """The rows that measure the server: where a cell was measured both with the lean
    client (records.LEAN) and with a library client, the lean client's rows only. The
    verdict, the gRPC-against-REST claim and the plots read this view; the client-cost
    table reads every client."""
    if df.empty:
        return df
    keys = ["run_index", *(k for k in records.CELL_KEY if k != "client")]
    lean = df["client"] == records.LEAN
    has_lean = lean.groupby([df[k] for k in keys], dropna=False).transform("any")
    return df[lean | ~has_lean.astype(bool)]


def _change(after: Any, before: Any) -> float:
    if is_num(after) and is_num(before) and float(before) != 0:
        return (float(after) - float(before)) / float(before) * 100
    return math.nan


# ---------------------------------------------------------------------------------------
# the verdict


def ratio_ci(
    a: Sequence[float], b: Sequence[float], rng: np.random.Generator
) -> tuple[float, float] | None:
    """A bootstrap 95% interval of mean(a) / mean(b), trials of each side resampled."""
    xa = np.asarray([v for v in a if is_num(v)], dtype=float)
    xb = np.asarray([v for v in b if is_num(v)], dtype=float)
    if len(xa) < 2 or len(xb) < 2:
        return None
    ma = xa[rng.integers(0, len(xa), (BOOTSTRAP_SAMPLES, len(xa)))].mean(axis=1)
    mb = xb[rng.integers(0, len(xb), (BOOTSTRAP_SAMPLES, len(xb)))].mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = ma / mb
    ratios = ratios[np.isfinite(ratios)]
    if not len(ratios):
        return None
    tail = (100 - CI_LEVEL) / 2
    lo, hi = np.percentile(ratios, [tail, 100 - tail])
    return float(lo), float(hi)


@dataclass
class Figures:
    """One transport's numbers in the judged cell."""

    transport: str
    trials: int
    rps: float  # mean over trials
    p50_ms: float  # median over trials
    p99_ms: float
    client_bound: bool
    client: str = records.LEAN  # the load users' client library that measured it


@dataclass
class Gap:
    """The leading transport against one other, in the judged cell."""

    transport: str  # the other one
    rps_ratio: float  # the leader's throughput / this one's (means over trials)
    ci: tuple[float, float] | None  # bootstrap CI_LEVEL% interval of rps_ratio; None: 1 trial
    p99_ratio: float  # the leader's p99 / this one's
    clear: bool  # rps_ratio >= 1 + WITHIN: the leader is faster, not "within"


@dataclass
class BaselineChange:
    """One transport of the judged cell against the same cell of the baseline run."""

    transport: str
    rps_change_pct: float
    p99_change_pct: float


@dataclass
class Verdict:
    run: str
    model: str
    variant: str | None = None  # the judged cell's `variant_key`; None: nothing to judge
    concurrency: float | None = None
    figures: list[Figures] = field(default_factory=list)  # the fastest first
    gaps: list[Gap] = field(default_factory=list)  # the leader against each, largest first
    baseline: str = ""  # the baseline run's name, where this run is compared with one
    against_baseline: list[BaselineChange] | None = None  # None: not compared; []: no like cell

    @property
    def cell(self) -> tuple[str, float] | None:
        """(variant, concurrency) of the judged cell."""
        if self.variant is None or self.concurrency is None:
            return None
        return self.variant, self.concurrency

    @property
    def leader(self) -> Figures | None:
        return self.figures[0] if self.figures else None

    @property
    def trials(self) -> int:
        return max((f.trials for f in self.figures), default=0)


def _pick_cell(sub: pd.DataFrame) -> pd.DataFrame:
    """The closed-loop cell with the highest concurrency, where most transports ran."""
    groups = []
    for _, group in sub.groupby(["variant", "concurrency"], dropna=False, sort=False):
        conc = group["concurrency"].iloc[0]
        groups.append(
            (
                group["transport"].nunique() >= 2,
                conc if is_num(conc) else -1.0,
                group["transport"].nunique(),
                len(group),
                group,
            )
        )
    groups.sort(key=lambda g: g[:4], reverse=True)
    return groups[0][4]


def verdict(
    df: pd.DataFrame, run_index: int, run: str, model: str, rng: np.random.Generator
) -> Verdict:
    sub = server_view(
        df[
            (df["run_index"] == run_index)
            & (df["model"] == model)
            & (df["mode"] == "closed")
            & df["valid"]
            & df["rps"].notna()
        ]
    )
    if sub.empty:
        return Verdict(run, model)
    cell = _pick_cell(sub)
    first = cell.iloc[0]
    figures = []
    trials: dict[str, list[float]] = {}
    for transport in transports_of(cell):
        rows = cell[cell["transport"] == transport]
        trials[transport] = [float(v) for v in rows["rps"]]
        figures.append(
            Figures(
                transport=transport,
                trials=len(rows),
                rps=float(rows["rps"].mean()),
                p50_ms=float(rows["p50_ms"].median()),
                p99_ms=float(rows["p99_ms"].median()),
                client_bound=bool(rows["client_bound"].any()),
                client=str(rows["client"].iloc[0]),
            )
        )
    figures.sort(key=lambda f: f.rps, reverse=True)
    best = figures[0]
    gaps = []
    for other in reversed(figures[1:]):  # the largest gap first
        ratio = best.rps / other.rps if other.rps > 0 else math.nan
        gaps.append(
            Gap(
                transport=other.transport,
                rps_ratio=ratio,
                ci=ratio_ci(trials[best.transport], trials[other.transport], rng),
                p99_ratio=best.p99_ms / other.p99_ms if other.p99_ms > 0 else math.nan,
                clear=is_num(ratio) and ratio >= 1 + WITHIN,
            )
        )
    return Verdict(
        run,
        model,
        variant=str(first["variant"]),
        concurrency=float(first["concurrency"]),
        figures=figures,
        gaps=gaps,
    )


def _against_baseline(df: pd.DataFrame, v: Verdict) -> list[BaselineChange] | None:
    """The judged cell's change against the same cell of the baseline run."""
    if v.cell is None:
        return None
    variant, conc = v.cell
    base = df[
        (df["run_index"] == 0)
        & (df["model"] == v.model)
        & (df["mode"] == "closed")
        & df["valid"]
        & (df["variant"] == variant)
        & (df["concurrency"] == conc)
    ]
    out = []
    for f in v.figures:
        rows = base[(base["transport"] == f.transport) & (base["client"] == f.client)]
        if rows.empty:  # not measured there, or by another client library: not like
            continue
        out.append(
            BaselineChange(
                f.transport,
                _change(f.rps, rows["rps"].mean()),
                _change(f.p99_ms, rows["p99_ms"].median()),
            )
        )
    return out


def verdicts(df: pd.DataFrame, runs: Sequence[str]) -> list[Verdict]:
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    out = []
    for index, run in enumerate(runs):
        sub = df[df["run_index"] == index]
        for model in models_of(sub):
            v = verdict(df, index, run, model, rng)
            if index > 0:
                v.baseline = runs[0]
                v.against_baseline = _against_baseline(df, v)
            out.append(v)
    return out


# ---------------------------------------------------------------------------------------
# "Is gRPC 7-10x faster than REST?": the WIRE_GRPC transports against the WIRE_HTTP1 ones


@dataclass
class ClaimRow:
    run: str
    model: str
    variant: str
    concurrency: float
    request_bytes: dict[str, float]  # per transport present
    rps_ratio: dict[Pair, float]  # gRPC-wire / HTTP/1.1 transport
    p50_ratio: dict[Pair, float]  # gRPC-wire / HTTP/1.1 (below 1: gRPC answers sooner)
    client_bound: bool


@dataclass
class ClaimBest:
    """gRPC's largest advantage in the run."""

    factor: float  # a throughput ratio, or the REST p50 / the gRPC p50
    measure: str  # THROUGHPUT or P50
    pair: Pair
    model: str
    variant: str
    concurrency: float


@dataclass
class ClaimSpan:
    """The range of one ratio over a model's cells."""

    pair: Pair
    measure: str  # THROUGHPUT (gRPC / REST req/s) or P50 (gRPC / REST p50)
    low: float
    high: float


@dataclass
class ModelSpans:
    model: str
    spans: list[ClaimSpan]


@dataclass
class Crossover:
    """Where a gRPC-wire transport starts to beat the reference REST transport."""

    pair: Pair
    model: str
    axis: str  # "concurrency" (users, one payload variant) or "payload" (gRPC body bytes)
    points: list[tuple[float, float]]  # (x, throughput ratio), x ascending
    start: float | None  # from this x on it beats at every larger x measured; None: nowhere
    variant: str | None = None  # the concurrency axis: the payload variant
    concurrency: float | None = None  # the payload axis: the concurrency


@dataclass
class Claim:
    run: str
    outcome: str  # CLAIM_YES, CLAIM_NO, CLAIM_NOT_FASTER, CLAIM_UNMEASURED, CLAIM_NO_CELLS
    grpc: list[str]  # the WIRE_GRPC transports present, in display order
    rest: list[str]  # the WIRE_HTTP1 transports present
    rows: list[ClaimRow] = field(default_factory=list)
    best: ClaimBest | None = None
    per_model: list[ModelSpans] = field(default_factory=list)
    crossovers: list[Crossover] = field(default_factory=list)
    reference: str | None = None  # the REST transport the crossovers are measured against

    @property
    def pairs(self) -> list[Pair]:
        return [(g, r) for g in self.grpc for r in self.rest]


def _crossover(points: list[tuple[float, float]]) -> float | None:
    """The smallest x from which ratio > 1 + WITHIN at every larger x measured."""
    start = None
    for x, ratio in sorted(points):
        beats = is_num(ratio) and ratio > 1 + WITHIN
        if not beats:
            start = None
        elif start is None:
            start = x
    return start


def _ratio(a: Any, b: Any) -> float:
    return float(a) / float(b) if is_num(a) and is_num(b) and float(b) > 0 else math.nan


def claim(med: pd.DataFrame, run_index: int, run: str, order: Transports) -> Claim:
    closed = server_view(
        med[
            (med["run_index"] == run_index)
            & (med["mode"] == "closed")
            & med["valid"]
            & med["rps"].notna()
        ]
    )
    present = set(closed["transport"])
    grpc = [t for t in order.on_wire(records.WIRE_GRPC) if t in present]
    rest = [t for t in order.on_wire(records.WIRE_HTTP1) if t in present]
    pairs = [(g, r) for g in grpc for r in rest]
    rows: list[ClaimRow] = []
    for (model, variant, conc), group in closed.groupby(
        ["model", "variant", "concurrency"], dropna=False, sort=False
    ):
        by = {str(r["transport"]): r for _, r in group.iterrows()}
        here = [(g, r) for g, r in pairs if g in by and r in by]
        if not here:
            continue
        rows.append(
            ClaimRow(
                run=run,
                model=str(model),
                variant=str(variant),
                concurrency=float(conc),
                request_bytes={t: float(r["request_bytes"]) for t, r in by.items()},
                rps_ratio={(g, r): _ratio(by[g]["rps"], by[r]["rps"]) for g, r in here},
                p50_ratio={(g, r): _ratio(by[g]["p50_ms"], by[r]["p50_ms"]) for g, r in here},
                client_bound=bool(group["client_bound"].any()),
            )
        )
    result = Claim(run, CLAIM_NO_CELLS, grpc, rest, rows)
    if not rows:
        return result
    # The largest advantage of gRPC anywhere: throughput ratio, or REST p50 / gRPC p50.
    top = -math.inf
    for row in rows:
        for pair in pairs:
            p50 = row.p50_ratio.get(pair, math.nan)
            for value, measure in (
                (row.rps_ratio.get(pair, math.nan), THROUGHPUT),
                (1 / p50 if is_num(p50) and p50 != 0 else math.nan, P50),
            ):
                if is_num(value) and value > top:
                    top = value
                    result.best = ClaimBest(
                        value, measure, pair, row.model, row.variant, row.concurrency
                    )
    if not is_num(top):
        result.outcome = CLAIM_UNMEASURED
    elif top >= CLAIM_FACTOR:
        result.outcome = CLAIM_YES
    elif top >= 1 + WITHIN:
        result.outcome = CLAIM_NO
    else:
        result.outcome = CLAIM_NOT_FASTER
    for model in pd.unique(pd.Series([r.model for r in rows])):
        mine = [r for r in rows if r.model == model]
        spans = []
        for pair in pairs:
            for measure, ratios in (
                (THROUGHPUT, [r.rps_ratio[pair] for r in mine if is_num(r.rps_ratio.get(pair))]),
                (P50, [r.p50_ratio[pair] for r in mine if is_num(r.p50_ratio.get(pair))]),
            ):
                if ratios:
                    spans.append(ClaimSpan(pair, measure, min(ratios), max(ratios)))
        result.per_model.append(ModelSpans(str(model), spans))
    result.reference = rest[0] if rest else None
    if result.reference is not None:
        result.crossovers = _crossovers(rows, grpc, result.reference)
    return result


def _crossovers(rows: Sequence[ClaimRow], grpc: Sequence[str], ref: str) -> list[Crossover]:
    out = []
    for g in grpc:
        pair = (g, ref)
        mine = [r for r in rows if g in r.request_bytes]
        # Across concurrency, per model and payload variant.
        groups: dict[tuple[str, str], list[ClaimRow]] = {}
        for r in mine:
            groups.setdefault((r.model, r.variant), []).append(r)
        for (model, variant), group in groups.items():
            points = sorted((r.concurrency, r.rps_ratio.get(pair, math.nan)) for r in group)
            out.append(
                Crossover(pair, model, "concurrency", points, _crossover(points), variant=variant)
            )
        # Across payload sizes, where a model was run with several.
        for model in dict.fromkeys(r.model for r in mine):
            for conc in sorted({r.concurrency for r in mine if r.model == model}):
                points = [
                    (r.request_bytes.get(g, math.nan), r.rps_ratio.get(pair, math.nan))
                    for r in mine
                    if r.model == model and r.concurrency == conc
                ]
                points = sorted(p for p in points if is_num(p[0]))
                if len({p[0] for p in points}) > 1:
                    out.append(
                        Crossover(
                            pair, model, "payload", points, _crossover(points), concurrency=conc
                        )
                    )
    return out


def claims(med: pd.DataFrame, runs: Sequence[str], order: Transports) -> list[Claim]:
    return [claim(med, index, run, order) for index, run in enumerate(runs)]


# ---------------------------------------------------------------------------------------
# what the client pays: client CPU per request per client library, beside the server's


@dataclass
class ClientCostRow:
    model: str
    variant: str
    concurrency: float
    transport: str
    server_cpu_ms: float  # the server's CPU per request, in the server view's cell
    client_cpu_ms: dict[str, float]  # per client library measured
    rps: dict[str, float]  # per client library measured


@dataclass
class ClientCosts:
    run: str
    clients: list[str]  # the client libraries in the run, LEAN first
    rows: list[ClientCostRow] = field(default_factory=list)
    # per transport, the median over its cells of library / lean client CPU per request
    library_over_lean: dict[str, float] = field(default_factory=dict)


def client_costs(med: pd.DataFrame, run_index: int, run: str) -> ClientCosts:
    """Client and server CPU per request of each closed-loop cell of a run (valid medians),
    one row per model, payload, concurrency and transport, a column per client library."""
    closed = med[(med["run_index"] == run_index) & (med["mode"] == "closed") & med["valid"]]
    present = set(closed["client"])
    clients = [c for c in (records.LEAN, records.LIBRARY) if c in present]
    clients += sorted(present - set(clients))
    out = ClientCosts(run, clients)
    if closed.empty:
        return out
    served = server_view(closed)
    ratios: dict[str, list[float]] = {}
    for (model, variant, conc, transport), group in closed.groupby(
        ["model", "variant", "concurrency", "transport"], dropna=False, sort=False
    ):
        by = {str(r["client"]): r for _, r in group.iterrows()}
        server = served.loc[served.index.intersection(group.index), "server_cpu_ms"]
        out.rows.append(
            ClientCostRow(
                model=str(model),
                variant=str(variant),
                concurrency=float(conc),
                transport=str(transport),
                server_cpu_ms=float(server.iloc[0]) if len(server) else math.nan,
                client_cpu_ms={c: float(r["client_cpu_ms"]) for c, r in by.items()},
                rps={c: float(r["rps"]) for c, r in by.items()},
            )
        )
        ratio = _ratio(
            by.get(records.LIBRARY, {}).get("client_cpu_ms"),
            by.get(records.LEAN, {}).get("client_cpu_ms"),
        )
        if is_num(ratio):
            ratios.setdefault(str(transport), []).append(ratio)
    out.library_over_lean = {t: float(np.median(v)) for t, v in ratios.items()}
    return out


@dataclass
class TlsCostRow:
    """One closed-loop cell measured both ways: plaintext and over TLS."""

    model: str
    variant: str  # the payload variant without TLS
    concurrency: float
    transport: str
    client: str
    p50_ms: tuple[float, float]  # plaintext, TLS
    server_cpu_ms: tuple[float, float]
    client_cpu_ms: tuple[float, float]
    wire_bytes: tuple[float, float]  # up and down per request

    @property
    def p50_ratio(self) -> float:
        return _ratio(self.p50_ms[1], self.p50_ms[0])

    @property
    def server_cpu_added_ms(self) -> float:
        plain, tls = self.server_cpu_ms
        return tls - plain if is_num(plain) and is_num(tls) else math.nan


@dataclass
class TlsCosts:
    run: str
    rows: list[TlsCostRow] = field(default_factory=list)
    measured: bool = False  # the run has TLS cells at all
    # per transport, medians over its rows: TLS p50 / plaintext p50, server CPU added
    p50_ratio: dict[str, float] = field(default_factory=dict)
    server_cpu_added_ms: dict[str, float] = field(default_factory=dict)


def tls_costs(med: pd.DataFrame, run_index: int, run: str) -> TlsCosts:
    """What TLS costs per transport: every valid closed-loop cell of a run that was measured
    both plaintext and over TLS (same model, payload, users, transport and client), side by
    side, and per transport the median p50 ratio and server CPU added per request."""
    mine = med[med["run_index"] == run_index]
    out = TlsCosts(run, measured=bool(mine["tls"].any()) if "tls" in mine else False)
    closed = mine[(mine["mode"] == "closed") & mine["valid"]]
    if closed.empty or not out.measured:
        return out
    ratios: dict[str, list[float]] = {}
    added: dict[str, list[float]] = {}
    keys = ["model", "batch", "encoding", "compression", "concurrency", "transport", "client"]
    for _, group in closed.groupby(keys, dropna=False, sort=False):
        by = {bool(r["tls"]): r for _, r in group.iterrows()}
        if set(by) != {False, True}:
            continue
        plain, tls = by[False], by[True]

        def pair(col: str, a: Any = plain, b: Any = tls) -> tuple[float, float]:
            return float(a[col]), float(b[col])

        row = TlsCostRow(
            model=str(plain["model"]),
            variant=str(plain["variant"]),
            concurrency=float(plain["concurrency"]),
            transport=str(plain["transport"]),
            client=str(plain["client"]),
            p50_ms=pair("p50_ms"),
            server_cpu_ms=pair("server_cpu_ms"),
            client_cpu_ms=pair("client_cpu_ms"),
            wire_bytes=(
                float(plain["wire_up_bytes"]) + float(plain["wire_down_bytes"]),
                float(tls["wire_up_bytes"]) + float(tls["wire_down_bytes"]),
            ),
        )
        out.rows.append(row)
        if is_num(row.p50_ratio):
            ratios.setdefault(row.transport, []).append(row.p50_ratio)
        if is_num(row.server_cpu_added_ms):
            added.setdefault(row.transport, []).append(row.server_cpu_added_ms)
    out.p50_ratio = {t: float(np.median(v)) for t, v in ratios.items()}
    out.server_cpu_added_ms = {t: float(np.median(v)) for t, v in added.items()}
    return out


# ---------------------------------------------------------------------------------------
# validity


@dataclass
class Validity:
    """The flagged cells: `rows` has the cell key, `variant`, `trials`, `invalid_trials`,
    `errors` (total), `client_bound_trials`, `min_requests`, `reasons` (the file's
    invalid_reasons, each once), `marked_invalid` (invalid with no reason given) and
    `few_requests` (under FEW_REQUESTS in some trial), worst first."""

    rows: pd.DataFrame
    cells: int  # cells (keys) in all runs
    level: str = "ok"  # "ok", "warn" (client-bound or few requests only), "bad"
    invalid: int = 0  # flagged cells with an invalid trial
    with_errors: int = 0
    client_bound: int = 0
    few_requests: int = 0


def validity(df: pd.DataFrame) -> Validity:
    keys = ["run_index", "run", *records.CELL_KEY]
    rows = []
    if df.empty:
        return Validity(pd.DataFrame(), 0, "warn")
    for key, group in df.groupby(keys, dropna=False, sort=False):
        reasons: list[str] = []
        invalid = int((~group["valid"]).sum())
        errors = group["errors"].sum(min_count=1)
        bound = int(group["client_bound"].sum())
        least = group["requests"].min()
        for rs in group["invalid_reasons"]:
            reasons.extend(r for r in rs if r not in reasons)
        erred = is_num(errors) and errors > 0
        few = is_num(least) and least < FEW_REQUESTS
        if not (invalid or erred or bound or few):
            continue
        first = group.iloc[0]
        rows.append(
            {
                **dict(zip(keys, key, strict=True)),
                "variant": first["variant"],
                "transport_order": first["transport_order"],
                "trials": len(group),
                "invalid_trials": invalid,
                "errors": errors,
                "client_bound_trials": bound,
                "min_requests": least,
                "reasons": reasons,
                "marked_invalid": bool(invalid and not reasons),
                "few_requests": bool(few),
                "_rank": (0 if invalid else 1 if erred else 2 if bound else 3),
            }
        )
    total = df.groupby(keys, dropna=False, sort=False).ngroups
    table = pd.DataFrame(rows)
    if table.empty:
        return Validity(table, total)
    table = _order(table).sort_values("_rank", kind="stable").reset_index(drop=True)
    bad = bool((table["invalid_trials"] > 0).any() or (table["errors"].fillna(0) > 0).any())
    return Validity(
        table,
        total,
        "bad" if bad else "warn",
        invalid=int((table["invalid_trials"] > 0).sum()),
        with_errors=int((table["errors"].fillna(0) > 0).sum()),
        client_bound=int((table["client_bound_trials"] > 0).sum()),
        few_requests=int(table["few_requests"].sum()),
    )


# ---------------------------------------------------------------------------------------
# conformance


@dataclass
class ConformanceCell:
    checked: bool  # a conformance check of this model and transport was recorded
    passed: bool | None  # its outcome; None: not checked
    worst: Any = None  # the largest deviation the check saw
    inputs: Any = None  # inputs checked
    mismatch_count: Any = None
    first_mismatch: str | None = None  # where the check failed
    sampled: float = math.nan  # replies sampled under load (NaN: none)
    sample_mismatches: float = math.nan
    ok: bool | None = None  # checked and sampled alike; None: neither


@dataclass
class ConformanceMatrix:
    run: str
    models: list[str]
    transports: list[str]
    cells: dict[tuple[str, str], ConformanceCell]
    checked: bool  # the run recorded a conformance check


def conformance(
    run: records.Run, name: str, df: pd.DataFrame, order: Transports | None = None
) -> ConformanceMatrix:
    order = order or Transports.of_runs([run])
    checks: dict[tuple[str, str], dict[str, Any]] = {}
    for entry in run.conformance:
        if isinstance(entry, dict):
            checks[(str(entry.get("model")), str(entry.get("transport")))] = entry
    mine = df[df["run"] == name]
    sampled: dict[tuple[str, str], tuple[float, float]] = {}
    if not mine.empty:
        for (model, transport), group in mine.groupby(["model", "transport"], sort=False):
            sampled[(str(model), str(transport))] = (
                group["sampled"].sum(min_count=1),
                group["sample_mismatches"].sum(min_count=1),
            )
    pairs = list(checks) + [p for p in sampled if p not in checks]
    models = list(dict.fromkeys(m for m, _ in pairs))
    names = order.sort(t for _, t in pairs)
    cells = {}
    for pair in pairs:
        entry = checks.get(pair)
        cell = ConformanceCell(checked=entry is not None, passed=None)
        if entry is not None:
            passed = entry.get("passed")
            mismatches = entry.get("mismatches")
            count = len(mismatches) if isinstance(mismatches, list) else mismatches
            cell.passed = bool(passed) if passed is not None else count == 0
            cell.ok = cell.passed
            cell.worst = entry.get("worst")
            cell.inputs = entry.get("inputs")
            cell.mismatch_count = count
            if not cell.passed and isinstance(mismatches, list) and mismatches:
                cell.first_mismatch = str(mismatches[0])
        got, bad = sampled.get(pair, (math.nan, math.nan))
        cell.sampled, cell.sample_mismatches = got, bad
        if is_num(got) and is_num(bad) and bad > 0:
            cell.ok = False
        cells[pair] = cell
    return ConformanceMatrix(name, models, names, cells, bool(checks))


# ---------------------------------------------------------------------------------------
# comparison of runs: changes against the baseline, judged as `wiremark gate` judges them

Judgements = dict[tuple[str, str], str]  # (key_id, column) -> gate verdict


def judgements(
    runs: Sequence[records.Run],
    rules: Iterable[str] = gate.DEFAULT_RULES,
    alpha: float = gate.DEFAULT_ALPHA,
) -> list[Judgements]:
    """Per run, what `wiremark gate --baseline runs[0] --current RUN` concludes of each cell
    and rule (for the two arms of one A/B file, what `wiremark gate FILE` concludes):
    gate.REGRESSION, gate.IMPROVEMENT, gate.UNCHANGED or gate.INSUFFICIENT (too few trials
    to judge), keyed by (`key_id`, the rule's column). The baseline's is empty, and so is a
    run with no cell in common with it."""
    out: list[Judgements] = [{}]
    rules = tuple(rules)
    for run in runs[1:]:
        try:
            if _arms_of_one_run(runs[0], run):  # an A/B file's arms: judged block by block
                whole = records.Run(
                    run.path,
                    run.meta | {"run_id": run.meta["arm_of"]},
                    runs[0].cells + run.cells,
                )
                whole.meta["conformance"] = runs[0].conformance + run.conformance
                verdict = gate.evaluate_ab(whole, rules, alpha)
            else:
                verdict = gate.evaluate(runs[0], run, rules, alpha)
        except (gate.GateError, records.RecordError):
            out.append({})
            continue
        out.append({(key_id(c.key), c.rule.column): c.verdict for c in verdict.comparisons})
    return out


def _arms_of_one_run(a: records.Run, b: records.Run) -> bool:
    """Both are arms of the same A/B file (`records.Run.arm`)."""
    origin = a.meta.get("arm_of")
    return bool(origin) and origin == b.meta.get("arm_of") and a.path == b.path


COMPARED = ("p50_ms", "p99_ms", "rps")


@dataclass
class ComparisonSummary:
    """One run against the baseline."""

    run: str
    baseline: str
    common: int  # cells in both with a change to show
    p50_change_pct: float  # median over those cells
    rps_change_pct: float
    worse: int  # cells the gate judges a regression (on any rule)
    better: int  # cells it judges an improvement, and none a regression
    not_judged: int  # cells with too few trials for the gate to judge, neither of those
    only_baseline: int  # cells only in the baseline
    only_run: int  # cells only in this run


@dataclass
class Comparison:
    """Each cell's medians in every run and changes against the baseline. A row has the
    cell's key fields, `variant` and `runs`: {run: {present, valid, and per measure of
    COMPARED: the median, "<measure>_change" (%) and "<measure>_judgement" (the gate's
    verdict, None where no rule covers the measure or the gate did not compare it)}}."""

    baseline: str
    runs: list[str]
    rows: list[dict[str, Any]]
    summaries: list[ComparisonSummary]
    rules: tuple[str, ...] = gate.DEFAULT_RULES  # the gate's rules behind the judgements
    alpha: float = gate.DEFAULT_ALPHA


def comparison(
    med: pd.DataFrame,
    runs: Sequence[str],
    judged: Sequence[Mapping[tuple[str, str], str]] | None = None,
    rules: Sequence[str] = gate.DEFAULT_RULES,
    alpha: float = gate.DEFAULT_ALPHA,
) -> Comparison:
    """`judged`: `judgements` of the same runs (in the same order); none: nothing judged."""
    judged = list(judged or [])
    judged += [{}] * (len(runs) - len(judged))
    by_key: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    for _, row in med.iterrows():
        kid = key_id(row)
        if kid not in by_key:
            by_key[kid] = {}
            order.append(kid)
        by_key[kid][str(row["run"])] = row
    base = runs[0]
    rows = []
    for kid in order:
        cells = by_key[kid]
        first = next(iter(cells.values()))
        out: dict[str, Any] = {k: first[k] for k in records.CELL_KEY}
        out.update(key=kid, variant=first["variant"], runs={})
        before = cells.get(base)
        for index, run in enumerate(runs):
            cell = cells.get(run)
            values: dict[str, Any] = {"present": cell is not None}
            for m in COMPARED:
                values[m] = cell[m] if cell is not None else math.nan
                values[f"{m}_change"] = (
                    _change(values[m], before[m])
                    if run != base and cell is not None and before is not None
                    else math.nan
                )
                values[f"{m}_judgement"] = judged[index].get((kid, m)) if index else None
            values["valid"] = bool(cell["valid"]) if cell is not None else True
            out["runs"][run] = values
        rows.append(out)
    summaries = []
    for run in runs[1:]:
        p50 = [r["runs"][run]["p50_ms_change"] for r in rows]
        rps = [r["runs"][run]["rps_change"] for r in rows]
        both = [(a, b) for a, b in zip(p50, rps, strict=True) if is_num(a) or is_num(b)]
        verdicts = [
            {r["runs"][run][f"{m}_judgement"] for m in COMPARED} - {None}
            for r in rows
            if r["runs"][run]["present"]
        ]
        worse = sum(1 for v in verdicts if gate.REGRESSION in v)
        better = sum(1 for v in verdicts if gate.IMPROVEMENT in v and gate.REGRESSION not in v)
        not_judged = sum(
            1
            for v in verdicts
            if gate.INSUFFICIENT in v and not v & {gate.REGRESSION, gate.IMPROVEMENT}
        )
        summaries.append(
            ComparisonSummary(
                run=run,
                baseline=base,
                common=len(both),
                p50_change_pct=float(np.nanmedian([a for a, _ in both if is_num(a)] or [math.nan])),
                rps_change_pct=float(np.nanmedian([b for _, b in both if is_num(b)] or [math.nan])),
                worse=worse,
                better=better,
                not_judged=not_judged,
                only_baseline=sum(
                    1 for r in rows if r["runs"][base]["present"] and not r["runs"][run]["present"]
                ),
                only_run=sum(
                    1 for r in rows if r["runs"][run]["present"] and not r["runs"][base]["present"]
                ),
            )
        )
    return Comparison(base, list(runs), rows, summaries, tuple(rules), float(alpha))
