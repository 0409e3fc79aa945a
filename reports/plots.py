"""The report's plots: matplotlib (Agg) figures written as inline SVG.

Each function takes the per-trial frame (`analysis.cells_frame`) or the medians and returns
a `Plot`: an SVG string, or None and a one-line note saying why the plot was skipped.
Colour is the transport, by its place in the runs' combined order (`analysis.Transports`):
the same transport has the same colour in every plot. Where several runs are compared, line
style, marker or hatch is the run. One subplot per model, each with its own scale.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter

from wiremark.reports import analysis as an
from wiremark.reports import records
from wiremark.reports import wording as w

# Transport colours, by place in display order (the first three: the first three transports).
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
LINESTYLES: tuple[Any, ...] = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D", "v", "P")
HATCHES = ("", "//", "..", "xx", "\\\\", "++")
STYLE: dict[Any, Any] = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "svg.hashsalt": "wiremark",
    "svg.fonttype": "path",
}
MAX_COLUMNS = 3


@dataclass
class Plot:
    id: str
    title: str
    caption: str
    svg: str | None = None
    note: str = ""  # why it was skipped, or what it leaves out


# ---------------------------------------------------------------------------------------
# helpers


def colour(transport: str, tr: an.Transports) -> str:
    """A transport's colour: PALETTE by its place in the combined order of the runs shown."""
    return PALETTE[tr.rank(transport) % len(PALETTE)]


def _short(run: str) -> str:
    return run if len(run) <= 24 else f"{run[:11]}…{run[-11:]}"


def run_label(index: int, runs: Sequence[str]) -> str:
    """A run in a legend: "A: before (baseline)"."""
    tag = an.run_tags(runs)[index]
    return f"{tag}: {_short(runs[index])}" + (" (baseline)" if index == 0 else "")


def _grid(n: int, height: float = 3.2) -> tuple[Figure, list[Axes]]:
    cols = min(max(n, 1), MAX_COLUMNS)
    rows = math.ceil(max(n, 1) / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(3.9 * cols + 0.6, height * rows), squeeze=False, layout="constrained"
    )
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def to_svg(fig: Figure, prefix: str) -> str:
    """The figure as an <svg> element with ids made unique to this plot."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    text = text[text.index("<svg") :]
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)
    text = re.sub(r'\bid="([^"]+)"', rf'id="{prefix}-\1"', text)
    text = re.sub(r'href="#([^"]+)"', rf'href="#{prefix}-\1"', text)
    text = re.sub(r"url\(#([^)]+)\)", rf"url(#{prefix}-\1)", text)
    return text.replace("<svg ", f'<svg class="plot" role="img" aria-labelledby="{prefix}-t" ', 1)


def _tick(value: float) -> str:
    if value <= 0 or not math.isfinite(value):
        return ""
    return f"{value:,.0f}" if value >= 1000 else f"{value:g}"


def log_y(ax: Axes) -> None:
    """A log y axis labelled in plain numbers (0.5, 2, 300), minor ticks where room allows."""
    ax.set_yscale("log")

    def minor(value: float, _pos: int) -> str:
        lo, hi = ax.get_ylim()
        if value <= 0 or lo <= 0 or hi <= lo:
            return ""
        decades = math.log10(hi / lo)
        mantissa = round(value / 10 ** math.floor(math.log10(value) + 1e-9), 3)
        keep = (2, 3, 5) if decades <= 1.2 else (2, 5) if decades <= 2.6 else ()
        return _tick(value) if mantissa in keep else ""

    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: _tick(v)))
    ax.yaxis.set_minor_formatter(FuncFormatter(minor))


def _empty(ax: Axes, text: str = "no data") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)


def _positive(values: Sequence[float] | pd.Series | np.ndarray) -> bool:
    arr = np.asarray(values, dtype=float)
    return bool(np.any(np.isfinite(arr) & (arr > 0)))


def _legend(fig: Figure, handles: list, ncol: int | None = None) -> None:
    if handles:
        fig.legend(
            handles=handles,
            loc="outside lower center",
            ncol=ncol or (len(handles) if len(handles) <= 8 else math.ceil(len(handles) / 2)),
            frameon=False,
        )


def _transport_handles(transports: Sequence[str], tr: an.Transports) -> list:
    return [Patch(color=colour(t, tr), label=tr.label(t)) for t in transports]


def _run_handles(runs: Sequence[str], marker: bool = True) -> list:
    if len(runs) < 2:
        return []
    return [
        Line2D(
            [],
            [],
            color="0.3",
            linestyle=LINESTYLES[i % len(LINESTYLES)],
            marker=MARKERS[i % len(MARKERS)] if marker else None,
            label=run_label(i, runs),
        )
        for i in range(len(runs))
    ]


def _main(df: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The rows of each model's main payload variant (per run), and a note if others exist."""
    keep = []
    dropped = False
    for (run_index, model), group in df.groupby(["run_index", "model"], sort=False):
        variant = an.main_variant(df, int(run_index), str(model))
        keep.append(group[group["variant"] == variant])
        dropped = dropped or group["variant"].nunique() > 1
    if not keep:
        return df.iloc[0:0], ""
    note = "Each model's most-measured payload variant; the others are in the full table."
    return pd.concat(keep), note if dropped else ""


