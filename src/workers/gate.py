"""The promotion gate: decide from paired eval results whether a candidate may replace its baseline.

Pure statistics, no I/O. `evaluate_gate` takes one `PairedResult` per dataset example (the
baseline and the candidate version graded on the same input) and `GateThresholds`, and returns
a frozen `GateVerdict`. Definitions, fixed here so that every verdict means the same thing:

- **win rate** of an arm is its accuracy: the share of examples that arm got right.
- **contingency table** rows are baseline right/wrong, columns candidate right/wrong, the
  orientation of ``statsmodels.stats.contingency_tables.mcnemar``. ``b`` (baseline only right)
  counts regressions, ``c`` (candidate only right) counts improvements.
- **McNemar** is exact (two-sided binomial on ``min(b, c)`` of ``b + c`` at p = 0.5, capped at 1)
  when ``b + c < 25``, otherwise chi-square with 1 dof on ``(|b - c| - 1)**2 / (b + c)``. Both give
  the same statistic and p-value as statsmodels (``exact=True`` / ``exact=False,
  correction=True``), including its quirk that ``b == c`` gives a statistic of ``1 / (b + c)``
  rather than 0. ``b + c == 0`` always takes the exact branch: statistic 0, p = 1.
- **regression check** blocks only a *significant* regression: ``b > c`` and ``p < alpha``. The
  test is two-sided, so at ``alpha = 0.05`` a regression blocks at a one-sided level of 0.025. A
  candidate that is worse but not significantly so passes this check (a floor on its accuracy is
  what `win_rate_floor` is for); a significant improvement never blocks.
- **difference CI** is a 95% percentile interval of candidate accuracy minus baseline accuracy
  under a paired bootstrap over examples (both arms of an example are resampled together),
  drawn from ``numpy.random.default_rng(seed)``. The difference of a resample depends only on how
  many regressions and improvements it holds, so the resamples are drawn as multinomial counts
  of those categories: the same distribution as resampling example indices, in O(resamples).
  The CI is reported, not gated on.
- **p95 latency** is the candidate's, by ``numpy.percentile(..., method="linear")``; it fails the
  gate when strictly above the ceiling.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, Literal

import numpy as np
from scipy import stats

EXACT_BELOW: Final = 25  # McNemar uses the exact binomial test when b + c is below this
CI_LEVEL: Final = 0.95
PERCENTILE_METHOD: Final = "linear"

McNemarTest = Literal["exact", "chi2"]


class GateInputError(ValueError):
    """Results or thresholds the gate cannot work with; `field` names the offending input."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


class ReasonCode(StrEnum):
    """Stable codes of the checks that can fail a gate, in the order they are reported."""

    TOO_FEW_EXAMPLES = "too_few_examples"
    SIGNIFICANT_REGRESSION = "significant_regression"
    BELOW_WIN_RATE_FLOOR = "below_win_rate_floor"
    LATENCY_CEILING_EXCEEDED = "latency_ceiling_exceeded"


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class PairedResult:
    """One dataset example, graded for the baseline and for the candidate."""

    example_id: str
    baseline_correct: bool
    candidate_correct: bool
    baseline_latency_ms: float
    candidate_latency_ms: float
    baseline_score: float | None = None  # e.g. the judge's 1-5 score; reported, not gated on
    candidate_score: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.example_id, str) or not self.example_id:
            raise GateInputError("example_id", "must be a non-empty string")
        where = f"example {self.example_id!r}"
        for name in ("baseline_correct", "candidate_correct"):
            if not isinstance(getattr(self, name), bool):
                raise GateInputError(name, f"must be True or False ({where})")
        for name in ("baseline_latency_ms", "candidate_latency_ms"):
            value = getattr(self, name)
            if not _is_number(value) or value < 0:
                raise GateInputError(name, f"must be a finite number >= 0, got {value!r} ({where})")
        for name in ("baseline_score", "candidate_score"):
            value = getattr(self, name)
            if value is not None and not _is_number(value):
                raise GateInputError(name, f"must be a finite number or None, got {value!r}")


@dataclass(frozen=True)
class GateThresholds:
    """What a candidate must meet. Defaults leave the floor and the ceiling off."""

    min_examples: int
    win_rate_floor: float = 0.0  # minimum candidate accuracy, in [0, 1]
    max_p95_latency_ms: float | None = None  # None: no latency ceiling
    alpha: float = 0.05
    bootstrap_resamples: int = 10_000
    seed: int = 0

    def __post_init__(self) -> None:
        def is_int(value: object) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        if not is_int(self.min_examples) or self.min_examples < 1:
            raise GateInputError(
                "min_examples", f"must be an integer >= 1, got {self.min_examples!r}"
            )
        if not _is_number(self.win_rate_floor) or not 0.0 <= self.win_rate_floor <= 1.0:
            raise GateInputError(
                "win_rate_floor", f"must be a number in [0, 1], got {self.win_rate_floor!r}"
            )
        ceiling = self.max_p95_latency_ms
        if ceiling is not None and (not _is_number(ceiling) or ceiling <= 0):
            raise GateInputError(
                "max_p95_latency_ms", f"must be a number > 0 or None, got {ceiling!r}"
            )
        if not _is_number(self.alpha) or not 0.0 < self.alpha < 1.0:
            raise GateInputError("alpha", f"must be a number in (0, 1), got {self.alpha!r}")
        if not is_int(self.bootstrap_resamples) or self.bootstrap_resamples < 1:
            raise GateInputError(
                "bootstrap_resamples",
                f"must be an integer >= 1, got {self.bootstrap_resamples!r}",
            )
        if not is_int(self.seed) or self.seed < 0:
            raise GateInputError("seed", f"must be an integer >= 0, got {self.seed!r}")


