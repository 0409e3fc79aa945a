"""Result records -> pandas frames -> the findings of the report, in plain words.

Everything here reads `records.Run` objects only (never a live server) and tolerates the
gaps real runs have: one trial, some models only, no open loop, fields left None.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from wiremark.reports import records

TRANSPORT_ORDER = ("grpc", "json", "msgpack")
TRANSPORT_NAMES = {"grpc": "gRPC", "json": "JSON", "msgpack": "MessagePack"}
SHORT_NAMES = {"msgpack": "MsgPack"}  # where space is short: table headers, plot ticks
REST = ("json", "msgpack")
WITHIN = 0.05  # a difference under 5% is "within X%", not "faster"
FEW_REQUESTS = 1000  # below this a p99.9 rests on no sample beyond it
CI_LEVEL = 95
BOOTSTRAP_SAMPLES = 4000
BOOTSTRAP_SEED = 20261122

NUMERIC_KEYS = ("concurrency", "rate", "batch")
TEXT_KEYS = ("model", "transport", "mode", "arrival", "encoding", "compression")
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
PERCENTILES: tuple[tuple[str, str], ...] = (
    ("p50_ms", "p50"),
    ("p90_ms", "p90"),
    ("p95_ms", "p95"),
    ("p99_ms", "p99"),
    ("p999_ms", "p99.9"),
)


# ---------------------------------------------------------------------------------------
# formatting


def transport_name(transport: str) -> str:
    return TRANSPORT_NAMES.get(transport, transport or "?")


def is_num(value: Any) -> bool:
    """A finite number (not None, not NaN, not a bool)."""
    if value is None or isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def fmt_num(value: Any, unit: str = "") -> str:
    """Three significant figures or so; a dash where there is no number."""
    if not is_num(value):
        return "—"
    x = float(value)
    ax = abs(x)
    if ax >= 100:
        text = f"{x:,.0f}"
    elif ax >= 10:
        text = f"{x:.1f}"
    elif ax >= 1:
        text = f"{x:.2f}"
    elif ax == 0:
        text = "0"
    elif ax >= 0.001:
        text = f"{x:.3f}"
    else:
        text = f"{x:.1e}"
    return f"{text} {unit}".rstrip() if unit else text


def fmt_int(value: Any) -> str:
    return f"{float(value):,.0f}" if is_num(value) else "—"


def fmt_ratio(value: Any) -> str:
    if not is_num(value):
        return "—"
    x = float(value)
    return f"{x:.1f}×" if x >= 10 else f"{x:.2f}×"


def fmt_pct(value: Any) -> str:
    return f"{float(value):+.1f}%" if is_num(value) else "—"


def fmt_key(value: Any) -> str:
    """A key value (concurrency, rate, batch) as written: 8, not 8.0."""
    if not is_num(value):
        return (
            "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
        )
    x = float(value)
    return f"{x:g}" if x != int(x) else str(int(x))


def describe_variant(batch: Any, encoding: Any, compression: Any, model: Any = None) -> str:
    """The payload variant in words: "batch 1" or, for MNIST, "batch 1, raw pixels"."""
    parts = []
    if is_num(batch):
        parts.append(f"batch {fmt_key(batch)}")
    if encoding and model in (None, "mnist"):  # only MNIST's pixels have an encoding
        parts.append(f"{encoding} pixels")
    if compression and compression != "none":
        parts.append(f"{compression} compression")
    return ", ".join(parts) or "default payload"


def describe_load(row: Any) -> str:
    """The load of a cell in words: "8 users" or "100 req/s constant, ≤4 in flight"."""
    if row["mode"] == "open":
        text = f"{fmt_key(row['rate']) or '?'}/s"
        if row["arrival"]:
            text += f" {row['arrival']}"
        if is_num(row["concurrency"]):
            text += f", ≤{fmt_key(row['concurrency'])} in flight"
        return text
    if is_num(row["concurrency"]):
        users = fmt_key(row["concurrency"])
        return f"{users} user" + ("" if users == "1" else "s")
    return row["mode"] or "?"


def compact(value: Any) -> str:
    """A metadata value on one line: dicts and lists as compact JSON."""
    if value is None:
        return "—"
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, default=str, separators=(", ", ": "))
    return str(value)


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


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def cells_frame(runs: Sequence[records.Run]) -> pd.DataFrame:
    """Every cell of every run, one row per trial, with `run` and `run_index` columns.

    Numbers are floats (NaN where not measured), text keys are "" where None, `valid` is
    False only where the file says so, `client_bound` True only where it says so.
    """
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
    df["invalid_reasons"] = pd.Series(
        [_reasons(v) for v in df["invalid_reasons"]], index=df.index, dtype=object
    )
    df["variant"] = pd.Series(
        [
            describe_variant(b, e, c, m)
            for b, e, c, m in zip(
                df["batch"], df["encoding"], df["compression"], df["model"], strict=True
            )
        ],
        index=df.index,
        dtype=object,
    )
    return df


def _order(df: pd.DataFrame) -> pd.DataFrame:
    """Sort by run, model (as first seen), transport (gRPC, JSON, MessagePack), load."""
    if df.empty:
        return df
    models = {m: i for i, m in enumerate(pd.unique(df["model"]))}
    others = [t for t in pd.unique(df["transport"]) if t not in TRANSPORT_ORDER]
    transports = {t: i for i, t in enumerate((*TRANSPORT_ORDER, *others))}
    keyed = df.assign(
        _m=df["model"].map(models),
        _t=df["transport"].map(transports),
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
    if valid_only:
        df = df[df["valid"]]
    keys = ["run_index", "run", *records.CELL_KEY]
    columns = [*keys, *MEASURES, "trials", "rps_min", "rps_max", "valid", "client_bound"]
    if df.empty:
        return pd.DataFrame(columns=[*columns, "variant"])
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
    out["variant"] = [
        describe_variant(b, e, c, m)
        for b, e, c, m in zip(
            out["batch"], out["encoding"], out["compression"], out["model"], strict=True
        )
    ]
    return _order(out)


def key_id(row: Any) -> str:
    """A cell key as one string (NaN-safe), to match cells across runs."""
    return "|".join(fmt_key(row[k]) if k in NUMERIC_KEYS else str(row[k]) for k in records.CELL_KEY)


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
    present = [str(t) for t in pd.unique(df["transport"])] if not df.empty else []
    return [t for t in TRANSPORT_ORDER if t in present] + [
        t for t in present if t not in TRANSPORT_ORDER
    ]


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


@dataclass
class Verdict:
    run: str
    model: str
    context: str  # "mnist, batch 1, raw encoding, concurrency 8"
    text: str
    figures: list[Figures] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    cell: tuple[str, float] | None = None  # (variant, concurrency) of the judged cell
    against_baseline: str = ""  # the change against the baseline run, in words


def _ci_text(ci: tuple[float, float] | None) -> str:
    if ci is None:
        return "one trial, no interval"
    return f"{CI_LEVEL}% CI {ci[0]:.2f}–{ci[1]:.2f}×"


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
    sub = df[
        (df["run_index"] == run_index)
        & (df["model"] == model)
        & (df["mode"] == "closed")
        & df["valid"]
        & df["rps"].notna()
    ]
    if sub.empty:
        return Verdict(run, model, model, "No valid closed-loop cell: nothing to judge.")
    cell = _pick_cell(sub)
    first = cell.iloc[0]
    context = f"{model}, {first['variant']}, concurrency {fmt_key(first['concurrency'])}"
    key = (str(first["variant"]), float(first["concurrency"]))
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
            )
        )
    figures.sort(key=lambda f: f.rps, reverse=True)
    best = figures[0]
    name = transport_name(best.transport)
    notes = []
    bound = [transport_name(f.transport) for f in figures if f.client_bound]
    if bound:
        notes.append(
            f"The load generator was the bottleneck for {', '.join(bound)}: "
            "that throughput understates what the server can do."
        )
    if len(figures) == 1:
        text = (
            f"Only {name} was measured here: {fmt_num(best.rps)} req/s, "
            f"p99 {fmt_num(best.p99_ms, 'ms')}."
        )
        return Verdict(run, model, context, text, figures, notes, key)
    faster, close = [], []
    for other in reversed(figures[1:]):  # the largest gap first
        ratio = best.rps / other.rps if other.rps > 0 else math.nan
        ci = ratio_ci(trials[best.transport], trials[other.transport], rng)
        oname = transport_name(other.transport)
        if is_num(ratio) and ratio >= 1 + WITHIN:
            p99 = best.p99_ms / other.p99_ms if other.p99_ms > 0 else math.nan
            clause = f"{fmt_ratio(ratio)} the requests of {oname} ({_ci_text(ci)})"
            if is_num(p99):
                clause += f" at {fmt_ratio(p99)} the p99"
            if ci is not None and ci[0] <= 1.0:
                clause += " — the interval includes 1×, so not a clear difference"
            faster.append(clause)
        else:
            pct = max(1, math.ceil((ratio - 1) * 100)) if is_num(ratio) else 0
            close.append(f"{oname} is within {pct}% of {name} ({_ci_text(ci)})")
    if faster:
        text = f"{name} serves " + " and ".join(faster)
        if close:
            text += "; " + "; ".join(close)
    else:
        text = (
            f"No transport is clearly faster: {name} leads, but "
            + "; ".join(close)
            + " on throughput"
        )
    n = max(f.trials for f in figures)
    text += "." + (f" (Throughput: mean of {n} trials.)" if n > 1 else "")
    return Verdict(run, model, context, text, figures, notes, key)


def _against_baseline(df: pd.DataFrame, v: Verdict, baseline: str) -> str | None:
    """The judged cell's change against the same cell of the baseline run, in words."""
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
    parts = []
    for f in v.figures:
        rows = base[base["transport"] == f.transport]
        if rows.empty:
            continue
        rps = _change(f.rps, rows["rps"].mean())
        p99 = _change(f.p99_ms, rows["p99_ms"].median())
        parts.append(f"{transport_name(f.transport)} {fmt_pct(rps)} req/s, p99 {fmt_pct(p99)}")
    if not parts:
        return f"The baseline {baseline} has no valid cell like this one to compare with."
    return f"Against the baseline {baseline}, same cell: " + "; ".join(parts) + "."