def _finish(fig: Figure, plot: Plot, note: str = "") -> Plot:
    plot.svg = to_svg(fig, plot.id)
    plot.note = note
    return plot


# ---------------------------------------------------------------------------------------
# the plots


def latency_percentiles(
    df: pd.DataFrame, runs: Sequence[str], models: Sequence[str], tr: an.Transports
) -> Plot:
    plot = Plot(
        "plot-percentiles",
        "Latency percentiles",
        "p50 to p99.9 per transport, in the closed-loop cell with the highest concurrency "
        "(the verdict's cell); median across trials. Log scale.",
    )
    data, note = _main(df[(df["mode"] == "closed") & df["valid"]])
    if data.empty or not _positive(data["p50_ms"]):
        plot.note = "Skipped: no valid closed-loop cell with latency percentiles."
        return plot
    transports = an.transports_of(data)
    fig, axes = _grid(len(models))
    xs = np.arange(len(records.PERCENTILES))
    for ax, model in zip(axes, models, strict=True):
        drawn = False
        conc = pick_concurrency(data[data["model"] == model], highest=True)
        for ri in range(len(runs)):
            sub = data[(data["model"] == model) & (data["run_index"] == ri)]
            sub = sub[sub["concurrency"] == conc]
            for t in transports:
                rows = sub[sub["transport"] == t]
                if rows.empty:
                    continue
                ys = [rows[f"{key}_ms"].median() for key, _, _ in records.PERCENTILES]
                if not _positive(ys):
                    continue
                ax.plot(
                    xs,
                    ys,
                    color=colour(t, tr),
                    linestyle=LINESTYLES[ri % len(LINESTYLES)],
                    marker=MARKERS[ri % len(MARKERS)],
                    markersize=4,
                )
                drawn = True
        ax.set_title(f"{model} — concurrency {w.fmt_key(conc) or '?'}")
        if not drawn:
            _empty(ax)
            continue
        ax.set_xticks(xs, [label for _, _, label in records.PERCENTILES])
        log_y(ax)
        ax.set_xlabel("percentile")
        ax.set_ylabel("latency (ms)")
    _legend(fig, _transport_handles(transports, tr) + _run_handles(runs))
    return _finish(fig, plot, note)


