"""Commands on datasets and eval runs, and the gate check a `require_gate` policy makes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from promptrecord.domain.app_base import CommandBase, CommandResult
from promptrecord.domain.base import SYSTEM, Actor
from promptrecord.domain.errors import Conflict, DomainError, InvalidInput, NotFound
from promptrecord.domain.evals import (
    Dataset,
    EvalRun,
    GateRecord,
    check_dataset_name,
    normalise_example,
)
from promptrecord.domain.workspace import Workspace

RUN_ID_CHARS = set("0123456789abcdef")
MAX_CONCURRENCY = 256
MAX_BATCH = 500


@contextmanager
def naming(field: str) -> Iterator[None]:
    """Refusals raised inside name `field`: the request's own word for what they check."""
    try:
        yield
    except DomainError as error:
        error.field = field
        raise


def check_run_id(run_id: str, field: str = "run_id") -> str:
    if not isinstance(run_id, str) or len(run_id) != 32 or not set(run_id) <= RUN_ID_CHARS:
        raise NotFound(f"eval run {run_id!r} does not exist", field=field, code="run_not_found")
    return run_id


class EvalCommands(CommandBase):
    """Datasets (append-only example sets) and eval runs (requested here, carried out by
    workers through `start_eval`, `record_eval_results`, `complete_eval`, `fail_eval`)."""

    # --- datasets ----------------------------------------------------------------------------

    def dataset(self, workspace: str, name: str, copy: bool = True) -> Dataset:
        return self._get(
            Dataset,
            Dataset.create_id(workspace, name),
            NotFound(
                f"dataset {name!r} does not exist in this workspace",
                field="dataset",
                code="dataset_not_found",
            ),
            copy,
        )

    def create_dataset(
        self,
        workspace: str,
        name: str,
        actor: Actor,
        description: str = "",
        examples: list[Any] | None = None,
        message: str = "",
    ) -> CommandResult:
        """Create a dataset, with its first version when examples are given. The value is
        `{"name", "version", "count"}`."""
        self.workspace(workspace, copy=False)
        check_dataset_name(name)
        if self._find(Dataset.create_id(workspace, name)) is not None:
            raise Conflict(
                f"dataset {name!r} already exists; append examples to it instead",
                field="name",
                code="dataset_exists",
            )
        dataset = Dataset(
            workspace=workspace,
            name=name,
            description=description,
            actor=actor.as_dict(),
            timestamp=self.clock(),
        )
        if examples:
            self._append(dataset, examples, message or "first examples", actor)
        return self._commit(dataset, value=_dataset_value(dataset))

    def append_examples(
        self,
        workspace: str,
        name: str,
        examples: list[Any],
        actor: Actor,
        message: str = "",
        expected_revision: int | None = None,
    ) -> CommandResult:
        """Append examples as a new dataset version. The value is `{"name", "version",
        "count"}`."""
        dataset = self.dataset(workspace, name)
        self._expect(dataset, expected_revision, f"dataset {name!r}")
        self._append(dataset, examples, message, actor)
        return self._commit(dataset, value=_dataset_value(dataset))

    def _append(self, dataset: Dataset, examples: list[Any], message: str, actor: Actor) -> None:
        if not isinstance(examples, list):
            raise InvalidInput("examples must be a list", field="examples")
        normalised = [normalise_example(raw, f"examples[{i}]") for i, raw in enumerate(examples)]
        dataset.append(normalised, message, actor.as_dict(), self.clock())

    # --- eval runs ---------------------------------------------------------------------------

    def eval_run(self, workspace: str, run_id: str, copy: bool = True) -> EvalRun:
        check_run_id(run_id)
        return self._get(
            EvalRun,
            EvalRun.create_id(workspace, run_id),
            NotFound(f"eval run {run_id!r} does not exist", field="run_id", code="run_not_found"),
            copy,
        )

    def request_eval(
        self,
        workspace: str,
        actor: Actor,
        prompt: str,
        candidate: int,
        dataset: str,
        graders: list[dict[str, Any]],
        thresholds: dict[str, Any],
        baseline: int | None = None,
        against: str | None = None,
        dataset_version: int | None = None,
        concurrency: int = 8,
        batch_size: int = 20,
        provider: str | None = None,
        reason: str = "",
        run_id: str | None = None,
    ) -> CommandResult:
        """Ask for a candidate to be evaluated against a baseline: a version number, or what
        environment `against` serves now. The value is the run id.

        Graders and thresholds are kept as given; the API checks them with the workers'
        parsers before it calls this, since the domain knows no grader.
        """
        ws = self.workspace(workspace, copy=False)
        with naming("prompt"):
            found = self.prompt(workspace, prompt, copy=False)
        with naming("candidate"):
            found.get_version(candidate)
        if (baseline is None) == (against is None):
            raise InvalidInput(
                "name the baseline: a version number (baseline) or an environment whose "
                "serving version it is (against), not both",
                field="against",
            )
        if against is not None:
            with naming("against"):
                ws.require_environment(against)
            deployment = self.deployment(workspace, prompt, against)
            baseline = deployment.serving if deployment is not None else None
            if baseline is None:
                raise Conflict(
                    f"nothing serves {prompt!r} in {against}, so there is no baseline to "
                    "compare with; name a baseline version instead",
                    field="against",
                    code="not_deployed",
                )
        assert baseline is not None
        with naming("baseline"):
            found.get_version(baseline)
        check_dataset_name(dataset, field="dataset")
        data = self.dataset(workspace, dataset, copy=False)
        info = data.version_info(dataset_version)
        if not graders:
            raise InvalidInput("an eval run needs at least one grader", field="graders")
        if not 1 <= concurrency <= MAX_CONCURRENCY:
            raise InvalidInput(
                f"concurrency must be between 1 and {MAX_CONCURRENCY}", field="concurrency"
            )
        if not 1 <= batch_size <= MAX_BATCH:
            raise InvalidInput(f"batch_size must be between 1 and {MAX_BATCH}", field="batch_size")
        run_id = run_id or uuid.uuid4().hex
        check_run_id(run_id)
        if self._find(EvalRun.create_id(workspace, run_id)) is not None:
            raise Conflict(f"eval run {run_id} already exists", code="run_exists")
        spec = {
            "prompt": prompt,
            "candidate": candidate,
            "baseline": baseline,
            "against": against,
            "dataset": dataset,
            "dataset_version": info["version"],
            "dataset_digest": info["digest"],
            "example_count": info["count"],
            "graders": list(graders),
            "thresholds": dict(thresholds),
            "concurrency": concurrency,
            "batch_size": batch_size,
            "provider": provider,
            "reason": reason,
        }
        run = EvalRun(
            workspace=workspace,
            run_id=run_id,
            spec=spec,
            actor=actor.as_dict(),
            timestamp=self.clock(),
        )
        return self._commit(run, value=run_id)

    def start_eval(self, workspace: str, run_id: str, worker: str) -> CommandResult:
        """A worker takes the run up (again): counts the attempt, marks it running."""
        run = self.eval_run(workspace, run_id)
        run.start(worker, self.clock())
        return self._commit(run, value=run.attempts)

    def record_eval_results(
        self, workspace: str, run_id: str, results: list[dict[str, Any]]
    ) -> CommandResult:
        """Record one batch of per-example results. A batch holding an example already
        recorded is refused whole (409 `already_recorded`)."""
        run = self.eval_run(workspace, run_id)
        run.record(results, self.clock())
        return self._commit(run, value=len(run.results))

    def complete_eval(
        self, workspace: str, run_id: str, verdict: dict[str, Any], passed: bool
    ) -> CommandResult:
        """Record the verdict, and with it (in the same commit) the gate index entry a
        `require_gate` policy reads."""
        run = self.eval_run(workspace, run_id)
        now = self.clock()
        run.complete(verdict, passed, now)
        spec = run.spec
        gate_id = GateRecord.create_id(
            workspace, spec["prompt"], spec["candidate"], spec["baseline"], spec["dataset"]
        )
        record = self._find(gate_id)
        if record is None:
            record = GateRecord(
                workspace=workspace,
                prompt=spec["prompt"],
                candidate=spec["candidate"],
                baseline=spec["baseline"],
                dataset=spec["dataset"],
                timestamp=now,
            )
        record.record(run_id, spec["dataset_version"], passed, _summary(verdict), now)
        return self._commit(record, run, value=passed)

    def fail_eval(self, workspace: str, run_id: str, code: str, detail: str) -> CommandResult:
        run = self.eval_run(workspace, run_id)
        run.fail(code, detail, self.clock())
        return self._commit(run)

    # --- the promotion gate ------------------------------------------------------------------

    def gate_for(
        self, ws: Workspace, prompt: str, environment: str, candidate: int, baseline: int | None
    ) -> dict[str, Any] | None:
        """The eval verdict `environment`'s policy needs before `candidate` replaces
        `baseline`; None when the policy asks for none. Refuses (409) when the newest
        completed run comparing exactly these on the policy's dataset did not pass, or
        there is none. With nothing served yet there is no baseline to regress from."""
        policy = ws.policy(environment)
        if not policy.require_gate or policy.gate_dataset is None:
            return None
        dataset = policy.gate_dataset
        if baseline is None:
            return {"dataset": dataset, "status": "no_baseline", "passed": None}
        record = self._find(GateRecord.create_id(ws.slug, prompt, candidate, baseline, dataset))
        latest = record.latest if isinstance(record, GateRecord) else None
        command = (
            f"promptrecord gate {prompt} --candidate {candidate} --against {environment} "
            f"--dataset {dataset}"
        )
        if latest is None:
            raise Conflict(
                f"{environment} requires a passing eval gate, and no eval run of version "
                f"{candidate} against version {baseline} (what {environment} serves) on "
                f"dataset {dataset!r} has completed; run `{command}`",
                code="gate_required",
                dataset=dataset,
                candidate=candidate,
                baseline=baseline,
            )
        if not latest["passed"]:
            reasons = ", ".join(latest["summary"].get("reasons", [])) or "blocked"
            raise Conflict(
                f"{environment} requires a passing eval gate, and the newest run of version "
                f"{candidate} against version {baseline} on dataset {dataset!r} "
                f"({latest['run_id']}) was blocked: {reasons}",
                code="gate_blocked",
                run_id=latest["run_id"],
                dataset=dataset,
            )
        return {
            "dataset": dataset,
            "status": "passed",
            "passed": True,
            "run_id": latest["run_id"],
            "dataset_version": latest["dataset_version"],
            "baseline": baseline,
            "summary": latest["summary"],
        }


def _dataset_value(dataset: Dataset) -> dict[str, Any]:
    return {"name": dataset.name, "version": dataset.latest, "count": len(dataset.examples)}


SUMMARY_KEYS = ("passed", "reasons", "n_examples", "table", "mcnemar", "win_rate", "latency")


def _summary(verdict: dict[str, Any]) -> dict[str, Any]:
    """What a gate index entry keeps of a verdict: enough for an approver to judge, without
    the per-example lists."""
    summary = {key: verdict[key] for key in SUMMARY_KEYS if key in verdict}
    reasons = summary.get("reasons")
    if isinstance(reasons, list):
        summary["reasons"] = [r["code"] if isinstance(r, dict) else str(r) for r in reasons]
    return summary


__all__ = ["SYSTEM", "EvalCommands", "check_run_id"]
