"""Mergeable latency histograms: log-scale buckets whose quantiles are within 1% of exact.

A latency `x` (milliseconds) falls in bucket `ceil(log_gamma(x))`, which covers
`(gamma**(i-1), gamma**i]`. Reporting the bucket's value as `2 * gamma**i / (gamma + 1)` keeps
the relative error under `(gamma - 1) / (gamma + 1)`, about 0.99% for gamma = 1.02 (the
DDSketch construction). Histograms of hours and versions merge by adding bucket counts, so the
rollups store `(key, bucket, count)` rows and any window's percentiles come from their sums.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

GAMMA = 1.02
_LOG_GAMMA = math.log(GAMMA)
# Latencies at or below this many milliseconds count as zero: a microsecond is below any
# network call, and log-scale buckets would otherwise need thousands of them near 0.
ZERO_BELOW_MS = 1e-3
ZERO_BUCKET = -100_000  # far below ceil(log_gamma(ZERO_BELOW_MS)), about -349
RELATIVE_ERROR = (GAMMA - 1) / (GAMMA + 1)


def bucket_of(latency_ms: float) -> int:
    """The bucket a latency falls in."""
    if latency_ms <= ZERO_BELOW_MS:
        return ZERO_BUCKET
    return math.ceil(math.log(latency_ms) / _LOG_GAMMA)


def bucket_value(bucket: int) -> float:
    """The value reported for a bucket: within `RELATIVE_ERROR` of anything in it."""
    if bucket == ZERO_BUCKET:
        return 0.0
    return 2.0 * GAMMA**bucket / (GAMMA + 1.0)


class LatencyHistogram:
    """Counts per bucket; add latencies or merge other histograms, then read quantiles."""

    __slots__ = ("counts",)

    def __init__(self, counts: Mapping[int, int] | None = None) -> None:
        self.counts: dict[int, int] = dict(counts or {})

    @classmethod
    def of(cls, latencies: Iterable[float]) -> LatencyHistogram:
        histogram = cls()
        for latency in latencies:
            histogram.add(latency)
        return histogram

    def add(self, latency_ms: float, count: int = 1) -> None:
        bucket = bucket_of(latency_ms)
        self.counts[bucket] = self.counts.get(bucket, 0) + count

    def add_bucket(self, bucket: int, count: int) -> None:
        self.counts[bucket] = self.counts.get(bucket, 0) + count

    def merge(self, other: LatencyHistogram | Mapping[int, int]) -> None:
        counts = other.counts if isinstance(other, LatencyHistogram) else other
        for bucket, count in counts.items():
            self.counts[bucket] = self.counts.get(bucket, 0) + count

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def quantile(self, q: float) -> float | None:
        """The value of the item at rank `floor(q * (n - 1))` in sorted order, within 1%;
        None when empty. (The exact counterpart is numpy's `percentile(method="lower")`.)"""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile {q} is not in [0, 1]")
        total = self.total
        if total == 0:
            return None
        rank = math.floor(q * (total - 1))
        seen = 0
        for bucket in sorted(self.counts):
            seen += self.counts[bucket]
            if seen > rank:
                return bucket_value(bucket)
        raise AssertionError("unreachable: rank is below the total")

    def percentiles(self) -> dict[str, float | None]:
        """p50, p95 and p99, as the metrics report them."""
        return {"p50": self.quantile(0.5), "p95": self.quantile(0.95), "p99": self.quantile(0.99)}


__all__ = [
    "GAMMA",
    "RELATIVE_ERROR",
    "ZERO_BUCKET",
    "LatencyHistogram",
    "bucket_of",
    "bucket_value",
]
