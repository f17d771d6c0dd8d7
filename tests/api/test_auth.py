"""Authentication, roles, key limits, workspace isolation and the key commands."""

from __future__ import annotations

from typing import TYPE_CHECKING

from promptrecord.domain.base import SYSTEM

if TYPE_CHECKING:
    from tests.api.conftest import Api


def test_missing_garbled_unknown_and_revoked_keys_get_401(api: Api) -> None:
    anonymous = api.client()
    response = anonymous.get("/v1/prompts")
    body = api.assert_problem(response, 401, "unauthenticated", "Authorization")
    assert response.headers["www-authenticate"] == "Bearer"
    assert "Bearer pr_" in body["detail"]

    api.assert_problem(api.client("not-a-key").get("/v1/prompts"), 401, "malformed_key")
    api.assert_problem(
        api.client(**{"Authorization": "Basic dXNlcjpwdw=="}).get("/v1/prompts"),
        401,
        "unauthenticated",
    )
    api.assert_problem(
        api.client("pr_0123456789abcdef_nope").get("/v1/prompts"), 401, "unknown_key"
    )
    secret_swapped = api.admin_token[:-3] + "xyz"
    api.assert_problem(api.client(secret_swapped).get("/v1/prompts"), 401, "unknown_key")

    token = api.issue("viewer", "temp")
    viewer = api.client(token)
    assert viewer.get("/v1/prompts").status_code == 200
    key_id = token.split("_")[1]
    revoked = api.admin.post(f"/v1/keys/{key_id}/revoke", json={"reason": "left the team"})
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked"] is True
    api.assert_problem(viewer.get("/v1/prompts"), 401, "revoked_key")
    again = api.admin.post(f"/v1/keys/{key_id}/revoke", json={"reason": "twice"})
    api.assert_problem(again, 409, "already_revoked")
    api.assert_problem(
        api.admin.post("/v1/keys/ffffffffffffffff/revoke", json={"reason": "x"}), 404, "not_found"
    )
    api.assert_problem(
        api.admin.post(f"/v1/keys/{key_id}/revoke", json={}),
        422,
        "validation_failed",
        "body.reason",
    )


def test_roles_are_enforced(api: Api) -> None:
    viewer, runtime, editor = api.as_role("viewer"), api.as_role("runtime"), api.as_role("editor")
    body = api.assert_problem(
        viewer.post("/v1/prompts", json={"name": "bot", "content": api.content()}),
        403,
        "role_required",
    )
    assert body["required_role"] == "editor" and body["role"] == "viewer"
    assert (
        editor.post("/v1/prompts", json={"name": "bot", "content": api.content()}).status_code
        == 201
    )
    api.assert_problem(
        viewer.post("/v1/prompts/bot/versions", json={"content": api.content("v2")}),
        403,
        "role_required",
    )
    api.assert_problem(
        editor.post("/v1/prompts/bot/environments/production/promote", json={"version": 1}),
        403,
        "role_required",
    )
    api.assert_problem(runtime.get("/v1/keys"), 403, "role_required")
    api.assert_problem(
        api.as_role("deployer").post("/v1/keys", json={"name": "x", "role": "viewer"}),
        403,
        "role_required",
    )
    api.assert_problem(viewer.get("/v1/prompts/bot/resolve"), 403, "role_required")
    assert viewer.get("/v1/prompts/bot").status_code == 200
    assert runtime.get("/v1/prompts/bot/versions").status_code == 200


def test_issue_and_list_keys_never_show_secrets(api: Api) -> None:
    response = api.admin.post(
        "/v1/keys",
        json={"name": "ci", "role": "deployer", "environments": ["staging"]},
    )
    assert response.status_code == 201, response.text
    issued = response.json()
    assert issued["token"].startswith(f"pr_{issued['key_id']}_")
    assert issued["role"] == "deployer" and issued["environments"] == ["staging"]
    assert issued["position"] > 0 and response.headers["etag"] == f'"{issued["revision"]}"'
    for token in ("a", "b", "c"):
        api.issue("viewer", token)
    first = api.admin.get("/v1/keys", params={"limit": 2})
    assert first.status_code == 200
    page = first.json()
    assert [key["name"] for key in page["items"]] == ["bootstrap admin", "ci"]
    rest = api.admin.get("/v1/keys", params={"limit": 10, "cursor": page["next_cursor"]}).json()
    assert [key["name"] for key in rest["items"]] == ["a", "b", "c"]
    assert rest["next_cursor"] is None
    assert "secret" not in first.text and "sha256" not in first.text
    api.assert_problem(
        api.admin.post("/v1/keys", json={"name": "x", "role": "superuser"}),
        422,
        "invalid_input",
        "role",
    )
    api.assert_problem(
        api.admin.post("/v1/keys", json={"name": "x", "role": "viewer", "environments": ["qa"]}),
        404,
        "environment_not_found",
        "environment",
    )