def throughput(
    df: pd.DataFrame, runs: Sequence[str], models: Sequence[str], tr: an.Transports
) -> Plot:
    plot = Plot(
        "plot-throughput",
        "Throughput against concurrency (closed loop)",
        "Completed requests per second at each number of users; the line joins the medians "
        "across trials, the bars span the lowest to the highest trial.",
    )
    data, note = _main(df[(df["mode"] == "closed") & df["valid"] & df["rps"].notna()])
    if data.empty or not _positive(data["rps"]):
        plot.note = "Skipped: no valid closed-loop cell with a throughput."
        return plot
    transports = an.transports_of(data)
    fig, axes = _grid(len(models))
    for ax, model in zip(axes, models, strict=True):
        sub = data[data["model"] == model]
        ax.set_title(model)
        if sub.empty:
            _empty(ax)
            continue
        for ri in range(len(runs)):
            for t in transports:
                rows = sub[(sub["run_index"] == ri) & (sub["transport"] == t)]
                if rows.empty:
                    continue
                g = rows.groupby("concurrency")["rps"]
                med, lo, hi = g.median(), g.min(), g.max()
                ax.errorbar(
                    med.index,
                    med.values,
                    yerr=[med.values - lo.values, hi.values - med.values],
                    color=colour(t, tr),
                    linestyle=LINESTYLES[ri % len(LINESTYLES)],
                    marker=MARKERS[ri % len(MARKERS)],
                    markersize=4,
                    capsize=2,
                )
        ticks = sorted(sub["concurrency"].dropna().unique())
        if ticks and ticks[0] > 0 and ticks[-1] / ticks[0] >= 4:
            ax.set_xscale("log", base=2)
        if len(ticks) == 1:  # a single concurrency: centre it
            ax.set_xlim(ticks[0] * 0.5, ticks[0] * 1.5)
        ax.set_xticks(ticks, [w.fmt_key(c) for c in ticks])
        ax.minorticks_off()
        ax.set_ylim(bottom=0)
        ax.set_xlabel("concurrency (users)")
        ax.set_ylabel("throughput (requests/s)")
    _legend(fig, _transport_handles(transports, tr) + _run_handles(runs))
    return _finish(fig, plot, note)


def open_loop(
    df: pd.DataFrame, runs: Sequence[str], models: Sequence[str], tr: an.Transports
) -> Plot:
    plot = Plot(
        "plot-open-loop",
        "Latency against arrival rate (open loop)",
        "p50 (solid) and p99 (dashed) at each target arrival rate, counted from the intended "
        "send time; median across trials. Log scale.",
    )
    data = df[(df["mode"] == "open") & df["valid"] & df["rate"].notna()]
    if data.empty or not _positive(data["p50_ms"]):
        plot.note = "Skipped: this run has no open-loop cells (mode “open”)."
        return plot
    data, note = _main(data)
    transports = an.transports_of(data)
    open_models = [m for m in models if m in set(data["model"])]
    fig, axes = _grid(len(open_models))
    for ax, model in zip(axes, open_models, strict=True):
        sub = data[data["model"] == model]
        ax.set_title(model)
        for ri in range(len(runs)):
            for t in transports:
                rows = sub[(sub["run_index"] == ri) & (sub["transport"] == t)]
                if rows.empty:
                    continue
                g = rows.groupby("rate")
                for col, style in (("p50_ms", "-"), ("p99_ms", "--")):
                    ys = g[col].median()
                    ax.plot(
                        ys.index,
                        ys.values,
                        color=colour(t, tr),
                        linestyle=style,
                        marker=MARKERS[ri % len(MARKERS)],
                        markersize=5,
                        fillstyle="full" if col == "p50_ms" else "none",
                    )
        if _positive(sub["p50_ms"]):
            log_y(ax)
        rates = sub["rate"].dropna().unique()
        if len(rates) == 1:  # a single rate: centre it with some room either side
            ax.set_xlim(rates[0] * 0.5, rates[0] * 1.5)
        ax.set_xlabel("arrival rate (requests/s)")
        ax.set_ylabel("latency (ms)")
    handles = [
        *_transport_handles(transports, tr),
        Line2D([], [], color="0.3", linestyle="-", label="p50"),
        Line2D([], [], color="0.3", linestyle="--", label="p99"),
    ]
    if len(runs) > 1:
        handles += [
            Line2D(
                [],
                [],
                color="0.3",
                linestyle="",
                marker=MARKERS[i % len(MARKERS)],
                label=run_label(i, runs),
            )
            for i in range(len(runs))
        ]
    missing = [m for m in models if m not in open_models]
    if missing:
        note = " ".join([note, f"No open-loop cells for {', '.join(missing)}."]).strip()
    _legend(fig, handles)
    return _finish(fig, plot, note)


