"""Carry out one eval run: answer every pending example, record results in batches, judge the gate.

`execute_run` is what the eval actor calls, from its own thread: it runs an asyncio loop of
its own. One call:

1. returns ``already_finished`` for a completed or failed run, doing nothing else;
2. counts an attempt (`start_eval`) and loads what the run's spec names: the dataset version,
   the candidate and the baseline version, the graders, the thresholds and the providers.
   What a retry cannot cure (a prompt, version or dataset version that is gone, a grader
   config or thresholds that do not parse, a provider that is unknown or has no API key)
   fails the run (`fail_eval` with a code) right there, before any model call. Codes:
   ``prompt_not_found``, ``version_not_found``, ``dataset_not_found``,
   ``dataset_version_not_found``, ``dataset_changed``, ``invalid_grader``,
   ``invalid_thresholds``, ``unknown_provider``, ``missing_api_key``, and, from the first
   model call a provider refuses with 401/403, ``provider_rejected_key``;
3. answers the examples not yet recorded (`arms.ExampleRunner`), with one semaphore of
   ``spec["concurrency"]`` slots bounding every model call, judges included, and
   ``2 * concurrency`` examples under way so that the semaphore never waits for work;
4. records finished examples in batches of ``spec["batch_size"]`` (a crash loses at most
   the unrecorded ones). A batch refused because another worker recorded one of its
   examples is reloaded, thinned and sent again, so each example is recorded once. Between
   batches `keep_going()` is asked; False (the lease is lost) stops the call (``stopped``);
5. once every example is recorded, evaluates the gate on all of the run's results (earlier
   attempts' included) and completes the run with the verdict and its usage totals.

Thresholds: ``spec["thresholds"]`` are `GateThresholds` fields; ``min_examples`` defaults
to 1 when absent, since the dataset version already fixes how many examples a run has (a
request that wants a floor on the sample size says so).

Errors of the store (the database down) propagate, so the actor retries the whole call;
what was recorded stays recorded.
"""

from __future__ import annotations

import asyncio
import collections
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from promptrecord.domain.application import PromptRecord
from promptrecord.domain.errors import Conflict, DomainError
from promptrecord.domain.evals import EvalRun
from promptrecord.settings import Settings
from promptrecord.workers.arms import (
    Arm,
    BoundedProvider,
    ExampleRunner,
    ProviderRejected,
    usage_totals,
)
from promptrecord.workers.gate import (
    GateInputError,
    GateThresholds,
    PairedResult,
    evaluate_gate,
)
from promptrecord.workers.graders import (
    GraderConfigError,
    GraderSpec,
    JudgeSpec,
    parse_grader_spec,
)
from promptrecord.workers.models import Provider, ProviderError
from promptrecord.workers.providers import PriceTable, provider_for

T = TypeVar("T")
Status = Literal["completed", "failed", "already_finished", "stopped"]
CONFLICT_RETRIES = 20  # commands refused because another worker wrote the run meanwhile
EXAMPLES_PER_SLOT = 2  # examples under way per concurrency slot


@dataclass(frozen=True)
class ExecutorConfig:
    """How the executor reaches model providers. A key or base URL left None falls back to
    the SDKs' own environment variables (``ANTHROPIC_API_KEY``, ``OPENAI_BASE_URL``, …)
    read from `environ` (None: the process environment)."""

    anthropic_api_key: str | None = None
    anthropic_base_url: str | None = None
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    timeout: float = 60.0
    max_retries: int = 3
    backoff: tuple[float, float] = (0.5, 30.0)
    prices: PriceTable | None = None
    environ: Mapping[str, str] | None = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> ExecutorConfig:
        prices = (
            PriceTable.from_file(settings.model_price_file)
            if settings.model_price_file is not None
            else None
        )
        return cls(
            anthropic_api_key=settings.anthropic_api_key,
            anthropic_base_url=settings.anthropic_base_url,
            openai_api_key=settings.openai_api_key,
            openai_base_url=settings.openai_base_url,
            timeout=settings.model_timeout,
            max_retries=settings.model_max_retries,
            backoff=(settings.model_backoff_base, settings.model_backoff_cap),
            prices=prices,
        )

    def provider(self, name: str) -> Provider:
        """A fresh provider; raises ValueError (unknown name) or ProviderError (no key)."""
        keys = {"anthropic": self.anthropic_api_key, "openai": self.openai_api_key}
        urls = {"anthropic": self.anthropic_base_url, "openai": self.openai_base_url}
        return provider_for(
            name,
            api_key=keys.get(name),
            base_url=urls.get(name),
            timeout=self.timeout,
            max_retries=self.max_retries,
            backoff=self.backoff,
            prices=self.prices,
            environ=os.environ if self.environ is None else self.environ,
        )


@dataclass(frozen=True)
class RunOutcome:
    status: Status
    recorded: int  # examples recorded by this call
    total: int  # examples recorded in the run after this call
    passed: bool | None


