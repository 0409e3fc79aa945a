"""`wiremark gate`: fail CI when the current build regressed against a baseline.

    wiremark gate RESULTS                        # an A/B run: both arms in one file
    wiremark gate --baseline B --current C       # two runs: trials are the unit
    wiremark gate --baseline B1 B2 ... --current C   # several baseline runs: runs are the unit
    [--rule p50:+5% --rule rps:-5% ...] [--alpha 0.05]

Result files are `records.py`'s, schema 1 to 4. Cells are matched on `records.CELL_KEY`.
Which observations a comparison has depends on the input (`paired.py` states each model):

* **an A/B run** (`bench --ab`, `--baseline-target`): in every block each cell sent to both
  arms' servers by turns (`harness/cell.py`'s `Alternation`: turns of a quarter second, each
  pair's order drawn at random). The unit is the block: the per-block log-ratio of the arms,
  tested with a one-sided sign-flip permutation test. Drift of the machine, within a cell
  and between blocks, falls on both arms alike and cancels; this is the mode for a shared
  CI runner.
* **two files**: every trial (`bench --repeat N`) of a cell is one observation, tested with
  a one-sided Mann–Whitney U (exact distribution for small samples, ties included). Trials
  of one run agree more closely than two runs do, so drift between the runs reads as a
  change: the gate warns that it is outside the test.
* **several baseline files**: each run's median of its trials is one observation; a pooled
  t-test of the log medians takes the run-to-run drift as noise.

A rule is FIELD:+N% or FIELD:-N% on one of the aliases of `FIELDS`: the latency percentiles
(`records.PERCENTILES`: p50 p90 p95 p99 p999), max, mean, rps, server_cpu, client_cpu and
tax (`transport_tax_ms`: the p50 minus the in-process time, what the transport adds; higher
is worse), or on the column name itself (p99_ms:+10%). For each cell and each rule:

* change = the estimated change in per cent (A/B and runs: of the geometric means; trials:
  of the medians), with a 95% confidence interval;
* p = the test's one-sided p in the rule's bad direction;
* q = p adjusted for the number of comparisons made (Benjamini–Hochberg, over every judged
  cell x rule), so that dozens of cells do not turn noise into a failure now and then;
* a *regression* is a change beyond the rule's threshold in the bad direction with q <= alpha;
  an *improvement* the same the good way; anything else is *unchanged*;
* *detectable* is the smallest change the comparison could have found (80% power at alpha,
  given the spread it saw; never under the rule's threshold);
* with so few observations that even a perfect separation could not reach alpha (trials:
  1 / C(n_b + n_c, n_b) > alpha; blocks: 2**-n > alpha) the comparison is *insufficient*:
  never a failure, but reported loudly in every output.

The default rules, p50:+5% and rps:-5%, were chosen from measured noise: the p50 is the
steadiest statistic on a shared 2-core machine, the p99 the least (README, *The gate*).

Conformance failures and invalid cells in the current run (arm) fail the gate on their own.
Client-bound cells (on either side) are skipped with a warning unless
`--include-client-bound`.

Exit status: 0 pass, 1 regression or conformance/validity failure, 2 unusable input.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import math
import re
import statistics
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wiremark.reports import paired, records

DEFAULT_RULES = ("p50:+5%", "rps:-5%")
DEFAULT_ALPHA = 0.05
RECOMMENDED_REPEAT = 5

# alias -> (column, sign): sign +1 means "higher is worse" (write FIELD:+N%),
# -1 means "lower is worse" (write FIELD:-N%).
FIELDS: dict[str, tuple[str, int]] = {
    **{key: (f"{key}_ms", +1) for key, _, _ in records.PERCENTILES},
    "max": ("max_ms", +1),
    "mean": ("mean_ms", +1),
    "rps": ("rps", -1),
    "server_cpu": ("server_cpu_ms", +1),
    "client_cpu": ("client_cpu_ms", +1),
    "tax": ("transport_tax_ms", +1),  # transport tax: p50 minus the in-process time
}
_COLUMNS = {column: alias for alias, (column, _) in FIELDS.items()}
RULE_FORM = "FIELD:+N% (regression when FIELD rises by more than N%) or FIELD:-N% (falls)"

# Comparisons with more permutations than this use the normal approximation.
_EXACT_LIMIT = 50_000
# p-values are compared with alpha allowing for float rounding: 3 vs 3 reaches exactly 0.05.
_P_TOLERANCE = 1e-9
# A rule tighter than this many times the trials' typical spread (CV) gets a warning: with 5 vs 5
# trials the change of medians has a spread of about 0.76 CV, so noise alone crosses 2 CV in
# about 0.4% of comparisons, 2.5 CV in 0.05%.
NOISE_WARN_FACTOR = 2.0
NOISE_SAFE_FACTOR = 2.5
# Markdown table rows kept (a GitHub comment holds at most 65,536 characters).
MD_MAX_ROWS = 200
MD_MAX_UNCHANGED = 150

# What one observation of a comparison is.
TRIALS = "trials"  # two files: each trial of a cell (within-run noise only)
BLOCKS = "blocks"  # an A/B file: the arms' values in one block, paired
RUNS = "runs"  # several baseline files: each run's median of its trials

# The test of each kind of comparison, in words.
TESTS = {
    TRIALS: "one-sided Mann–Whitney U over the trials",
    BLOCKS: "one-sided sign-flip permutation test of the per-block log-ratios (paired A/B)",
    RUNS: "one-sided pooled t-test of the runs' log medians",
}

REGRESSION = "regression"
IMPROVEMENT = "improvement"
UNCHANGED = "unchanged"
INSUFFICIENT = "insufficient"
_ORDER = {REGRESSION: 0, INSUFFICIENT: 1, IMPROVEMENT: 2, UNCHANGED: 3}


class GateError(ValueError):
    """Input the gate cannot use (bad rule, bad alpha, nothing in common): exit status 2."""


class RuleError(GateError):
    """Rule text that does not parse."""


# --- rules -----------------------------------------------------------------------------------

_RULE_RE = re.compile(r"^\s*([A-Za-z0-9_]+)\s*:\s*([+-])\s*(\d+(?:\.\d*)?|\.\d+)\s*%\s*$")


@dataclass(frozen=True)
class Rule:
    """`FIELD:+N%` or `FIELD:-N%`: a change of more than N% in the bad direction regresses."""

    name: str  # the alias, e.g. "p99"
    column: str  # the cell field, e.g. "p99_ms"
    sign: int  # +1: higher is worse; -1: lower is worse
    threshold_pct: float

    @classmethod
    def parse(cls, text: str) -> Rule:
        match = _RULE_RE.match(text)
        if not match:
            raise RuleError(f"bad rule {text!r}: expected {RULE_FORM}, e.g. p99:+10% or rps:-5%")
        name, sign_text, number = match.groups()
        name = name.lower()
        name = _COLUMNS.get(name, name)
        if name not in FIELDS:
            raise RuleError(
                f"bad rule {text!r}: unknown field {match.group(1)!r}; "
                f"fields: {', '.join(FIELDS)}; form: {RULE_FORM}"
            )
        column, natural = FIELDS[name]
        sign = 1 if sign_text == "+" else -1
        if sign != natural:
            way = "rises" if natural > 0 else "falls"
            good = f"{name}:{'+' if natural > 0 else '-'}{number}%"
            raise RuleError(
                f"bad rule {text!r}: {name} regresses when it {way}; write {good} "
                f"(form: {RULE_FORM})"
            )
        threshold = float(number)
        if not math.isfinite(threshold):
            raise RuleError(f"bad rule {text!r}: the threshold must be a finite percentage")
        return cls(name, column, sign, threshold)

    @property
    def text(self) -> str:
        return f"{self.name}:{'+' if self.sign > 0 else '-'}{self.threshold_pct:g}%"

    @property
    def unit(self) -> str:
        return "req/s" if self.column == "rps" else "ms"

    def worse(self, change_pct: float) -> bool:
        """The change goes the bad way by more than the threshold."""
        return self.sign * change_pct > self.threshold_pct

    def better(self, change_pct: float) -> bool:
        """The change goes the good way by more than the threshold."""
        return -self.sign * change_pct > self.threshold_pct

    def __str__(self) -> str:
        return self.text


def parse_rules(texts: Iterable[str | Rule] | None) -> tuple[Rule, ...]:
    """Rules from text (or Rule objects); the defaults when none are given."""
    given = list(texts or ())
    rules = [r if isinstance(r, Rule) else Rule.parse(r) for r in (given or DEFAULT_RULES)]
    seen: set[str] = set()
    for rule in rules:
        if rule.name in seen:
            raise RuleError(f"bad rules: more than one rule for {rule.name}; give one")
        seen.add(rule.name)
    return tuple(rules)


# --- statistics ------------------------------------------------------------------------------


def min_attainable_p(n_baseline: int, n_current: int) -> float:
    """The smallest one-sided Mann–Whitney p possible with these sample sizes:
    every current trial beyond every baseline trial, 1 / C(n_b + n_c, n_b)."""
    if n_baseline < 1 or n_current < 1:
        return 1.0
    return 1.0 / math.comb(n_baseline + n_current, n_baseline)


def trials_needed(alpha: float = DEFAULT_ALPHA) -> int:
    """The fewest trials per side (equal on both) that can reach p <= alpha."""
    n = 1
    while min_attainable_p(n, n) > alpha * (1 + _P_TOLERANCE):
        n += 1
    return n


def mann_whitney_p(current: Sequence[float], baseline: Sequence[float], alternative: str) -> float:
    """One-sided Mann–Whitney U p-value that `current` is "greater" / "less" than `baseline`.

    Exact for small samples: scipy's exact distribution without ties, the permutation
    distribution of the mid-rank sum with ties; scipy's normal approximation (tie-corrected)
    when there are more than `_EXACT_LIMIT` arrangements."""
    from scipy import stats

    if alternative not in ("greater", "less"):
        raise ValueError(f"alternative must be 'greater' or 'less', not {alternative!r}")
    if not current or not baseline:
        return 1.0
    values = [*current, *baseline]
    if min(values) == max(values):
        return 1.0
    n_c, n_b = len(current), len(baseline)
    if math.comb(n_c + n_b, n_b) > _EXACT_LIMIT:
        method = "asymptotic"
    elif len(set(values)) < len(values):
        return _exact_with_ties(current, baseline, alternative)
    else:
        method = "exact"
    result = stats.mannwhitneyu(current, baseline, alternative=alternative, method=method)
    p = float(result.pvalue)
    return 1.0 if math.isnan(p) else min(1.0, p)


@functools.lru_cache(maxsize=32)
def _arrangements(n_total: int, n_current: int) -> np.ndarray:
    """Every way to pick which `n_current` of `n_total` observations are "current"."""
    return np.array(list(itertools.combinations(range(n_total), n_current)), dtype=np.intp)


def _exact_with_ties(
    current: Sequence[float], baseline: Sequence[float], alternative: str
) -> float:
    """The exact permutation p of the current group's mid-rank sum (equivalent to U)."""
    from scipy import stats

    ranks = stats.rankdata([*current, *baseline])
    sums = ranks[_arrangements(len(ranks), len(current))].sum(axis=1)
    observed = ranks[: len(current)].sum()
    eps = 1e-9 * max(1.0, float(observed))
    hits = sums >= observed - eps if alternative == "greater" else sums <= observed + eps
    return float(np.count_nonzero(hits)) / len(sums)


