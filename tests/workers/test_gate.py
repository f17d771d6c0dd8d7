"""The promotion gate: McNemar against statsmodels, the decision table, the bootstrap CI."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import pytest
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar

from promptrecord.workers.gate import (
    EXACT_BELOW,
    ContingencyTable,
    GateInputError,
    GateThresholds,
    McNemarResult,
    PairedResult,
    ReasonCode,
    bootstrap_difference_ci,
    evaluate_gate,
    mcnemar,
)


def results(
    both_correct: int = 0,
    baseline_only: int = 0,
    candidate_only: int = 0,
    both_wrong: int = 0,
    *,
    latency_ms: float = 100.0,
) -> list[PairedResult]:
    """Paired results with the given table, interleaved so ids are not grouped by cell."""
    cells = (
        [(True, True)] * both_correct
        + [(True, False)] * baseline_only
        + [(False, True)] * candidate_only
        + [(False, False)] * both_wrong
    )
    return [
        PairedResult(
            example_id=f"ex-{index:04d}",
            baseline_correct=baseline,
            candidate_correct=candidate,
            baseline_latency_ms=latency_ms,
            candidate_latency_ms=latency_ms,
        )
        for index, (baseline, candidate) in enumerate(cells)
    ]


def thresholds(**overrides: Any) -> GateThresholds:
    settings: dict[str, Any] = {"min_examples": 10, "bootstrap_resamples": 2_000, "seed": 7}
    settings.update(overrides)
    return GateThresholds(**settings)


# --- McNemar against statsmodels ----------------------------------------------------------

MCNEMAR_CASES = [
    (0, 0),
    (5, 5),
    (0, 1),
    (1, 0),
    (3, 10),
    (10, 3),
    (0, 24),
    (12, 12),  # b + c = 24: last exact
    (12, 13),  # b + c = 25: first chi-square
    (13, 12),
    (0, 25),
    (40, 60),
    (60, 40),
    (500, 430),
    (2_000, 2_000),
]


@pytest.mark.parametrize(("b", "c"), MCNEMAR_CASES)
def test_mcnemar_matches_statsmodels(b: int, c: int) -> None:
    exact = b + c < EXACT_BELOW
    expected = sm_mcnemar([[17, b], [c, 4]], exact=exact, correction=True)

    got = mcnemar(b, c)

    assert got.test == ("exact" if exact else "chi2")
    assert got.statistic == pytest.approx(float(expected.statistic), rel=1e-12, abs=0)
    assert got.p_value == pytest.approx(float(expected.pvalue), rel=1e-12, abs=1e-300)


def test_mcnemar_switches_to_chi_square_at_25_discordant_pairs() -> None:
    assert mcnemar(12, 12).test == "exact"
    assert mcnemar(12, 13).test == "chi2"
    assert mcnemar(0, 25).test == "chi2"


def test_no_discordant_pairs_is_exact_with_p_one() -> None:
    # statsmodels' chi-square divides by zero here (statistic inf, p 0); the exact branch
    # is the one used, and it says what no disagreement means: no evidence at all.
    assert mcnemar(0, 0) == McNemarResult(test="exact", statistic=0.0, p_value=1.0)
    assert float(sm_mcnemar([[9, 0], [0, 1]], exact=True).pvalue) == 1.0


def test_equal_discordant_counts_never_look_significant() -> None:
    for b in (5, 12, 13, 40, 500):
        assert mcnemar(b, b).p_value > 0.5


def test_mcnemar_is_symmetric_in_b_and_c() -> None:
    for b, c in MCNEMAR_CASES:
        assert mcnemar(b, c) == mcnemar(c, b)


def test_verdict_table_is_the_statsmodels_orientation() -> None:
    verdict = evaluate_gate(results(20, 9, 2, 5), thresholds())

    assert verdict.table == ContingencyTable(
        both_correct=20, baseline_only=9, candidate_only=2, both_wrong=5
    )
    expected = sm_mcnemar(verdict.table.as_matrix(), exact=True)
    assert verdict.mcnemar.p_value == pytest.approx(float(expected.pvalue), rel=1e-12)
    assert verdict.mcnemar.statistic == float(expected.statistic)


# --- The decision table, one check at a time ----------------------------------------------


def test_identical_arms_pass_with_no_reasons() -> None:
    verdict = evaluate_gate(results(30, 0, 0, 10), thresholds(win_rate_floor=0.5))

    assert verdict.passed
    assert verdict.reasons == ()
    assert verdict.mcnemar.p_value == 1.0
    assert verdict.baseline_win_rate == verdict.candidate_win_rate == 0.75
    assert verdict.win_rate_difference == 0.0


def test_too_few_examples_fails() -> None:
    verdict = evaluate_gate(results(8, 0, 1, 0), thresholds(min_examples=10))

    assert not verdict.passed
    assert verdict.reason_codes == (ReasonCode.TOO_FEW_EXAMPLES,)
    assert "9 examples" in verdict.reasons[0].detail


def test_exactly_min_examples_passes() -> None:
    assert evaluate_gate(results(9, 0, 1, 0), thresholds(min_examples=10)).passed


def test_significant_regression_fails() -> None:
    verdict = evaluate_gate(results(50, 12, 1, 10), thresholds())

    assert verdict.mcnemar.test == "exact"
    assert verdict.mcnemar.p_value < 0.05
    assert verdict.reason_codes == (ReasonCode.SIGNIFICANT_REGRESSION,)
    assert "worse on 12" in verdict.reasons[0].detail


def test_significant_regression_on_the_chi_square_branch_fails() -> None:
    verdict = evaluate_gate(results(300, 60, 30, 50), thresholds())

    assert verdict.mcnemar.test == "chi2"
    assert verdict.reason_codes == (ReasonCode.SIGNIFICANT_REGRESSION,)


def test_insignificant_regression_passes() -> None:
    verdict = evaluate_gate(results(50, 4, 2, 10), thresholds())

    assert verdict.table.baseline_only > verdict.table.candidate_only
    assert verdict.mcnemar.p_value >= 0.05
    assert verdict.passed


def test_significant_improvement_passes() -> None:
    verdict = evaluate_gate(results(50, 1, 12, 10), thresholds())

    assert verdict.mcnemar.p_value < 0.05
    assert verdict.passed


def test_a_stricter_alpha_lets_a_borderline_regression_through() -> None:
    rows = results(50, 12, 1, 10)
    p_value = evaluate_gate(rows, thresholds()).mcnemar.p_value

    assert not evaluate_gate(rows, thresholds(alpha=p_value * 2)).passed
    assert evaluate_gate(rows, thresholds(alpha=p_value / 2)).passed


def test_below_win_rate_floor_fails() -> None:
    verdict = evaluate_gate(results(7, 0, 0, 3), thresholds(win_rate_floor=0.75))

    assert verdict.candidate_win_rate == 0.7
    assert verdict.reason_codes == (ReasonCode.BELOW_WIN_RATE_FLOOR,)


def test_win_rate_at_the_floor_passes() -> None:
    assert evaluate_gate(results(6, 0, 2, 2), thresholds(win_rate_floor=0.8)).passed


def test_latency_above_the_ceiling_fails() -> None:
    verdict = evaluate_gate(results(10, latency_ms=1_500.0), thresholds(max_p95_latency_ms=1_000))

    assert verdict.candidate_p95_latency_ms == 1_500.0
    assert verdict.reason_codes == (ReasonCode.LATENCY_CEILING_EXCEEDED,)


def test_latency_at_the_ceiling_passes() -> None:
    verdict = evaluate_gate(results(10, latency_ms=1_000.0), thresholds(max_p95_latency_ms=1_000))
    assert verdict.passed


def test_no_ceiling_ignores_latency() -> None:
    assert evaluate_gate(results(10, latency_ms=1e9), thresholds()).passed


def test_only_the_candidate_latency_is_gated() -> None:
    rows = [dataclasses.replace(r, baseline_latency_ms=5_000.0) for r in results(10)]
    verdict = evaluate_gate(rows, thresholds(max_p95_latency_ms=200))

    assert verdict.passed
    assert verdict.baseline_p95_latency_ms == 5_000.0


def test_p95_latency_is_numpy_linear_percentile() -> None:
    rows = [
        dataclasses.replace(r, candidate_latency_ms=float(i + 1))
        for i, r in enumerate(results(100))
    ]
    verdict = evaluate_gate(rows, thresholds())

    assert verdict.candidate_p95_latency_ms == pytest.approx(95.05)
    assert verdict.candidate_p95_latency_ms == float(
        np.percentile(np.arange(1, 101), 95, method="linear")
    )


def test_every_failing_check_is_listed_in_a_fixed_order() -> None:
    verdict = evaluate_gate(
        results(0, 9, 0, 0, latency_ms=3_000.0),
        thresholds(min_examples=20, win_rate_floor=0.5, max_p95_latency_ms=2_000),
    )

    assert not verdict.passed
    assert verdict.reason_codes == (
        ReasonCode.TOO_FEW_EXAMPLES,
        ReasonCode.SIGNIFICANT_REGRESSION,
        ReasonCode.BELOW_WIN_RATE_FLOOR,
        ReasonCode.LATENCY_CEILING_EXCEEDED,
    )
    assert all(reason.detail for reason in verdict.reasons)


def test_two_failing_checks_are_both_listed() -> None:
    verdict = evaluate_gate(
        results(5, 0, 0, 5, latency_ms=900.0),
        thresholds(win_rate_floor=0.9, max_p95_latency_ms=500),
    )
    assert verdict.reason_codes == (
        ReasonCode.BELOW_WIN_RATE_FLOOR,
        ReasonCode.LATENCY_CEILING_EXCEEDED,
    )


# --- Regressed examples and the reported numbers ------------------------------------------


def test_regressed_and_improved_ids_in_input_order() -> None:
    cells = [(True, False), (True, True), (False, True), (True, False), (False, False)]
    rows = [
        PairedResult(f"q{i}", baseline, candidate, 10.0, 10.0)
        for i, (baseline, candidate) in reversed(list(enumerate(cells)))
    ]
    verdict = evaluate_gate(rows, thresholds(min_examples=1))

    assert verdict.regressed_ids == ("q3", "q0")
    assert verdict.improved_ids == ("q2",)
    assert verdict.table.baseline_only == 2
    assert verdict.baseline_win_rate == 3 / 5
    assert verdict.candidate_win_rate == 2 / 5
    assert verdict.win_rate_difference == pytest.approx(-1 / 5)


def test_mean_scores_are_reported_only_when_every_example_has_one() -> None:
    rows = [
        dataclasses.replace(r, baseline_score=3.0, candidate_score=float(4 + i % 2))
        for i, r in enumerate(results(10))
    ]
    verdict = evaluate_gate(rows, thresholds())
    assert verdict.baseline_mean_score == 3.0
    assert verdict.candidate_mean_score == 4.5

    rows[0] = dataclasses.replace(rows[0], candidate_score=None)
    verdict = evaluate_gate(rows, thresholds())
    assert verdict.baseline_mean_score == 3.0
    assert verdict.candidate_mean_score is None


def test_to_dict_is_json_and_carries_the_decision() -> None:
    verdict = evaluate_gate(results(50, 12, 1, 10), thresholds(max_p95_latency_ms=500))

    data = json.loads(json.dumps(verdict.to_dict(), allow_nan=False))

    assert data["passed"] is False
    assert data["reasons"][0]["code"] == "significant_regression"
    assert data["table"] == {
        "both_correct": 50,
        "baseline_only": 12,
        "candidate_only": 1,
        "both_wrong": 10,
    }
    assert data["mcnemar"]["test"] == "exact"
    assert data["mcnemar"]["p_value"] == verdict.mcnemar.p_value
    assert data["win_rate"]["ci"]["low"] <= data["win_rate"]["difference"]
    assert data["latency"]["percentile_method"] == "linear"
    assert data["regressed_ids"] == list(verdict.regressed_ids)
    assert len(data["regressed_ids"]) == 12
    assert data["thresholds"]["max_p95_latency_ms"] == 500


def test_verdict_is_frozen() -> None:
    verdict = evaluate_gate(results(10), thresholds())
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(verdict, "passed", False)  # noqa: B010 - the point is to try


# --- Bootstrap CI of the win-rate difference ----------------------------------------------


def test_bootstrap_is_deterministic_for_a_seed() -> None:
    rows = results(60, 15, 25, 20)
    first = evaluate_gate(rows, thresholds(seed=123, bootstrap_resamples=10_000))
    second = evaluate_gate(rows, thresholds(seed=123, bootstrap_resamples=10_000))

    assert first.difference_ci == second.difference_ci
    assert first.difference_ci.level == 0.95
    assert first.difference_ci.resamples == 10_000
    assert first.difference_ci.seed == 123


@pytest.mark.parametrize(
    "table", [(60, 15, 25, 20), (50, 12, 1, 10), (300, 60, 30, 50), (5, 1, 1, 3)]
)
def test_ci_contains_the_observed_difference(table: tuple[int, int, int, int]) -> None:
    verdict = evaluate_gate(results(*table), thresholds(min_examples=1))
    ci = verdict.difference_ci

    assert ci.low <= verdict.win_rate_difference <= ci.high
    assert ci.low < ci.high


def test_ci_excludes_zero_for_a_clear_improvement() -> None:
    verdict = evaluate_gate(results(50, 2, 40, 8), thresholds())

    assert verdict.win_rate_difference == pytest.approx(0.38)
    assert verdict.difference_ci.low > 0


def test_ci_is_a_point_when_the_arms_never_disagree() -> None:
    ci = evaluate_gate(results(30, 0, 0, 10), thresholds()).difference_ci
    assert (ci.low, ci.high) == (0.0, 0.0)


def test_multinomial_shortcut_agrees_with_resampling_example_indices() -> None:
    table = ContingencyTable(both_correct=100, baseline_only=30, candidate_only=50, both_wrong=20)
    n = table.total
    per_example = np.array([0] * 100 + [-1] * 30 + [1] * 50 + [0] * 20, dtype=float)
    rng = np.random.default_rng(99)
    index_bootstrap = per_example[rng.integers(0, n, size=(20_000, n))].mean(axis=1)
    low, high = np.percentile(index_bootstrap, [2.5, 97.5])

    ci = bootstrap_difference_ci(table, resamples=20_000, seed=5)

    assert ci.low == pytest.approx(low, abs=0.01)
    assert ci.high == pytest.approx(high, abs=0.01)


# --- Input validation ---------------------------------------------------------------------


def test_empty_results_are_rejected() -> None:
    with pytest.raises(GateInputError, match="results") as raised:
        evaluate_gate([], thresholds())
    assert raised.value.field == "results"
    assert isinstance(raised.value, ValueError)


def test_duplicate_example_ids_are_rejected() -> None:
    rows = results(3)
    rows.append(dataclasses.replace(rows[1]))
    with pytest.raises(GateInputError, match="ex-0001") as raised:
        evaluate_gate(rows, thresholds())
    assert raised.value.field == "example_id"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("min_examples", 0),
        ("min_examples", 2.5),
        ("min_examples", True),
        ("win_rate_floor", -0.1),
        ("win_rate_floor", 1.5),
        ("win_rate_floor", float("nan")),
        ("max_p95_latency_ms", 0),
        ("max_p95_latency_ms", -5.0),
        ("max_p95_latency_ms", float("inf")),
        ("alpha", 0.0),
        ("alpha", 1.0),
        ("alpha", "0.05"),
        ("bootstrap_resamples", 0),
        ("bootstrap_resamples", 100.0),
        ("seed", -1),
    ],
)
def test_thresholds_out_of_range_are_rejected(field: str, value: Any) -> None:
    with pytest.raises(GateInputError, match=field) as raised:
        thresholds(**{field: value})
    assert raised.value.field == field


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("example_id", ""),
        ("baseline_correct", 1),
        ("candidate_correct", None),
        ("baseline_latency_ms", -1.0),
        ("candidate_latency_ms", float("nan")),
        ("candidate_score", float("inf")),
    ],
)
def test_bad_paired_results_are_rejected(field: str, value: Any) -> None:
    fields: dict[str, Any] = {
        "example_id": "q1",
        "baseline_correct": True,
        "candidate_correct": False,
        "baseline_latency_ms": 10.0,
        "candidate_latency_ms": 10.0,
    }
    fields[field] = value
    with pytest.raises(GateInputError, match=field) as raised:
        PairedResult(**fields)
    assert raised.value.field == field
