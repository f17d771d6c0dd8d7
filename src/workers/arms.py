"""Carry out one eval example: render each arm's version, call its model, grade the output.

An *arm* is one prompt version under test (the candidate or the baseline) with the provider
that serves it. `ExampleRunner.run` answers one dataset example for both arms concurrently
and returns the result dict recorded in ``EvalRun.ResultsRecorded``::

    {"example_id": str, "candidate": ARM, "baseline": ARM}
    ARM = {"output", "correct", "score", "latency_ms", "input_tokens", "output_tokens",
           "cost_usd", "error", "grades"}

What fails for one example stays on that example's arm: a variable the inputs lack, a
provider error after the provider's own retries (a timeout included), a grading error. An
arm with an error is never correct. Only a provider refusing the credentials (401/403)
escapes, as `ProviderRejected`: every other call would be refused the same way, so the run
fails instead of recording a dataset's worth of errors.

Every model call, the judges' included, goes through one `BoundedProvider` semaphore per
run, so ``concurrency`` bounds the requests in flight however the calls are made.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from promptrecord.domain.errors import InvalidInput
from promptrecord.domain.templates import render
from promptrecord.workers.graders import Grade, GraderSpec, JudgeSpec, grade
from promptrecord.workers.models import ModelCall, ModelReply, Provider, ProviderError

MAX_OUTPUT_CHARS = 4000  # of an arm's output kept in the result
DEFAULT_MAX_TOKENS = 1024
_CALL_KEYS = frozenset({"provider", "name", "temperature", "max_tokens"})
AUTH_STATUSES = frozenset({401, 403})


class ProviderRejected(Exception):
    """A provider refused the credentials: no example of the run can succeed."""

    def __init__(self, provider: str, error: ProviderError) -> None:
        super().__init__(f"{provider} refused the API key: {error}")
        self.provider = provider


class BoundedProvider:
    """A provider whose calls wait for a slot of the run's shared semaphore.

    The slot is held through the provider's own retries and their backoff: a run being
    rate limited should not send more requests meanwhile.
    """

    def __init__(self, provider: Provider, slots: asyncio.Semaphore) -> None:
        self.provider = provider
        self.name = provider.name
        self._slots = slots

    async def complete(self, call: ModelCall) -> ModelReply:
        async with self._slots:
            return await self.provider.complete(call)


@dataclass(frozen=True)
class Arm:
    """One version under test: its content and the provider that answers it."""

    role: str  # "candidate" | "baseline"
    version: int
    content: Mapping[str, Any]
    provider: Provider

    def call_for(self, inputs: Mapping[str, Any]) -> ModelCall:
        """The model call for one example; raises `InvalidInput` when rendering fails."""
        rendered = render(self.content, inputs)
        model = self.content["model"]
        system: str | None = None
        if rendered.text is not None:
            messages = [{"role": "user", "content": rendered.text}]
        else:
            assert rendered.messages is not None
            # Both APIs take the system prompt apart from the turns; several system messages
            # are one system prompt in order.
            systems = [m["content"] for m in rendered.messages if m["role"] == "system"]
            system = "\n\n".join(systems) if systems else None
            messages = [m for m in rendered.messages if m["role"] != "system"]
        temperature = model.get("temperature")
        return ModelCall(
            provider=self.provider.name,
            model=str(model["name"]),
            messages=messages,
            system=system,
            temperature=float(temperature) if temperature is not None else None,
            max_tokens=int(model.get("max_tokens") or DEFAULT_MAX_TOKENS),
            params={k: v for k, v in model.items() if k not in _CALL_KEYS},
        )


@dataclass(frozen=True)
class ExampleRunner:
    """Answers and grades examples for a candidate and a baseline arm."""

    candidate: Arm
    baseline: Arm
    graders: Sequence[GraderSpec]
    judges: Mapping[str, Provider]  # judge provider name -> (bounded) provider

    async def run(self, example: Mapping[str, Any]) -> dict[str, Any]:
        candidate, baseline = await asyncio.gather(
            self._arm(self.candidate, example), self._arm(self.baseline, example)
        )
        return {"example_id": example["id"], "candidate": candidate, "baseline": baseline}

    async def _arm(self, arm: Arm, example: Mapping[str, Any]) -> dict[str, Any]:
        inputs = example.get("inputs") or {}
        try:
            call = arm.call_for(inputs)
        except InvalidInput as exc:
            return _errored(f"{exc.code}: {exc.detail}", latency_ms=0.0)
        started = time.perf_counter()
        try:
            reply = await arm.provider.complete(call)
        except ProviderError as exc:
            if exc.status in AUTH_STATUSES:
                raise ProviderRejected(arm.provider.name, exc) from exc
            # the time spent trying, retries included: a failing model is not a fast one
            return _errored(str(exc), latency_ms=(time.perf_counter() - started) * 1000)
        grades = await asyncio.gather(
            *(self._grade(spec, reply.text, example) for spec in self.graders)
        )
        errors = [g.error for g in grades if g.error is not None]
        judged = [
            g.score
            for spec, g in zip(self.graders, grades, strict=True)
            if isinstance(spec, JudgeSpec) and g.score is not None
        ]
        return {
            "output": reply.text[:MAX_OUTPUT_CHARS],
            "correct": not errors and all(g.correct is True for g in grades),
            "score": sum(judged) / len(judged) if judged else None,
            "latency_ms": reply.latency_ms,
            "input_tokens": reply.usage.input_tokens,
            "output_tokens": reply.usage.output_tokens,
            "cost_usd": reply.cost_usd,
            "error": errors[0] if errors else None,
            "grades": [
                {**g.to_dict(), "type": spec.type}
                for spec, g in zip(self.graders, grades, strict=True)
            ],
        }

    async def _grade(self, spec: GraderSpec, output: str, example: Mapping[str, Any]) -> Grade:
        judge = self.judges.get(spec.provider) if isinstance(spec, JudgeSpec) else None
        return await grade(
            spec, output, example.get("reference"), example.get("inputs") or {}, judge
        )


def _errored(error: str, *, latency_ms: float) -> dict[str, Any]:
    return {
        "output": None,
        "correct": False,
        "score": None,
        "latency_ms": latency_ms,
        "input_tokens": 0,
        "output_tokens": 0,
        "cost_usd": None,
        "error": error,
        "grades": [],
    }


def usage_totals(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Tokens and cost of the answered model calls of a run: both arms and every judge call.

    ``calls`` counts calls that returned a reply (failed calls report no usage);
    ``cost_usd`` is None when no call was priced.
    """
    calls = input_tokens = output_tokens = 0
    costs: list[float] = []
    for result in results:
        for role in ("candidate", "baseline"):
            arm = result[role]
            if arm.get("output") is not None:
                calls += 1
                input_tokens += int(arm.get("input_tokens") or 0)
                output_tokens += int(arm.get("output_tokens") or 0)
                if arm.get("cost_usd") is not None:
                    costs.append(float(arm["cost_usd"]))
            for graded in arm.get("grades") or []:
                usage = (graded.get("details") or {}).get("usage")
                if not usage:
                    continue
                calls += int(usage.get("calls") or 0)
                input_tokens += int(usage.get("input_tokens") or 0)
                output_tokens += int(usage.get("output_tokens") or 0)
                if usage.get("cost_usd") is not None:
                    costs.append(float(usage["cost_usd"]))
    return {
        "calls": calls,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cost_usd": sum(costs) if costs else None,
    }