def _significant(p: float, alpha: float) -> bool:
    return p <= alpha * (1 + _P_TOLERANCE)


# --- cells -----------------------------------------------------------------------------------

Key = tuple[Any, ...]


def cell_label(key: Key | Mapping[str, Any]) -> str:
    """A short name for a cell key: `mnist/grpc closed c=8 batch=1 raw`."""
    k = dict(key) if isinstance(key, Mapping) else dict(zip(records.CELL_KEY, key, strict=True))
    parts = [f"{k.get('model')}/{k.get('transport')}", str(k.get("mode"))]
    if k.get("rate") is not None:
        parts.append(f"{k['rate']:g}/s" if isinstance(k["rate"], int | float) else str(k["rate"]))
        if k.get("arrival"):
            parts.append(str(k["arrival"]))
    parts.append(f"c={k.get('concurrency')}")
    parts.append(f"batch={k.get('batch')}")
    if k.get("encoding") is not None:
        parts.append(str(k["encoding"]))
    if k.get("compression") not in (None, "none"):
        parts.append(str(k["compression"]))
    if k.get("tls") is True:
        parts.append("TLS")
    if k.get("client") not in (None, records.LEAN):
        parts.append(f"{k['client']} client")
    return " ".join(parts)


def _key(cell: Mapping[str, Any]) -> Key:
    return tuple(_hashable(cell.get(name)) for name in records.CELL_KEY)


def _hashable(value: Any) -> Any:
    try:
        hash(value)
    except TypeError:
        return json.dumps(value, sort_keys=True, default=str)
    return value


def _group(run: records.Run) -> dict[Key, list[dict[str, Any]]]:
    groups: dict[Key, list[dict[str, Any]]] = {}
    for index, cell in enumerate(run.cells):
        if not isinstance(cell, dict):
            raise records.RecordError(f"{run.path}: cell {index} is not an object")
        groups.setdefault(_key(cell), []).append(cell)
    return groups


def _is_invalid(cell: Mapping[str, Any]) -> bool:
    return cell.get("valid") is False or _count(cell.get("errors")) > 0


