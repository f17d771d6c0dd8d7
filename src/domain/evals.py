"""Datasets, evaluation runs and the gate index a promotion checks.

- `Dataset` (workspace, name): examples `{id, inputs, reference, tags}`; every append is a
  new immutable dataset version, version N being the first `count` examples.
- `EvalRun` (a fresh id): a candidate against a baseline on one dataset version. Results
  arrive in batches; an example already recorded is refused, so a resumed or duplicated
  worker never counts one twice.
- `GateRecord` (workspace, prompt, candidate, baseline, dataset): the verdicts of the runs
  that compared exactly these, saved with each run's completion. A `require_gate` policy
  reads it by id, so a promotion's check is as consistent as the command itself.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import event

from promptrecord.domain.base import ChainedAggregate, business_id
from promptrecord.domain.errors import Conflict, InvalidInput
from promptrecord.domain.prompt import NAME

DATASET_NAME = NAME  # datasets are named as prompts are
EXAMPLE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")
MAX_APPEND = 50_000  # examples in one append
MAX_TAGS = 32
RUN_STATUSES = ("requested", "running", "completed", "failed")


def check_dataset_name(name: str, field: str = "name") -> str:
    if not isinstance(name, str) or not DATASET_NAME.match(name):
        raise InvalidInput(
            f"dataset name {name!r} must match {DATASET_NAME.pattern} "
            "(lowercase letters, digits, '.', '_', '-')",
            field=field,
        )
    return name


def normalise_example(raw: Any, where: str) -> dict[str, Any]:
    """One example as stored: `{id, inputs, reference, tags}`; `where` names it in errors
    (e.g. `examples[3]`, or `line 4` for JSONL)."""
    if not isinstance(raw, dict):
        raise InvalidInput(
            f"{where}: an example is a JSON object with id, inputs, reference and tags",
            field=where,
        )
    unknown = sorted(set(raw) - {"id", "inputs", "reference", "tags"})
    if unknown:
        raise InvalidInput(
            f"{where}: unknown field {unknown[0]!r}; an example has id, inputs, reference, tags",
            field=f"{where}.{unknown[0]}",
        )
    example_id = raw.get("id")
    if isinstance(example_id, int) and not isinstance(example_id, bool):
        example_id = str(example_id)
    if not isinstance(example_id, str) or not EXAMPLE_ID.match(example_id):
        raise InvalidInput(
            f"{where}: id {example_id!r} must be a string matching {EXAMPLE_ID.pattern}",
            field=f"{where}.id",
        )
    inputs = raw.get("inputs", {})
    if not isinstance(inputs, dict) or not all(isinstance(k, str) for k in inputs):
        raise InvalidInput(
            f"{where}: inputs must be an object of template variables", field=f"{where}.inputs"
        )
    reference = raw.get("reference")
    if reference is not None and not isinstance(reference, str):
        reference = json.dumps(reference, sort_keys=True, ensure_ascii=False)
    tags = raw.get("tags", [])
    if (
        not isinstance(tags, list)
        or len(tags) > MAX_TAGS
        or not all(isinstance(t, str) and 0 < len(t) <= 64 for t in tags)
    ):
        raise InvalidInput(
            f"{where}: tags must be a list of at most {MAX_TAGS} strings of 1-64 characters",
            field=f"{where}.tags",
        )
    return {"id": example_id, "inputs": inputs, "reference": reference, "tags": list(tags)}


def examples_digest(previous: str, examples: list[dict[str, Any]]) -> str:
    """A dataset version's digest: its examples, chained on the version before it."""
    encoded = json.dumps(examples, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256((previous + encoded).encode()).hexdigest()


class Dataset(ChainedAggregate):
    """Examples to evaluate prompts on. Appends only: every version stays readable."""

    @staticmethod
    def create_id(workspace: str, name: str) -> UUID:
        return business_id("dataset", workspace, name)

    @event("Created")
    def __init__(
        self,
        workspace: str,
        name: str,
        description: str,
        actor: dict[str, Any],
        timestamp: datetime,
    ) -> None:
        self.workspace = workspace
        self.name = name
        self.description = description
        self.examples: list[dict[str, Any]] = []
        self.versions: list[dict[str, Any]] = []
        self.ids: set[str] = set()

    @property
    def latest(self) -> int:
        return len(self.versions)

    def append(
        self,
        examples: list[dict[str, Any]],
        message: str,
        actor: dict[str, Any],
        timestamp: datetime,
    ) -> int:
        """Append normalised examples as a new version; returns its number."""
        if not examples:
            raise InvalidInput("nothing to append: give at least one example", field="examples")
        if len(examples) > MAX_APPEND:
            raise InvalidInput(
                f"at most {MAX_APPEND} examples per append (got {len(examples)}); split it",
                field="examples",
            )
        seen: set[str] = set()
        for index, example in enumerate(examples):
            example_id = example["id"]
            if example_id in self.ids:
                raise Conflict(
                    f"examples[{index}]: id {example_id!r} is already in dataset {self.name!r}; "
                    "examples are immutable, so give a changed example a new id",
                    field=f"examples[{index}].id",
                    code="duplicate_example",
                )
            if example_id in seen:
                raise InvalidInput(
                    f"examples[{index}]: id {example_id!r} appears twice in this append",
                    field=f"examples[{index}].id",
                    code="duplicate_example",
                )
            seen.add(example_id)
        previous = self.versions[-1]["digest"] if self.versions else ""
        digest = examples_digest(previous, examples)
        self._appended(self.latest + 1, examples, digest, message, actor, timestamp)
        return self.latest

    @event("ExamplesAppended")
    def _appended(
        self,
        version: int,
        examples: list[dict[str, Any]],
        digest: str,
        message: str,
        actor: dict[str, Any],
        timestamp: datetime,
    ) -> None:
        self.examples = [*self.examples, *examples]
        self.ids = self.ids | {example["id"] for example in examples}
        self.versions = [
            *self.versions,
            {
                "version": version,
                "count": len(self.examples),
                "added": len(examples),
                "digest": digest,
                "message": message,
                "actor": actor,
                "created_at": timestamp,
            },
        ]

    def version_info(self, version: int | None, field: str = "dataset_version") -> dict[str, Any]:
        """The version named (the latest when None)."""
        if not self.versions:
            raise Conflict(
                f"dataset {self.name!r} has no examples yet; append some first",
                field=field,
                code="dataset_empty",
            )
        number = self.latest if version is None else version
        if not 1 <= number <= self.latest:
            raise InvalidInput(
                f"dataset {self.name!r} has versions 1 to {self.latest}, not {number}",
                field=field,
                code="dataset_version_not_found",
            )
        return self.versions[number - 1]

    def examples_at(self, version: int) -> list[dict[str, Any]]:
        return self.examples[: self.version_info(version)["count"]]


class EvalRun(ChainedAggregate):
    """One evaluation: what was asked, the results in batches, and the verdict.

    `spec` holds the request as resolved at request time (versions by number, the dataset by
    version), so a run means the same thing however the workspace moves on meanwhile.
    """

    @staticmethod
    def create_id(workspace: str, run_id: str) -> UUID:
        return business_id("eval_run", workspace, run_id)

    @event("Requested")
    def __init__(
        self,
        workspace: str,
        run_id: str,
        spec: dict[str, Any],
        actor: dict[str, Any],
        timestamp: datetime,
    ) -> None:
        self.workspace = workspace
        self.run_id = run_id
        self.spec = spec
        self.requested_by = actor
        self.requested_at = timestamp
        self.status = "requested"
        self.attempts = 0
        self.results: dict[str, dict[str, Any]] = {}
        self.verdict: dict[str, Any] | None = None
        self.passed: bool | None = None
        self.error: dict[str, Any] | None = None

    @property
    def example_count(self) -> int:
        return int(self.spec["example_count"])

    @property
    def finished(self) -> bool:
        return self.status in ("completed", "failed")

    def _require_open(self, doing: str) -> None:
        if self.finished:
            raise Conflict(
                f"eval run {self.run_id} is {self.status}; it cannot {doing}",
                code="run_finished",
            )

    def start(self, worker: str, timestamp: datetime) -> None:
        self._require_open("start again")
        self._started(worker, self.attempts + 1, timestamp)

    @event("Started")
    def _started(self, worker: str, attempt: int, timestamp: datetime) -> None:
        self.status = "running"
        self.attempts = attempt

    def record(self, results: list[dict[str, Any]], timestamp: datetime) -> None:
        """Record a batch. Every example must be new to the run: a batch holding one already
        recorded is refused whole (the worker reloads and drops what is counted)."""
        self._require_open("record results")
        if not results:
            raise InvalidInput("a batch needs at least one result", field="results")
        batch: set[str] = set()
        for result in results:
            example_id = result["example_id"]
            if example_id in self.results or example_id in batch:
                raise Conflict(
                    f"example {example_id!r} is already recorded in eval run {self.run_id}",
                    code="already_recorded",
                    example_id=example_id,
                )
            batch.add(example_id)
        if len(self.results) + len(results) > self.example_count:
            raise Conflict(
                f"eval run {self.run_id} has {self.example_count} examples; this batch would "
                "record more",
                code="too_many_results",
            )
        self._recorded(results, len(self.results) + len(results), timestamp)

    @event("ResultsRecorded")
    def _recorded(self, results: list[dict[str, Any]], recorded: int, timestamp: datetime) -> None:
        self.results = {**self.results, **{r["example_id"]: r for r in results}}
        if self.status == "requested":
            self.status = "running"

    def complete(self, verdict: dict[str, Any], passed: bool, timestamp: datetime) -> None:
        self._require_open("complete again")
        if len(self.results) != self.example_count:
            raise Conflict(
                f"eval run {self.run_id} has {len(self.results)} of {self.example_count} "
                "results; it completes when every example is recorded",
                code="run_incomplete",
            )
        self._completed(verdict, passed, timestamp)

    @event("Completed")
    def _completed(self, verdict: dict[str, Any], passed: bool, timestamp: datetime) -> None:
        self.status = "completed"
        self.verdict = verdict
        self.passed = passed

    def fail(self, code: str, detail: str, timestamp: datetime) -> None:
        self._require_open("fail")
        self._failed(code, detail, timestamp)

    @event("Failed")
    def _failed(self, code: str, detail: str, timestamp: datetime) -> None:
        self.status = "failed"
        self.error = {"code": code, "detail": detail}


class GateRecord(ChainedAggregate):
    """Verdicts of the runs comparing one candidate with one baseline on one dataset."""

    @staticmethod
    def create_id(workspace: str, prompt: str, candidate: int, baseline: int, dataset: str) -> UUID:
        return business_id("gate", workspace, prompt, str(candidate), str(baseline), dataset)

    @event("Created")
    def __init__(
        self,
        workspace: str,
        prompt: str,
        candidate: int,
        baseline: int,
        dataset: str,
        timestamp: datetime,
    ) -> None:
        self.workspace = workspace
        self.prompt = prompt
        self.candidate = candidate
        self.baseline = baseline
        self.dataset = dataset
        self.runs: list[dict[str, Any]] = []

    @property
    def latest(self) -> dict[str, Any] | None:
        return self.runs[-1] if self.runs else None

    @event("VerdictRecorded")
    def record(
        self,
        run_id: str,
        dataset_version: int,
        passed: bool,
        summary: dict[str, Any],
        timestamp: datetime,
    ) -> None:
        self.runs = [
            *self.runs,
            {
                "run_id": run_id,
                "dataset_version": dataset_version,
                "passed": passed,
                "summary": summary,
                "completed_at": timestamp,
            },
        ]


__all__ = [
    "RUN_STATUSES",
    "Dataset",
    "EvalRun",
    "GateRecord",
    "check_dataset_name",
    "normalise_example",
]
