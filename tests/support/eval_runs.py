"""Set up eval runs for the worker tests: a workspace, a prompt of two versions, a dataset."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from promptrecord.domain.application import PromptRecord
from promptrecord.domain.base import Actor

WS = "acme"
TESTER = Actor("key-tester", "worker tests")


def chat(provider: str, model: str, system: str) -> dict[str, Any]:
    return {
        "type": "chat",
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": "{{ question }}"},
        ],
        "model": {"provider": provider, "name": model},
    }


def seed(
    app: PromptRecord, examples: int, provider: str = "openai", model: str = "gpt-4o-mini"
) -> list[str]:
    """Workspace `acme`, prompt `support` (versions 1 and 2), dataset `faq`; the example ids."""
    app.create_workspace(WS, "Acme")
    app.create_prompt(WS, TESTER, name="support")
    app.commit_version(WS, "support", chat(provider, model, "Answer briefly."), TESTER)
    app.commit_version(WS, "support", chat(provider, model, "Answer briefly and kindly."), TESTER)
    rows = [
        {"id": f"q{i}", "inputs": {"question": f"Question q{i}"}, "reference": f"q{i}"}
        for i in range(1, examples + 1)
    ]
    app.create_dataset(WS, "faq", TESTER, examples=rows)
    return [row["id"] for row in rows]


def request(app: PromptRecord, **options: Any) -> str:
    """Request a run of version 2 against version 1 on `faq`; returns the run id."""
    defaults: dict[str, Any] = {
        "prompt": "support",
        "candidate": 2,
        "baseline": 1,
        "dataset": "faq",
        "graders": [{"type": "contains"}],
        "thresholds": {},
    }
    run_id: str = app.request_eval(WS, TESTER, **{**defaults, **options}).value
    return run_id


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `condition` until true; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def results_recorded(app: PromptRecord, workspace: str, run_id: str) -> list[Any]:
    """Every `EvalRun.ResultsRecorded` of the run, read from the log in order."""
    from promptrecord.domain.evals import EvalRun

    aggregate = EvalRun.create_id(workspace, run_id)
    return [
        event
        for event in app.repository.event_store.get(aggregate)
        if type(event).__name__ == "ResultsRecorded"
    ]