def _count(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    return number if math.isfinite(number) else 0.0


def _values(cells: Iterable[Mapping[str, Any]], column: str) -> list[float]:
    out = []
    for cell in cells:
        value = cell.get(column)
        if isinstance(value, bool) or value is None:
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            out.append(number)
    return out


def _trials(cells: Iterable[Mapping[str, Any]]) -> str:
    return ", ".join(str(c.get("trial", "?")) for c in cells)


# --- the verdict -----------------------------------------------------------------------------


@dataclass
class Comparison:
    """One cell key under one rule."""

    cell: str
    key: dict[str, Any]
    rule: Rule
    baseline: list[float]
    current: list[float]
    baseline_median: float
    current_median: float
    change_pct: float
    p_value: float  # one-sided, in the direction the median moved
    min_p: float  # the smallest p these trial counts could give
    verdict: str
    note: str = ""
    p_worse: float = 1.0  # one-sided p in the rule's bad direction
    p_better: float = 1.0  # ... and in its good direction
    q_value: float = 1.0  # p_value adjusted for the many comparisons (Benjamini-Hochberg)
    ci_pct: tuple[float, float] | None = None  # paired.CONFIDENCE interval of the change
    detectable_pct: float = math.inf  # the smallest change this comparison could detect
    unit: str = TRIALS  # what one observation is: a trial, an A/B block, a run

    @property
    def trials(self) -> str:
        if self.unit == BLOCKS:
            return f"{len(self.current)} blocks"
        return f"{len(self.baseline)} vs {len(self.current)}"

    @property
    def observations(self) -> str:
        return self.trials if self.unit == BLOCKS else f"{self.trials} {self.unit}"

    def interval(self) -> str:
        """`+4.1% [+2.0, +6.3]`: the change and its interval."""
        if self.ci_pct is None:
            return _pct(self.change_pct)
        low, high = self.ci_pct
        return f"{_pct(self.change_pct)} [{_pct(low)}, {_pct(high)}]"

    def detectable(self) -> str:
        if not math.isfinite(self.detectable_pct):
            return "none"
        return f"±{self.detectable_pct:.1f}%"

    def describe(self) -> str:
        return (
            f"{self.rule.text} {self.cell}: {_num(self.baseline_median)} -> "
            f"{_num(self.current_median)} {self.rule.unit} ({self.interval()} "
            f"{paired.CONFIDENCE:.0%} CI, p={_p(self.p_value)}, q={_p(self.q_value)}, "
            f"{self.observations}, detectable {self.detectable()})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "cell": self.cell,
            "key": self.key,
            "rule": self.rule.text,
            "field": self.rule.column,
            "baseline_median": _finite(self.baseline_median),
            "current_median": _finite(self.current_median),
            "change_pct": _finite(self.change_pct),
            "p_value": _finite(self.p_value),
            "q_value": _finite(self.q_value),
            "min_attainable_p": self.min_p,
            "ci_pct": [_finite(v) for v in self.ci_pct] if self.ci_pct else None,
            "detectable_pct": _finite(self.detectable_pct),
            "unit": self.unit,
            "baseline_values": self.baseline,
            "current_values": self.current,
            "verdict": self.verdict,
            "note": self.note,
        }


@dataclass
class Finding:
    """A failure (fails the gate) or a warning (does not)."""

    kind: str
    message: str
    cell: str | None = None

    def __str__(self) -> str:
        return f"{self.cell}: {self.message}" if self.cell else self.message

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "cell": self.cell, "message": self.message}