def _groups(
    data: pd.DataFrame, runs: Sequence[str], model: str, transports: Sequence[str]
) -> list[tuple[int, str, pd.DataFrame]]:
    """(run index, transport, rows) for each bar group of a model, transport-major."""
    out = []
    for t in transports:
        for ri in range(len(runs)):
            rows = data[
                (data["model"] == model) & (data["run_index"] == ri) & (data["transport"] == t)
            ]
            if not rows.empty:
                out.append((ri, t, rows))
    return out


def _group_label(ri: int, t: str, runs: Sequence[str], tr: an.Transports) -> str:
    if len(runs) < 2:
        return tr.label(t)
    return f"{tr.short_label(t)}\n{an.run_tags(runs)[ri]}"


def _bars(
    data: pd.DataFrame,
    runs: Sequence[str],
    models: Sequence[str],
    series: Sequence[tuple[str, str, str]],
    ylabel: str,
    pick: Callable[[pd.DataFrame], pd.DataFrame],
    log: bool,
    tr: an.Transports,
    fmt: Callable[[object], str] = w.fmt_num,
) -> Figure:
    """Grouped bars: one group per transport (and run), one bar per series (column)."""
    transports = an.transports_of(data)
    fig, axes = _grid(len(models), height=3.4 if len(runs) < 2 else 3.8)
    width = min(0.8 / len(series), 0.4)
    for ax, model in zip(axes, models, strict=True):
        ax.set_title(model)
        groups = _groups(pick(data[data["model"] == model]), runs, model, transports)
        if not groups:
            _empty(ax)
            continue
        label_bars = len(groups) * len(series) <= 16  # beyond that the labels collide
        values_seen = []
        for gi, (ri, _t, rows) in enumerate(groups):
            for si, (col, _label, shade) in enumerate(series):
                value = rows[col].median()
                if not w.is_num(value):
                    continue
                values_seen.append(value)
                x = gi + (si - (len(series) - 1) / 2) * width
                ax.bar(
                    x,
                    value,
                    width,
                    color=shade,
                    hatch=HATCHES[ri % len(HATCHES)],
                    edgecolor="white",
                    linewidth=0.5,
                )
                if not label_bars:
                    continue
                ax.annotate(
                    fmt(value),
                    (x, value),
                    xytext=(0, 2),
                    textcoords="offset points",
                    ha="center",
                    va="bottom",
                    rotation=90,
                    fontsize=6.5,
                    color="0.25",
                )
        ax.set_xticks(range(len(groups)), [_group_label(ri, t, runs, tr) for ri, t, _ in groups])
        pad = max(3 - len(groups), 0) / 2  # keep one or two groups from filling the axes
        ax.set_xlim(-0.6 - pad, len(groups) - 0.4 + pad)
        if log and _positive(values_seen):
            log_y(ax)
            positive = [v for v in values_seen if v > 0]
            ax.set_ylim(min(positive) / 3, max(positive) * 6)
        elif values_seen:
            ax.set_ylim(0, max(max(values_seen), 1e-9) * 1.3)
        ax.set_ylabel(ylabel)
        ax.grid(axis="x", visible=False)
    handles = [Patch(color=shade, label=label) for col, label, shade in series]
    if len(runs) > 1:
        handles += [
            Patch(facecolor="0.8", hatch=HATCHES[i % len(HATCHES)], label=run_label(i, runs))
            for i in range(len(runs))
        ]
    _legend(fig, handles)
    return fig


