"""The report's words: plain functions from `analysis` data to the text of the HTML.

`analysis` returns numbers, keys and flags; every sentence the report shows (verdicts, the
"7-10x" claim's answer, crossovers, validity and comparison summaries, intervals) and
every formatted number is made here, with the transports' labels from `analysis.Transports`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from wiremark.reports import analysis as an
from wiremark.reports import records

is_num = an.is_num
fmt_key = an.fmt_key


# ---------------------------------------------------------------------------------------
# numbers


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


def compact(value: Any) -> str:
    """A metadata value on one line: dicts and lists as compact JSON."""
    if value is None:
        return "—"
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, default=str, separators=(", ", ": "))
    return str(value)


def span(low: float, high: float) -> str:
    """A range of ratios: "1.28–1.31×", or one ratio where both read the same."""
    if fmt_ratio(low) == fmt_ratio(high):
        return fmt_ratio(low)
    return f"{fmt_ratio(low)[:-1]}–{fmt_ratio(high)}"


def ci_text(ci: tuple[float, float] | None) -> str:
    if ci is None:
        return "one trial, no interval"
    return f"{an.CI_LEVEL}% CI {ci[0]:.2f}–{ci[1]:.2f}×"


def within() -> str:
    return f"{an.WITHIN:.0%}"


# ---------------------------------------------------------------------------------------
# cells


def variant(key: Any) -> str:
    """A payload `variant_key` in words: "batch 1" or, for MNIST, "batch 1, raw pixels"."""
    batch, encoding, compression, tls = an.variant_parts(str(key))
    parts = []
    if batch:
        parts.append(f"batch {batch}")
    if encoding:  # "raw" or "list" pixels, or already in words ("list tensors")
        parts.append(encoding if " " in encoding else f"{encoding} pixels")
    if compression and compression != "none":
        parts.append(f"{compression} compression")
    if tls:
        parts.append("over TLS")
    return ", ".join(parts) or "default payload"


def payload(row: Any) -> str:
    """A cell's payload variant in words, and the load users' client where it is not the
    lean one: "batch 1, library client"."""
    text = variant(row["variant"])
    client = row.get("client")
    if isinstance(client, str) and client and client != records.LEAN:
        text += f", {client} client"
    return text


def load(row: Any) -> str:
    """The load of a cell in words: "8 users" or "100/s constant, ≤4 in flight"."""
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


def _labels(names: Sequence[str], tr: an.Transports, joiner: str = ", ") -> str:
    return joiner.join(tr.label(t) for t in names)


# ---------------------------------------------------------------------------------------
# the verdict


def verdict_context(v: an.Verdict) -> str:
    """The cell judged: "mnist, batch 1, raw pixels, concurrency 8"."""
    if v.variant is None:
        return v.model
    return f"{v.model}, {variant(v.variant)}, concurrency {fmt_key(v.concurrency)}"


def verdict_text(v: an.Verdict, tr: an.Transports) -> str:
    best = v.leader
    if best is None:
        return "No valid closed-loop cell: nothing to judge."
    name = tr.label(best.transport)
    if not v.gaps:
        return (
            f"Only {name} was measured here: {fmt_num(best.rps)} req/s, "
            f"p99 {fmt_num(best.p99_ms, 'ms')}."
        )
    faster, close = [], []
    for gap in v.gaps:
        other = tr.label(gap.transport)
        if gap.clear:
            clause = f"{fmt_ratio(gap.rps_ratio)} the requests of {other} ({ci_text(gap.ci)})"
            if is_num(gap.p99_ratio):
                clause += f" at {fmt_ratio(gap.p99_ratio)} the p99"
            if gap.ci is not None and gap.ci[0] <= 1.0:
                clause += " — the interval includes 1×, so not a clear difference"
            faster.append(clause)
        else:
            ratio = gap.rps_ratio
            pct = max(1, math.ceil((ratio - 1) * 100)) if is_num(ratio) else 0
            close.append(f"{other} is within {pct}% of {name} ({ci_text(gap.ci)})")
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
    n = v.trials
    return text + "." + (f" (Throughput: mean of {n} trials.)" if n > 1 else "")


def verdict_notes(v: an.Verdict, tr: an.Transports) -> list[str]:
    notes = []
    bound = [tr.label(f.transport) for f in v.figures if f.client_bound]
    if bound:
        notes.append(
            f"The load generator was the bottleneck for {', '.join(bound)}: "
            "that throughput understates what the server can do."
        )
    stock = [tr.label(f.transport) for f in v.figures if f.client != records.LEAN]
    if stock:
        notes.append(
            f"{', '.join(stock)} measured with the stock client library only (no lean-client "
            "cell): those figures include what that client costs per call."
        )
    return notes


def client_costs_summary(c: an.ClientCosts, tr: an.Transports) -> str:
    """One sentence on what the library clients cost against the lean ones."""
    if not c.rows:
        return "No valid closed-loop cell: no client cost to show."
    if not c.library_over_lean:
        only = " and ".join(f"the {k} client" for k in c.clients) or "one client"
        return (
            f'Measured with {only} only. Add client = ["lean", "library"] to the '
            "scenario to see what a stock client library pays per call beside it."
        )
    parts = [
        f"{tr.label(t)} {fmt_ratio(r)}"
        for t, r in sorted(c.library_over_lean.items(), key=lambda kv: tr.rank(kv[0]))
    ]
    return (
        "Client CPU per request of the stock client library against the lean client "
        "(median over cells): " + ", ".join(parts) + "."
    )


def tls_costs_summary(c: an.TlsCosts, tr: an.Transports) -> str:
    """One sentence on what TLS costs each transport ("" where the run has no TLS cells)."""
    if not c.measured:
        return ""
    if not c.rows:
        return (
            "No valid closed-loop cell was measured both plaintext and over TLS: give "
            "tls = [false, true] to compare them."
        )
    parts = [
        f"{tr.label(t)} p50 {fmt_ratio(r)}, server CPU "
        f"{fmt_signed(c.server_cpu_added_ms.get(t))} ms/req"
        for t, r in sorted(c.p50_ratio.items(), key=lambda kv: tr.rank(kv[0]))
    ]
    return "Over TLS against plaintext (median over cells): " + "; ".join(parts) + "."


def fmt_signed(value: Any) -> str:
    """+0.031 / -0.002: a change with its sign, "n/a" where not measured."""
    if not is_num(value):
        return "n/a"
    return f"{float(value):+.3f}"


def against_baseline(v: an.Verdict, tr: an.Transports) -> str:
    """The judged cell against the baseline's, in words ("" where not compared)."""
    if v.against_baseline is None:
        return ""
    if not v.against_baseline:
        return f"The baseline {v.baseline} has no valid cell like this one to compare with."
    parts = [
        f"{tr.label(c.transport)} {fmt_pct(c.rps_change_pct)} req/s, "
        f"p99 {fmt_pct(c.p99_change_pct)}"
        for c in v.against_baseline
    ]
    return f"Against the baseline {v.baseline}, same cell: " + "; ".join(parts) + "."


