"""Significance of the difference between two versions' production figures.

Rates (errors, thumbs up) by the two-proportion z-test; the p95 latency difference by a
bootstrap that resamples each version's histogram (multinomial over its buckets); the mean
score difference by Welch's t-test from the rollups' sums and sums of squares. Every answer
names its test, so a reader can check it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

from promptrecord.projections.latency_histogram import LatencyHistogram, bucket_value

CONFIDENCE = 0.95
BOOTSTRAP_ITERATIONS = 2000
BOOTSTRAP_SEED = 20260314  # fixed: the same rollups always give the same interval


@dataclass(frozen=True)
class Difference:
    """`b - a`, how sure we are it is not zero, and how that was worked out."""

    a: float | None
    b: float | None
    difference: float | None
    test: str
    p_value: float | None
    ci_low: float | None
    ci_high: float | None
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _missing(a: float | None, b: float | None, test: str, note: str) -> Difference:
    return Difference(a, b, None, test, None, None, None, note)


def two_proportions(x_a: int, n_a: int, x_b: int, n_b: int) -> Difference:
    """Two-sided pooled z-test of p_b = p_a; Wald interval of p_b - p_a."""
    test = "two-proportion z-test"
    p_a = x_a / n_a if n_a else None
    p_b = x_b / n_b if n_b else None
    if p_a is None or p_b is None:
        return _missing(p_a, p_b, test, "a version has no calls in the window")
    diff = p_b - p_a
    pooled = (x_a + x_b) / (n_a + n_b)
    se_pooled = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    # Both rates 0 or both 1: no evidence of a difference.
    p_value = 1.0 if se_pooled == 0 else float(2 * stats.norm.sf(abs(diff) / se_pooled))
    z = float(stats.norm.ppf(0.5 + CONFIDENCE / 2))
    se = math.sqrt(p_a * (1 - p_a) / n_a + p_b * (1 - p_b) / n_b)
    return Difference(p_a, p_b, diff, test, p_value, diff - z * se, diff + z * se)


def welch(
    mean_a: float | None,
    var_a: float | None,
    n_a: int,
    mean_b: float | None,
    var_b: float | None,
    n_b: int,
) -> Difference:
    """Welch's t-test of mean_b = mean_a, with its interval of mean_b - mean_a."""
    test = "Welch t-test"
    if mean_a is None or mean_b is None or var_a is None or var_b is None:
        return _missing(mean_a, mean_b, test, "each version needs at least 2 scores")
    diff = mean_b - mean_a
    se2 = var_a / n_a + var_b / n_b
    if se2 == 0:
        p_value = 1.0 if diff == 0 else 0.0
        return Difference(mean_a, mean_b, diff, test, p_value, diff, diff)
    se = math.sqrt(se2)
    dof = se2**2 / ((var_a / n_a) ** 2 / (n_a - 1) + (var_b / n_b) ** 2 / (n_b - 1))
    p_value = float(2 * stats.t.sf(abs(diff) / se, dof))
    t = float(stats.t.ppf(0.5 + CONFIDENCE / 2, dof))
    return Difference(mean_a, mean_b, diff, test, p_value, diff - t * se, diff + t * se)


def _resampled_quantiles(
    histogram: LatencyHistogram, q: float, iterations: int, rng: np.random.Generator
) -> np.ndarray[Any, np.dtype[np.float64]]:
    buckets = sorted(histogram.counts)
    counts = np.array([histogram.counts[b] for b in buckets], dtype=np.float64)
    total = int(counts.sum())
    values = np.array([bucket_value(b) for b in buckets])
    draws = rng.multinomial(total, counts / total, size=iterations)
    rank = math.floor(q * (total - 1))
    # The first bucket whose running count passes the rank, per draw (as `quantile` does).
    positions = (np.cumsum(draws, axis=1) > rank).argmax(axis=1)
    result: np.ndarray[Any, np.dtype[np.float64]] = values[positions]
    return result


def bootstrap_quantile(
    a: LatencyHistogram,
    b: LatencyHistogram,
    q: float = 0.95,
    iterations: int = BOOTSTRAP_ITERATIONS,
    seed: int = BOOTSTRAP_SEED,
) -> Difference:
    """Percentile-bootstrap interval of quantile_b - quantile_a, and a two-sided p-value
    (twice the share of resampled differences on the other side of zero)."""
    test = f"bootstrap of the p{round(q * 100)} difference ({iterations} resamples, seed {seed})"
    qa, qb = a.quantile(q), b.quantile(q)
    if qa is None or qb is None:
        return _missing(qa, qb, test, "a version has no calls in the window")
    rng = np.random.default_rng(seed)
    diffs = _resampled_quantiles(b, q, iterations, rng) - _resampled_quantiles(
        a, q, iterations, rng
    )
    alpha = 1 - CONFIDENCE
    low, high = np.quantile(diffs, [alpha / 2, 1 - alpha / 2])
    below, above = float(np.mean(diffs <= 0)), float(np.mean(diffs >= 0))
    p_value = min(1.0, 2 * min(below, above))
    return Difference(qa, qb, qb - qa, test, p_value, float(low), float(high))


__all__ = [
    "BOOTSTRAP_ITERATIONS",
    "BOOTSTRAP_SEED",
    "CONFIDENCE",
    "Difference",
    "bootstrap_quantile",
    "two_proportions",
    "welch",
]
