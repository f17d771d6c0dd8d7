"""A prompt's monitoring: the online judge's sampling and the drift checks of its serving versions.

`Monitor` (workspace, prompt) holds what is configured (`Configured`: the judge and the drift
schedule, each optional) and the history of drift checks (`DriftChecked`, plus `DriftAlerted`
when the win rate moved beyond the threshold; a separate event type so that webhook endpoints
can subscribe to alerts alone). Checks are recorded by the drift scheduler, one per eval run:
a run already recorded is refused, so two schedulers never record one twice.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, TypeGuard
from uuid import UUID

from eventsourcing.domain import event

from promptrecord.domain.base import ChainedAggregate, business_id
from promptrecord.domain.errors import Conflict, InvalidInput

DEFAULT_EVERY_HOURS = 168  # weekly
DEFAULT_THRESHOLD = 0.1  # a move of ten points of win rate
MAX_EVERY_HOURS = 24 * 366
MAX_REPEATS = 25
MAX_CRITERIA = 20_000
MAX_ENVIRONMENTS = 16
JUDGE_KEYS = ("sample_rate", "provider", "model", "criteria", "repeats")
DRIFT_KEYS = ("dataset", "environments", "every_hours", "threshold")


def _number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _unknown(raw: dict[str, Any], known: tuple[str, ...], where: str) -> None:
    extra = sorted(set(raw) - set(known))
    if extra:
        raise InvalidInput(
            f"{where}.{extra[0]} is not a setting; {where} has {', '.join(known)}",
            field=f"{where}.{extra[0]}",
        )


def normalise_judge(raw: Any) -> dict[str, Any] | None:
    """The online judge's settings as stored, or None (no judge). Which providers exist is
    the workers' knowledge: the API checks `provider` before the command runs."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise InvalidInput("judge must be an object or null", field="judge")
    _unknown(raw, JUDGE_KEYS, "judge")
    rate = raw.get("sample_rate")
    if not _number(rate) or not 0 <= rate <= 1:
        raise InvalidInput(
            f"judge.sample_rate must be a number from 0 to 1 (the share of executions "
            f"judged), got {rate!r}",
            field="judge.sample_rate",
        )
    texts: dict[str, str] = {}
    for key in ("provider", "model", "criteria"):
        value = raw.get(key)
        if not isinstance(value, str) or not value.strip():
            raise InvalidInput(f"judge.{key} is required: a non-empty string", field=f"judge.{key}")
        texts[key] = value.strip()
    if len(texts["criteria"]) > MAX_CRITERIA:
        raise InvalidInput(
            f"judge.criteria is at most {MAX_CRITERIA} characters", field="judge.criteria"
        )
    repeats = raw.get("repeats", 1)
    if isinstance(repeats, bool) or not isinstance(repeats, int) or not 1 <= repeats <= MAX_REPEATS:
        raise InvalidInput(
            f"judge.repeats must be an integer from 1 to {MAX_REPEATS}, got {repeats!r}",
            field="judge.repeats",
        )
    return {"sample_rate": float(rate), **texts, "repeats": repeats}