@dataclass
class Verdict:
    """What the gate concluded; `exit_status` is what the CLI returns."""

    baseline: str
    current: str
    rules: tuple[Rule, ...]
    alpha: float
    comparisons: list[Comparison] = field(default_factory=list)
    failures: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    skipped: list[Finding] = field(default_factory=list)
    cells_in_common: int = 0
    noise_pct: dict[str, float] = field(default_factory=dict)  # rule -> pooled spread, %
    unit: str = TRIALS  # what the comparisons' observations are (TRIALS, BLOCKS, RUNS)

    def _having(self, verdict: str) -> list[Comparison]:
        return [c for c in self.comparisons if c.verdict == verdict]

    @property
    def regressions(self) -> list[Comparison]:
        return self._having(REGRESSION)

    @property
    def improvements(self) -> list[Comparison]:
        return self._having(IMPROVEMENT)

    @property
    def unchanged(self) -> list[Comparison]:
        return self._having(UNCHANGED)

    @property
    def insufficient(self) -> list[Comparison]:
        return self._having(INSUFFICIENT)

    @property
    def passed(self) -> bool:
        return not self.regressions and not self.failures

    @property
    def exit_status(self) -> int:
        return 0 if self.passed else 1

    # -- words --

    def headline(self) -> str:
        """The verdict line: `✅ no regression` or `❌ N regressions`."""
        if self.passed:
            line = "✅ no regression"
            if self.insufficient:
                line += f" found, but ⚠️ {self.insufficient_line()}"
            return line
        parts = []
        if self.regressions:
            parts.append(_plural(len(self.regressions), "regression"))
        if self.failures:
            parts.append(_plural(len(self.failures), "conformance/validity failure"))
        return "❌ " + ", ".join(parts)

    def insufficient_line(self) -> str:
        if not self.insufficient:
            return ""
        counts = sorted({c.trials for c in self.insufficient})
        worst = max(c.min_p for c in self.insufficient)
        if self.unit != TRIALS:
            need = (
                f"≥{blocks_needed(self.alpha)} blocks, `wiremark bench --ab --repeat "
                f"{RECOMMENDED_REPEAT}`"
                if self.unit == BLOCKS
                else "at least two runs on one side"
            )
            return (
                f"{len(self.insufficient)} of {len(self.comparisons)} comparisons NOT JUDGED: "
                f"too few {self.unit} ({', '.join(counts)}; need {need})"
            )
        return (
            f"{len(self.insufficient)} of {len(self.comparisons)} comparisons NOT JUDGED: "
            f"not enough trials ({', '.join(counts)}; the smallest attainable p is "
            f"{_p(worst)} > alpha {self.alpha:g}; need ≥{trials_needed(self.alpha)} per side, "
            f"`wiremark bench --repeat {RECOMMENDED_REPEAT}` recommended)"
        )

    def summary(self) -> str:
        """The short human summary printed on stdout."""
        state = "PASS" if self.passed else "FAIL"
        head = self.headline().split(" ", 1)[1]
        lines = [
            f"wiremark gate: {state}: {head}",
            f"  baseline {self.baseline}, current {self.current}: {self.cells_in_common} cells "
            f"in common; rules {' '.join(r.text for r in self.rules)}; {TESTS[self.unit]}, "
            f"Benjamini–Hochberg q <= alpha {self.alpha:g}",
        ]
        lines += [f"  FAILURE {f}" for f in self.failures]
        lines += [f"  REGRESSION {c.describe()}" for c in self.regressions]
        if self.insufficient:
            lines.append(f"  WARNING: {self.insufficient_line()}")
            would = [c for c in self.insufficient if c.rule.worse(c.change_pct)]
            lines += [f"    would-be regression, not judged: {c.describe()}" for c in would[:10]]
            if len(would) > 10:
                lines.append(f"    ... and {len(would) - 10} more")
        lines += [f"  improvement {c.describe()}" for c in self.improvements]
        lines += [f"  warning: {w}" for w in self.warnings]
        tail = [
            f"{len(self.regressions)} regressed",
            f"{len(self.improvements)} improved",
            f"{len(self.unchanged)} unchanged",
            f"{len(self.insufficient)} not judged",
        ]
        if self.skipped:
            tail.append(f"{len(self.skipped)} skipped")
        if self.added or self.removed:
            tail.append(f"{len(self.added)} cells added, {len(self.removed)} removed")
        lines.append("  " + ", ".join(tail))
        return "\n".join(lines) + "\n"

    def markdown(self) -> str:
        """A summary fit for a pull-request comment; the verdict line comes first."""
        out = [
            self.headline(),
            "",
            f"**wiremark gate**: baseline `{self.baseline}` vs current `{self.current}`, "
            f"{self.cells_in_common} cells in common; rules "
            f"{', '.join(f'`{r.text}`' for r in self.rules)}; a regression is a change beyond "
            f"the rule with a {TESTS[self.unit]} significant at "
            f"{self.alpha:g} after a Benjamini–Hochberg adjustment for the comparisons made "
            f"(q). Changes are given with their {paired.CONFIDENCE:.0%} confidence interval; "
            f"*detectable* is the smallest change each comparison could have found "
            f"({paired.POWER:.0%} power).",
            "",
        ]
        if self.insufficient:
            out += [
                "> [!WARNING]",
                f"> **{_md(self.insufficient_line())}.** These cells pass the gate only "
                "because they could not be judged.",
                "",
            ]
        if self.failures:
            out += ["### Failures", ""]
            out += [f"- **{f.kind}**: {_md(str(f))}" for f in self.failures]
            out.append("")
        notable = [c for c in self._sorted() if c.verdict != UNCHANGED]
        header = [
            f"| Cell | Rule | Baseline | Current | Change [{paired.CONFIDENCE:.0%} CI] | p | q "
            "| n | Detectable | Verdict |",
            "|---|---|--:|--:|--:|--:|--:|:-:|--:|---|",
        ]
        if notable:
            out += ["### Compared cells", "", *header, *_md_rows(notable, MD_MAX_ROWS), ""]
        if self.unchanged:
            table = [*header, *_md_rows(self.unchanged, MD_MAX_UNCHANGED)]
            if notable:
                out += [
                    f"<details><summary>{len(self.unchanged)} unchanged</summary>",
                    "",
                    *table,
                    "",
                    "</details>",
                    "",
                ]
            else:
                out += ["### Compared cells", "", *table, ""]
        if self.warnings or self.skipped or self.added or self.removed:
            out += ["### Warnings", ""]
            out += [f"- {_md(str(w))}" for w in self.warnings]
            if self.skipped:
                out.append(f"- {len(self.skipped)} comparisons skipped:")
                out += [f"  - {_md(str(s))}" for s in self.skipped[:20]]
                if len(self.skipped) > 20:
                    out.append(f"  - ... and {len(self.skipped) - 20} more")
            if self.added:
                out.append(
                    f"- cells only in the current run (not compared): {_md_list(self.added)}"
                )
            if self.removed:
                out.append(f"- cells only in the baseline (not compared): {_md_list(self.removed)}")
            out.append("")
        return "\n".join(out)

    def junit(self) -> str:
        """JUnit XML: a testcase per cell × rule, a failure element for each regression."""
        suite = ET.Element("testsuite", name="wiremark gate")
        props = ET.SubElement(suite, "properties")
        for name, value in (
            ("baseline", self.baseline),
            ("current", self.current),
            ("alpha", f"{self.alpha:g}"),
            ("rules", " ".join(r.text for r in self.rules)),
        ):
            ET.SubElement(props, "property", name=name, value=value)
        failures = skipped = 0
        for c in self._sorted():
            case = ET.SubElement(
                suite,
                "testcase",
                classname=f"wiremark.gate.{c.key.get('model')}.{c.key.get('transport')}",
                name=f"{c.rule.text} {c.cell}",
            )
            if c.verdict == REGRESSION:
                failures += 1
                el = ET.SubElement(case, "failure", type=REGRESSION, message=c.describe())
                el.text = _detail(c)
                continue
            if c.verdict == INSUFFICIENT:
                skipped += 1
                ET.SubElement(case, "skipped", message=f"not enough trials: {c.note}")
            ET.SubElement(case, "system-out").text = _detail(c)
        for f in self.failures:
            case = ET.SubElement(
                suite, "testcase", classname=f"wiremark.gate.{f.kind}", name=str(f.cell or f.kind)
            )
            failures += 1
            ET.SubElement(case, "failure", type=f.kind, message=f.message).text = str(f)
        for s in self.skipped:
            case = ET.SubElement(
                suite, "testcase", classname=f"wiremark.gate.{s.kind}", name=str(s.cell or s.kind)
            )
            skipped += 1
            ET.SubElement(case, "skipped", message=s.message)
        suite.set("tests", str(len(self.comparisons) + len(self.failures) + len(self.skipped)))
        suite.set("failures", str(failures))
        suite.set("errors", "0")
        suite.set("skipped", str(skipped))
        notes = [self.summary()]
        ET.SubElement(suite, "system-out").text = "\n".join(notes)
        root = ET.Element("testsuites", name="wiremark gate")
        for attr in ("tests", "failures", "errors", "skipped"):
            root.set(attr, suite.get(attr, "0"))
        root.append(suite)
        ET.indent(root)
        return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, "unicode") + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "exit_status": self.exit_status,
            "headline": self.headline(),
            "baseline": self.baseline,
            "current": self.current,
            "alpha": self.alpha,
            "test": TESTS[self.unit],
            "unit": self.unit,
            "rules": [
                {
                    "rule": r.text,
                    "field": r.column,
                    "direction": "rise" if r.sign > 0 else "fall",
                    "threshold_pct": r.threshold_pct,
                    "noise_pct": self.noise_pct.get(r.text),  # per observation (`unit`)
                }
                for r in self.rules
            ],
            "cells_in_common": self.cells_in_common,
            "regressions": [c.to_dict() for c in self.regressions],
            "improvements": [c.to_dict() for c in self.improvements],
            "unchanged": [c.to_dict() for c in self.unchanged],
            "insufficient": [c.to_dict() for c in self.insufficient],
            "failures": [f.to_dict() for f in self.failures],
            "warnings": [w.to_dict() for w in self.warnings],
            "skipped": [s.to_dict() for s in self.skipped],
            "added": self.added,
            "removed": self.removed,
        }

    def json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, ensure_ascii=False, allow_nan=False) + "\n"

    def _sorted(self) -> list[Comparison]:
        return sorted(self.comparisons, key=lambda c: (_ORDER[c.verdict], c.cell, c.rule.name))


def evaluate(
    baseline: records.Run,
    current: records.Run,
    rules: Iterable[str | Rule] | None = None,
    alpha: float = DEFAULT_ALPHA,
    *,
    include_client_bound: bool = False,
) -> Verdict:
    """Compare two runs cell by cell under `rules` (the defaults when None), each trial an
    observation. Drift between the runs is outside this test: the verdict warns so.

    Raises GateError (a ValueError) when the input cannot be judged: bad rules or alpha, or no
    cells in common."""
    for run in (baseline, current):
        _not_ab(run)
    verdict = _verdict(
        baseline.label,
        current.label,
        _group(baseline),
        _group(current),
        rules,
        alpha,
        TRIALS,
        baseline.path,
        current.path,
    )
    verdict.warnings.append(
        Finding(
            "drift",
            "one baseline run: drift of the machine between the two runs is outside this test "
            "(the trials of a run agree more closely than two runs do); measure both arms in "
            "one run (`bench --ab` or `--baseline-target`, then `wiremark gate RESULTS`), or "
            "give several baseline runs",
        )
    )
    return _judge(verdict, current, baseline, _compare_trials, include_client_bound)