def verdicts(df: pd.DataFrame, runs: Sequence[str]) -> list[Verdict]:
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    out = []
    for index, run in enumerate(runs):
        sub = df[df["run_index"] == index]
        for model in models_of(sub):
            v = verdict(df, index, run, model, rng)
            if index > 0:
                v.against_baseline = _against_baseline(df, v, runs[0]) or ""
            out.append(v)
    return out


# ---------------------------------------------------------------------------------------
# "Is gRPC 7-10x faster than REST?"


@dataclass
class ClaimRow:
    run: str
    model: str
    variant: str
    concurrency: float
    request_bytes: dict[str, float]
    rps_ratio: dict[str, float]  # gRPC / REST transport
    p50_ratio: dict[str, float]  # gRPC / REST transport (below 1: gRPC answers sooner)
    client_bound: bool


@dataclass
class Claim:
    run: str
    answer: str
    per_model: list[str]
    rows: list[ClaimRow]
    crossovers: list[str]
    rest: list[str]  # the REST transports present


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


def _crossover_text(subject: str, what: str, points: list[tuple[float, float]], unit: str) -> str:
    xs = sorted(x for x, _ in points)
    span = f"{fmt_key(xs[0])}–{fmt_key(xs[-1])}{unit}" if len(xs) > 1 else ""
    start = _crossover(points)
    if start is None:
        return f"{subject}: gRPC does not beat JSON at any {what} measured ({span})."
    if start == xs[0]:
        return f"{subject}: gRPC beats JSON at every {what} measured ({span})."
    return f"{subject}: gRPC beats JSON from {what} {fmt_key(start)}{unit} up (measured {span})."