@dataclass(frozen=True)
class ContingencyTable:
    """Paired correctness counts; rows baseline right/wrong, columns candidate right/wrong."""

    both_correct: int
    baseline_only: int  # b: regressions
    candidate_only: int  # c: improvements
    both_wrong: int

    @property
    def total(self) -> int:
        return self.both_correct + self.baseline_only + self.candidate_only + self.both_wrong

    def as_matrix(self) -> list[list[int]]:
        """The table as statsmodels' `mcnemar` takes it."""
        return [[self.both_correct, self.baseline_only], [self.candidate_only, self.both_wrong]]


@dataclass(frozen=True)
class McNemarResult:
    test: McNemarTest
    statistic: float  # min(b, c) for "exact", the corrected chi-square for "chi2"
    p_value: float


@dataclass(frozen=True)
class ConfidenceInterval:
    low: float
    high: float
    level: float
    resamples: int
    seed: int


@dataclass(frozen=True)
class GateReason:
    code: ReasonCode
    detail: str


@dataclass(frozen=True)
class GateVerdict:
    """The gate's decision and the numbers behind it."""

    passed: bool
    reasons: tuple[GateReason, ...]  # one per failing check; empty when passed
    n_examples: int
    table: ContingencyTable
    mcnemar: McNemarResult
    baseline_win_rate: float
    candidate_win_rate: float
    win_rate_difference: float  # candidate minus baseline
    difference_ci: ConfidenceInterval
    candidate_p95_latency_ms: float
    baseline_p95_latency_ms: float
    regressed_ids: tuple[str, ...]  # baseline right, candidate wrong; in input order
    improved_ids: tuple[str, ...]  # baseline wrong, candidate right; in input order
    baseline_mean_score: float | None  # None unless every example has a baseline score
    candidate_mean_score: float | None
    thresholds: GateThresholds = field(repr=False)

    @property
    def reason_codes(self) -> tuple[ReasonCode, ...]:
        return tuple(reason.code for reason in self.reasons)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready rendering (plain str, int, float, bool, None, list, dict)."""
        ci = self.difference_ci
        t = self.thresholds
        return {
            "passed": self.passed,
            "reasons": [{"code": r.code.value, "detail": r.detail} for r in self.reasons],
            "n_examples": self.n_examples,
            "table": {
                "both_correct": self.table.both_correct,
                "baseline_only": self.table.baseline_only,
                "candidate_only": self.table.candidate_only,
                "both_wrong": self.table.both_wrong,
            },
            "mcnemar": {
                "test": self.mcnemar.test,
                "statistic": self.mcnemar.statistic,
                "p_value": self.mcnemar.p_value,
            },
            "win_rate": {
                "baseline": self.baseline_win_rate,
                "candidate": self.candidate_win_rate,
                "difference": self.win_rate_difference,
                "ci": {
                    "low": ci.low,
                    "high": ci.high,
                    "level": ci.level,
                    "method": "paired bootstrap, percentile",
                    "resamples": ci.resamples,
                    "seed": ci.seed,
                },
            },
            "latency": {
                "candidate_p95_ms": self.candidate_p95_latency_ms,
                "baseline_p95_ms": self.baseline_p95_latency_ms,
                "percentile_method": PERCENTILE_METHOD,
            },
            "scores": {
                "baseline_mean": self.baseline_mean_score,
                "candidate_mean": self.candidate_mean_score,
            },
            "regressed_ids": list(self.regressed_ids),
            "improved_ids": list(self.improved_ids),
            "thresholds": {
                "min_examples": t.min_examples,
                "win_rate_floor": t.win_rate_floor,
                "max_p95_latency_ms": t.max_p95_latency_ms,
                "alpha": t.alpha,
                "bootstrap_resamples": t.bootstrap_resamples,
                "seed": t.seed,
            },
        }


def mcnemar(b: int, c: int) -> McNemarResult:
    """McNemar's test on the discordant counts (b regressions, c improvements)."""
    if b < 0 or c < 0:
        raise GateInputError("table", f"discordant counts must be >= 0, got b={b}, c={c}")
    n = b + c
    if n < EXACT_BELOW:
        k = min(b, c)
        p = min(1.0, 2.0 * float(stats.binom.cdf(k, n, 0.5)))
        return McNemarResult(test="exact", statistic=float(k), p_value=p)
    statistic = (abs(b - c) - 1) ** 2 / n
    return McNemarResult(
        test="chi2", statistic=statistic, p_value=float(stats.chi2.sf(statistic, 1))
    )