def evaluate_runs(
    baselines: Sequence[records.Run],
    current: records.Run,
    rules: Iterable[str | Rule] | None = None,
    alpha: float = DEFAULT_ALPHA,
    *,
    include_client_bound: bool = False,
) -> Verdict:
    """Compare the current run with several baseline runs, each run (its trials' median) an
    observation, so that drift between runs is part of the noise the test allows for."""
    if len(baselines) < 2:
        raise GateError("a run-level comparison needs at least two baseline runs")
    for run in (*baselines, current):
        _not_ab(run)
    _same_kind(baselines)
    merged: dict[Key, list[dict[str, Any]]] = {}
    for index, run in enumerate(baselines):
        for key, cells in _group(run).items():
            merged.setdefault(key, []).extend({**c, _RUN: index} for c in cells)
    label = f"{len(baselines)} runs ({baselines[0].label} ... {baselines[-1].label})"
    verdict = _verdict(
        label,
        current.label,
        merged,
        _group(current),
        rules,
        alpha,
        RUNS,
        baselines[0].path,
        current.path,
    )
    cur = _group(current)
    for key in list(cur):
        cur[key] = [{**c, _RUN: 0} for c in cur[key]]
    return _judge(
        verdict, current, baselines[-1], _compare_runs, include_client_bound, groups=(merged, cur)
    )


def evaluate_ab(
    run: records.Run,
    rules: Iterable[str | Rule] | None = None,
    alpha: float = DEFAULT_ALPHA,
    *,
    include_client_bound: bool = False,
) -> Verdict:
    """Compare the arms of one A/B run block by block (`bench --ab`): drift of the machine
    that is slow against one block falls on both arms alike and cancels."""
    if not run.is_ab:
        raise GateError(
            f"{run.path}: not an A/B run (its cells have no arm); compare it with a baseline: "
            f"wiremark gate --baseline BASELINE --current {run.path}"
        )
    arms = {name: [c for c in run.cells if c.get("arm") == name] for name in records.ARMS}
    missing = [name for name, cells in arms.items() if not cells]
    if missing:
        raise GateError(f"{run.path}: an A/B run without cells of its {missing[0]} arm")
    current = run.arm(records.CURRENT)  # its cells and its conformance entries
    base, cur = _group(run.arm(records.BASELINE)), _group(current)
    only_b = [k for k in base if k not in cur]
    only_c = [k for k in cur if k not in base]
    if only_b or only_c:
        shown = ", ".join(cell_label(k) for k in (only_b + only_c)[:3])
        raise GateError(
            f"{run.path}: the arms ran different cells ({len(only_b)} only in the baseline, "
            f"{len(only_c)} only in the current arm: {shown}); an A/B run's arms share one plan"
        )
    verdict = _verdict(
        f"{run.label} baseline arm",
        f"{run.label} current arm",
        base,
        cur,
        rules,
        alpha,
        BLOCKS,
        run.path,
        run.path,
    )
    for entry in run.conformance:
        failed = isinstance(entry, dict) and entry.get("passed") is False
        if failed and entry.get("arm") == records.BASELINE:
            verdict.warnings.append(
                Finding(
                    "baseline",
                    "the baseline arm failed conformance",
                    f"{entry.get('model')}/{entry.get('transport')}",
                )
            )
    verdict.warnings += _long_requests(run, (base, cur))
    if not run.meta.get("finished"):
        verdict.warnings.append(Finding("run", "the A/B run did not finish; comparing its cells"))
    return _judge(verdict, current, None, _compare_blocks, include_client_bound, groups=(base, cur))


# A turn of an interleaved A/B cell should last this many times the cell's p99 at least
TURN_OVER_P99 = 10


def _long_requests(
    run: records.Run, groups: tuple[dict[Key, list[dict[str, Any]]], ...]
) -> list[Finding]:
    """Cells whose slow requests are long against the arms' turns (`ab.slot_ms`): a request
    that outlasts its turn overlaps the other arm's, and the two servers share the machine
    for a while, which blurs the comparison (alike for both arms: precision, not fairness)."""
    ab = run.meta.get("ab")
    slot_ms = ab.get("slot_ms") if isinstance(ab, dict) else None
    if not isinstance(slot_ms, (int, float)) or slot_ms <= 0:
        return []  # back-to-back cells (runs before the turns), or not recorded
    found = []
    for key in groups[0]:
        p99s = [
            float(c["p99_ms"])
            for group in groups
            for c in group.get(key, [])
            if isinstance(c.get("p99_ms"), (int, float))
        ]
        p99 = statistics.median(p99s) if p99s else 0.0
        if p99 * TURN_OVER_P99 > slot_ms:
            found.append(
                Finding(
                    "turns",
                    f"the p99 ({p99:.1f} ms) is over 1/{TURN_OVER_P99} of "
                    f"a turn ({slot_ms:g} ms): requests outlast their arm's turn; give bench "
                    "a longer --ab-slot-ms",
                    cell_label(key),
                )
            )
    return found


_RUN = "_run"  # the index of the baseline run a cell came from (run-level comparisons)


def _not_ab(run: records.Run) -> None:
    if run.is_ab:
        raise GateError(
            f"{run.path} is an A/B run: gate its arms against each other with "
            f"`wiremark gate {run.path}`"
        )


def _same_kind(runs: Sequence[records.Run]) -> None:
    """Several baseline runs must be one scenario, written by one schema."""
    versions = sorted({str(r.meta.get("schema_version")) for r in runs})
    if len(versions) > 1:
        raise GateError(
            f"the baseline runs mix schema versions ({', '.join(versions)}): give runs of one "
            "wiremark version"
        )

    def plan(run: records.Run) -> Any:
        scenario = run.meta.get("scenario")
        if not isinstance(scenario, dict):
            return scenario
        return {k: v for k, v in scenario.items() if not k.startswith("inject_")}

    first = plan(runs[0])
    for run in runs[1:]:
        if plan(run) != first:
            name = (run.meta.get("scenario") or {}).get("name", "?")
            first_name = (runs[0].meta.get("scenario") or {}).get("name", "?")
            raise GateError(
                f"the baseline runs mix scenarios: {run.path} ran {name!r}, "
                f"{runs[0].path} ran {first_name!r} (or other settings); give runs of one"
            )


def _verdict(
    baseline_label: str,
    current_label: str,
    base_groups: Mapping[Key, list[dict[str, Any]]],
    cur_groups: Mapping[Key, list[dict[str, Any]]],
    rules: Iterable[str | Rule] | None,
    alpha: float,
    unit: str,
    baseline_path: Path,
    current_path: Path,
) -> Verdict:
    parsed = parse_rules(rules)
    if not (isinstance(alpha, int | float) and 0 < alpha < 1):
        raise GateError(f"alpha must be between 0 and 1, got {alpha!r}")
    common = [k for k in cur_groups if k in base_groups]
    if not common:
        raise GateError(
            f"no cells in common between {baseline_path} ({len(base_groups)} cells) and "
            f"{current_path} ({len(cur_groups)} cells): nothing to compare"
        )
    return Verdict(
        baseline=baseline_label,
        current=current_label,
        rules=parsed,
        alpha=float(alpha),
        added=[cell_label(k) for k in cur_groups if k not in base_groups],
        removed=[cell_label(k) for k in base_groups if k not in cur_groups],
        cells_in_common=len(common),
        unit=unit,
    )


Compare = Callable[
    [str, dict[str, Any], Rule, list[dict[str, Any]], list[dict[str, Any]], float],
    "Comparison | str",
]