def claim(med: pd.DataFrame, run_index: int, run: str) -> Claim:
    closed = med[
        (med["run_index"] == run_index)
        & (med["mode"] == "closed")
        & med["valid"]
        & med["rps"].notna()
    ]
    rest = [t for t in REST if t in set(closed["transport"])]
    rows: list[ClaimRow] = []
    for (model, variant, conc), group in closed.groupby(
        ["model", "variant", "concurrency"], dropna=False, sort=False
    ):
        by = {str(r["transport"]): r for _, r in group.iterrows()}
        if "grpc" not in by or not any(t in by for t in rest):
            continue
        g = by["grpc"]
        rps_ratio, p50_ratio = {}, {}
        for t in rest:
            if t in by:
                rps_ratio[t] = g["rps"] / by[t]["rps"] if by[t]["rps"] > 0 else math.nan
                p50_ratio[t] = g["p50_ms"] / by[t]["p50_ms"] if by[t]["p50_ms"] > 0 else math.nan
        rows.append(
            ClaimRow(
                run=run,
                model=str(model),
                variant=str(variant),
                concurrency=float(conc),
                request_bytes={t: float(r["request_bytes"]) for t, r in by.items()},
                rps_ratio=rps_ratio,
                p50_ratio=p50_ratio,
                client_bound=bool(group["client_bound"].any()),
            )
        )
    if not rows:
        return Claim(
            run,
            "Not measured here: this run has no valid closed-loop cell with both gRPC and "
            "a REST transport (JSON or MessagePack) at the same load.",
            [],
            [],
            [],
            rest,
        )
    # The largest advantage of gRPC anywhere: throughput ratio, or REST p50 / gRPC p50.
    best = (-math.inf, "")
    for row in rows:
        for t in rest:
            where = f"{row.model}, {row.variant}, concurrency {fmt_key(row.concurrency)}"
            for value, what in (
                (row.rps_ratio.get(t, math.nan), "throughput"),
                (1 / row.p50_ratio[t] if is_num(row.p50_ratio.get(t)) else math.nan, "p50"),
            ):
                if is_num(value) and value > best[0]:
                    best = (value, f"{what} against {transport_name(t)}: {where}")
    top, where = best
    if top >= 7:
        answer = f"Yes, here: up to {fmt_ratio(top)} ({where})."
    elif top >= 1 + WITHIN:
        answer = f"No: at most {fmt_ratio(top)} here ({where})."
    elif is_num(top):
        answer = (
            f"No: gRPC is not more than {WITHIN:.0%} faster than REST anywhere here "
            f"(best {fmt_ratio(top)}: {where})."
        )
    else:
        answer = "Not measured: the throughput and latency figures are missing."
    per_model = []
    for model in pd.unique(pd.Series([r.model for r in rows])):
        mine = [r for r in rows if r.model == model]
        parts = []
        for t in rest:
            rps = [r.rps_ratio[t] for r in mine if is_num(r.rps_ratio.get(t))]
            p50 = [r.p50_ratio[t] for r in mine if is_num(r.p50_ratio.get(t))]
            if rps:
                parts.append(f"throughput gRPC/{transport_name(t)} {_span(rps)}")
            if p50:
                parts.append(f"p50 gRPC/{transport_name(t)} {_span(p50)}")
        per_model.append(f"{model}: " + "; ".join(parts) + ".")
    crossovers = []
    if "json" in rest:
        for (model, variant), _ in pd.DataFrame(
            [(r.model, r.variant) for r in rows], columns=["m", "v"]
        ).groupby(["m", "v"], sort=False):
            points = [
                (r.concurrency, r.rps_ratio.get("json", math.nan))
                for r in rows
                if r.model == model and r.variant == variant
            ]
            if len(points) > 1:
                crossovers.append(
                    _crossover_text(f"{model}, {variant}", "concurrency", points, " users")
                )
            else:
                ratio = points[0][1]
                beats = "beats" if is_num(ratio) and ratio > 1 + WITHIN else "does not beat"
                crossovers.append(
                    f"{model}, {variant}: one concurrency measured ({fmt_key(points[0][0])}); "
                    f"gRPC {beats} JSON there ({fmt_ratio(ratio)})."
                )
        # Across payload sizes, where a model was run with several.
        for model in pd.unique(pd.Series([r.model for r in rows])):
            for conc in sorted({r.concurrency for r in rows if r.model == model}):
                points = [
                    (r.request_bytes.get("grpc", math.nan), r.rps_ratio.get("json", math.nan))
                    for r in rows
                    if r.model == model and r.concurrency == conc
                ]
                points = [p for p in points if is_num(p[0])]
                if len({p[0] for p in points}) > 1:
                    crossovers.append(
                        _crossover_text(
                            f"{model}, concurrency {fmt_key(conc)}",
                            "payload",
                            points,
                            " B",
                        )
                    )
    return Claim(run, answer, per_model, rows, crossovers, rest)