# ---------------------------------------------------------------------------------------
# "Is gRPC 7-10x faster than REST?"


def grpc_side(tr: an.Transports, names: Sequence[str] | None = None) -> str:
    """The gRPC side of the claim by label: "gRPC" (the WIRE_GRPC transports)."""
    names = tr.on_wire(records.WIRE_GRPC) if names is None else names
    return _labels(names, tr, "/") or "gRPC"


def rest_side(tr: an.Transports, joiner: str = " or ") -> str:
    """The REST transports by label: "JSON or MessagePack" (the WIRE_HTTP1 transports)."""
    return _labels(tr.on_wire(records.WIRE_HTTP1), tr, joiner) or "REST"


def claim_ratios_of(tr: an.Transports) -> str:
    """Whose figures the claim's ratios divide by: "JSON's and MessagePack's"."""
    names = [f"{tr.label(t)}'s" for t in tr.on_wire(records.WIRE_HTTP1)]
    if len(names) > 1:
        return ", ".join(names[:-1]) + " and " + names[-1]
    return names[0] if names else "REST's"


def _pair(pair: an.Pair, tr: an.Transports) -> tuple[str, str]:
    return tr.label(pair[0]), tr.label(pair[1])


def claim_answer(c: an.Claim, tr: an.Transports) -> str:
    if c.outcome == an.CLAIM_NO_CELLS:
        return (
            f"Not measured here: this run has no valid closed-loop cell with both "
            f"{grpc_side(tr)} and a REST transport ({rest_side(tr)}) at the same load."
        )
    best = c.best
    if c.outcome == an.CLAIM_UNMEASURED or best is None:
        return "Not measured: the throughput and latency figures are missing."
    grpc, rest = _pair(best.pair, tr)
    of = f" of {grpc}" if len(c.grpc) > 1 else ""
    where = (
        f"{best.measure}{of} against {rest}: {best.model}, {variant(best.variant)}, "
        f"concurrency {fmt_key(best.concurrency)}"
    )
    if c.outcome == an.CLAIM_YES:
        return f"Yes, here: up to {fmt_ratio(best.factor)} ({where})."
    if c.outcome == an.CLAIM_NO:
        return f"No: at most {fmt_ratio(best.factor)} here ({where})."
    return (
        f"No: {grpc_side(tr, c.grpc)} is not more than {within()} faster than REST anywhere "
        f"here (best {fmt_ratio(best.factor)}: {where})."
    )