def pick_concurrency(rows: pd.DataFrame, highest: bool) -> float | None:
    """The closed-loop concurrency to show for one model, the same for every transport and run.

    highest: the highest concurrency at which at least two (run, transport) pairs ran, as the
    verdict picks; otherwise the lowest at which the most pairs ran.
    """
    closed = rows[(rows["mode"] == "closed") & rows["concurrency"].notna()]
    if closed.empty:
        return None
    pairs = (
        closed.drop_duplicates(["concurrency", "run_index", "transport"])
        .groupby("concurrency")
        .size()
    )
    if highest:
        best = max(pairs.items(), key=lambda kv: (kv[1] >= min(2, pairs.max()), kv[0]))
    else:
        best = max(pairs.items(), key=lambda kv: (kv[1], -kv[0]))
    return float(best[0])


def _at(rows: pd.DataFrame, highest: bool) -> pd.DataFrame:
    conc = pick_concurrency(rows, highest)
    if conc is None:
        return rows.iloc[0:0]
    return rows[(rows["mode"] == "closed") & (rows["concurrency"] == conc)]


def payload_bytes(
    df: pd.DataFrame, runs: Sequence[str], models: Sequence[str], tr: an.Transports
) -> Plot:
    plot = Plot(
        "plot-bytes",
        "Bytes per request, each way",
        "Body bytes (protobuf message, JSON text, MessagePack) and bytes on the TCP "
        "connection (headers and framing included) per request; log scale.",
    )
    series = [
        ("request_bytes", "request body", "#4c72b0"),
        ("wire_up_bytes", "wire up (client → server)", "#9ecae1"),
        ("response_bytes", "response body", "#dd8452"),
        ("wire_down_bytes", "wire down (server → client)", "#fdd0a2"),
    ]
    present = [s for s in series if _positive(df[s[0]])]
    if not present:
        plot.note = "Skipped: no body or wire byte counts in these results."
        return plot
    data, note = _main(df)
    fig = _bars(
        data, runs, models, present, "bytes per request", lambda r: r, True, tr, fmt=w.fmt_int
    )
    if not any(s[0].startswith("wire") for s in present):
        note = " ".join([note, "Wire bytes were not measured (no relay pass)."]).strip()
    return _finish(fig, plot, note)


def cpu(df: pd.DataFrame, runs: Sequence[str], models: Sequence[str], tr: an.Transports) -> Plot:
    plot = Plot(
        "plot-cpu",
        "CPU per request",
        "CPU time (user + system) per request of the load generator and of the server, in "
        "the closed-loop cell with the highest concurrency; median across trials.",
    )
    series = [
        ("client_cpu_ms", "client (load generator)", "#8172b3"),
        ("server_cpu_ms", "server", "#55a868"),
    ]
    present = [s for s in series if _positive(df[s[0]])]
    if not present:
        plot.note = "Skipped: no CPU figures in these results."
        return plot
    data, note = _main(df[df["valid"]])
    fig = _bars(
        data,
        runs,
        models,
        present,
        "CPU per request (ms)",
        lambda r: _at(r, highest=True),
        False,
        tr,
    )
    if len(present) < len(series):
        gone = [label for col, label, _ in series if not _positive(df[col])]
        note = " ".join([note, f"Not recorded: {', '.join(gone)} CPU (external servers?)."])
    return _finish(fig, plot, note.strip())


COST_PARTS = (
    ("client_encode_ms", "client encode", "#8da0cb"),
    ("network", "network + framework", "#bbbbbb"),
    ("server_decode_ms", "server decode", "#66c2a5"),
    ("server_infer_ms", "inference", "#fc8d62"),
    ("server_encode_ms", "server encode", "#a6d854"),
    ("client_decode_ms", "client decode", "#e78ac3"),
)


