"""Latency histograms merged across load workers: the percentiles of the merge against the
exact percentiles of the pooled samples, within the histogram's stated precision. Synthetic
samples only: no server, no clock."""

from __future__ import annotations

import math

import numpy as np
import pytest

from wiremark.harness.histogram import DIGITS, Latencies
from wiremark.reports.records import PERCENTILES


def exact(values_ms: np.ndarray, q: float) -> float:
    """The nearest-rank percentile of the samples, as recorded (whole microseconds): the
    smallest value with at least q% of the samples at or below it."""
    us = np.sort(np.maximum(1, np.round(values_ms * 1000.0)))
    rank = max(1, math.floor(q / 100.0 * us.size + 0.5))  # HdrHistogram's rounding
    return float(us[rank - 1]) / 1000.0


def workers_samples(seed: int) -> list[np.ndarray]:
    """Four workers that saw different latencies: a fast one, slower ones, one with a tail
    reaching seconds (a stall), from a few hundred to tens of thousands of samples."""
    rng = np.random.default_rng(seed)
    return [
        rng.lognormal(np.log(0.35), 0.3, 20_000),
        rng.lognormal(np.log(1.2), 0.5, 5_000),
        rng.lognormal(np.log(4.0), 0.8, 700),
        np.concatenate([rng.lognormal(np.log(0.9), 0.4, 9_000), rng.uniform(200, 3000, 90)]),
    ]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_merged_percentiles_are_the_pooled_samples_within_the_stated_precision(seed):
    parts = workers_samples(seed)
    merged = Latencies.merged([Latencies.of(p).encode() for p in parts])
    pooled = np.concatenate(parts)
    assert merged.count == pooled.size
    summary = merged.summary()
    tolerance = 10.0**-DIGITS  # 3 significant digits: within 1 part in 1,000
    for key, q, _ in PERCENTILES:
        want = exact(pooled, q)
        assert summary[key] == pytest.approx(want, rel=tolerance, abs=0.001), (key, q)
    assert summary["max"] == pytest.approx(pooled.max(), rel=tolerance, abs=0.001)
    assert summary["mean"] == pytest.approx(pooled.mean(), rel=tolerance)


def test_merging_is_lossless_whatever_the_order_or_grouping():
    parts = workers_samples(3)
    one = Latencies.of(np.concatenate(parts))
    forward = Latencies.merged([Latencies.of(p).encode() for p in parts])
    backward = Latencies.merged([Latencies.of(p).encode() for p in reversed(parts)])
    pairs = Latencies.merged(
        [
            Latencies.merged(
                [Latencies.of(parts[0]).encode(), Latencies.of(parts[1]).encode()]
            ).encode(),
            Latencies.merged(
                [Latencies.of(parts[2]).encode(), Latencies.of(parts[3]).encode()]
            ).encode(),
        ]
    )
    for other in (forward, backward, pairs):
        assert other.summary() == one.summary()
        assert list(other.hist.counts) == list(one.hist.counts)


def test_per_worker_percentiles_cannot_be_averaged_and_the_merge_does_not_need_to():
    """Why workers ship histograms: the mean of the workers' p99 is far from the p99 of
    everything they measured, when the workers saw different latencies."""
    parts = workers_samples(4)
    pooled = np.concatenate(parts)
    averaged = float(np.mean([exact(p, 99.0) for p in parts]))
    merged = Latencies.merged([Latencies.of(p).encode() for p in parts]).percentile(99.0)
    assert merged == pytest.approx(exact(pooled, 99.0), rel=10.0**-DIGITS)
    assert abs(averaged - exact(pooled, 99.0)) > 0.2 * exact(pooled, 99.0)


def test_an_empty_histogram_has_no_percentiles_and_bad_text_is_refused():
    empty = Latencies.merged([])
    assert empty.count == 0 and set(empty.summary().values()) == {None}
    assert Latencies.decode(empty.encode()).count == 0
    with pytest.raises(ValueError, match="not an encoded HdrHistogram"):
        Latencies.decode("not a histogram")


def test_values_outside_the_range_are_clamped_not_lost():
    h = Latencies.of([0.0, 0.0004, 1e10])
    assert h.count == 3
    assert h.percentile(1) == 0.001  # 1 µs, the lowest value kept
    assert h.summary()["max"] == pytest.approx(3_600_000.0, rel=10.0**-DIGITS)  # an hour