def _judge(
    verdict: Verdict,
    current: records.Run,
    baseline: records.Run | None,
    compare: Compare,
    include_client_bound: bool,
    groups: tuple[Mapping[Key, list[dict[str, Any]]], Mapping[Key, list[dict[str, Any]]]]
    | None = None,
) -> Verdict:
    base_groups, cur_groups = groups or (_group(baseline), _group(current))  # type: ignore[arg-type]
    _check_current(current, cur_groups, verdict)
    if baseline is not None:
        _check_meta(baseline, current, verdict)
    for key in cur_groups:
        if key in base_groups:
            _compare_cell(
                key, base_groups[key], cur_groups[key], compare, verdict, include_client_bound
            )
    for rule in verdict.rules:
        if not any(c.rule == rule for c in verdict.comparisons):
            verdict.warnings.append(
                Finding("rule", f"rule {rule.text} compared no cell ({rule.column} not measured?)")
            )
    _adjust(verdict.comparisons, verdict.alpha)
    _check_noise(verdict)
    return verdict


def _adjust(comparisons: Sequence[Comparison], alpha: float) -> None:
    """Judge every comparison on its p adjusted for how many were made.

    Each cell x rule is a test at alpha; a scenario makes dozens, so an unchanged build would
    fail by chance now and then. Benjamini-Hochberg keeps the expected share of false
    regressions among those declared at alpha: a slowdown seen in many cells (a slower
    transport) stays significant at the unadjusted 5 vs 5 p of 0.004, while a lone cell must
    reach about alpha / m."""
    from scipy import stats

    judged = [c for c in comparisons if c.verdict != INSUFFICIENT]
    if not judged:
        return
    q_worse = stats.false_discovery_control([c.p_worse for c in judged], method="bh")
    q_better = stats.false_discovery_control([c.p_better for c in judged], method="bh")
    for c, qw, qb in zip(judged, q_worse, q_better, strict=True):
        _decide(c, float(qw), float(qb), alpha)


def _cv(values: Sequence[float]) -> float | None:
    if len(values) < 2:
        return None
    mean = statistics.fmean(values)
    return statistics.stdev(values) / abs(mean) if mean else None


def _spreads(c: Comparison, unit: str) -> list[float]:
    """The relative spread of one observation: the trials' (or runs') CV on each side, or
    for an A/B comparison the standard deviation of the arms' per-block log-ratios."""
    if unit == BLOCKS:
        if len(c.current) < 2 or len(c.baseline) != len(c.current):
            return []
        b, cur, _ = paired.scaled(c.baseline, c.current)
        return [statistics.stdev(y - x for x, y in zip(b, cur, strict=True))]
    return [cv for cv in (_cv(c.baseline), _cv(c.current)) if cv is not None]


def _check_noise(verdict: Verdict) -> None:
    """Warn about rules that are tight against the noise between observations."""
    what = {
        TRIALS: "between trials (pooled CV)",
        RUNS: "between runs (pooled CV of the runs' medians)",
        BLOCKS: "between blocks (pooled spread of the arms' per-block log-ratio)",
    }[verdict.unit]
    for rule in verdict.rules:
        cvs = [
            cv for c in verdict.comparisons if c.rule == rule for cv in _spreads(c, verdict.unit)
        ]
        if not cvs:
            continue
        noise = 100.0 * math.sqrt(statistics.fmean(cv * cv for cv in cvs))  # pooled
        verdict.noise_pct[rule.text] = round(noise, 3)
        if rule.threshold_pct < NOISE_WARN_FACTOR * noise:
            verdict.warnings.append(
                Finding(
                    "noise",
                    f"rule {rule.text} is tight against the noise: {rule.column} varies by "
                    f"{noise:.1f}% {what}, so a change of the threshold's size cannot be told "
                    f"from noise by one observation; {NOISE_SAFE_FACTOR * noise:.0f}% "
                    f"({NOISE_SAFE_FACTOR:g}× the spread) or more, more "
                    f"{'blocks' if verdict.unit == BLOCKS else verdict.unit}, or a quieter "
                    "machine is needed (see each comparison's detectable change)",
                )
            )


def _check_current(
    current: records.Run, groups: Mapping[Key, list[dict[str, Any]]], verdict: Verdict
) -> None:
    """Conformance and validity failures of the current run."""
    for entry in current.conformance:
        if isinstance(entry, dict) and entry.get("passed") is False:
            mismatches = [str(m) for m in entry.get("mismatches") or []]
            shown = "; ".join(mismatches[:3]) + (" ..." if len(mismatches) > 3 else "")
            verdict.failures.append(
                Finding(
                    "conformance",
                    f"conformance check failed: {shown or 'replies differ from the reference'}",
                    f"{entry.get('model')}/{entry.get('transport')}",
                )
            )
    if not current.conformance:
        verdict.warnings.append(
            Finding("conformance", "the current run has no conformance results to check")
        )
    for key, cells in groups.items():
        label = cell_label(key)
        mismatched = [c for c in cells if _count(c.get("sample_mismatches")) > 0]
        if mismatched:
            total = sum(int(_count(c.get("sample_mismatches"))) for c in mismatched)
            verdict.failures.append(
                Finding(
                    "conformance",
                    f"{total} sampled replies differ from the in-process reference "
                    f"(trial {_trials(mismatched)})",
                    label,
                )
            )
        invalid = [c for c in cells if _is_invalid(c)]
        if invalid:
            reasons: list[str] = []
            for c in invalid:
                found = [str(r) for r in c.get("invalid_reasons") or []]
                if _count(c.get("errors")) > 0:
                    found.append(f"{int(_count(c.get('errors')))} errors")
                reasons += [r for r in found if r not in reasons]
            verdict.failures.append(
                Finding(
                    "invalid",
                    f"invalid cell (trial {_trials(invalid)}): "
                    f"{'; '.join(reasons) or 'marked invalid'}",
                    label,
                )
            )


def _check_meta(baseline: records.Run, current: records.Run, verdict: Verdict) -> None:
    """Warnings about what else differs between the runs."""
    warn = verdict.warnings
    for name, run in (("baseline", baseline), ("current", current)):
        if not run.meta.get("finished"):
            warn.append(Finding("run", f"the {name} run did not finish; comparing its cells"))
    if baseline.meta.get("run_id") and baseline.meta.get("run_id") == current.meta.get("run_id"):
        warn.append(Finding("run", "baseline and current have the same run_id"))
    bm, cm = baseline.meta.get("machine") or {}, current.meta.get("machine") or {}
    if isinstance(bm, dict) and isinstance(cm, dict):
        differ = [k for k in ("cpu_model", "cpus", "memory_gib") if bm.get(k) != cm.get(k)]
        if differ:
            changes = ", ".join(f"{k} {bm.get(k)} -> {cm.get(k)}" for k in differ)
            warn.append(
                Finding(
                    "machine",
                    f"the runs used different machines ({changes}): "
                    "a change may be the machine, not the code",
                )
            )
    bs, cs = baseline.meta.get("scenario"), current.meta.get("scenario")
    if bs != cs:
        if isinstance(bs, dict) and isinstance(cs, dict):
            keys = sorted(k for k in {*bs, *cs} if bs.get(k) != cs.get(k))
            what = f" ({', '.join(keys)})"
        else:
            what = ""
        warn.append(Finding("scenario", f"the scenario settings differ{what}"))
    bv, cv = baseline.meta.get("versions") or {}, current.meta.get("versions") or {}
    if isinstance(bv, dict) and isinstance(cv, dict):
        changed = [
            f"{k} {bv.get(k)} -> {cv.get(k)}" for k in sorted({*bv, *cv}) if bv.get(k) != cv.get(k)
        ]
        if changed:
            warn.append(Finding("versions", f"package versions differ: {', '.join(changed)}"))