def cost_split(
    df: pd.DataFrame, runs: Sequence[str], models: Sequence[str], tr: an.Transports
) -> Plot:
    plot = Plot(
        "plot-cost",
        "Where the time goes",
        "The p50 of the lowest-concurrency closed-loop cell (the least queueing: at one user "
        "none), split into the client codec, the server's Server-Timing parts (medians of "
        "the sampled replies) and the rest: network + framework + queueing = p50 − all "
        "other parts (floored at 0).",
    )
    parts = [p for p in COST_PARTS if p[0] != "network"]
    if not any(_positive(df[col]) for col, _, _ in parts):
        plot.note = "Skipped: no codec or Server-Timing figures in these results."
        return plot
    data, note = _main(df[df["valid"] & (df["mode"] == "closed") & df["p50_ms"].notna()])
    if data.empty:
        plot.note = "Skipped: no valid closed-loop cell with a p50."
        return plot
    transports = an.transports_of(data)
    fig, axes = _grid(len(models), height=2.2 + 0.35 * len(transports) * len(runs))
    for ax, model in zip(axes, models, strict=True):
        ax.set_title(model)
        rows = _at(data[data["model"] == model], highest=False)
        groups = _groups(rows, runs, model, transports)
        if not groups:
            _empty(ax)
            continue
        conc = w.fmt_key(rows["concurrency"].iloc[0])
        labels = []
        for gi, (ri, t, rows) in enumerate(groups):
            p50 = rows["p50_ms"].median()
            values = {col: rows[col].median() for col, _, _ in parts}
            values = {k: (v if w.is_num(v) else 0.0) for k, v in values.items()}
            values["network"] = max(p50 - sum(values.values()), 0.0)
            left = 0.0
            for col, _label, shade in COST_PARTS:
                ax.barh(
                    gi,
                    values[col],
                    left=left,
                    color=shade,
                    hatch=HATCHES[ri % len(HATCHES)],
                    edgecolor="white",
                    linewidth=0.5,
                    height=0.7,
                )
                left += values[col]
            ax.annotate(
                w.fmt_num(max(p50, left), "ms"),
                (left, gi),
                xytext=(3, 0),
                textcoords="offset points",
                va="center",
                fontsize=7,
                color="0.25",
            )
            labels.append(_group_label(ri, t, runs, tr).replace("\n", " · "))
        ax.set_yticks(range(len(groups)), labels)
        ax.invert_yaxis()
        ax.set_xlim(0, ax.get_xlim()[1] * 1.15)
        ax.set_xlabel(f"ms (p50, concurrency {conc})")
        ax.grid(axis="y", visible=False)
    handles = [Patch(color=shade, label=label) for _, label, shade in COST_PARTS]
    if len(runs) > 1:
        handles += [
            Patch(facecolor="0.8", hatch=HATCHES[i % len(HATCHES)], label=run_label(i, runs))
            for i in range(len(runs))
        ]
    _legend(fig, handles)
    return _finish(fig, plot, note)


def all_plots(df: pd.DataFrame, runs: Sequence[str], tr: an.Transports | None = None) -> list[Plot]:
    """Every plot of the report, in order; each skipped cleanly when its data are absent.
    `tr`: the runs' transports (labels, colours); by default those the frame names."""
    df = an.server_view(df)  # a cell measured by two client libraries: the lean one's
    models = an.models_of(df)
    tr = tr if tr is not None else an.Transports(_unknown(df))
    with plt.rc_context(STYLE):
        return [
            latency_percentiles(df, runs, models, tr),
            throughput(df, runs, models, tr),
            open_loop(df, runs, models, tr),
            payload_bytes(df, runs, models, tr),
            cost_split(df, runs, models, tr),
            cpu(df, runs, models, tr),
        ]


def _unknown(df: pd.DataFrame) -> list[an.TransportInfo]:
    return [an.TransportInfo(t, t, t, None, described=False) for t in an.transports_of(df)]