def _span(values: Iterable[float]) -> str:
    values = sorted(values)
    if fmt_ratio(values[0]) == fmt_ratio(values[-1]):
        return fmt_ratio(values[0])
    return f"{fmt_ratio(values[0])[:-1]}–{fmt_ratio(values[-1])}"


def claims(med: pd.DataFrame, runs: Sequence[str]) -> list[Claim]:
    return [claim(med, index, run) for index, run in enumerate(runs)]


# ---------------------------------------------------------------------------------------
# validity


@dataclass
class Validity:
    rows: pd.DataFrame  # one row per flagged cell (run and key), worst first
    cells: int  # cells (keys) in all runs
    summary: str
    level: str = "ok"  # "ok", "warn" (client-bound or few requests only), "bad"


def validity(df: pd.DataFrame) -> Validity:
    keys = ["run_index", "run", *records.CELL_KEY]
    rows = []
    if df.empty:
        return Validity(pd.DataFrame(), 0, "No cells were recorded.", "warn")
    for key, group in df.groupby(keys, dropna=False, sort=False):
        reasons: list[str] = []
        invalid = int((~group["valid"]).sum())
        errors = group["errors"].sum(min_count=1)
        bound = int(group["client_bound"].sum())
        least = group["requests"].min()
        for rs in group["invalid_reasons"]:
            reasons.extend(r for r in rs if r not in reasons)
        if invalid and not reasons:
            reasons.append("marked invalid")
        if is_num(errors) and errors > 0:
            reasons.append(f"{fmt_int(errors)} errors")
        if bound:
            reasons.append("load generator was the bottleneck (client-bound)")
        few = is_num(least) and least < FEW_REQUESTS
        if few:
            reasons.append(f"under {FEW_REQUESTS:,} requests (p99.9 unresolved)")
        if not (invalid or (is_num(errors) and errors > 0) or bound or few):
            continue
        first = group.iloc[0]
        rows.append(
            {
                **dict(zip(keys, key, strict=True)),
                "variant": first["variant"],
                "load": describe_load(first),
                "trials": len(group),
                "invalid_trials": invalid,
                "errors": errors,
                "client_bound_trials": bound,
                "min_requests": least,
                "reasons": "; ".join(reasons),
                "_rank": (0 if invalid else 1 if errors and errors > 0 else 2 if bound else 3),
                "_few": few,
            }
        )
    total = df.groupby(keys, dropna=False, sort=False).ngroups
    table = pd.DataFrame(rows)
    if table.empty:
        return Validity(
            table,
            total,
            f"All {total} cells are fine: every trial valid, no errors, the load generator "
            f"never the bottleneck, every cell at least {FEW_REQUESTS:,} requests.",
        )
    table = _order(table).sort_values("_rank", kind="stable").reset_index(drop=True)
    counts = [
        f"{(table['invalid_trials'] > 0).sum()} invalid",
        f"{(table['errors'].fillna(0) > 0).sum()} with errors",
        f"{(table['client_bound_trials'] > 0).sum()} client-bound",
        f"{int(table['_few'].sum())} with fewer than {FEW_REQUESTS:,} requests",
    ]
    summary = f"{len(table)} of {total} cells flagged: " + ", ".join(counts) + "."
    bad = bool((table["invalid_trials"] > 0).any() or (table["errors"].fillna(0) > 0).any())
    return Validity(table, total, summary, "bad" if bad else "warn")