def _compare_cell(
    key: Key,
    base_cells: list[dict[str, Any]],
    cur_cells: list[dict[str, Any]],
    compare: Compare,
    verdict: Verdict,
    include_client_bound: bool,
) -> None:
    rules = verdict.rules
    label = cell_label(key)
    key_dict = dict(zip(records.CELL_KEY, key, strict=True))
    bad_base = [c for c in base_cells if _is_invalid(c)]
    if bad_base:
        verdict.warnings.append(
            Finding("baseline", f"baseline trial {_trials(bad_base)} invalid: left out", label)
        )
    base = [c for c in base_cells if not _is_invalid(c)]
    cur = [c for c in cur_cells if not _is_invalid(c)]
    bound = [
        name
        for name, cells in (("current", cur), ("baseline", base))
        if any(c.get("client_bound") for c in cells)
    ]
    if bound:
        which = " and ".join(bound)
        if include_client_bound:
            verdict.warnings.append(
                Finding(
                    "client-bound",
                    f"client-bound in the {which} run: compared anyway (--include-client-bound);"
                    " the numbers measure the load generator, not the server",
                    label,
                )
            )
        else:
            verdict.warnings.append(
                Finding(
                    "client-bound",
                    f"client-bound in the {which} run: the numbers measure the load generator, "
                    "not the server; not compared (--include-client-bound compares it)",
                    label,
                )
            )
            for rule in rules:
                verdict.skipped.append(Finding("client-bound", f"{rule.text}: client-bound", label))
            return
    for rule in rules:
        got = compare(label, key_dict, rule, base, cur, verdict.alpha)
        if isinstance(got, str):
            verdict.skipped.append(Finding("unmeasured", f"{rule.text}: {got}", label))
        else:
            verdict.comparisons.append(got)


def _compare_trials(
    label: str,
    key: dict[str, Any],
    rule: Rule,
    base: list[dict[str, Any]],
    cur: list[dict[str, Any]],
    alpha: float,
) -> Comparison | str:
    b, c = _values(base, rule.column), _values(cur, rule.column)
    if not b or not c:
        return f"no valid {rule.column} in the {'baseline' if not b else 'current run'}"
    out = _compare(label, key, rule, b, c, alpha)
    out.ci_pct, out.detectable_pct = paired.welch(b, c, alpha, rule.threshold_pct)
    if out.verdict == INSUFFICIENT:
        out.detectable_pct = math.inf
    return out


def _compare_blocks(
    label: str,
    key: dict[str, Any],
    rule: Rule,
    base: list[dict[str, Any]],
    cur: list[dict[str, Any]],
    alpha: float,
) -> Comparison | str:
    """The arms' values paired by block; blocks missing either arm are left out."""
    by_block_b = {_block(c): c for c in base}
    by_block_c = {_block(c): c for c in cur}
    b: list[float] = []
    c: list[float] = []
    for block in sorted(k for k in by_block_c if k in by_block_b):
        vb, vc = (
            _values([by_block_b[block]], rule.column),
            _values([by_block_c[block]], rule.column),
        )
        if vb and vc:
            b.append(vb[0])
            c.append(vc[0])
    if not b:
        return f"no block with a valid {rule.column} on both arms"
    est = paired.paired(b, c, alpha, rule.threshold_pct)
    return _from_estimate(label, key, rule, b, c, est, alpha, BLOCKS)


def _block(cell: Mapping[str, Any]) -> int:
    value = cell.get("block")
    return int(value if value is not None else _count(cell.get("trial")))


def _compare_runs(
    label: str,
    key: dict[str, Any],
    rule: Rule,
    base: list[dict[str, Any]],
    cur: list[dict[str, Any]],
    alpha: float,
) -> Comparison | str:
    """Each run's median of its trials is one observation."""

    def medians(cells: list[dict[str, Any]]) -> list[float]:
        runs: dict[Any, list[dict[str, Any]]] = {}
        for cell in cells:
            runs.setdefault(cell.get(_RUN), []).append(cell)
        out = [_values(group, rule.column) for _, group in sorted(runs.items())]
        return [statistics.median(v) for v in out if v]

    b, c = medians(base), medians(cur)
    if not b or not c:
        return f"no valid {rule.column} in the {'baseline runs' if not b else 'current run'}"
    est = paired.pooled(b, c, alpha, rule.threshold_pct)
    return _from_estimate(label, key, rule, b, c, est, alpha, RUNS)


def _from_estimate(
    label: str,
    key: dict[str, Any],
    rule: Rule,
    b: list[float],
    c: list[float],
    est: paired.Estimate,
    alpha: float,
    unit: str,
) -> Comparison:
    p_worse, p_better = (
        (est.p_greater, est.p_less) if rule.sign > 0 else (est.p_less, est.p_greater)
    )
    change = est.change_pct
    p = p_better if -rule.sign * change > 0 else p_worse
    out = Comparison(
        label,
        key,
        rule,
        b,
        c,
        statistics.median(b),
        statistics.median(c),
        change,
        p,
        est.min_p,
        UNCHANGED,
        p_worse=p_worse,
        p_better=p_better,
        ci_pct=est.ci_pct,
        detectable_pct=est.detectable_pct,
        unit=unit,
    )
    if est.min_p > alpha * (1 + _P_TOLERANCE) or not math.isfinite(est.detectable_pct):
        out.verdict = INSUFFICIENT
        out.q_value = p
        need = "at least 2 runs on one side" if unit == RUNS else f"≥{blocks_needed(alpha)} blocks"
        out.note = (
            f"{out.observations}: the smallest attainable p is {_p(est.min_p)} > alpha "
            f"{alpha:g}; need {need}"
            if est.min_p > alpha * (1 + _P_TOLERANCE)
            else f"{out.observations}: no spread to judge by; need {need}"
        )
        if rule.worse(change):
            out.note += f"; would be a regression ({_pct(change)} beyond {rule.text})"
    else:
        _decide(out, p_worse, p_better, alpha)
    return out


def blocks_needed(alpha: float = DEFAULT_ALPHA) -> int:
    """The fewest A/B blocks whose sign-flip test can reach p <= alpha (2**-n <= alpha)."""
    n = 1
    while 2.0**-n > alpha * (1 + _P_TOLERANCE):
        n += 1
    return n


def _compare(
    label: str, key: dict[str, Any], rule: Rule, b: list[float], c: list[float], alpha: float
) -> Comparison:
    med_b, med_c = statistics.median(b), statistics.median(c)
    if med_b:
        change = (med_c - med_b) / abs(med_b) * 100.0
    else:
        change = 0.0 if med_c == med_b else math.copysign(math.inf, med_c)
    bad, good = ("greater", "less") if rule.sign > 0 else ("less", "greater")
    p_worse = mann_whitney_p(c, b, bad)
    p_better = mann_whitney_p(c, b, good)
    p = p_better if -rule.sign * change > 0 else p_worse
    floor = min_attainable_p(len(b), len(c))
    out = Comparison(label, key, rule, b, c, med_b, med_c, change, p, floor, UNCHANGED)
    out.p_worse, out.p_better = p_worse, p_better
    if floor > alpha * (1 + _P_TOLERANCE):
        out.verdict = INSUFFICIENT
        out.q_value = p
        out.note = (
            f"{len(b)} vs {len(c)} trials: the smallest attainable p is {_p(floor)} > alpha "
            f"{alpha:g}; need ≥{trials_needed(alpha)} per side"
        )
        if rule.worse(change):
            out.note += f"; would be a regression ({_pct(change)} beyond {rule.text})"
    else:
        _decide(out, p_worse, p_better, alpha)
    return out


