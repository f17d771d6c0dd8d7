"""The comparison statistics on constructed data whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from promptrecord.projections.latency_histogram import LatencyHistogram
from promptrecord.workers.metrics_stats import bootstrap_quantile, two_proportions, welch


def test_a_clear_rate_difference_has_a_small_p() -> None:
    result = two_proportions(20, 1000, 80, 1000)
    assert result.difference == pytest.approx(0.06)
    assert result.p_value is not None and result.p_value < 1e-8
    assert result.ci_low is not None and result.ci_high is not None
    assert 0 < result.ci_low < 0.06 < result.ci_high
    assert result.test == "two-proportion z-test"


def test_equal_rates_have_a_large_p() -> None:
    result = two_proportions(50, 1000, 50, 1000)
    assert result.difference == 0
    assert result.p_value == pytest.approx(1.0)
    assert result.ci_low is not None and result.ci_low < 0 < (result.ci_high or 0)
    assert two_proportions(0, 10, 0, 10).p_value == 1.0


def test_two_proportions_matches_the_chi_square_test() -> None:
    # The pooled z-test squared is the uncorrected chi-square of the 2x2 table.
    table = np.array([[30, 470], [52, 448]])
    _, expected, _, _ = stats.chi2_contingency(table, correction=False)
    assert two_proportions(30, 500, 52, 500).p_value == pytest.approx(expected)


def test_a_version_with_no_calls_has_no_difference() -> None:
    result = two_proportions(0, 0, 3, 10)
    assert result.difference is None and result.p_value is None and result.note


def test_welch_matches_scipy_and_sees_a_clear_difference() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(0.6, 0.1, 300), rng.normal(0.7, 0.15, 200)
    result = welch(a.mean(), a.var(ddof=1), len(a), b.mean(), b.var(ddof=1), len(b))
    expected = stats.ttest_ind(b, a, equal_var=False)
    assert result.p_value == pytest.approx(expected.pvalue)
    assert result.p_value < 1e-6
    assert welch(0.5, None, 1, 0.6, 0.01, 10).p_value is None


def test_bootstrap_interval_covers_the_true_p95_difference() -> None:
    rng = np.random.default_rng(5)
    # lognormal latencies; b is a's distribution scaled by 1.3, so p95_b - p95_a is known.
    sigma, mu = 0.5, 6.0
    true_p95_a = float(np.exp(mu + sigma * stats.norm.ppf(0.95)))
    a = LatencyHistogram.of(rng.lognormal(mu, sigma, 5000).tolist())
    b = LatencyHistogram.of((1.3 * rng.lognormal(mu, sigma, 5000)).tolist())
    result = bootstrap_quantile(a, b, 0.95, iterations=1000, seed=1)
    truth = 0.3 * true_p95_a
    assert result.ci_low is not None and result.ci_high is not None
    assert result.ci_low < truth < result.ci_high
    assert result.p_value is not None and result.p_value < 0.01
    again = bootstrap_quantile(a, b, 0.95, iterations=1000, seed=1)
    assert (again.ci_low, again.ci_high) == (result.ci_low, result.ci_high)  # seeded


def test_bootstrap_of_one_distribution_twice_is_not_significant() -> None:
    rng = np.random.default_rng(9)
    a = LatencyHistogram.of(rng.lognormal(6.0, 0.5, 3000).tolist())
    b = LatencyHistogram.of(rng.lognormal(6.0, 0.5, 3000).tolist())
    result = bootstrap_quantile(a, b, 0.95, iterations=1000)
    assert result.p_value is not None and result.p_value > 0.05
    assert result.ci_low is not None and result.ci_low < 0 < (result.ci_high or 0)
    assert bootstrap_quantile(LatencyHistogram(), b).difference is None