# ---------------------------------------------------------------------------------------
# conformance


@dataclass
class ConformanceCell:
    status: str  # "pass", "FAIL", or "" (not checked)
    detail: str
    sampled: str
    ok: bool | None


@dataclass
class ConformanceMatrix:
    run: str
    models: list[str]
    transports: list[str]
    cells: dict[tuple[str, str], ConformanceCell]
    note: str


def conformance(run: records.Run, name: str, df: pd.DataFrame) -> ConformanceMatrix:
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
    transports = [t for t in TRANSPORT_ORDER if any(p[1] == t for p in pairs)]
    transports += [t for t in dict.fromkeys(t for _, t in pairs) if t not in transports]
    cells = {}
    for pair in pairs:
        entry = checks.get(pair)
        if entry is None:
            status, detail, ok = "", "", None
        else:
            passed = entry.get("passed")
            mismatches = entry.get("mismatches")
            count = len(mismatches) if isinstance(mismatches, list) else mismatches
            ok = bool(passed) if passed is not None else count == 0
            status = "pass" if ok else "FAIL"
            detail = f"worst {fmt_num(entry.get('worst'))}"
            if is_num(entry.get("inputs")):
                detail += f", {fmt_int(entry.get('inputs'))} inputs"
            if not ok and is_num(count):
                detail += f", {fmt_int(count)} mismatch" + ("" if count == 1 else "es")
            if not ok and isinstance(mismatches, list) and mismatches:
                detail += f": {mismatches[0]}"
        got, bad = sampled.get(pair, (math.nan, math.nan))
        if is_num(got):
            sample = f"sampled {fmt_int(got)} under load, {fmt_int(bad if is_num(bad) else 0)} off"
            if is_num(bad) and bad > 0:
                ok = False
        else:
            sample = "not sampled under load"
        cells[pair] = ConformanceCell(status, detail, sample, ok)
    note = "" if checks else "No conformance check was recorded in this run."
    return ConformanceMatrix(name, models, transports, cells, note)


