"""Drift checks: re-evaluate each monitored serving version on a schedule and record the move.

For every monitor with drift configured and each of its environments, the version promoted
there is checked once per period of `every_hours`: when its last check is older than that
(or there is none), the scheduler requests an eval run through `request_eval` that repeats
the version's *reference*, its newest passing gate run on the monitor's dataset (the same
baseline, dataset version, graders, thresholds and provider), so the two runs differ only by
time. When the run completes, its candidate win rate is compared with the reference's and
`Monitor.DriftChecked` is recorded, with `Monitor.DriftAlerted` when the move passes the
threshold. Drift runs are requested by `DRIFT_ACTOR` and are never a reference themselves,
so a slow slide is measured from the run that passed, not from last week.

Run ids are derived from (workspace, prompt, environment, version, period index), the index
counting periods since the epoch: every scheduler computes the same id, so two of them never
start two runs (the second request is refused as `run_exists`), and a check recorded twice is
refused by the monitor. A readable `drift-<env>-v<N>-<period>` would break the run-id rule
(32 hex), so it is the uuid5 of exactly that key. A failed drift run is not retried within its
period: a broken provider does not burn money every minute.

`assess` computes an environment's state without writing: the scheduler acts on it and the
API shows it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import NAMESPACE_URL, uuid5

from eventsourcing.utils import get_topic

from promptrecord.domain.application import PromptRecord
from promptrecord.domain.errors import Conflict
from promptrecord.domain.evals import EvalRun, GateRecord
from promptrecord.domain.monitor_commands import DRIFT_ACTOR
from promptrecord.domain.monitors import Monitor
from promptrecord.workers.dispatcher import Loop

log = logging.getLogger(__name__)

CREATED = get_topic(Monitor.Created)
PAGE = 500
LOOKBACK_PERIODS = 3  # periods whose drift runs are still looked for once finished
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class MonitorIndex:
    """The (workspace, prompt) of every monitor, kept by reading `Monitor.Created` events
    (filtered by topic in the database) after the last position read."""

    def __init__(self, app: PromptRecord) -> None:
        self.app = app
        self.position = 0
        self.known: list[tuple[str, str]] = []

    def refresh(self) -> list[tuple[str, str]]:
        recorder = self.app.recorder
        while True:
            found = recorder.select_notifications(
                start=self.position, limit=PAGE, topics=(CREATED,), inclusive_of_start=False
            )
            for notification in found:
                event: Any = self.app.mapper.to_domain_event(notification)
                self.known.append((event.workspace, event.prompt))
                self.position = notification.id
            if len(found) < PAGE:
                return self.known

    def monitors(self) -> Iterator[Monitor]:
        for workspace, prompt in self.refresh():
            monitor = self.app.find_monitor(workspace, prompt)
            if monitor is not None:
                yield monitor


@dataclass(frozen=True)
class Reference:
    """The passing gate run a drift check repeats and compares with."""

    run_id: str
    baseline: int
    dataset_version: int
    win_rate: float  # the candidate's
    completed_at: datetime
    spec: dict[str, Any]


def find_reference(
    app: PromptRecord,
    workspace: str,
    prompt: str,
    version: int,
    dataset: str,
    before: datetime | None = None,
) -> Reference | None:
    """The newest passing gate run of `version` on `dataset` (against any baseline), drift
    runs excluded; with `before`, the newest completed by then."""
    found = app.prompt(workspace, prompt, copy=False)
    entries: list[dict[str, Any]] = []
    for baseline in range(1, len(found.versions) + 1):
        if baseline == version:
            continue
        record = app._find(GateRecord.create_id(workspace, prompt, version, baseline, dataset))
        if isinstance(record, GateRecord):
            entries += [
                {**entry, "baseline": baseline}
                for entry in record.runs
                if entry["passed"] and (before is None or entry["completed_at"] <= before)
            ]
    for entry in sorted(entries, key=lambda e: e["completed_at"], reverse=True):
        run = app._find(EvalRun.create_id(workspace, entry["run_id"]))
        if not isinstance(run, EvalRun) or run.requested_by.get("key_id") == DRIFT_ACTOR.key_id:
            continue
        win_rate = (run.verdict or {}).get("win_rate", {}).get("candidate")
        if win_rate is None:
            continue
        return Reference(
            entry["run_id"],
            entry["baseline"],
            int(run.spec["dataset_version"]),
            float(win_rate),
            entry["completed_at"],
            dict(run.spec),
        )
    return None


def period_index(at: datetime, every: timedelta) -> int:
    return math.floor((at - EPOCH) / every)


def drift_run_id(workspace: str, prompt: str, environment: str, version: int, period: int) -> str:
    key = f"promptrecord:drift:{workspace}\x1f{prompt}\x1fdrift-{environment}-v{version}-{period}"
    return uuid5(NAMESPACE_URL, key).hex


@dataclass(frozen=True)
class DriftStatus:
    """One environment's drift state. `state` is one of:

    - ``nothing_deployed``: no version is promoted there;
    - ``waiting``: checked recently (or this period's run failed); next at `next_due_at`;
    - ``running``: `run_id` is requested or running;
    - ``recording``: `run_id` completed and its check is about to be recorded;
    - ``no_reference``: due, but the version has no passing gate run on the dataset;
    - ``due``: a run will be requested now.
    """

    environment: str
    version: int | None
    state: str
    reason: str
    next_due_at: datetime | None
    last_check: dict[str, Any] | None = None
    run_id: str | None = None
    reference_run_id: str | None = None
    reference: Reference | None = None
    finished: tuple[str, ...] = ()  # completed drift runs not yet recorded


def assess(app: PromptRecord, monitor: Monitor, environment: str, now: datetime) -> DriftStatus:
    """Where one environment of a monitor stands; writes nothing."""
    drift = monitor.drift
    assert drift is not None
    ws, prompt = monitor.workspace, monitor.prompt
    deployment = app.deployment(ws, prompt, environment)
    version = deployment.serving if deployment is not None else None
    if version is None:
        reason = f"nothing is promoted for {prompt!r} in {environment}; there is nothing to check"
        return DriftStatus(environment, None, "nothing_deployed", reason, None)
    every = timedelta(hours=drift["every_hours"])
    period = period_index(now, every)
    last = monitor.last_check(environment, version)
    base = DriftStatus(environment, version, "", "", None, last_check=last)
    unrecorded: list[EvalRun] = []
    current: EvalRun | None = None
    for back in range(LOOKBACK_PERIODS):
        run_id = drift_run_id(ws, prompt, environment, version, period - back)
        run = app._find(EvalRun.create_id(ws, run_id))
        if not isinstance(run, EvalRun):
            continue
        if back == 0:
            current = run
        if not monitor.checked(run_id) and run.status != "failed":
            unrecorded.append(run)
    finished = tuple(run.run_id for run in unrecorded if run.status == "completed")
    if finished:
        reason = f"drift run {finished[0]} completed; its check is being recorded"
        return _with(base, "recording", reason, None, run_id=finished[0], finished=finished)
    if unrecorded:
        run = unrecorded[0]
        reason = f"drift run {run.run_id} is {run.status}"
        return _with(base, "running", reason, None, run_id=run.run_id)
    next_period = EPOCH + every * (period + 1)
    due_at = max(last["checked_at"] + every, next_period) if last else next_period
    if current is not None and current.status == "failed":
        error = current.error or {}
        reason = (
            f"drift run {current.run_id} failed ({error.get('code')}: {error.get('detail')}); "
            "the next period runs again — fix the cause (a provider key, a model) meanwhile"
        )
        return _with(base, "waiting", reason, due_at, run_id=current.run_id)
    if current is not None:  # this period's run is done
        return _with(base, "waiting", f"version {version} was checked this period", due_at)
    if last is not None and now < last["checked_at"] + every:
        recently = f"version {version} was checked recently"
        return _with(base, "waiting", recently, last["checked_at"] + every)
    reference = find_reference(app, ws, prompt, version, drift["dataset"])
    if reference is None:
        reason = (
            f"version {version} has no passing eval run on dataset {drift['dataset']!r} to "
            f"compare with; run `promptrecord gate {prompt} --candidate {version} "
            f"--against <environment> --dataset {drift['dataset']}` and make it pass"
        )
        return _with(base, "no_reference", reason, now)
    reason = f"due: version {version} is compared with run {reference.run_id}"
    return DriftStatus(
        environment,
        version,
        "due",
        reason,
        now,
        last_check=last,
        run_id=drift_run_id(ws, prompt, environment, version, period),
        reference_run_id=reference.run_id,
        reference=reference,
    )


def _with(
    base: DriftStatus, state: str, reason: str, next_due_at: datetime | None, **more: Any
) -> DriftStatus:
    return DriftStatus(
        base.environment,
        base.version,
        state,
        reason,
        next_due_at,
        last_check=base.last_check,
        **more,
    )


class DriftScheduler(Loop):
    """Every `interval` seconds: record finished drift runs, request due ones."""

    name = "promptrecord-drift"

    def __init__(
        self,
        app: PromptRecord,
        interval: float,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        super().__init__(interval)
        self.app = app
        self.clock = clock or app.clock  # the application's, unless a test drives its own
        self.index = MonitorIndex(app)
        self.requested = 0
        self.recorded = 0
        self.alerts = 0
        self.errors = 0
        self._explained: set[tuple[str, str, str, int | None, str]] = set()

    def step(self) -> bool:
        for monitor in self.index.monitors():
            if monitor.drift is None:
                continue
            for environment in monitor.drift["environments"]:
                if self._stop.is_set():
                    return False
                try:
                    self.check(monitor, environment)
                except Exception:
                    self.errors += 1
                    log.exception(
                        "drift check of %r in %s (workspace %s) failed; retrying next pass",
                        monitor.prompt,
                        environment,
                        monitor.workspace,
                    )
        return False

    def check(self, monitor: Monitor, environment: str) -> DriftStatus:
        """One environment: record what finished, request what is due."""
        status = assess(self.app, monitor, environment, self.clock())
        for run_id in status.finished:
            self._record(monitor, environment, run_id)
        if status.state == "due":
            self._request(monitor, status)
        elif status.state in ("no_reference", "nothing_deployed"):
            key = (monitor.workspace, monitor.prompt, environment, status.version, status.state)
            if key not in self._explained:  # once, not every pass
                self._explained.add(key)
                log.info(
                    "no drift check of %r in %s: %s", monitor.prompt, environment, status.reason
                )
        return status

    def _request(self, monitor: Monitor, status: DriftStatus) -> None:
        reference = status.reference
        assert reference is not None and status.version is not None and status.run_id
        spec = reference.spec
        try:
            self.app.request_eval(
                monitor.workspace,
                DRIFT_ACTOR,
                monitor.prompt,
                status.version,
                spec["dataset"],
                list(spec["graders"]),
                dict(spec["thresholds"]),
                baseline=reference.baseline,
                dataset_version=reference.dataset_version,
                concurrency=int(spec["concurrency"]),
                batch_size=int(spec["batch_size"]),
                provider=spec.get("provider"),
                reason=(
                    f"drift check of version {status.version} in {status.environment}, "
                    f"against reference run {reference.run_id}"
                ),
                run_id=status.run_id,
            )
        except Conflict as exc:
            if exc.code in ("run_exists", "concurrent_change"):
                return  # another scheduler requested it first
            raise
        self.requested += 1
        log.info(
            "requested drift run %s of %r v%d in %s",
            status.run_id,
            monitor.prompt,
            status.version,
            status.environment,
        )

    def _record(self, monitor: Monitor, environment: str, run_id: str) -> None:
        ws, prompt = monitor.workspace, monitor.prompt
        run = self.app.eval_run(ws, run_id, copy=False)
        version = int(run.spec["candidate"])
        reference = find_reference(
            self.app, ws, prompt, version, run.spec["dataset"], before=run.requested_at
        )
        win_rate = (run.verdict or {}).get("win_rate", {}).get("candidate")
        if reference is None or win_rate is None:
            log.warning("drift run %s has no reference or no win rate; not recorded", run_id)
            return
        try:
            result = self.app.record_drift_check(
                ws,
                prompt,
                environment,
                version,
                run_id,
                reference.run_id,
                win_rate,
                reference.win_rate,
            )
        except Conflict as exc:
            if exc.code in ("drift_already_checked", "concurrent_change"):
                return
            raise
        self.recorded += 1
        if result.value:
            self.alerts += 1
            log.warning(
                "drift alert: %r v%d in %s moved %+.3f from run %s",
                prompt,
                version,
                environment,
                win_rate - reference.win_rate,
                reference.run_id,
            )


__all__ = [
    "DriftScheduler",
    "DriftStatus",
    "MonitorIndex",
    "Reference",
    "assess",
    "drift_run_id",
    "find_reference",
    "period_index",
]