def claim_per_model(c: an.Claim, tr: an.Transports) -> list[str]:
    lines = []
    for m in c.per_model:
        parts = []
        for s in m.spans:
            grpc, rest = _pair(s.pair, tr)
            parts.append(f"{s.measure} {grpc}/{rest} {span(s.low, s.high)}")
        lines.append(f"{m.model}: " + "; ".join(parts) + ".")
    return lines


def crossover(x: an.Crossover, tr: an.Transports) -> str:
    grpc, rest = _pair(x.pair, tr)
    if x.axis == "concurrency":
        subject = f"{x.model}, {variant(x.variant)}"
        what, unit = "concurrency", " users"
        if len(x.points) == 1:
            at, ratio = x.points[0]
            beats = "beats" if x.start is not None else "does not beat"
            return (
                f"{subject}: one concurrency measured ({fmt_key(at)}); "
                f"{grpc} {beats} {rest} there ({fmt_ratio(ratio)})."
            )
    else:
        subject = f"{x.model}, concurrency {fmt_key(x.concurrency)}"
        what, unit = "payload", " B"
    xs = [p[0] for p in x.points]
    measured = f"{fmt_key(xs[0])}–{fmt_key(xs[-1])}{unit}" if len(xs) > 1 else ""
    if x.start is None:
        return f"{subject}: {grpc} does not beat {rest} at any {what} measured ({measured})."
    if x.start == xs[0]:
        return f"{subject}: {grpc} beats {rest} at every {what} measured ({measured})."
    return (
        f"{subject}: {grpc} beats {rest} from {what} {fmt_key(x.start)}{unit} up "
        f"(measured {measured})."
    )


def crossovers(c: an.Claim, tr: an.Transports) -> list[str]:
    return [crossover(x, tr) for x in c.crossovers]


def crossover_heading(c: an.Claim, tr: an.Transports) -> str:
    """What the crossovers find: "where gRPC starts to beat JSON"."""
    grpc = grpc_side(tr, c.grpc)
    rest = tr.label(c.reference) if c.reference else "REST"
    return f"where {grpc} starts to beat {rest}"


# ---------------------------------------------------------------------------------------
# validity