def test_workspaces_are_isolated(api: Api) -> None:
    assert (
        api.admin.post("/v1/prompts", json={"name": "bot", "content": api.content()}).status_code
        == 201
    )
    _, other_token = api.services.app.create_workspace("globex")
    other = api.client(other_token)
    assert other.get("/v1/prompts").json()["items"] == []
    api.assert_problem(other.get("/v1/prompts/bot"), 404, "prompt_not_found", "name")
    api.assert_problem(other.get("/v1/prompts/bot/resolve"), 404, "prompt_not_found")
    api.assert_problem(
        other.post("/v1/prompts/bot/environments/production/promote", json={"version": 1}),
        404,
        "prompt_not_found",
    )
    api.assert_problem(
        other.post(
            "/v1/tenants/t1/pins",
            json={"prompt": "bot", "environment": "production", "version": 1},
        ),
        404,
        "prompt_not_found",
    )
    keys = other.get("/v1/keys").json()["items"]
    assert [key["name"] for key in keys] == ["bootstrap admin"]
    acme_key = api.admin_token.split("_")[1]
    api.assert_problem(
        other.post(f"/v1/keys/{acme_key}/revoke", json={"reason": "hostile"}), 404, "not_found"
    )
    # Same name in the other workspace is another prompt altogether.
    created = other.post("/v1/prompts", json={"name": "bot", "content": api.content("Globex!")})
    assert created.status_code == 201
    assert api.admin.get("/v1/prompts/bot/versions").json()["items"][0]["number"] == 1
    assert len(api.admin.get("/v1/prompts/bot/versions").json()["items"]) == 1


def test_keys_limited_to_environments_and_prompts(api: Api) -> None:
    api.admin.post("/v1/prompts", json={"name": "support-bot", "content": api.content()})
    api.admin.post("/v1/prompts", json={"name": "sales-bot", "content": api.content()})
    staging = api.as_role("deployer", "staging ci", environments=["staging"])
    ok = staging.post("/v1/prompts/support-bot/environments/staging/promote", json={"version": 1})
    assert ok.status_code == 200, ok.text
    body = api.assert_problem(
        staging.post(
            "/v1/prompts/support-bot/environments/production/promote", json={"version": 1}
        ),
        403,
        "environment_not_allowed",
        "environment",
    )
    assert body["limit"] == "environments"
    api.assert_problem(
        staging.post(
            "/v1/tenants/t1/pins",
            json={"prompt": "support-bot", "environment": "production", "version": 1},
        ),
        403,
        "environment_not_allowed",
    )
    listed = staging.get("/v1/prompts/support-bot/environments").json()["items"]
    assert [row["environment"] for row in listed] == ["staging"]

    support = api.as_role("editor", "support team", prompt_patterns=["support-*"])
    assert support.get("/v1/prompts/support-bot").status_code == 200
    body = api.assert_problem(
        support.get("/v1/prompts/sales-bot"), 403, "prompt_not_allowed", "name"
    )
    assert body["limit"] == "prompt_patterns"
    api.assert_problem(
        support.post("/v1/prompts", json={"name": "sales-2", "content": api.content()}),
        403,
        "prompt_not_allowed",
    )
    api.assert_problem(
        support.post("/v1/prompts", json={"title": "Sales helper"}), 403, "prompt_not_allowed"
    )
    assert [p["name"] for p in support.get("/v1/prompts").json()["items"]] == ["support-bot"]

    runtime = api.as_role("runtime", "staging app", environments=["staging"])
    assert runtime.get("/v1/prompts/support-bot/resolve?environment=staging").status_code == 200
    api.assert_problem(
        runtime.get("/v1/prompts/support-bot/resolve"),
        403,
        "environment_not_allowed",
        "query.environment",
    )
    # A limited admin cannot issue itself a way around its limits.
    limited_admin = api.as_role("admin", "staging admin", environments=["staging"])
    api.assert_problem(
        limited_admin.post("/v1/keys", json={"name": "wide", "role": "deployer"}),
        403,
        "environment_not_allowed",
        "environments",
    )


def test_actor_and_on_behalf_of_are_recorded(api: Api) -> None:
    token = api.issue("editor", "ci")
    ci = api.client(token, **{"X-On-Behalf-Of": "alice@example.com"})
    assert ci.post("/v1/prompts", json={"name": "bot", "content": api.content()}).status_code == 201
    author = api.admin.get("/v1/prompts/bot/versions/1").json()["author"]
    assert author == {
        "key_id": token.split("_")[1],
        "key_name": "ci",
        "on_behalf_of": "alice@example.com",
    }
    too_long = api.client(token, **{"X-On-Behalf-Of": "x" * 201})
    api.assert_problem(
        too_long.get("/v1/prompts"), 422, "invalid_on_behalf_of", "header.X-On-Behalf-Of"
    )


def test_a_key_issued_by_another_process_works_at_once(api: Api) -> None:
    # Issued straight through the application, as another replica would, with this process
    # not polling the log: only authentication catching up can find the key.
    api.services.live.stop()
    _, token = api.services.app.issue_key("acme", "other replica", "viewer", SYSTEM)
    assert api.client(token.token).get("/v1/prompts").status_code == 200
