"""The figures a metrics read reports, from rollup rows merged per version, per hour, or both."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from promptrecord.projections.executions import ROLLUP_SUMS, STATUSES, Rollup, hour_start
from promptrecord.projections.latency_histogram import LatencyHistogram

GROUPINGS = ("version", "hour", "version,hour")


@dataclass
class Figures:
    """Sums of a group of rollup rows and their merged latency histogram."""

    sums: dict[str, float] = field(default_factory=lambda: dict.fromkeys(ROLLUP_SUMS, 0.0))
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)

    def add(self, rollup: Rollup) -> None:
        for name, value in rollup.sums.items():
            self.sums[name] += value
        self.latency.merge(rollup.latency)

    @classmethod
    def of(cls, rollups: Iterable[Rollup]) -> Figures:
        figures = cls()
        for rollup in rollups:
            figures.add(rollup)
        return figures

    @property
    def count(self) -> int:
        return int(self.sums["count"])

    @property
    def failures(self) -> int:
        """Calls that did not end `ok`: errors, timeouts and refusals."""
        return self.count - int(self.sums["ok"])

    @property
    def feedback(self) -> int:
        return int(self.sums["feedback_up"] + self.sums["feedback_down"])

    @property
    def score_count(self) -> int:
        return int(self.sums["score_count"])

    def mean_score(self) -> float | None:
        n = self.sums["score_count"]
        return self.sums["score_sum"] / n if n else None

    def score_variance(self) -> float | None:
        """Sample variance of the scores, from their sum and sum of squares."""
        n = self.sums["score_count"]
        if n < 2:
            return None
        mean = self.sums["score_sum"] / n
        return max(0.0, (self.sums["score_sq_sum"] - n * mean * mean) / (n - 1))

    def as_dict(self) -> dict[str, Any]:
        sums, count = self.sums, self.count
        priced = count - int(sums["unpriced"])
        return {
            "count": count,
            "statuses": {status: int(sums[status]) for status in STATUSES},
            "error_rate": self.failures / count if count else None,
            "tokens_in": int(sums["tokens_in"]),
            "tokens_out": int(sums["tokens_out"]),
            "cost_usd": round(sums["cost_usd"], 10) if priced else None,
            "unpriced": int(sums["unpriced"]),
            "latency_ms": self.latency.percentiles(),
            "mean_score": self.mean_score(),
            "scored": self.score_count,
            "feedback_up": int(sums["feedback_up"]),
            "feedback_down": int(sums["feedback_down"]),
            "feedback_rate": sums["feedback_up"] / self.feedback if self.feedback else None,
        }


def grouped(rollups: Sequence[Rollup], group_by: str) -> list[dict[str, Any]]:
    """One entry per group, ordered by version then hour, each with its figures."""
    keys = group_by.split(",")
    groups: dict[tuple[int, ...], Figures] = {}
    for rollup in rollups:
        key = tuple(rollup.version if k == "version" else rollup.hour for k in keys)
        groups.setdefault(key, Figures()).add(rollup)
    entries = []
    for key in sorted(groups):
        entry: dict[str, Any] = {}
        for name, value in zip(keys, key, strict=True):
            entry[name] = value if name == "version" else hour_start(value)
        entry.update(groups[key].as_dict())
        entries.append(entry)
    return entries