def normalise_drift(raw: Any) -> dict[str, Any] | None:
    """The drift schedule as stored, or None. Whether the dataset and environments exist is
    checked by the command."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise InvalidInput("drift must be an object or null", field="drift")
    _unknown(raw, DRIFT_KEYS, "drift")
    dataset = raw.get("dataset")
    if not isinstance(dataset, str) or not dataset:
        raise InvalidInput("drift.dataset is required: a dataset's name", field="drift.dataset")
    environments = raw.get("environments")
    if (
        not isinstance(environments, list)
        or not environments
        or len(environments) > MAX_ENVIRONMENTS
        or not all(isinstance(env, str) and env for env in environments)
    ):
        raise InvalidInput(
            f"drift.environments must list 1 to {MAX_ENVIRONMENTS} environment names",
            field="drift.environments",
        )
    if len(set(environments)) != len(environments):
        raise InvalidInput("drift.environments names one twice", field="drift.environments")
    every = raw.get("every_hours", DEFAULT_EVERY_HOURS)
    if not _number(every) or not 1 <= every <= MAX_EVERY_HOURS:
        raise InvalidInput(
            f"drift.every_hours must be a number of hours from 1 to {MAX_EVERY_HOURS} "
            f"(default {DEFAULT_EVERY_HOURS}, weekly), got {every!r}",
            field="drift.every_hours",
        )
    threshold = raw.get("threshold", DEFAULT_THRESHOLD)
    if not _number(threshold) or not 0 < threshold <= 1:
        raise InvalidInput(
            f"drift.threshold must be a win-rate move above 0 and at most 1 (default "
            f"{DEFAULT_THRESHOLD}), got {threshold!r}",
            field="drift.threshold",
        )
    return {
        "dataset": dataset,
        "environments": list(environments),
        "every_hours": float(every),
        "threshold": float(threshold),
    }


class Monitor(ChainedAggregate):
    """The online judge and the drift schedule of one prompt, and its drift checks."""

    @staticmethod
    def create_id(workspace: str, prompt: str) -> UUID:
        return business_id("monitor", workspace, prompt)

    @event("Created")
    def __init__(
        self, workspace: str, prompt: str, actor: dict[str, Any], timestamp: datetime
    ) -> None:
        self.workspace = workspace
        self.prompt = prompt
        self.judge: dict[str, Any] | None = None
        self.drift: dict[str, Any] | None = None
        self.judge_since: datetime | None = None  # when the judge was last switched on
        self.configured_at = timestamp
        self.configured_by = actor
        self.checks: list[dict[str, Any]] = []  # oldest first; alerts flagged

    @event("Configured")
    def configure(
        self,
        judge: dict[str, Any] | None,
        drift: dict[str, Any] | None,
        actor: dict[str, Any],
        timestamp: datetime,
    ) -> None:
        if judge is not None and self.judge is None:
            self.judge_since = timestamp
        self.judge = judge
        self.drift = drift
        self.configured_at = timestamp
        self.configured_by = actor

    def checked(self, run_id: str) -> bool:
        return any(check["run_id"] == run_id for check in self.checks)

    def last_check(self, environment: str, version: int) -> dict[str, Any] | None:
        found: dict[str, Any] | None = None
        for check in self.checks:
            if check["environment"] == environment and check["version"] == version:
                found = check
        return found

    def record_check(self, check: dict[str, Any], timestamp: datetime) -> bool:
        """Record one drift check (keys as `DriftChecked`'s); alerts when the move passes the
        threshold. Returns whether it alerted."""
        if self.checked(check["run_id"]):
            raise Conflict(
                f"drift run {check['run_id']} is already recorded for {self.prompt!r}",
                code="drift_already_checked",
            )
        self._drift_checked(timestamp=timestamp, **check)
        threshold = (self.drift or {}).get("threshold", DEFAULT_THRESHOLD)
        if abs(check["delta"]) > threshold:
            self._drift_alerted(threshold=threshold, timestamp=timestamp, **check)
            return True
        return False

    @event("DriftChecked")
    def _drift_checked(
        self,
        environment: str,
        version: int,
        run_id: str,
        reference_run_id: str,
        win_rate: float,
        reference_win_rate: float,
        delta: float,
        timestamp: datetime,
    ) -> None:
        self.checks = [
            *self.checks,
            {
                "environment": environment,
                "version": version,
                "run_id": run_id,
                "reference_run_id": reference_run_id,
                "win_rate": win_rate,
                "reference_win_rate": reference_win_rate,
                "delta": delta,
                "alerted": False,
                "threshold": None,
                "checked_at": timestamp,
            },
        ]

    @event("DriftAlerted")
    def _drift_alerted(
        self,
        environment: str,
        version: int,
        run_id: str,
        reference_run_id: str,
        win_rate: float,
        reference_win_rate: float,
        delta: float,
        threshold: float,
        timestamp: datetime,
    ) -> None:
        last = {**self.checks[-1], "alerted": True, "threshold": threshold}
        self.checks = [*self.checks[:-1], last]


__all__ = [
    "DEFAULT_EVERY_HOURS",
    "DEFAULT_THRESHOLD",
    "Monitor",
    "normalise_drift",
    "normalise_judge",
]