# ---------------------------------------------------------------------------------------
# comparison of runs


@dataclass
class Comparison:
    baseline: str
    runs: list[str]
    rows: list[dict[str, Any]]  # key fields, then per run p50/p99/rps and change in %
    summaries: list[str]


def _change(after: Any, before: Any) -> float:
    if is_num(after) and is_num(before) and float(before) != 0:
        return (float(after) - float(before)) / float(before) * 100
    return math.nan


def comparison(med: pd.DataFrame, runs: Sequence[str]) -> Comparison:
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
        out: dict[str, Any] = {
            "model": first["model"],
            "transport": first["transport"],
            "mode": first["mode"],
            "load": describe_load(first),
            "variant": first["variant"],
            "runs": {},
        }
        before = cells.get(base)
        for run in runs:
            cell = cells.get(run)
            values: dict[str, Any] = {"present": cell is not None}
            for m in ("p50_ms", "p99_ms", "rps"):
                values[m] = cell[m] if cell is not None else math.nan
                values[f"{m}_change"] = (
                    _change(values[m], before[m])
                    if run != base and cell is not None and before is not None
                    else math.nan
                )
            values["valid"] = bool(cell["valid"]) if cell is not None else True
            out["runs"][run] = values
        rows.append(out)
    summaries = []
    for run in runs[1:]:
        p50 = [r["runs"][run]["p50_ms_change"] for r in rows]
        rps = [r["runs"][run]["rps_change"] for r in rows]
        both = [(a, b) for a, b in zip(p50, rps, strict=True) if is_num(a) or is_num(b)]
        only_base = sum(
            1 for r in rows if r["runs"][base]["present"] and not r["runs"][run]["present"]
        )
        only_run = sum(
            1 for r in rows if r["runs"][run]["present"] and not r["runs"][base]["present"]
        )
        if not both:
            summaries.append(f"{run} against {base}: no cell in common.")
            continue
        worse = sum(
            1
            for a, b in both
            if (is_num(a) and a > WITHIN * 100) or (is_num(b) and b < -WITHIN * 100)
        )
        better = sum(
            1
            for a, b in both
            if (is_num(a) and a < -WITHIN * 100) or (is_num(b) and b > WITHIN * 100)
        )
        p50_med = float(np.nanmedian([a for a, _ in both if is_num(a)] or [math.nan]))
        rps_med = float(np.nanmedian([b for _, b in both if is_num(b)] or [math.nan]))
        text = (
            f"{run} against {base}: {len(both)} cells in common; median change "
            f"p50 {fmt_pct(p50_med)}, throughput {fmt_pct(rps_med)}; "
            f"{worse} cells worse by more than {WITHIN:.0%} (p50 up or throughput down), "
            f"{better} better."
        )
        if only_base or only_run:
            text += f" {only_base} cells only in {base}, {only_run} only in {run}."
        summaries.append(text)
    return Comparison(base, list(runs), rows, summaries)
