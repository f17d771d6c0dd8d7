"""Promotions, approvals under policy, rollouts and rollbacks, over HTTP."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from tests.api.conftest import Api


ENV = "/v1/prompts/bot/environments"


def _prompt_with_versions(api: Api, count: int, client: httpx.Client | None = None) -> None:
    author = client or api.admin
    assert author.post("/v1/prompts", json={"name": "bot", "content": api.content("v1")}).is_success
    for number in range(2, count + 1):
        response = author.post(
            "/v1/prompts/bot/versions", json={"content": api.content(f"v{number}")}
        )
        assert response.status_code == 201, response.text


def test_promote_and_read_environments(api: Api) -> None:
    deployer = api.as_role("deployer")
    _prompt_with_versions(api, 2)
    empty = deployer.get(f"{ENV}/production")
    assert empty.status_code == 200 and empty.json()["serving"] is None
    assert empty.json()["revision"] is None and "etag" not in empty.headers
    promoted = deployer.post(f"{ENV}/production/promote", json={"version": 1, "reason": "go"})
    assert promoted.status_code == 200, promoted.text
    outcome = promoted.json()
    assert outcome["status"] == "promoted" and outcome["version"] == 1
    assert outcome["position"] > 0 and promoted.headers["etag"] == f'"{outcome["revision"]}"'

    detail = deployer.get(f"{ENV}/production")
    assert detail.json()["serving"] == 1 and detail.json()["stack"] == [1]
    assert detail.headers["etag"] == f'"{outcome["revision"]}"'
    listed = deployer.get(ENV).json()["items"]
    assert [(row["environment"], row["serving"]) for row in listed] == [
        ("development", None),
        ("staging", None),
        ("production", 1),
    ]
    api.assert_problem(
        deployer.post(f"{ENV}/production/promote", json={"version": 9}), 404, "version_not_found"
    )
    api.assert_problem(
        deployer.post(f"{ENV}/qa/promote", json={"version": 1}), 404, "environment_not_found"
    )
    api.assert_problem(
        deployer.post(f"{ENV}/production/promote", json={"version": 1}), 409, "already_serving"
    )
    api.assert_problem(
        deployer.post(
            f"{ENV}/production/promote",
            json={"version": 2},
            headers={"If-Match": f'"{outcome["revision"] - 1}"'},
        ),
        409,
        "stale_revision",
    )
    ok = deployer.post(
        f"{ENV}/production/promote",
        json={"version": 2},
        headers={"If-Match": f'"{outcome["revision"]}"'},
    )
    assert ok.status_code == 200, ok.text
    api.assert_problem(
        deployer.post(f"{ENV}/production/promote", json={"version": "two"}),
        422,
        "validation_failed",
        "body.version",
    )
    api.assert_problem(deployer.get("/v1/prompts/nope/environments"), 404, "prompt_not_found")


def test_approvals_four_eyes_and_threshold(api: Api) -> None:
    policy = api.admin.post(
        "/v1/workspace/policies/production", json={"required_approvals": 2, "four_eyes": True}
    )
    assert policy.status_code == 200, policy.text
    carol = api.as_role("deployer", "carol")  # author of version 2
    bob, dave, erin = (api.as_role("deployer", name) for name in ("bob", "dave", "erin"))
    _prompt_with_versions(api, 1)
    carol.post("/v1/prompts/bot/versions", json={"content": api.content("v2")})

    opened = bob.post(f"{ENV}/production/promote", json={"version": 2, "reason": "ship it"})
    assert opened.status_code == 202, opened.text
    request_id = opened.json()["request_id"]
    assert opened.json()["status"] == "pending_approval"
    api.assert_problem(
        bob.post(f"{ENV}/production/promote", json={"version": 2}), 409, "request_pending"
    )
    approve = f"{ENV}/production/requests/{request_id}/approve"
    api.assert_problem(bob.post(approve, json={}), 403, "four_eyes")
    api.assert_problem(carol.post(approve, json={}), 403, "four_eyes")
    api.assert_problem(api.as_role("editor").post(approve, json={}), 403, "role_required")
    first = dave.post(approve, json={"reason": "looks right"})
    assert first.status_code == 200, first.text
    assert first.json()["status"] == "pending_approval" and first.json()["approvals"] == 1
    api.assert_problem(dave.post(approve, json={}), 409, "already_approved")
    api.assert_problem(api.admin.get("/v1/prompts/bot/resolve"), 404, "not_deployed")
    revision = dave.get(f"{ENV}/production").json()["revision"]
    api.assert_problem(
        erin.post(approve, json={}, headers={"If-Match": f'"{revision - 1}"'}),
        409,
        "stale_revision",
    )
    final = erin.post(approve, json={}, headers={"If-Match": f'"{revision}"'})
    assert final.status_code == 200, final.text
    assert final.json()["status"] == "promoted" and final.json()["approvals"] == 2
    assert api.admin.get("/v1/prompts/bot/resolve").json()["version"] == 2
    api.assert_problem(erin.post(approve, json={}), 409, "request_closed")

    requests = bob.get(f"{ENV}/production/requests").json()["items"]
    assert [(r["request_id"], r["status"]) for r in requests] == [(request_id, "executed")]
    assert [a["key_name"] for a in requests[0]["approvals"]] == ["dave", "erin"]
    assert requests[0]["requester"]["key_name"] == "bob"
    detail = bob.get(f"{ENV}/production").json()
    assert detail["pending_requests"] == [] and len(detail["past_requests"]) == 1

    rejected_request = bob.post(f"{ENV}/production/promote", json={"version": 1}).json()
    reject = f"{ENV}/production/requests/{rejected_request['request_id']}/reject"
    rejected = dave.post(reject, json={"reason": "not now"})
    assert rejected.status_code == 200 and rejected.json()["status"] == "rejected"
    api.assert_problem(
        dave.post(f"{ENV}/production/requests/nope/approve", json={}), 404, "request_not_found"
    )
    api.assert_problem(
        api.admin.post(
            "/v1/workspace/policies/production",
            json={"required_approvals": 11},
        ),
        422,
        "invalid_input",
        "policy.required_approvals",
    )
    api.assert_problem(
        api.admin.post("/v1/workspace/policies/qa", json={"four_eyes": True}),
        404,
        "environment_not_found",
    )
    workspace = api.as_role("viewer").get("/v1/workspace").json()
    assert workspace["policies"]["production"]["required_approvals"] == 2
    assert workspace["policies"]["staging"]["required_approvals"] == 0


def test_policy_requires_previous_environment_and_dated_models(api: Api) -> None:
    api.admin.post(
        "/v1/workspace/policies/production",
        json={"require_previous_environment": True, "refuse_floating_models": True},
    )
    floating = {"text": "hi", "model": {"provider": "openai", "name": "gpt-4o"}}
    api.admin.post("/v1/prompts", json={"name": "bot", "content": api.content()})
    api.admin.post("/v1/prompts/bot/versions", json={"content": floating})
    api.assert_problem(
        api.admin.post(f"{ENV}/production/promote", json={"version": 1}),
        409,
        "previous_environment_required",
    )
    assert api.admin.post(f"{ENV}/staging/promote", json={"version": 1}).status_code == 200
    assert api.admin.post(f"{ENV}/production/promote", json={"version": 1}).status_code == 200
    api.admin.post(f"{ENV}/staging/promote", json={"version": 2})
    api.assert_problem(
        api.admin.post(f"{ENV}/production/promote", json={"version": 2}), 409, "floating_model"
    )


def test_rollout_lifecycle(api: Api) -> None:
    deployer = api.as_role("deployer")
    _prompt_with_versions(api, 3)
    api.assert_problem(
        deployer.post(f"{ENV}/production/rollout", json={"candidate": 2, "share": 0.5}),
        409,
        "no_baseline",
    )
    deployer.post(f"{ENV}/production/promote", json={"version": 1})
    for share in (0, 1, 1.5, -0.1):
        api.assert_problem(
            deployer.post(f"{ENV}/production/rollout", json={"candidate": 2, "share": share}),
            422,
            "share_out_of_range",
            "share",
        )
    api.assert_problem(
        deployer.post(
            f"{ENV}/production/rollout", json={"candidate": 2, "share": 0.5, "key_by": "planet"}
        ),
        422,
        "validation_failed",
        "body.key_by",
    )
    started = deployer.post(
        f"{ENV}/production/rollout", json={"candidate": 2, "share": 0.5, "reason": "canary"}
    )
    assert started.status_code == 200, started.text
    assert started.json()["status"] == "rollout_started"
    tenants = [f"tenant-{i}" for i in range(40)]
    answers = [
        api.admin.get("/v1/prompts/bot/resolve", params={"tenant": tenant}).json()
        for tenant in tenants
    ]
    arms = {answer["rollout"]["arm"] for answer in answers}
    assert arms == {"candidate", "baseline"}
    for answer in answers:
        rollout = answer["rollout"]
        assert answer["reason"] == "rollout" and rollout["share"] == 0.5
        assert (rollout["bucket"] < 0.5) == (rollout["arm"] == "candidate")
        assert answer["version"] == (2 if rollout["arm"] == "candidate" else 1)
        assert (rollout["baseline"], rollout["candidate"], rollout["key_by"]) == (1, 2, "tenant")
    again = api.admin.get("/v1/prompts/bot/resolve", params={"tenant": tenants[0]}).json()
    assert again["version"] == answers[0]["version"]
    anonymous = api.admin.get("/v1/prompts/bot/resolve").json()
    assert anonymous["rollout"]["arm"] == "baseline" and anonymous["rollout"]["bucket"] is None

    api.assert_problem(
        deployer.post(f"{ENV}/production/rollout", json={"candidate": 3, "share": 0.1}),
        409,
        "rollout_active",
    )
    api.assert_problem(
        deployer.post(f"{ENV}/production/promote", json={"version": 3}), 409, "rollout_active"
    )
    api.assert_problem(
        deployer.post(f"{ENV}/production/rollout/adjust", json={"share": 1}),
        422,
        "share_out_of_range",
    )
    adjusted = deployer.post(f"{ENV}/production/rollout/adjust", json={"share": 0.9})
    assert adjusted.status_code == 200 and adjusted.json()["status"] == "rollout_adjusted"
    shares = {
        api.admin.get("/v1/prompts/bot/resolve", params={"tenant": t}).json()["rollout"]["share"]
        for t in tenants[:3]
    }
    assert shares == {0.9}
    state = deployer.get(f"{ENV}/production").json()
    assert state["rollout"]["candidate"] == 2 and state["rollout"]["share"] == 0.9
    assert state["rollout"]["started_at"]

    aborted = deployer.post(f"{ENV}/production/rollout/abort", json={"reason": "errors"})
    assert aborted.status_code == 200 and aborted.json()["status"] == "aborted"
    after_abort = api.admin.get("/v1/prompts/bot/resolve", params={"tenant": "tenant-1"}).json()
    assert after_abort["version"] == 1 and after_abort["reason"] == "promoted"
    api.assert_problem(deployer.post(f"{ENV}/production/rollout/abort", json={}), 409, "no_rollout")
    api.assert_problem(
        deployer.post(f"{ENV}/production/rollout/adjust", json={"share": 0.2}), 409, "no_rollout"
    )

    deployer.post(f"{ENV}/production/rollout", json={"candidate": 3, "share": 0.2})
    completed = deployer.post(f"{ENV}/production/rollout/complete", json={"reason": "healthy"})
    assert completed.status_code == 200, completed.text
    assert completed.json()["status"] == "promoted" and completed.json()["version"] == 3
    done = api.admin.get("/v1/prompts/bot/resolve", params={"tenant": "tenant-1"}).json()
    assert done["version"] == 3 and done["reason"] == "promoted" and done["rollout"] is None
    api.assert_problem(
        deployer.post(f"{ENV}/production/rollout/complete", json={}), 409, "no_rollout"
    )
    api.assert_problem(
        deployer.post(f"{ENV}/staging/rollout/complete", json={}), 404, "not_deployed"
    )


def test_rollout_keyed_by_user(api: Api) -> None:
    _prompt_with_versions(api, 2)
    api.admin.post(f"{ENV}/production/promote", json={"version": 1})
    api.admin.post(
        f"{ENV}/production/rollout", json={"candidate": 2, "share": 0.5, "key_by": "user"}
    )
    by_key = {}
    for user in (f"user-{i}" for i in range(30)):
        one = api.admin.get("/v1/prompts/bot/resolve", params={"tenant": "acme", "key": user})
        other = api.admin.get("/v1/prompts/bot/resolve", params={"tenant": "globex", "key": user})
        assert one.json()["version"] == other.json()["version"]  # the tenant plays no part
        assert one.json()["rollout"]["key_by"] == "user"
        by_key[user] = one.json()["rollout"]["arm"]
    assert set(by_key.values()) == {"candidate", "baseline"}
    no_key = api.admin.get("/v1/prompts/bot/resolve", params={"tenant": "acme"}).json()
    assert no_key["rollout"]["arm"] == "baseline" and no_key["rollout"]["bucket"] is None


def test_rollback(api: Api) -> None:
    deployer = api.as_role("deployer")
    _prompt_with_versions(api, 3)
    api.assert_problem(
        deployer.post(f"{ENV}/production/rollback", json={"reason": "x"}), 404, "not_deployed"
    )
    for version in (1, 2, 3):
        deployer.post(f"{ENV}/production/promote", json={"version": version})
    api.assert_problem(
        deployer.post(f"{ENV}/production/rollback", json={}),
        422,
        "validation_failed",
        "body.reason",
    )
    api.assert_problem(
        deployer.post(f"{ENV}/production/rollback", json={"reason": "  "}),
        422,
        "invalid_input",
        "reason",
    )
    api.assert_problem(
        api.as_role("editor").post(f"{ENV}/production/rollback", json={"reason": "bad"}),
        403,
        "role_required",
    )
    back = deployer.post(f"{ENV}/production/rollback", json={"reason": "v3 is rude"})
    assert back.status_code == 200, back.text
    assert back.json()["status"] == "rolled_back" and back.json()["version"] == 2
    assert api.admin.get("/v1/prompts/bot/resolve").json()["version"] == 2
    named = deployer.post(
        f"{ENV}/production/rollback", json={"reason": "known good", "to_version": 1}
    )
    assert named.status_code == 200 and named.json()["version"] == 1
    assert api.admin.get("/v1/prompts/bot/resolve").json()["version"] == 1
    api.assert_problem(
        deployer.post(f"{ENV}/production/rollback", json={"reason": "x", "to_version": 9}),
        404,
        "version_not_found",
    )
    api.assert_problem(
        deployer.post(f"{ENV}/production/rollback", json={"reason": "x", "to_version": 1}),
        409,
        "already_serving",
    )
    # During a rollout the kill switch returns everyone to the baseline.
    deployer.post(f"{ENV}/production/rollout", json={"candidate": 3, "share": 0.5})
    out = deployer.post(f"{ENV}/production/rollback", json={"reason": "canary failing"})
    assert out.json()["version"] == 1
    final = api.admin.get("/v1/prompts/bot/resolve", params={"tenant": "t"}).json()
    assert final["version"] == 1 and final["rollout"] is None
