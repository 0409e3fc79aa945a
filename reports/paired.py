"""The gate's statistics beside Mann–Whitney: the paired A/B test, the run-level test, and
what each comparison could have detected.

**A/B, one file (the unit is the block).** In block b a cell sent to both arms by turns
(a quarter second each, in pairs whose order was drawn at random), so each arm's value of
the block pools the same seconds of the machine. For a rule's field let
d_b = ln(current_b / baseline_b) (or, for a field that can be zero or negative, the
difference over the baseline's median: `scaled`).
The model is d_b = delta + e_b: a machine that drifts slowly compared with one turn
scales both arms of a block alike, so the drift cancels in d_b, and what remains, e_b, is
independent between blocks and symmetric about 0. Under "no change" (delta = 0) every sign
pattern of the d_b is as likely as the observed one, because which arm had which turns was
random; the test is the **sign-flip permutation test** of the mean of d (exact over all
2**n patterns up to `EXACT_BLOCKS` blocks, a seeded Monte Carlo of `MONTE_CARLO` patterns
beyond). Its smallest attainable p is 2**-n: 5 blocks reach 0.031. The estimate is
exp(mean d) - 1, with a Student-t interval on mean d (n - 1 degrees of freedom).

**Several runs per side (the unit is the run).** A run's value of a cell is the median of
its trials; x = ln(value). The model is x = mu_side + u, with u normal with the same
variance on both sides: the run-to-run drift of a shared machine is the noise, which is
what one baseline run cannot show. The test is the **pooled two-sample t-test** on x
(n_b + n_c - 2 degrees of freedom; one current run against several baseline runs is the
prediction interval of the next run). The estimate is exp(mean x_c - mean x_b) - 1.

**Two files, trials as the unit** keep the Mann–Whitney test of `gate`; their interval
is Welch's on ln(trial values). It holds only for the noise within a run.

**The smallest detectable change** of a comparison is the change its test would find
with 80% power at alpha, given the spread it saw: (t_{1-alpha} + t_{0.8}) x the standard
error of the estimate, in per cent, and never less than the rule's threshold (a change
inside the threshold passes by design). It is infinite where even a perfect separation could
not reach alpha.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

EXACT_BLOCKS = 16  # 65,536 sign patterns
MONTE_CARLO = 65_536
CONFIDENCE = 0.95  # the level of every interval the gate prints
POWER = 0.8  # of the smallest detectable change


@dataclass(frozen=True)
class Estimate:
    """A change in per cent with its interval and what could have been detected."""

    change_pct: float
    ci_pct: tuple[float, float] | None  # CONFIDENCE interval, None with too few observations
    p_greater: float  # one-sided p that the change is above 0
    p_less: float  # ... below 0
    detectable_pct: float  # the smallest change detectable at alpha with POWER (inf: none)
    min_p: float  # the smallest p this many observations could give


def scaled(
    baseline: Sequence[float], current: Sequence[float]
) -> tuple[list[float], list[float], bool]:
    """Both sides on the scale changes are measured on: ln(value) when every value is
    positive, else value / |median of the baseline|. Returns them and whether they are logs."""
    if all(v > 0 for v in (*baseline, *current)):
        return [math.log(v) for v in baseline], [math.log(v) for v in current], True
    scale = abs(statistics.median(baseline)) if baseline else 0.0
    scale = scale or 1.0
    return [v / scale for v in baseline], [v / scale for v in current], False


def to_pct(delta: float, logs: bool) -> float:
    """A shift on the `scaled` scale in per cent."""
    if logs:
        return math.expm1(delta) * 100.0 if delta < 700 else math.inf
    return delta * 100.0


def sign_flip_p(diffs: Sequence[float], alternative: str) -> float:
    """One-sided p of the sign-flip permutation test that the mean of `diffs` is above
    ("greater") or below ("less") zero. The observed pattern counts, so p >= 2**-n."""
    if alternative not in ("greater", "less"):
        raise ValueError(f"alternative must be 'greater' or 'less', not {alternative!r}")
    d = np.asarray(diffs, dtype=float)
    n = d.size
    if n == 0 or not np.any(d):
        return 1.0
    if n <= EXACT_BLOCKS:
        patterns = (np.arange(2**n)[:, None] >> np.arange(n)) & 1
    else:
        rng = np.random.default_rng(0)
        patterns = rng.integers(0, 2, size=(MONTE_CARLO, n))
        patterns[0] = 0  # the observed pattern
    sums = ((1 - 2 * patterns) * d).sum(axis=1)
    observed = d.sum()
    eps = 1e-12 * max(1.0, float(np.abs(d).sum()))
    hits = sums >= observed - eps if alternative == "greater" else sums <= observed + eps
    return float(np.count_nonzero(hits)) / len(sums)


def _t(q: float, df: float) -> float:
    from scipy import stats

    return float(stats.t.ppf(q, df))


def _interval(delta: float, se: float, df: float, logs: bool) -> tuple[float, float] | None:
    if df < 1 or not math.isfinite(se):
        return None
    half = _t(0.5 + CONFIDENCE / 2, df) * se
    return to_pct(delta - half, logs), to_pct(delta + half, logs)


def detectable(se: float, df: float, alpha: float, logs: bool, threshold_pct: float) -> float:
    """The smallest change (per cent, upwards) the test finds with POWER at alpha."""
    if df < 1 or not math.isfinite(se):
        return math.inf
    shift = (_t(1 - alpha, df) + _t(POWER, df)) * se
    return max(threshold_pct, to_pct(shift, logs))


def paired(
    baseline: Sequence[float], current: Sequence[float], alpha: float, threshold_pct: float
) -> Estimate:
    """The A/B comparison of per-block values (baseline[i] and current[i] from block i)."""
    if len(baseline) != len(current):
        raise ValueError("paired values need one baseline and one current value per block")
    n = len(baseline)
    b, c, logs = scaled(baseline, current)
    diffs = [y - x for x, y in zip(b, c, strict=True)]
    mean = statistics.fmean(diffs) if diffs else 0.0
    se = statistics.stdev(diffs) / math.sqrt(n) if n >= 2 else math.inf
    min_p = 2.0**-n if n else 1.0
    found = detectable(se, n - 1, alpha, logs, threshold_pct) if min_p <= alpha else math.inf
    return Estimate(
        change_pct=to_pct(mean, logs),
        ci_pct=_interval(mean, se, n - 1, logs),
        p_greater=sign_flip_p(diffs, "greater"),
        p_less=sign_flip_p(diffs, "less"),
        detectable_pct=found,
        min_p=min_p,
    )


def pooled(
    baseline: Sequence[float], current: Sequence[float], alpha: float, threshold_pct: float
) -> Estimate:
    """Runs as the unit: baseline and current are one value per run (its trials' median)."""
    from scipy import stats

    nb, nc = len(baseline), len(current)
    b, c, logs = scaled(baseline, current)
    delta = statistics.fmean(c) - statistics.fmean(b) if b and c else 0.0
    df = nb + nc - 2
    squares = sum((x - statistics.fmean(b)) ** 2 for x in b) if nb > 1 else 0.0
    squares += sum((x - statistics.fmean(c)) ** 2 for x in c) if nc > 1 else 0.0
    has_spread = (nb > 1 or nc > 1) and df >= 1
    se = math.sqrt(squares / df * (1 / nb + 1 / nc)) if has_spread and nb and nc else math.inf
    if math.isfinite(se) and se > 0:
        t = delta / se
        p_greater = float(stats.t.sf(t, df))
        p_less = float(stats.t.cdf(t, df))
    elif math.isfinite(se):  # no spread at all: only an exact tie says nothing
        p_greater = 0.0 if delta > 0 else 1.0
        p_less = 0.0 if delta < 0 else 1.0
    else:
        p_greater = p_less = 1.0
    min_p = 0.0 if math.isfinite(se) else 1.0
    return Estimate(
        change_pct=to_pct(delta, logs),
        ci_pct=_interval(delta, se, df, logs),
        p_greater=p_greater,
        p_less=p_less,
        detectable_pct=detectable(se, df, alpha, logs, threshold_pct),
        min_p=min_p,
    )


def welch(
    baseline: Sequence[float], current: Sequence[float], alpha: float, threshold_pct: float
) -> tuple[tuple[float, float] | None, float]:
    """Trials as the unit: Welch's interval of the change and the smallest detectable change
    (the within-run noise only)."""
    nb, nc = len(baseline), len(current)
    if nb < 2 or nc < 2:
        return None, math.inf
    b, c, logs = scaled(baseline, current)
    vb, vc = statistics.variance(b) / nb, statistics.variance(c) / nc
    se = math.sqrt(vb + vc)
    if se == 0:
        return None, max(threshold_pct, 0.0)
    df = (vb + vc) ** 2 / ((vb**2 / (nb - 1) if vb else 0.0) + (vc**2 / (nc - 1) if vc else 0.0))
    delta = statistics.fmean(c) - statistics.fmean(b)
    return _interval(delta, se, df, logs), detectable(se, df, alpha, logs, threshold_pct)
