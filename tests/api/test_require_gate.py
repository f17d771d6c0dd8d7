"""A `require_gate` policy over HTTP: promotions and rollout completions need a passing eval
run of the candidate against what serves, and carry its verdict for approvers to see."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from tests.api.conftest import Api

N = 12
RIGHT = {"offline_accuracy": 1.0}  # the offline provider answers with the reference
WRONG = {"offline_accuracy": 0.0}  # … never
ENV = "/v1/prompts/bot/environments/production"


def setup(api: Api, *models: dict[str, Any]) -> None:
    """Prompt `bot` with a version per model config, v1 serving production; dataset `golden`
    whose questions carry the answer the offline provider gives."""
    admin = api.admin
    for number, model in enumerate(models, start=1):
        content = api.content(f"You answer sums (v{number}).", **model)
        if number == 1:
            response = admin.post("/v1/prompts", json={"name": "bot", "content": content})
        else:
            response = admin.post("/v1/prompts/bot/versions", json={"content": content})
        assert response.status_code == 201, response.text
    assert admin.post(f"{ENV}/promote", json={"version": 1}).status_code == 200
    examples = [
        {
            "id": f"q{i}",
            "inputs": {"question": f"{i}+{i} [[answer: {2 * i}]]"},
            "reference": str(2 * i),
        }
        for i in range(1, N + 1)
    ]
    response = admin.post("/v1/datasets", json={"name": "golden", "examples": examples})
    assert response.status_code == 201, response.text


def require_gate(api: Api, **more: Any) -> dict[str, Any]:
    response = api.admin.post(
        "/v1/workspace/policies/production",
        json={"require_gate": True, "gate_dataset": "golden", **more},
    )
    assert response.status_code == 200, response.text
    policy: dict[str, Any] = response.json()["policy"]
    return policy


def gate(api: Api, candidate: int, client: httpx.Client | None = None) -> dict[str, Any]:
    """Request a run of `candidate` against production; once the server's in-process workers
    have carried it out, the run."""
    client = client or api.admin
    body = {
        "prompt": "bot",
        "candidate": candidate,
        "against": "production",
        "dataset": "golden",
        "provider": "offline",
    }
    response = client.post("/v1/evals", json=body)
    assert response.status_code == 202, response.text
    run_id = response.json()["run_id"]
    deadline = time.monotonic() + 60
    while True:
        run: dict[str, Any] = client.get(f"/v1/evals/{run_id}").json()
        if run["status"] in ("completed", "failed"):
            assert run["status"] == "completed", run
            return run
        assert time.monotonic() < deadline, run
        time.sleep(0.05)


def test_policy_fields_are_set_shown_and_checked(api: Api) -> None:
    policy = require_gate(api)
    assert policy["require_gate"] is True and policy["gate_dataset"] == "golden"
    shown = api.admin.get("/v1/workspace").json()["policies"]
    assert shown["production"]["require_gate"] is True
    assert shown["production"]["gate_dataset"] == "golden"
    assert shown["staging"]["require_gate"] is False and shown["staging"]["gate_dataset"] is None
    # leaving a field out keeps it
    kept = api.admin.post("/v1/workspace/policies/production", json={"four_eyes": True})
    assert kept.json()["policy"]["gate_dataset"] == "golden"

    api.assert_problem(
        api.admin.post("/v1/workspace/policies/staging", json={"require_gate": True}),
        422,
        "invalid_input",
        "policy.gate_dataset",
    )
    api.assert_problem(
        api.admin.post("/v1/workspace/policies/staging", json={"gate_dataset": "Bad Name"}),
        422,
        "invalid_input",
        "policy.gate_dataset",
    )
    # gate_dataset: null clears it, once the gate is off
    api.assert_problem(
        api.admin.post("/v1/workspace/policies/production", json={"gate_dataset": None}),
        422,
        "invalid_input",
        "policy.gate_dataset",
    )
    off = api.admin.post(
        "/v1/workspace/policies/production", json={"require_gate": False, "gate_dataset": None}
    )
    assert off.status_code == 200, off.text
    assert off.json()["policy"]["gate_dataset"] is None
    api.assert_problem(
        api.as_role("deployer").post(
            "/v1/workspace/policies/production", json={"require_gate": True}
        ),
        403,
        "role_required",
    )


def test_promotion_needs_a_passing_run_and_carries_its_verdict(api: Api) -> None:
    setup(api, WRONG, RIGHT, WRONG)
    require_gate(api)
    deployer = api.as_role("deployer")

    body = api.assert_problem(
        deployer.post(f"{ENV}/promote", json={"version": 2}), 409, "gate_required"
    )
    assert "promptrecord gate bot --candidate 2 --against production" in body["detail"]
    assert body["dataset"] == "golden" and body["baseline"] == 1

    passed = gate(api, 2)
    assert passed["passed"] is True and passed["baseline"] == 1
    promoted = deployer.post(f"{ENV}/promote", json={"version": 2, "reason": "gated"})
    assert promoted.status_code == 200, promoted.text
    events = api.admin.get("/v1/events", params={"limit": 1000}).json()["items"]
    promotion = [e for e in events if e["type"] == "Deployment.Promoted"][-1]
    carried = promotion["data"]["gate"]
    assert carried["status"] == "passed" and carried["run_id"] == passed["run_id"]
    assert carried["summary"]["table"]["candidate_only"] == N

    # v3 gets every answer wrong where v2 (now serving) gets them right: blocked
    blocked = gate(api, 3)
    assert blocked["passed"] is False
    body = api.assert_problem(
        deployer.post(f"{ENV}/promote", json={"version": 3}), 409, "gate_blocked"
    )
    assert body["run_id"] == blocked["run_id"] and "significant_regression" in body["detail"]

    # a rollout may start ungated (the canary is the test), but not complete
    started = deployer.post(f"{ENV}/rollout", json={"candidate": 3, "share": 0.1})
    assert started.status_code == 200, started.text
    api.assert_problem(deployer.post(f"{ENV}/rollout/complete", json={}), 409, "gate_blocked")
    assert deployer.get(ENV).json()["rollout"]["candidate"] == 3
    assert deployer.post(f"{ENV}/rollout/abort", json={}).status_code == 200
    assert deployer.get(ENV).json()["serving"] == 2


def test_approvers_see_the_gate_on_the_request(api: Api) -> None:
    setup(api, WRONG, RIGHT)
    require_gate(api, required_approvals=1)
    requester = api.as_role("deployer", "requester")
    approver = api.as_role("deployer", "approver")
    api.assert_problem(requester.post(f"{ENV}/promote", json={"version": 2}), 409, "gate_required")
    run = gate(api, 2)

    opened = requester.post(f"{ENV}/promote", json={"version": 2, "reason": "v2 is better"})
    assert opened.status_code == 202, opened.text
    request_id = opened.json()["request_id"]
    pending = approver.get(f"{ENV}/requests").json()["items"]
    assert [r["request_id"] for r in pending] == [request_id]
    seen = pending[0]["gate"]
    assert seen["status"] == "passed" and seen["run_id"] == run["run_id"]
    assert seen["dataset"] == "golden" and seen["summary"]["passed"] is True
    assert seen["summary"]["mcnemar"]["p_value"] < 0.05
    detail = approver.get(ENV).json()
    assert detail["pending_requests"][0]["gate"]["run_id"] == run["run_id"]

    approved = approver.post(f"{ENV}/requests/{request_id}/approve", json={})
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "promoted"
    assert approver.get(ENV).json()["serving"] == 2