def _decide(c: Comparison, q_worse: float, q_better: float, alpha: float) -> None:
    """The verdict of a judged comparison from its (adjusted) p-values."""
    rule, change = c.rule, c.change_pct
    q = q_better if -rule.sign * change > 0 else q_worse
    c.q_value = q
    if rule.worse(change) and _significant(q_worse, alpha):
        c.verdict = REGRESSION
        c.note = f"{_pct(change)} beyond {rule.text}, p={_p(c.p_worse)}, q={_p(q_worse)}"
    elif rule.better(change) and _significant(q_better, alpha):
        c.verdict, c.note = IMPROVEMENT, f"{_pct(change)}, p={_p(c.p_better)}, q={_p(q_better)}"
    else:
        c.verdict = UNCHANGED
        if rule.worse(change) or rule.better(change):
            c.note = f"beyond the threshold but not significant (q={_p(q)} > {alpha:g})"
        elif _significant(q, alpha):
            c.note = f"significant (q={_p(q)}) but within {rule.text}"
        else:
            c.note = "within the threshold"


# --- formatting ------------------------------------------------------------------------------


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _num(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    size = abs(value)
    if size >= 100:
        return f"{value:.0f}"
    if size >= 10:
        return f"{value:.1f}"
    if size >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _pct(change: float) -> str:
    return f"{change:+.1f}%" if math.isfinite(change) else f"{change:+}"


def _p(p: float) -> str:
    return f"{p:.3g}"


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_list(labels: Sequence[str], limit: int = 20) -> str:
    shown = ", ".join(f"`{label}`" for label in labels[:limit])
    return shown + (f" ... and {len(labels) - limit} more" if len(labels) > limit else "")


_VERDICT_MD = {
    REGRESSION: "❌ regression",
    IMPROVEMENT: "🚀 improvement",
    UNCHANGED: "unchanged",
    INSUFFICIENT: "⚠️ not enough trials",
}


def _md_rows(rows: Sequence[Comparison], limit: int) -> list[str]:
    """Table rows, at most `limit` (a pull-request comment holds 65,536 characters)."""
    out = [_md_row(c) for c in rows[:limit]]
    if len(rows) > limit:
        out.append(f"| ... and {len(rows) - limit} more (see the JSON or JUnit report) |")
    return out


def _md_row(c: Comparison) -> str:
    cells = [
        f"`{c.cell}`",
        f"`{c.rule.text}`",
        f"{_num(c.baseline_median)} {c.rule.unit}",
        f"{_num(c.current_median)} {c.rule.unit}",
        c.interval(),
        _p(c.p_value),
        _p(c.q_value),
        c.observations,
        c.detectable(),
        _VERDICT_MD[c.verdict],
    ]
    return "| " + " | ".join(_md(x) for x in cells) + " |"


def _detail(c: Comparison) -> str:
    return (
        f"{c.note}\nbaseline {c.rule.column}: {', '.join(_num(v) for v in c.baseline)}\n"
        f"current {c.rule.column}: {', '.join(_num(v) for v in c.current)}\n"
        f"change {c.interval()} ({paired.CONFIDENCE:.0%} CI), {c.observations}; "
        f"detectable {c.detectable()}; smallest attainable p: {_p(c.min_p)}"
    )


# --- the command -----------------------------------------------------------------------------


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "gate",
        help="compare a run with a baseline; exit 1 on a significant regression",
        description=(
            "Compare the arms of an A/B run (wiremark gate RESULTS: paired by block, sign-flip "
            "test), or a current result file with one baseline (trials as the unit, "
            "Mann-Whitney U) or several (runs as the unit, t-test), cell by cell. A regression "
            "is a change beyond a rule's threshold that is also significant after a "
            "Benjamini-Hochberg adjustment. Exit status: 0 pass, 1 regression or "
            "conformance/validity failure, 2 unusable input."
        ),
    )
    p.add_argument(
        "results",
        nargs="?",
        metavar="RESULTS",
        help="an A/B run's results.json (or its dir): its arms are compared block by block",
    )
    p.add_argument(
        "--baseline",
        nargs="+",
        metavar="RESULTS",
        help="baseline results.json (or its dir); several: runs, not trials, are the unit",
    )
    p.add_argument("--current", metavar="RESULTS", help="current results.json (or its dir)")
    p.add_argument(
        "--rule",
        action="append",
        default=[],
        metavar="FIELD:±N%",
        help=(
            "FIELD:+N%% fails when FIELD rises by more than N%%, FIELD:-N%% when it falls; "
            f"fields {', '.join(FIELDS)} (tax: the transport tax, p50 minus the in-process "
            "time); repeatable "
            f"(default: {' '.join(DEFAULT_RULES).replace('%', '%%')})"
        ),
    )
    p.add_argument(
        "--alpha",
        type=float,
        default=DEFAULT_ALPHA,
        help=f"significance level of the one-sided test (default: {DEFAULT_ALPHA:g})",
    )
    p.add_argument(
        "--include-client-bound",
        action="store_true",
        help="compare client-bound cells too (they measure the load generator)",
    )
    p.add_argument("--markdown", metavar="FILE", help="write a Markdown summary ('-': stdout)")
    p.add_argument("--junit", metavar="FILE", help="write JUnit XML ('-': stdout)")
    p.add_argument("--json", metavar="FILE", help="write the verdict as JSON ('-': stdout)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    rules = parse_rules(args.rule)
    outputs = {
        "markdown": args.markdown,
        "junit": args.junit,
        "json": args.json,
    }
    to_stdout = [name for name, target in outputs.items() if target == "-"]
    if len(to_stdout) > 1:
        raise GateError(f"only one output can go to stdout ('-'), not {' and '.join(to_stdout)}")
    options = {"include_client_bound": args.include_client_bound}
    if args.results is not None:
        if args.baseline or args.current:
            raise GateError(
                "give an A/B run (wiremark gate RESULTS) or --baseline and --current, not both"
            )
        verdict = evaluate_ab(records.load(args.results), rules, args.alpha, **options)
    else:
        if not args.baseline or not args.current:
            raise GateError(
                "give an A/B run (wiremark gate RESULTS), or --baseline B [B ...] and --current C"
            )
        baselines = records.load_all(args.baseline)
        current = records.load(args.current)
        if len(baselines) > 1:
            verdict = evaluate_runs(baselines, current, rules, args.alpha, **options)
        else:
            verdict = evaluate(baselines[0], current, rules, args.alpha, **options)
    texts = {"markdown": verdict.markdown, "junit": verdict.junit, "json": verdict.json}
    # The summary goes to stderr when stdout carries a machine-readable report.
    (sys.stderr if to_stdout else sys.stdout).write(verdict.summary())
    for name, target in outputs.items():
        if not target:
            continue
        text = texts[name]()
        if target == "-":
            sys.stdout.write(text)
        else:
            Path(target).write_text(text, encoding="utf-8")
    return verdict.exit_status
