"""Eval runs over HTTP: requests refused with the field at fault, then a run's progress,
results and verdict once the offline provider has answered every example."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from fastapi import FastAPI

from promptrecord.api.app import create_app
from promptrecord.api.services import Services
from promptrecord.settings import Settings
from promptrecord.workers.executor import ExecutorConfig, execute_run

if TYPE_CHECKING:
    from tests.api.conftest import Api

N = 12
PROBLEM = "application/problem+json"
RIGHT = {"offline_accuracy": 1.0}  # the offline provider gives the reference every time
WRONG = {"offline_accuracy": 0.0}  # … and never


def examples(n: int = N) -> list[dict[str, Any]]:
    # The offline provider answers with the [[answer: …]] marker of the user message.
    return [
        {
            "id": f"q{i}",
            "inputs": {"question": f"{i} + {i}? [[answer: {2 * i}]]"},
            "reference": str(2 * i),
        }
        for i in range(1, n + 1)
    ]


def content(number: int, model: dict[str, Any]) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "system", "content": f"You answer sums (v{number})."},
            {"role": "user", "content": "{{ question }}"},
        ],
        "model": {"provider": "anthropic", "name": "claude-haiku-4-5", **model},
    }


def setup(admin: httpx.Client, *models: dict[str, Any]) -> None:
    """Prompt `bot` with one version per model config (v1 served in production), and the
    dataset `golden`."""
    first = content(1, models[0])
    assert admin.post("/v1/prompts", json={"name": "bot", "content": first}).status_code == 201
    for number, model in enumerate(models[1:], start=2):
        response = admin.post("/v1/prompts/bot/versions", json={"content": content(number, model)})
        assert response.status_code == 201, response.text
    promoted = admin.post("/v1/prompts/bot/environments/production/promote", json={"version": 1})
    assert promoted.status_code == 200, promoted.text
    created = admin.post("/v1/datasets", json={"name": "golden", "examples": examples()})
    assert created.status_code == 201, created.text


def wait_finished(client: httpx.Client, run_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run: dict[str, Any] = client.get(f"/v1/evals/{run_id}").json()
        if run["status"] in ("completed", "failed"):
            return run
        assert time.monotonic() < deadline, run
        time.sleep(0.05)


REQUEST = {"prompt": "bot", "candidate": 2, "against": "production", "dataset": "golden"}


def test_bad_requests_name_the_field_and_write_nothing(api: Api) -> None:
    setup(api.admin, WRONG, RIGHT)
    editor = api.as_role("editor")
    viewer = api.as_role("viewer")
    limited = api.as_role("editor", prompt_patterns=["other-*"])
    position = editor.get("/v1/events").json()["next_after"]

    def refused(status: int, code: str, field: str, **changes: Any) -> dict[str, Any]:
        body = {**REQUEST, **changes}
        return api.assert_problem(editor.post("/v1/evals", json=body), status, code, field)

    refused(422, "invalid_grader", "graders[0].type", graders=[{"type": "fuzzy"}])
    refused(
        422,
        "invalid_grader",
        "graders[1].pattern",
        graders=[{"type": "exact"}, {"type": "regex", "pattern": "(a+)+"}],
    )
    refused(422, "invalid_grader", "graders[0].typo", graders=[{"type": "exact", "typo": 1}])
    judge = {"type": "judge", "provider": "nope", "model": "m", "rubric": "is it right?"}
    refused(422, "invalid_grader", "graders[0].provider", graders=[judge])
    refused(422, "invalid_input", "graders", graders=[])
    refused(422, "invalid_threshold", "thresholds.alpha", thresholds={"alpha": 2})
    refused(422, "invalid_threshold", "thresholds.min_examples", thresholds={"min_examples": 0})
    refused(422, "invalid_threshold", "thresholds.floor", thresholds={"floor": 0.5})
    refused(404, "prompt_not_found", "prompt", prompt="nope")
    refused(404, "version_not_found", "candidate", candidate=9)
    refused(404, "version_not_found", "baseline", against=None, baseline=7)
    refused(404, "dataset_not_found", "dataset", dataset="nope")
    refused(422, "dataset_version_not_found", "dataset_version", dataset_version=2)
    body = refused(409, "not_deployed", "against", against="staging")
    assert "staging" in body["detail"]
    refused(404, "environment_not_found", "against", against="qa")
    refused(422, "invalid_input", "against", baseline=1)  # both against and baseline
    refused(422, "validation_failed", "body.provider", provider="local")
    refused(422, "validation_failed", "body.concurrency", concurrency=0)
    api.assert_problem(viewer.post("/v1/evals", json=REQUEST), 403, "role_required")
    api.assert_problem(limited.post("/v1/evals", json=REQUEST), 403, "prompt_not_allowed", "prompt")

    assert editor.get("/v1/events").json()["next_after"] == position
    assert editor.get("/v1/evals").json()["items"] == []


def test_a_run_reports_progress_results_and_verdict(api: Api) -> None:
    setup(api.admin, WRONG, RIGHT)
    editor = api.as_role("editor")
    requested = editor.post(
        "/v1/evals", json={**REQUEST, "provider": "offline", "reason": "PR 1", "batch_size": 5}
    )
    assert requested.status_code == 202, requested.text
    accepted = requested.json()
    run_id = accepted["run_id"]
    assert accepted["status"] == "requested" and accepted["position"] > 0
    assert requested.headers["location"] == f"/v1/evals/{run_id}"
    assert accepted["links"]["verdict"] == f"/v1/evals/{run_id}/verdict"

    run = wait_finished(editor, run_id)  # the server's in-process workers carry it out
    assert run["status"] == "completed" and run["passed"] is True
    assert run["progress"] == {"recorded": N, "total": N, "fraction": 1.0}
    assert run["tallies"] == {"candidate_correct": N, "baseline_correct": 0, "errors": 0}
    assert run["candidate"] == 2 and run["baseline"] == 1 and run["against"] == "production"
    assert run["dataset_version"] == 1 and run["attempts"] >= 1
    assert run["usage"]["calls"] == 2 * N and run["usage"]["input_tokens"] > 0
    assert run["spec"]["graders"] == [{"type": "exact"}]
    assert run["spec"]["thresholds"]["min_examples"] == 1 and run["spec"]["reason"] == "PR 1"
    assert run["requested_by"]["key_name"] == "editor key"
    assert run["completed_at"] is not None and run["error"] is None

    verdict = editor.get(f"/v1/evals/{run_id}/verdict")
    assert verdict.status_code == 200, verdict.text
    v = verdict.json()
    assert v["passed"] is True and v["run_id"] == run_id and v["n_examples"] == N
    assert v["table"] == {
        "both_correct": 0,
        "baseline_only": 0,
        "candidate_only": N,
        "both_wrong": 0,
    }
    assert v["mcnemar"]["test"] == "exact" and v["mcnemar"]["p_value"] < 0.001
    assert v["win_rate"]["candidate"] == 1.0 and v["win_rate"]["baseline"] == 0.0
    assert v["win_rate"]["ci"]["low"] <= 1.0 <= v["win_rate"]["ci"]["high"] + 1e-9
    assert v["latency"]["candidate_p95_ms"] > 0 and v["usage"]["calls"] == 2 * N
    assert v["improved_ids"] == [f"q{i}" for i in range(1, N + 1)] and v["regressed_ids"] == []

    seen: list[str] = []
    params: dict[str, Any] = {"limit": 5}
    while True:
        response = editor.get(f"/v1/evals/{run_id}/results", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        seen += [r["example_id"] for r in page["items"]]
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert sorted(seen) == sorted(f"q{i}" for i in range(1, N + 1))
    improved = editor.get(f"/v1/evals/{run_id}/results", params={"only": "improved"}).json()
    first = improved["items"][0]
    assert len(improved["items"]) == N and first["improved"] and not first["regressed"]
    assert first["candidate"]["correct"] and not first["baseline"]["correct"]
    assert first["candidate"]["output"] == next(
        e["reference"] for e in examples() if e["id"] == first["example_id"]
    )
    assert first["candidate"]["grades"][0]["type"] == "exact"
    none = editor.get(f"/v1/evals/{run_id}/results", params={"only": "regressed"}).json()
    assert none["items"] == []
    api.assert_problem(
        editor.get(f"/v1/evals/{run_id}/results", params={"only": "worse"}),
        422,
        "validation_failed",
        "query.only",
    )

    listed = editor.get("/v1/evals", params={"prompt": "bot", "status": "completed"}).json()
    assert [r["run_id"] for r in listed["items"]] == [run_id]
    assert editor.get("/v1/evals", params={"status": "failed"}).json()["items"] == []
    api.assert_problem(editor.get("/v1/evals/" + "0" * 32), 404, "run_not_found", "run_id")
    api.assert_problem(editor.get("/v1/evals/not-a-run"), 404, "run_not_found")
    limited = api.as_role("viewer", prompt_patterns=["other-*"])
    api.assert_problem(limited.get(f"/v1/evals/{run_id}"), 403, "prompt_not_allowed")


@pytest.fixture
def idle(
    backend: Settings, serve: Callable[[FastAPI], AbstractContextManager[str]]
) -> Iterator[tuple[httpx.Client, Services]]:
    """A server whose runs nobody carries out (no in-process workers), and its admin."""
    settings = backend.model_copy(update={"embedded_projector": True, "embedded_workers": False})
    services = Services.open(settings)
    try:
        created, token = services.app.create_workspace("acme")
        services.read_own_write(created.position)
        with serve(create_app(services=services)) as url:
            auth = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=url, headers=auth, timeout=30) as client:
                yield client, services
    finally:
        services.close()


def test_the_verdict_waits_for_the_run_and_runs_list_newest_first(
    idle: tuple[httpx.Client, Services],
) -> None:
    admin, services = idle
    setup(admin, WRONG, RIGHT)
    ids = []
    for reason in ("first", "second", "third"):
        body = {**REQUEST, "provider": "offline", "reason": reason}
        response = admin.post("/v1/evals", json=body)
        assert response.status_code == 202, response.text
        ids.append(response.json()["run_id"])

    assert admin.get(f"/v1/evals/{ids[0]}").json()["status"] == "requested"
    early = admin.get(f"/v1/evals/{ids[0]}/verdict")
    assert early.status_code == 409 and early.headers["content-type"] == PROBLEM
    assert early.json()["code"] == "run_not_finished" and early.json()["total"] == N
    assert early.json()["field"] == "run_id" and "requested" in early.json()["detail"]

    page = admin.get("/v1/evals", params={"limit": 2}).json()
    assert [r["run_id"] for r in page["items"]] == [ids[2], ids[1]]
    rest = admin.get("/v1/evals", params={"limit": 2, "cursor": page["next_cursor"]}).json()
    assert [r["run_id"] for r in rest["items"]] == [ids[0]] and rest["next_cursor"] is None
    requested = admin.get("/v1/evals", params={"status": "requested"}).json()["items"]
    assert len(requested) == 3

    # carried out as a worker would, here in the test, since this server runs none
    config = ExecutorConfig(environ={})
    outcome = execute_run(services.app, "acme", ids[0], config, worker="test")
    assert outcome.status == "completed"
    done = admin.get(f"/v1/evals/{ids[0]}/verdict", params={"after": services.app.written})
    assert done.status_code == 200 and done.json()["passed"] is True
    assert [r["run_id"] for r in admin.get("/v1/evals?status=requested").json()["items"]] == [
        ids[2],
        ids[1],
    ]


def test_a_failed_run_has_no_verdict(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    setup(api.admin, WRONG, RIGHT)
    # anthropic with no API key anywhere: the run fails before any call
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    requested = api.admin.post("/v1/evals", json={**REQUEST, "provider": "anthropic"})
    assert requested.status_code == 202
    run_id = requested.json()["run_id"]
    run = wait_finished(api.admin, run_id)
    assert run["status"] == "failed" and run["error"]["code"]
    body = api.assert_problem(
        api.admin.get(f"/v1/evals/{run_id}/verdict"), 409, "run_failed", "run_id"
    )
    assert run["error"]["code"] in body["detail"]


ODD = ["%00", "%ff", "a" * 300, "..", "%2F", "ünï", "%F0%9F%98%80", "x%0Ay", "-1", "9" * 40]


def test_odd_names_and_ids_get_problems_never_a_500(api: Api) -> None:
    setup(api.admin, WRONG, RIGHT)
    seen: list[httpx.Response] = []
    for odd in ODD:
        for path in (
            f"/v1/datasets/{odd}",
            f"/v1/datasets/golden/versions/{odd}/examples",
            f"/v1/datasets/{odd}/versions/1/download",
            f"/v1/datasets?cursor={odd}",
            f"/v1/evals/{odd}",
            f"/v1/evals/{odd}/results?only={odd}",
            f"/v1/evals/{odd}/verdict",
            f"/v1/evals?prompt={odd}&status={odd}&cursor={odd}",
        ):
            seen.append(api.admin.get(path))
        seen.append(api.admin.post(f"/v1/datasets/{odd}/examples", json={"examples": [{}]}))
        seen.append(api.admin.post("/v1/datasets", json={"name": odd, "examples": [{"id": odd}]}))
        for field in ("prompt", "dataset", "against"):
            seen.append(api.admin.post("/v1/evals", json={**REQUEST, field: odd}))
    faults = [
        (r.request.method, str(r.request.url)[:100], r.status_code, r.text[:200])
        for r in seen
        if r.status_code >= 500
        or (r.status_code >= 400 and r.headers.get("content-type") != PROBLEM)
    ]
    assert faults == []