def validity_summary(v: an.Validity) -> str:
    if not v.cells:
        return "No cells were recorded."
    if v.rows.empty:
        return (
            f"All {v.cells} cells are fine: every trial valid, no errors, the load generator "
            f"never the bottleneck, every cell at least {an.FEW_REQUESTS:,} requests."
        )
    counts = [
        f"{v.invalid} invalid",
        f"{v.with_errors} with errors",
        f"{v.client_bound} client-bound",
        f"{v.few_requests} with fewer than {an.FEW_REQUESTS:,} requests",
    ]
    return f"{len(v.rows)} of {v.cells} cells flagged: " + ", ".join(counts) + "."


def validity_reasons(row: Any) -> str:
    """Why a cell of `Validity.rows` is flagged."""
    reasons = list(row["reasons"])
    if row["marked_invalid"]:
        reasons.append("marked invalid")
    if is_num(row["errors"]) and row["errors"] > 0:
        reasons.append(f"{fmt_int(row['errors'])} errors")
    if row["client_bound_trials"]:
        reasons.append("load generator was the bottleneck (client-bound)")
    if row["few_requests"]:
        reasons.append(f"under {an.FEW_REQUESTS:,} requests (p99.9 unresolved)")
    return "; ".join(reasons)


# ---------------------------------------------------------------------------------------
# conformance


def conformance_status(c: an.ConformanceCell) -> str:
    if not c.checked:
        return "not checked"
    if c.ok is False and c.passed:
        return "pass, but sampled replies differ"
    return "pass" if c.passed else "FAIL"


def conformance_detail(c: an.ConformanceCell) -> str:
    parts = []
    if c.checked:
        detail = f"worst {fmt_num(c.worst)}"
        if is_num(c.inputs):
            detail += f", {fmt_int(c.inputs)} inputs"
        if not c.passed and is_num(c.mismatch_count):
            detail += f", {fmt_int(c.mismatch_count)} mismatch" + (
                "" if c.mismatch_count == 1 else "es"
            )
        if not c.passed and c.first_mismatch:
            detail += f": {c.first_mismatch}"
        parts.append(detail)
    if is_num(c.sampled):
        bad = c.sample_mismatches if is_num(c.sample_mismatches) else 0
        parts.append(f"sampled {fmt_int(c.sampled)} under load, {fmt_int(bad)} off")
    else:
        parts.append("not sampled under load")
    return "; ".join(parts)


def conformance_note(m: an.ConformanceMatrix) -> str:
    return "" if m.checked else "No conformance check was recorded in this run."


def conformance_banner(m: an.ConformanceMatrix, tr: an.Transports) -> tuple[str, str]:
    """(text, level) of the banner over a run's matrix; ("", "") for none."""
    failed = [f"{mo}/{tr.label(t)}" for (mo, t), c in m.cells.items() if c.ok is False]
    checked = sum(1 for c in m.cells.values() if c.ok is not None)
    if failed:
        return f"Conformance FAILED for {', '.join(failed)}.", "bad"
    if checked:
        return f"All {checked} model × transport pairs conform.", "ok"
    return "", ""


# ---------------------------------------------------------------------------------------
# comparison of runs


def gate_rules(comp: an.Comparison) -> str:
    return ", ".join(comp.rules)


def comparison_summary(s: an.ComparisonSummary, comp: an.Comparison) -> str:
    if not s.common:
        return f"{s.run} against {s.baseline}: no cell in common."
    text = (
        f"{s.run} against {s.baseline}: {s.common} cells in common; median change "
        f"p50 {fmt_pct(s.p50_change_pct)}, throughput {fmt_pct(s.rps_change_pct)}; "
        f"{s.worse} cells worse as the gate judges them ({gate_rules(comp)}, significant at "
        f"{comp.alpha:g}), {s.better} better"
    )
    if s.not_judged:
        text += f", {s.not_judged} not judged (too few trials)"
    text += "."
    if s.only_baseline or s.only_run:
        text += f" {s.only_baseline} cells only in {s.baseline}, {s.only_run} only in {s.run}."
    return text


def comparison_summaries(comp: an.Comparison) -> list[str]:
    return [comparison_summary(s, comp) for s in comp.summaries]
