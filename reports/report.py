"""`wiremark report RESULTS... --out report.html`: one self-contained HTML file.

The report reads result files only (see `records`), never a live server. Sections, in
order: header, verdict per model, the "gRPC is 7-10x faster" claim checked, a comparison
when several runs are given (the first is the baseline), plots (inline SVG), conformance,
validity, every cell, and each run's environment. An A/B result file is shown as its two
arms, the baseline first (`arms`).

`wiremark bench` calls `render(runs, out)` (or `write_report(paths, out)`) at the end of a
run. matplotlib, pandas and jinja2 are imported only when a report is written, so the CLI
stays quick to start.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wiremark.reports import records

if TYPE_CHECKING:
    import pandas as pd

    from wiremark.reports import analysis as an

DEFAULT_OUT = "report.html"


# ---------------------------------------------------------------------------------------
# the CLI


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="write a self-contained HTML report from result files",
        description="Write one self-contained HTML report (inline SVG plots, no network) "
        "from one or more result files. Given several, the first is the baseline the "
        "others are compared with.",
    )
    p.add_argument(
        "results",
        nargs="+",
        metavar="RESULTS",
        help="result files (results.json) or the run directories holding them",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path(DEFAULT_OUT),
        help=f"the HTML file to write (default: {DEFAULT_OUT})",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    path = write_report(args.results, args.out)
    print(path)
    return 0


def write_report(paths: Iterable[str | Path], out: str | Path = DEFAULT_OUT) -> Path:
    """Read the result files (raising `records.RecordError` on bad ones) and render them."""
    return render([arm for run in records.load_all(paths) for arm in arms(run)], Path(out))


def arms(run: records.Run) -> list[records.Run]:
    """The runs to show for one result file: itself, or an A/B run's arms (baseline first)
    as runs of their own, so the report compares them as it compares two files."""
    if not run.is_ab:
        return [run]
    return [run.arm(name) for name in records.ARMS if any(c.get("arm") == name for c in run.cells)]


def render(runs: Sequence[records.Run], out: Path) -> Path:
    """Write the report of `runs` (the first is the baseline) to `out`; return its path."""
    if not runs:
        raise ValueError("no result files given")
    html = build_html(runs)
    out = Path(out)
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, out)
    return out


# ---------------------------------------------------------------------------------------
# tables as plain data for the template


@dataclass
class Cell:
    text: str
    cls: str = ""
    detail: str = ""


@dataclass
class Table:
    headers: list[Cell]
    rows: list[list[Cell]] = field(default_factory=list)
    cls: str = ""


def _h(text: str, num: bool = False) -> Cell:
    return Cell(text, "num" if num else "")


def _n(text: str, cls: str = "") -> Cell:
    return Cell(text, f"num {cls}".strip())


def _change_cell(value: float, judgement: str | None) -> Cell:
    """A change against the baseline, coloured as `wiremark gate` judged it: red for a
    regression, green for an improvement, "not judged" where too few trials to tell."""
    from wiremark.reports import gate
    from wiremark.reports import wording as w

    if not w.is_num(value):
        return _n("—")
    if judgement == gate.REGRESSION:
        return _n(w.fmt_pct(value), "worse")
    if judgement == gate.IMPROVEMENT:
        return _n(w.fmt_pct(value), "better")
    if judgement == gate.INSUFFICIENT:
        return Cell(w.fmt_pct(value), "num judged-not", "not judged")
    return _n(w.fmt_pct(value))


# The full table, in three parts so that each fits a page: (title, [(field, header, kind)]).
CELL_TABLES = (
    (
        "Throughput and latency (ms)",
        (
            ("trials", "trials", "int"),
            ("requests", "requests", "int"),
            ("errors", "errors", "int"),
            ("rps", "req/s", "num"),
            *((f"{key}_ms", label, "num") for key, _, label in records.PERCENTILES),
            ("max_ms", "max", "num"),
            ("mean_ms", "mean", "num"),
            ("uncorrected_p99_ms", "p99 from send", "num"),
            ("late", "late", "int"),
            ("dropped", "dropped", "int"),
        ),
    ),
    (
        "Bytes per request, CPU per request (ms) and memory",
        (
            ("request_bytes", "req body", "int"),
            ("response_bytes", "resp body", "int"),
            ("wire_up_bytes", "wire up", "int"),
            ("wire_down_bytes", "wire down", "int"),
            ("client_cpu_ms", "client CPU", "num"),
            ("server_cpu_ms", "server CPU", "num"),
            ("client_cpu_share", "client CPU share", "num"),
            ("server_peak_rss_mb", "server RSS MB", "int"),
            ("processes", "load procs", "int"),
            ("workers", "load workers", "int"),
        ),
    ),
    (
        "Where the time goes (ms): transport tax = p50 − in-process",
        (
            ("p50_ms", "p50", "num"),
            ("inprocess_ms", "in-process", "num"),
            ("transport_tax_ms", "transport tax", "num"),
            ("client_encode_ms", "client encode", "num"),
            ("server_decode_ms", "server decode", "num"),
            ("server_infer_ms", "inference", "num"),
            ("server_encode_ms", "server encode", "num"),
            ("client_decode_ms", "client decode", "num"),
        ),
    ),
)


def _key_cells(row: Any, multi: bool, tr: an.Transports) -> list[Cell]:
    from wiremark.reports import analysis as an
    from wiremark.reports import wording as w

    return [
        *([Cell(an.run_tag(row))] if multi else []),
        Cell(str(row["model"])),
        Cell(tr.label(row["transport"])),
        Cell(w.load(row)),
        Cell(w.payload(row)),
    ]


def _key_headers(multi: bool) -> list[Cell]:
    return ([_h("run")] if multi else []) + [
        _h("model"),
        _h("transport"),
        _h("load"),
        _h("payload"),
    ]


def _cells_tables(med: pd.DataFrame, multi: bool, tr: an.Transports) -> list[dict[str, Any]]:
    from wiremark.reports import wording as w

    if med.empty:
        return []
    out = []
    for i, (title, spec) in enumerate(CELL_TABLES):
        columns = [c for c in spec if c[0] == "trials" or med[c[0]].notna().any()]
        if not any(c[0] not in ("trials", "p50_ms") for c in columns):
            continue
        table = Table(_key_headers(multi) + [_h(label, num=True) for _, label, _ in columns])
        if i == 0:
            table.headers.append(_h("valid"))
        for _, row in med.iterrows():
            cells = _key_cells(row, multi, tr)
            for col, _, kind in columns:
                fmt = w.fmt_int if kind == "int" else w.fmt_num
                cells.append(_n(fmt(row[col])))
            if i == 0:
                flags = [] if row["valid"] else ["invalid"]
                if row["client_bound"]:
                    flags.append("client-bound")
                cells.append(Cell(", ".join(flags) or "yes", "fail" if flags else ""))
            table.rows.append(cells)
        out.append({"title": title, "table": table})
    return out


def _verdict_table(v: an.Verdict, tr: an.Transports) -> Table | None:
    from wiremark.reports import wording as w

    if not v.figures:
        return None
    table = Table(
        [
            _h("transport"),
            _h("trials", True),
            _h("throughput (req/s)", True),
            _h("p50 (ms)", True),
            _h("p99 (ms)", True),
        ]
    )
    for f in v.figures:
        name = tr.label(f.transport) + (" (client-bound)" if f.client_bound else "")
        table.rows.append(
            [
                Cell(name),
                _n(str(f.trials)),
                _n(w.fmt_num(f.rps)),
                _n(w.fmt_num(f.p50_ms)),
                _n(w.fmt_num(f.p99_ms)),
            ]
        )
    return table


def _claim_table(c: an.Claim, tr: an.Transports) -> Table | None:
    from wiremark.reports import wording as w

    if not c.rows:
        return None
    short = tr.short_label
    headers = [_h("model"), _h("payload"), _h("users", True)]
    headers += [_h(f"body B {short(t)}", True) for t in (*c.grpc, *c.rest)]
    headers += [_h(f"req/s {short(g)}÷{short(r)}", True) for g, r in c.pairs]
    headers += [_h(f"p50 {short(g)}÷{short(r)}", True) for g, r in c.pairs]
    table = Table(headers)
    for row in c.rows:
        cells = [
            Cell(row.model + (" (client-bound)" if row.client_bound else "")),
            Cell(w.variant(row.variant)),
            _n(w.fmt_key(row.concurrency)),
        ]
        cells += [_n(w.fmt_int(row.request_bytes.get(t))) for t in (*c.grpc, *c.rest)]
        cells += [_n(w.fmt_ratio(row.rps_ratio.get(pair))) for pair in c.pairs]
        cells += [_n(w.fmt_ratio(row.p50_ratio.get(pair))) for pair in c.pairs]
        table.rows.append(cells)
    return table


def _client_costs_table(c: an.ClientCosts, tr: an.Transports) -> Table | None:
    from wiremark.reports import records
    from wiremark.reports import wording as w

    if not c.rows:
        return None
    both = records.LEAN in c.clients and records.LIBRARY in c.clients
    headers = [_h("model"), _h("payload"), _h("users", True), _h("transport")]
    headers += [_h("server CPU ms/req", True)]
    headers += [_h(f"client CPU ms/req, {k}", True) for k in c.clients]
    headers += [_h(f"req/s, {k}", True) for k in c.clients]
    if both:
        headers.append(_h("client CPU library ÷ lean", True))
    table = Table(headers)
    for row in c.rows:
        cells = [
            Cell(row.model),
            Cell(w.variant(row.variant)),
            _n(w.fmt_key(row.concurrency)),
            Cell(tr.label(row.transport)),
            _n(w.fmt_num(row.server_cpu_ms)),
        ]
        cells += [_n(w.fmt_num(row.client_cpu_ms.get(k))) for k in c.clients]
        cells += [_n(w.fmt_num(row.rps.get(k))) for k in c.clients]
        if both:
            lean, lib = row.client_cpu_ms.get(records.LEAN), row.client_cpu_ms.get(records.LIBRARY)
            ratio = lib / lean if w.is_num(lean) and w.is_num(lib) and lean else None
            cells.append(_n(w.fmt_ratio(ratio)))
        table.rows.append(cells)
    return table


def _tls_costs_table(c: an.TlsCosts, tr: an.Transports) -> Table | None:
    from wiremark.reports import wording as w

    if not c.rows:
        return None
    headers = [_h("model"), _h("payload"), _h("users", True), _h("transport"), _h("client")]
    headers += [_h("p50 ms, plain", True), _h("p50 ms, TLS", True), _h("p50 TLS ÷ plain", True)]
    headers += [_h("server CPU ms/req, plain", True), _h("server CPU ms/req, TLS", True)]
    headers += [_h("client CPU ms/req, plain", True), _h("client CPU ms/req, TLS", True)]
    headers += [_h("wire bytes/req, plain", True), _h("wire bytes/req, TLS", True)]
    table = Table(headers)
    for row in c.rows:
        cells = [
            Cell(row.model),
            Cell(w.variant(row.variant)),
            _n(w.fmt_key(row.concurrency)),
            Cell(tr.label(row.transport)),
            Cell(row.client),
        ]
        cells += [_n(w.fmt_num(v)) for v in row.p50_ms] + [_n(w.fmt_ratio(row.p50_ratio))]
        cells += [_n(w.fmt_num(v)) for v in (*row.server_cpu_ms, *row.client_cpu_ms)]
        cells += [_n(w.fmt_num(v)) for v in row.wire_bytes]
        table.rows.append(cells)
    return table


def _comparison_table(comp: an.Comparison, tr: an.Transports) -> Table:
    from wiremark.reports import analysis as an
    from wiremark.reports import wording as w

    tags = an.run_tags(comp.runs)
    metrics = (("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"), ("rps", "req/s"))
    headers = _key_headers(False)
    for _, label in metrics:
        headers += [_h(f"{label} {tag}", True) for tag in tags]
        headers += [_h(f"Δ {tag}", True) for tag in tags[1:]]
    table = Table(headers)
    for row in comp.rows:
        cells = [
            Cell(row["model"]),
            Cell(tr.label(row["transport"])),
            Cell(w.load(row)),
            Cell(w.payload(row)),
        ]
        for metric, _ in metrics:
            for run in comp.runs:
                v = row["runs"][run]
                cells.append(_n(w.fmt_num(v[metric]), "" if v["valid"] else "flag"))
            for run in comp.runs[1:]:
                v = row["runs"][run]
                cells.append(_change_cell(v[f"{metric}_change"], v[f"{metric}_judgement"]))
        table.rows.append(cells)
    return table


def _validity_table(validity: an.Validity, multi: bool, tr: an.Transports) -> Table | None:
    from wiremark.reports import analysis as an
    from wiremark.reports import wording as w

    if validity.rows.empty:
        return None
    headers = [_h("run")] if multi else []
    headers += [_h("model"), _h("transport"), _h("load"), _h("payload"), _h("trials", True)]
    headers += [_h("invalid", True), _h("errors", True), _h("client-bound", True)]
    headers += [_h("fewest requests", True), _h("why flagged")]
    table = Table(headers)
    for _, row in validity.rows.iterrows():
        cells = [Cell(an.run_tag(row))] if multi else []
        cells += [
            Cell(row["model"]),
            Cell(tr.label(row["transport"])),
            Cell(w.load(row)),
            Cell(w.payload(row)),
            _n(str(row["trials"])),
            _n(str(row["invalid_trials"]), "fail" if row["invalid_trials"] else ""),
            _n(
                w.fmt_int(row["errors"]),
                "fail" if w.is_num(row["errors"]) and row["errors"] else "",
            ),
            _n(str(row["client_bound_trials"]), "flag" if row["client_bound_trials"] else ""),
            _n(w.fmt_int(row["min_requests"])),
            Cell(w.validity_reasons(row), "wrap"),
        ]
        table.rows.append(cells)
    return table


def _conformance_view(m: an.ConformanceMatrix, heading: str, tr: an.Transports) -> dict[str, Any]:
    from wiremark.reports import wording as w

    view: dict[str, Any] = {
        "run": heading,
        "note": w.conformance_note(m),
        "table": None,
        "banner": "",
    }
    if not m.cells:
        return view
    table = Table([_h("model")] + [_h(tr.label(t)) for t in m.transports], cls="conf")
    for model in m.models:
        row = [Cell(model)]
        for t in m.transports:
            c = m.cells.get((model, t))
            if c is None:
                row.append(Cell("—"))
                continue
            cls = "pass" if c.ok else "fail" if c.ok is False else ""
            row.append(Cell(w.conformance_status(c), cls, w.conformance_detail(c)))
        table.rows.append(row)
    view["table"] = table
    banner, level = w.conformance_banner(m, tr)
    if banner:
        view["banner"], view["banner_cls"] = banner, level
    return view


def _environment_rows(run: records.Run) -> dict[str, Any]:
    meta = run.meta
    rows: dict[str, Any] = {
        "file": str(run.path),
        "run_id": meta.get("run_id"),
        "wiremark": meta.get("wiremark"),
        "schema_version": meta.get("schema_version"),
        "started": meta.get("started"),
        "finished": meta.get("finished") or "not finished (cut short, or still running)",
        "commit": meta.get("commit"),
    }
    for t in run.transports:
        rest = {k: v for k, v in t.items() if k != "name"}
        rows[f"transports.{t['name']}"] = " · ".join(str(v) for v in rest.values() if v)
    sections = ("machine", "versions", "placement", "settings", "scenario")
    for section in sections:
        value = meta.get(section)
        if isinstance(value, dict) and value:
            rows.update({f"{section}.{k}": v for k, v in value.items()})
        else:
            rows[section] = value
    known = {"cells", "conformance", "transports", *rows, *sections}
    rows.update({k: v for k, v in meta.items() if k not in known})
    return rows


def _environment_table(runs: Sequence[records.Run], names: Sequence[str]) -> Table:
    """One row per field, one column per run; values that differ from the baseline marked."""
    from wiremark.reports import analysis as an
    from wiremark.reports import wording as w

    per_run = [_environment_rows(run) for run in runs]
    fields = list(dict.fromkeys(k for rows in per_run for k in rows))
    tags = an.run_tags(names)
    multi = len(runs) > 1
    headers = [_h("field")] + [
        _h(f"{tag}: {name}" if multi else name) for tag, name in zip(tags, names, strict=True)
    ]
    table = Table(headers, cls="kv")
    for key in fields:
        values = [w.compact(rows.get(key)) for rows in per_run]
        row = [Cell(key)]
        for i, value in enumerate(values):
            differs = multi and i > 0 and value != values[0] and key not in ("file", "run_id")
            row.append(Cell(value, "wrap flag" if differs else "wrap"))
        table.rows.append(row)
    return table


def _date(text: Any) -> str:
    if not text:
        return "date unknown"
    try:
        when = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return str(text)
    if when.tzinfo is not None:
        when = when.astimezone(UTC)
        return when.strftime("%Y-%m-%d %H:%M UTC")
    return when.strftime("%Y-%m-%d %H:%M")


def _scenario(meta: dict[str, Any]) -> str:
    scenario = meta.get("scenario")
    if isinstance(scenario, dict):
        return str(scenario.get("name") or "unnamed")
    return str(scenario) if scenario else "unnamed"


# ---------------------------------------------------------------------------------------
# the page


def build_html(runs: Sequence[records.Run]) -> str:
    import jinja2

    from wiremark import __version__
    from wiremark.reports import analysis as an
    from wiremark.reports import plots
    from wiremark.reports import wording as w
    from wiremark.reports.template import TEMPLATE

    names = an.run_names(runs)
    multi = len(runs) > 1
    tr = an.transports(runs)
    df = an.cells_frame(runs)
    med = an.medians(df)
    valid_med = an.medians(df, valid_only=True)

    tags = an.run_tags(names)
    header = []
    for i, (name, run) in enumerate(zip(names, runs, strict=True)):
        mine = df[df["run_index"] == i]
        trials = int(mine["trial"].nunique()) if not mine.empty else 0
        keys = len(med[med["run_index"] == i])
        finished = run.meta.get("finished")
        header.append(
            {
                "tag": tags[i],
                "label": name,
                "baseline": multi and i == 0,
                "date": _date(run.meta.get("started")),
                "scenario": _scenario(run.meta),
                "cells": keys,
                "trials": f"{trials} trial" + ("" if trials == 1 else "s"),
                "status": f"finished {_date(finished)}"
                if finished
                else "not finished: the run was cut short or is still going",
            }
        )

    heading = {name: f"{tag}: {name}" for tag, name in zip(tags, names, strict=True)}
    heading[names[0]] += " (baseline)" if multi else ""
    verdict_groups = []
    all_verdicts = an.verdicts(df, names)
    for name in names:
        mine = [v for v in all_verdicts if v.run == name]
        verdict_groups.append(
            {
                "run": heading[name],
                "verdicts": [
                    {
                        "context": w.verdict_context(v),
                        "text": w.verdict_text(v, tr),
                        "notes": w.verdict_notes(v, tr),
                        "against_baseline": w.against_baseline(v, tr),
                        "table": _verdict_table(v, tr),
                    }
                    for v in mine
                ],
            }
        )

    claims = [
        {
            "run": heading[c.run],
            "answer": w.claim_answer(c, tr),
            "per_model": w.claim_per_model(c, tr),
            "crossovers": w.crossovers(c, tr),
            "crossover_heading": w.crossover_heading(c, tr),
            "table": _claim_table(c, tr),
        }
        for c in an.claims(valid_med, names, tr)
    ]

    client_costs = [
        {
            "run": heading[name],
            "summary": w.client_costs_summary(c, tr),
            "table": _client_costs_table(c, tr),
        }
        for c in (an.client_costs(valid_med, i, name) for i, name in enumerate(names))
    ]

    tls_costs = [
        {
            "run": heading[name],
            "summary": w.tls_costs_summary(c, tr),
            "table": _tls_costs_table(c, tr),
        }
        for c in (an.tls_costs(valid_med, i, name) for i, name in enumerate(names))
        if c.measured
    ]

    comparison = None
    if multi:
        comp = an.comparison(med, names, an.judgements(runs))
        comparison = {
            "baseline": comp.baseline,
            "summaries": w.comparison_summaries(comp),
            "rules": w.gate_rules(comp),
            "alpha": f"{comp.alpha:g}",
            "table": _comparison_table(comp, tr),
        }

    validity = an.validity(df)
    context = {
        "title": "wiremark report"
        + (f": {names[0]}" if not multi else f": {names[0]} vs {', '.join(names[1:])}"),
        "version": __version__,
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "runs": header,
        "multi": multi,
        "ci_level": an.CI_LEVEL,
        "within": w.within(),
        "grpc_side": w.grpc_side(tr),
        "ratios_of": w.claim_ratios_of(tr),
        "verdict_groups": verdict_groups,
        "claims": claims,
        "client_costs": client_costs,
        "tls_costs": tls_costs,
        "comparison": comparison,
        "plots": plots.all_plots(df, names, tr),
        "conformance": [
            _conformance_view(an.conformance(run, name, df, tr), heading[name], tr)
            for name, run in zip(names, runs, strict=True)
        ],
        "validity": {
            "summary": w.validity_summary(validity),
            "level": validity.level,
            "count": len(validity.rows),
            "table": _validity_table(validity, multi, tr),
        },
        "cells_tables": _cells_tables(med, multi, tr),
        "environment": _environment_table(runs, names),
        "tags": [
            {"tag": tag, "run": name, "baseline": i == 0}
            for i, (tag, name) in enumerate(zip(tags, names, strict=True))
        ],
    }
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(TEMPLATE).render(**context)