def bootstrap_difference_ci(
    table: ContingencyTable, resamples: int, seed: int
) -> ConfidenceInterval:
    """Percentile CI of candidate minus baseline accuracy under a paired bootstrap."""
    n = table.total
    rng = np.random.default_rng(seed)
    # Each resample draws n examples with replacement; only its counts of improvements and
    # regressions move the difference, and those counts are multinomial.
    pvals = [table.candidate_only / n, table.baseline_only / n, 1.0]  # last is the remainder
    counts = rng.multinomial(n, pvals, size=resamples)
    differences = (counts[:, 0] - counts[:, 1]) / n
    tail = (1.0 - CI_LEVEL) / 2 * 100
    low, high = np.percentile(differences, [tail, 100 - tail], method=PERCENTILE_METHOD)
    return ConfidenceInterval(
        low=float(low), high=float(high), level=CI_LEVEL, resamples=resamples, seed=seed
    )


def _p95(values: Sequence[float]) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), 95, method=PERCENTILE_METHOD))


def _mean_score(scores: Sequence[float | None]) -> float | None:
    present = [s for s in scores if s is not None]
    return math.fsum(present) / len(present) if len(present) == len(scores) else None


def _check_results(results: Sequence[PairedResult]) -> None:
    if not results:
        raise GateInputError("results", "no paired results; run the eval on a non-empty dataset")
    seen: set[str] = set()
    for index, result in enumerate(results):
        if not isinstance(result, PairedResult):
            raise GateInputError(f"results[{index}]", "must be a PairedResult")
        if result.example_id in seen:
            raise GateInputError(
                "example_id", f"{result.example_id!r} appears more than once; ids must be unique"
            )
        seen.add(result.example_id)


def evaluate_gate(results: Sequence[PairedResult], thresholds: GateThresholds) -> GateVerdict:
    """Run every check and return the verdict; all failing checks are listed, not just the first."""
    _check_results(results)
    n = len(results)
    regressed = tuple(
        r.example_id for r in results if r.baseline_correct and not r.candidate_correct
    )
    improved = tuple(
        r.example_id for r in results if r.candidate_correct and not r.baseline_correct
    )
    both_correct = sum(1 for r in results if r.baseline_correct and r.candidate_correct)
    table = ContingencyTable(
        both_correct=both_correct,
        baseline_only=len(regressed),
        candidate_only=len(improved),
        both_wrong=n - both_correct - len(regressed) - len(improved),
    )
    test = mcnemar(table.baseline_only, table.candidate_only)
    baseline_rate = (both_correct + table.baseline_only) / n
    candidate_rate = (both_correct + table.candidate_only) / n
    candidate_p95 = _p95([r.candidate_latency_ms for r in results])

    reasons: list[GateReason] = []
    if n < thresholds.min_examples:
        reasons.append(
            GateReason(
                ReasonCode.TOO_FEW_EXAMPLES,
                f"{n} examples, at least {thresholds.min_examples} required",
            )
        )
    if table.baseline_only > table.candidate_only and test.p_value < thresholds.alpha:
        reasons.append(
            GateReason(
                ReasonCode.SIGNIFICANT_REGRESSION,
                f"candidate is worse on {table.baseline_only} examples and better on "
                f"{table.candidate_only}; McNemar ({test.test}) p = {test.p_value:.4g} "
                f"< alpha {thresholds.alpha:g}",
            )
        )
    if candidate_rate < thresholds.win_rate_floor:
        reasons.append(
            GateReason(
                ReasonCode.BELOW_WIN_RATE_FLOOR,
                f"candidate win rate {candidate_rate:.4f} is below the floor "
                f"{thresholds.win_rate_floor:.4f}",
            )
        )
    ceiling = thresholds.max_p95_latency_ms
    if ceiling is not None and candidate_p95 > ceiling:
        reasons.append(
            GateReason(
                ReasonCode.LATENCY_CEILING_EXCEEDED,
                f"candidate p95 latency {candidate_p95:.1f} ms exceeds the ceiling {ceiling:g} ms",
            )
        )

    return GateVerdict(
        passed=not reasons,
        reasons=tuple(reasons),
        n_examples=n,
        table=table,
        mcnemar=test,
        baseline_win_rate=baseline_rate,
        candidate_win_rate=candidate_rate,
        win_rate_difference=(table.candidate_only - table.baseline_only) / n,
        difference_ci=bootstrap_difference_ci(
            table, thresholds.bootstrap_resamples, thresholds.seed
        ),
        candidate_p95_latency_ms=candidate_p95,
        baseline_p95_latency_ms=_p95([r.baseline_latency_ms for r in results]),
        regressed_ids=regressed,
        improved_ids=improved,
        baseline_mean_score=_mean_score([r.baseline_score for r in results]),
        candidate_mean_score=_mean_score([r.candidate_score for r in results]),
        thresholds=thresholds,
    )