class RunFailure(Exception):
    """The run cannot succeed however often it is retried; `code` goes into Failed."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class RunPlan:
    """What a run's spec names, loaded and checked."""

    examples: list[dict[str, Any]]  # the dataset version's, in order
    candidate: tuple[int, Mapping[str, Any], str]  # version, content, provider name
    baseline: tuple[int, Mapping[str, Any], str]
    graders: list[GraderSpec]
    thresholds: GateThresholds
    providers: dict[str, Provider]  # by name: the arms' and the judges'
    concurrency: int
    batch_size: int


def execute_run(
    app: PromptRecord,
    workspace: str,
    run_id: str,
    config: ExecutorConfig,
    worker: str,
    keep_going: Callable[[], bool] = lambda: True,
) -> RunOutcome:
    """Synchronous (runs its own asyncio loop): safe to call from a Dramatiq actor thread."""
    run = app.eval_run(workspace, run_id, copy=False)
    if run.finished:
        return _finished(run, 0)
    try:
        _retrying(lambda: app.start_eval(workspace, run_id, worker))
    except Conflict as exc:
        if exc.code == "run_finished":
            return _finished(app.eval_run(workspace, run_id, copy=False), 0)
        raise
    run = app.eval_run(workspace, run_id, copy=False)
    try:
        plan = load_plan(app, workspace, run, config)
    except RunFailure as unrunnable:
        return _fail(app, workspace, run_id, unrunnable, 0)
    pending = [example for example in plan.examples if example["id"] not in run.results]
    execution = _Execution(app, workspace, run_id, plan, keep_going)
    try:
        ended = asyncio.run(execution.run(pending))
    except ProviderRejected as exc:
        rejected = RunFailure("provider_rejected_key", str(exc))
        return _fail(app, workspace, run_id, rejected, execution.recorded)
    run = app.eval_run(workspace, run_id, copy=False)
    if ended == "stopped" or run.finished or len(run.results) < run.example_count:
        if run.finished:
            return _finished(run, execution.recorded)
        return RunOutcome("stopped", execution.recorded, len(run.results), None)
    return _complete(app, workspace, run, plan, execution.recorded)


# --------------------------------------------------------------------------- the plan


def load_plan(app: PromptRecord, workspace: str, run: EvalRun, config: ExecutorConfig) -> RunPlan:
    """Load and check everything the run's spec names; raises `RunFailure`."""
    spec = run.spec
    try:
        prompt = app.prompt(workspace, spec["prompt"], copy=False)
        candidate = prompt.get_version(int(spec["candidate"]))
        baseline = prompt.get_version(int(spec["baseline"]))
        dataset = app.dataset(workspace, spec["dataset"], copy=False)
        info = dataset.version_info(int(spec["dataset_version"]))
        examples = dataset.examples_at(int(spec["dataset_version"]))
    except DomainError as exc:
        raise RunFailure(exc.code, exc.detail) from exc
    if info["digest"] != spec.get("dataset_digest", info["digest"]):
        raise RunFailure(
            "dataset_changed",
            f"dataset {spec['dataset']!r} version {info['version']} no longer has the digest "
            "the run was requested on; request a new run",
        )
    graders: list[GraderSpec] = []
    for index, config_ in enumerate(spec["graders"]):
        try:
            graders.append(parse_grader_spec(config_))
        except GraderConfigError as exc:
            raise RunFailure("invalid_grader", f"graders[{index}]: {exc}") from exc
    try:
        thresholds = GateThresholds(**{"min_examples": 1, **spec["thresholds"]})
    except (GateInputError, TypeError) as exc:
        raise RunFailure("invalid_thresholds", f"thresholds: {exc}") from exc

    def arm_provider(version: Mapping[str, Any]) -> str:
        return str(spec.get("provider") or version["content"]["model"]["provider"])

    names = {arm_provider(candidate), arm_provider(baseline)}
    names |= {g.provider for g in graders if isinstance(g, JudgeSpec)}
    providers: dict[str, Provider] = {}
    for name in sorted(names):
        try:
            providers[name] = config.provider(name)
        except ValueError as exc:
            raise RunFailure("unknown_provider", str(exc)) from exc
        except ProviderError as exc:
            raise RunFailure("missing_api_key", str(exc)) from exc
    return RunPlan(
        examples=examples,
        candidate=(candidate["number"], candidate["content"], arm_provider(candidate)),
        baseline=(baseline["number"], baseline["content"], arm_provider(baseline)),
        graders=graders,
        thresholds=thresholds,
        providers=providers,
        concurrency=int(spec["concurrency"]),
        batch_size=int(spec["batch_size"]),
    )


# --------------------------------------------------------------------------- the examples


