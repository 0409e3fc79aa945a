"""Latencies at full resolution, mergeable across load workers: an HdrHistogram (the
`hdrhistogram` package) of microseconds with 3 significant digits.

Every value from 1 µs to an hour is kept to within 1 part in 1,000 (values under 2,048 µs
exactly, to the microsecond), however many are recorded, in a few KB. Histograms from
several workers merge losslessly (`add`, `merged`): the percentiles of the merge are those
of the pooled samples to that precision, which neither averaging per-worker percentiles nor
Locust's two-digit response-time buckets can give.

A histogram travels as `encode()` text (HdrHistogram's compressed, base64 V2 encoding, the
one its Java, C and Go implementations read), in worker messages and in result files.
"""

from __future__ import annotations

from typing import Any

from hdrh.histogram import HdrHistogram

from wiremark.reports.records import PERCENTILES

LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # an hour; a longer latency is recorded as an hour
DIGITS = 3  # significant digits: values kept to within 1 part in 10**DIGITS


class Latencies:
    """One histogram of latencies, recorded in ms and kept in µs."""

    def __init__(self) -> None:
        self.hist = HdrHistogram(LOWEST_US, HIGHEST_US, DIGITS)

    def record(self, ms: float) -> None:
        self.hist.record_value(min(HIGHEST_US, max(LOWEST_US, round(ms * 1000.0))))

    def add(self, other: Latencies) -> None:
        self.hist.add(other.hist)

    def reset(self) -> None:
        self.hist.reset()

    @property
    def count(self) -> int:
        return int(self.hist.get_total_count())

    def percentile(self, q: float) -> float:
        """The latency (ms) at or below which `q` per cent of the values lie."""
        return self.hist.get_value_at_percentile(q) / 1000.0

    def summary(self) -> dict[str, float | None]:
        """p50 ... p999 (`PERCENTILES`), max and mean, in ms; None for an empty histogram."""
        out: dict[str, float | None] = {}
        n = self.count
        for key, q, _ in PERCENTILES:
            out[key] = round(self.percentile(q), 4) if n else None
        out["max"] = round(self.hist.get_max_value() / 1000.0, 4) if n else None
        out["mean"] = round(self.hist.get_mean_value() / 1000.0, 4) if n else None
        return out

    def encode(self) -> str:
        return self.hist.encode().decode("ascii")

    @classmethod
    def decode(cls, text: str) -> Latencies:
        """A histogram from `encode()` text; a ValueError for text that is not one."""
        out = cls()
        try:
            out.hist.decode_and_add(text.encode("ascii"))
        except Exception as exc:  # hdrh raises zlib, binascii and struct errors alike
            raise ValueError(f"not an encoded HdrHistogram: {exc}") from None
        return out

    @classmethod
    def merged(cls, encoded: list[str]) -> Latencies:
        """The merge of several encoded histograms (an empty one for none)."""
        out = cls()
        for text in encoded:
            out.add(cls.decode(text))
        return out

    @classmethod
    def of(cls, values_ms: Any) -> Latencies:
        out = cls()
        for ms in values_ms:
            out.record(float(ms))
        return out
