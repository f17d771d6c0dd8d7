"""The online judge: score a deterministic sample of production executions with an LLM judge.

For each monitor with a judge configured, a pass reads up to `batch_size` executions of the
prompt that have an output, fall in the sample (`sample < sample_rate`, the sample being a
hash of the execution id, so the same executions are chosen however often it is asked) and
have no judge score yet (`ExecutionStore.judge_candidates`). Each is judged with the eval
graders' LLM-as-judge (`graders.grade` with a `JudgeSpec`: the monitor's criteria as the
rubric, its repeats, median score, quorum) against the version's content rendered with the
execution's variables, and the median 1-5 score is appended as a 0-1 score (`(s - 1) / 4`,
the executions' scale) with source ``judge``.

Cost is bounded: at most `batch_size` executions per prompt a pass, `repeats` judge calls
each (plus one re-ask of an unparseable reply), `concurrency` calls in flight, and only
executions started since the judge was switched on and within `lookback`. A failed
judgement (provider down, no quorum) is counted in `errors` and tried again after a backoff
that doubles up to an hour; after `MAX_FAILURES` this process stops trying that execution.
Nothing here stops the loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from promptrecord.domain.application import PromptRecord
from promptrecord.domain.errors import DomainError
from promptrecord.domain.monitors import Monitor
from promptrecord.domain.templates import render
from promptrecord.projections.executions import (
    ExecutionStore,
    JudgeCandidate,
    open_execution_store,
)
from promptrecord.settings import Settings
from promptrecord.workers.arms import BoundedProvider
from promptrecord.workers.dispatcher import Loop
from promptrecord.workers.drift import DriftScheduler, MonitorIndex
from promptrecord.workers.graders import Grade, JudgeSpec, grade
from promptrecord.workers.models import Provider, ProviderError

if TYPE_CHECKING:
    from promptrecord.workers.executor import ExecutorConfig

log = logging.getLogger(__name__)

SOURCE = "judge"
MAX_FAILURES = 5
FIRST_RETRY = timedelta(minutes=1)
LONGEST_RETRY = timedelta(hours=1)


@dataclass
class _Failure:
    count: int
    retry_at: datetime


def judge_spec(judge: dict[str, Any]) -> JudgeSpec:
    return JudgeSpec(
        provider=judge["provider"],
        model=judge["model"],
        rubric=judge["criteria"],
        repeats=int(judge["repeats"]),
    )


def judged_material(content: dict[str, Any], variables: dict[str, Any] | None) -> dict[str, Any]:
    """What the judge reads beside the output: the prompt as the model got it (the template
    itself when the variables do not fill it) and the variables."""
    try:
        rendered = render(content, variables or {})
        prompt: Any = rendered.text if rendered.messages is None else rendered.messages
    except DomainError:
        prompt = content.get("text") if content.get("type") == "text" else content.get("messages")
    return {"prompt": prompt, "variables": variables or {}}


class OnlineJudge(Loop):
    """Every `interval` seconds: judge a batch of sampled executions per monitored prompt."""

    name = "promptrecord-online-judge"

    def __init__(
        self,
        app: PromptRecord,
        store: ExecutionStore,
        config: ExecutorConfig | Callable[[], ExecutorConfig],
        interval: float,
        batch_size: int = 50,
        concurrency: int = 4,
        lookback: timedelta = timedelta(hours=24),
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        super().__init__(interval)
        self.app = app
        self.store = store
        self._config = config
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.lookback = lookback
        self.clock = clock or app.clock
        self.index = MonitorIndex(app)
        self.judged = 0
        self.errors = 0
        self.failing: dict[str, _Failure] = {}

    @property
    def config(self) -> ExecutorConfig:
        """The executor's configuration, made on first use: it imports the model SDKs and
        scipy, seconds that a process whose prompts have no judge should not spend."""
        if callable(self._config):
            self._config = self._config()
        return self._config

    def step(self) -> bool:
        for monitor in self.index.monitors():
            if self._stop.is_set():
                break
            if monitor.judge is None or monitor.judge["sample_rate"] <= 0:
                continue
            try:
                self.judge_prompt(monitor)
            except Exception:
                self.errors += 1
                log.exception("online judge of %r failed; retrying next pass", monitor.prompt)
        return False

    def judge_prompt(self, monitor: Monitor) -> int:
        """One batch of one prompt; returns how many scores were appended."""
        judge = monitor.judge
        assert judge is not None and monitor.judge_since is not None
        now = self.clock()
        waiting = {
            execution_id
            for execution_id, failure in self.failing.items()
            if failure.retry_at > now or failure.count >= MAX_FAILURES
        }
        since = max(monitor.judge_since, now - self.lookback)
        found = self.store.judge_candidates(
            monitor.workspace,
            monitor.prompt,
            judge["sample_rate"],
            since,
            self.batch_size + len(waiting),
        )
        todo = [c for c in found if c.id not in waiting][: self.batch_size]
        if not todo:
            return 0
        grades = asyncio.run(self._judge_all(monitor, judge, todo))
        scores: list[tuple[str, float, str]] = []
        for candidate, outcome in zip(todo, grades, strict=True):
            if outcome.score is not None and outcome.error is None:
                scores.append((candidate.id, (outcome.score - 1) / 4, SOURCE))
                self.failing.pop(candidate.id, None)
            else:
                self._failed(candidate.id, outcome.error or "no score", now)
        added = self.store.add_scores(monitor.workspace, scores) if scores else 0
        self.judged += added
        return added

    def _failed(self, execution_id: str, error: str, now: datetime) -> None:
        self.errors += 1
        previous = self.failing.get(execution_id)
        count = previous.count + 1 if previous else 1
        delay = min(LONGEST_RETRY, FIRST_RETRY * 2 ** (count - 1))
        self.failing[execution_id] = _Failure(count, now + delay)
        log.warning(
            "online judge could not score execution %s (failure %d): %s", execution_id, count, error
        )

    async def _judge_all(
        self, monitor: Monitor, judge: dict[str, Any], todo: list[JudgeCandidate]
    ) -> list[Grade]:
        spec = judge_spec(judge)
        try:
            provider: Provider = self.config.provider(spec.provider)
        except (ValueError, ProviderError) as exc:
            return [Grade.failed(f"judge provider {spec.provider!r}: {exc}") for _ in todo]
        bounded = BoundedProvider(provider, asyncio.Semaphore(self.concurrency))
        versions: dict[int, dict[str, Any]] = {}
        found = self.app.prompt(monitor.workspace, monitor.prompt, copy=False)
        try:
            return await asyncio.gather(
                *(self._judge_one(spec, bounded, found, versions, c) for c in todo)
            )
        finally:
            close = getattr(provider, "aclose", None)  # SDK clients belong to this loop
            if close is not None:
                await close()

    async def _judge_one(
        self,
        spec: JudgeSpec,
        provider: BoundedProvider,
        prompt: Any,
        versions: dict[int, dict[str, Any]],
        candidate: JudgeCandidate,
    ) -> Grade:
        try:
            if candidate.version not in versions:
                versions[candidate.version] = prompt.get_version(candidate.version)["content"]
            material = judged_material(versions[candidate.version], candidate.input)
            return await grade(spec, candidate.output, None, material, provider)
        except DomainError as exc:  # a version that does not exist: the report was wrong
            return Grade.failed(f"version {candidate.version}: {exc}")
        except Exception as exc:  # one execution never stops the batch
            log.exception("online judge: execution %s", candidate.id)
            return Grade.failed(f"{type(exc).__name__}: {str(exc)[:300]}")


class Monitoring:
    """The drift scheduler and the online judge in daemon threads; `stop` ends both."""

    def __init__(self, drift: DriftScheduler, judge: OnlineJudge, store: ExecutionStore) -> None:
        self.drift = drift
        self.judge = judge
        self.store = store

    def stop(self) -> None:
        for loop in (self.drift, self.judge):
            loop.stop()
        for loop in (self.drift, self.judge):
            loop.join()
        self.store.close()


def _executor_config(settings: Settings) -> ExecutorConfig:
    from promptrecord.workers.executor import ExecutorConfig

    return ExecutorConfig.from_settings(settings)


def start_monitoring(app: PromptRecord, settings: Settings) -> Monitoring:
    """Start both loops on `app` (the projector's, or an API process's embedded workers)."""
    store = open_execution_store(settings)
    drift = DriftScheduler(app, settings.monitoring_interval)
    judge = OnlineJudge(
        app,
        store,
        lambda: _executor_config(settings),
        settings.monitoring_interval,
        batch_size=settings.judge_batch_size,
        concurrency=settings.judge_concurrency,
        lookback=timedelta(hours=settings.judge_lookback_hours),
    )
    drift.start()
    judge.start()
    return Monitoring(drift, judge, store)


__all__ = ["Monitoring", "OnlineJudge", "judge_spec", "judged_material", "start_monitoring"]