class _Execution:
    """The asyncio part of one call: answer pending examples and record them in batches."""

    def __init__(
        self,
        app: PromptRecord,
        workspace: str,
        run_id: str,
        plan: RunPlan,
        keep_going: Callable[[], bool],
    ) -> None:
        self.app = app
        self.workspace = workspace
        self.run_id = run_id
        self.plan = plan
        self.keep_going = keep_going
        self.recorded = 0  # by this call; read after a failure too

    async def run(self, pending: list[dict[str, Any]]) -> str:
        """ "done", "stopped" (the lease was lost) or "finished" (by another worker)."""
        plan = self.plan
        slots = asyncio.Semaphore(plan.concurrency)
        bounded = {name: BoundedProvider(p, slots) for name, p in plan.providers.items()}
        runner = ExampleRunner(
            candidate=Arm(
                "candidate", plan.candidate[0], plan.candidate[1], bounded[plan.candidate[2]]
            ),
            baseline=Arm("baseline", plan.baseline[0], plan.baseline[1], bounded[plan.baseline[2]]),
            graders=plan.graders,
            judges=bounded,
        )
        try:
            return await self._drive(runner, pending)
        finally:
            # SDK clients hold connections bound to this loop, which ends with this call
            for provider in plan.providers.values():
                close = getattr(provider, "aclose", None)
                if close is not None:
                    await close()

    async def _drive(self, runner: ExampleRunner, pending: list[dict[str, Any]]) -> str:
        queue = collections.deque(pending)
        window = EXAMPLES_PER_SLOT * self.plan.concurrency
        size = self.plan.batch_size
        running: set[asyncio.Task[dict[str, Any]]] = set()
        buffer: list[dict[str, Any]] = []
        try:
            while queue or running:
                while queue and len(running) < window:
                    running.add(asyncio.create_task(runner.run(queue.popleft())))
                done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                buffer.extend(task.result() for task in done)
                while len(buffer) >= size:
                    batch, buffer = buffer[:size], buffer[size:]
                    more = bool(queue or running or buffer)
                    # the store is synchronous: a thread keeps the model calls moving meanwhile
                    ended = await asyncio.to_thread(self._flush, batch, more)
                    if ended != "done":
                        return ended
            if buffer:
                return await asyncio.to_thread(self._flush, buffer, False)
            return "done"
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    def _flush(self, batch: list[dict[str, Any]], more: bool) -> str:
        ended = self._record(batch)
        if ended == "done" and more and not self.keep_going():
            return "stopped"
        return ended

    def _record(self, batch: list[dict[str, Any]]) -> str:
        """Record a batch; what another worker recorded meanwhile is dropped from it."""
        for _ in range(CONFLICT_RETRIES):
            if not batch:
                return "done"
            try:
                self.app.record_eval_results(self.workspace, self.run_id, batch)
            except Conflict as exc:
                if exc.code == "run_finished":
                    return "finished"
                if exc.code not in ("already_recorded", "concurrent_change"):
                    raise
            else:
                self.recorded += len(batch)
                return "done"
            run = self.app.eval_run(self.workspace, self.run_id, copy=False)
            if run.finished:
                return "finished"
            batch = [result for result in batch if result["example_id"] not in run.results]
        raise Conflict(
            f"eval run {self.run_id}: a batch was refused {CONFLICT_RETRIES} times over",
            code="concurrent_change",
        )


# --------------------------------------------------------------------------- the end


def _complete(
    app: PromptRecord, workspace: str, run: EvalRun, plan: RunPlan, recorded: int
) -> RunOutcome:
    results = [run.results[example["id"]] for example in plan.examples]
    paired = [
        PairedResult(
            example_id=result["example_id"],
            baseline_correct=result["baseline"]["correct"] is True,
            candidate_correct=result["candidate"]["correct"] is True,
            baseline_latency_ms=float(result["baseline"]["latency_ms"]),
            candidate_latency_ms=float(result["candidate"]["latency_ms"]),
            baseline_score=result["baseline"]["score"],
            candidate_score=result["candidate"]["score"],
        )
        for result in results
    ]
    verdict = evaluate_gate(paired, plan.thresholds)
    body = {**verdict.to_dict(), "usage": usage_totals(results)}
    try:
        _retrying(lambda: app.complete_eval(workspace, run.run_id, body, verdict.passed))
    except Conflict as exc:
        if exc.code == "run_finished":  # another worker got there first
            return _finished(app.eval_run(workspace, run.run_id, copy=False), recorded)
        raise
    return RunOutcome("completed", recorded, len(results), verdict.passed)


def _fail(
    app: PromptRecord, workspace: str, run_id: str, failure: RunFailure, recorded: int
) -> RunOutcome:
    try:
        _retrying(lambda: app.fail_eval(workspace, run_id, failure.code, failure.detail))
    except Conflict as exc:
        if exc.code == "run_finished":
            return _finished(app.eval_run(workspace, run_id, copy=False), recorded)
        raise
    run = app.eval_run(workspace, run_id, copy=False)
    return RunOutcome("failed", recorded, len(run.results), None)


def _finished(run: EvalRun, recorded: int) -> RunOutcome:
    return RunOutcome("already_finished", recorded, len(run.results), run.passed)


def _retrying(command: Callable[[], T]) -> T:
    """Run a command again while another writer keeps changing the run under it."""
    for _ in range(CONFLICT_RETRIES - 1):
        try:
            return command()
        except Conflict as exc:
            if exc.code != "concurrent_change":
                raise
    return command()


__all__ = ["ExecutorConfig", "RunFailure", "RunOutcome", "RunPlan", "execute_run", "load_plan"]
