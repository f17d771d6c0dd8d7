"""Prompts and versions: create, commit, identical content, restore, diff, archive, paging."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.api.conftest import Api


def test_create_commit_and_read_versions(api: Api) -> None:
    editor = api.as_role("editor", "alice")
    created = editor.post(
        "/v1/prompts",
        json={
            "name": "support-bot",
            "title": "Support bot",
            "description": "help centre",
            "content": api.content(),
            "git_sha": "9fceb02",
            "git_path": "prompts/support-bot/system.md",
        },
    )
    assert created.status_code == 201, created.text
    first = created.json()
    assert first["name"] == "support-bot" and first["position"] > 0
    assert first["version"]["number"] == 1 and first["version"]["created"] is True
    assert first["version"]["variables"] == ["company", "question"]
    assert first["version"]["content_hash"].startswith("sha256:")
    assert created.headers["etag"] == f'"{first["revision"]}"'

    prompt = editor.get("/v1/prompts/support-bot")
    assert prompt.status_code == 200
    revision = prompt.json()["revision"]
    assert prompt.headers["etag"] == f'"{revision}"'
    assert prompt.json()["title"] == "Support bot" and prompt.json()["head"]["number"] == 1

    second = editor.post(
        "/v1/prompts/support-bot/versions",
        json={
            "content": api.content("Be brief with {{ company }}.", temperature=0.3),
            "message": "v2",
        },
        headers={"If-Match": f'"{revision}"'},
    )
    assert second.status_code == 201, second.text
    assert second.json()["number"] == 2 and second.json()["created"] is True
    assert second.json()["position"] > first["position"]

    same = editor.post(
        "/v1/prompts/support-bot/versions",
        json={"content": api.content("Be brief with {{ company }}.", temperature=0.3)},
    )
    assert same.status_code == 200, same.text
    assert same.json()["created"] is False and same.json()["number"] == 2
    assert same.json()["position"] is None

    stale = editor.post(
        "/v1/prompts/support-bot/versions",
        json={"content": api.content("v3")},
        headers={"If-Match": f'"{revision}"'},
    )
    body = api.assert_problem(stale, 409, "stale_revision")
    assert body["current_revision"] == second.json()["revision"]
    api.assert_problem(
        editor.post(
            "/v1/prompts/support-bot/versions",
            json={"content": api.content("v3")},
            headers={"If-Match": "yesterday"},
        ),
        422,
        "invalid_if_match",
        "header.If-Match",
    )

    floating = editor.post(
        "/v1/prompts/support-bot/versions",
        json={
            "content": {"text": "Hi {{ name }}", "model": {"provider": "openai", "name": "gpt-4o"}}
        },
    )
    assert floating.status_code == 201
    assert floating.json()["warnings"] and "gpt-4o" in floating.json()["warnings"][0]

    detail = editor.get("/v1/prompts/support-bot/versions/1").json()
    assert detail["content"]["messages"][0]["content"] == "You help {{ company }} customers."
    assert detail["author"]["key_name"] == "alice" and detail["parent"] is None
    assert detail["git_sha"] == "9fceb02" and detail["committed_at"]
    assert editor.get("/v1/prompts/support-bot/versions/2").json()["parent"] == 1
    api.assert_problem(
        editor.get("/v1/prompts/support-bot/versions/9"), 404, "version_not_found", "version"
    )
    api.assert_problem(editor.get("/v1/prompts/nope/versions/1"), 404, "prompt_not_found", "name")
    api.assert_problem(
        editor.get("/v1/prompts/support-bot/versions/0"), 422, "validation_failed", "path.number"
    )

    titled = editor.post("/v1/prompts", json={"title": "Refund Helper!"})
    assert titled.status_code == 201
    assert titled.json()["name"].startswith("refund-helper-") and titled.json()["version"] is None
    api.assert_problem(
        editor.post("/v1/prompts", json={"name": "support-bot"}), 409, "prompt_exists", "name"
    )
    api.assert_problem(editor.post("/v1/prompts", json={}), 422, "invalid_input", "name")
    api.assert_problem(
        editor.post("/v1/prompts", json={"name": "Bad Name"}), 422, "invalid_input", "name"
    )


def test_content_is_validated(api: Api) -> None:
    api.admin.post("/v1/prompts", json={"name": "bot"})
    commit = "/v1/prompts/bot/versions"
    broken = api.content("Hello\n{% if company %}no end")
    body = api.assert_problem(
        api.admin.post(commit, json={"content": broken}),
        422,
        "template_syntax",
        "messages[0].content",
    )
    assert body["line"] == 2 and body["column"] >= 1
    no_model_name = {"text": "hi", "model": {"provider": "anthropic"}}
    body = api.assert_problem(
        api.admin.post(commit, json={"content": no_model_name}),
        422,
        "validation_failed",
        "body.content.model.name",
    )
    assert body["errors"] == [{"field": "body.content.model.name", "message": "Field required"}]
    bad_role = {"messages": [{"role": "robot", "content": "x"}], "model": api.content()["model"]}
    api.assert_problem(
        api.admin.post(commit, json={"content": bad_role}),
        422,
        "validation_failed",
        "body.content.messages[0].role",
    )
    api.assert_problem(
        api.admin.post(commit, json={"content": api.content(temperature=3)}),
        422,
        "invalid_content",
        "content.model.temperature",
    )
    api.assert_problem(
        api.admin.post(commit, json={"content": {"model": api.content()["model"]}}),
        422,
        "invalid_content",
        "content.type",
    )
    api.assert_problem(
        api.admin.post(commit, json={"content": api.content(), "colour": "red"}),
        422,
        "validation_failed",
        "body.colour",
    )
    # Inputs that parse as JSON in Python but cannot be stored or sent back: refused, not 500.
    for raw in (
        b'{"content": {"text": "x", "model": {"provider": "a", "name": "b", "temperature": NaN}}}',
        b'{"content": {"text": "x", "model": {"provider": "a", "name": "b"}, '
        b'"metadata": {"n": Infinity}}}',
        b'{"content": {"text": "\\ud800", "model": {"provider": "a", "name": "b"}}}',
        b'{"content": {"text": "x", "model": {"provider": "a", "name": "b"}, "metadata": '
        + b'{"a": ' * 40
        + b"1"
        + b"}" * 40
        + b"}}",
    ):
        response = api.admin.post(commit, content=raw, headers={"Content-Type": "application/json"})
        api.assert_problem(response, 422, "validation_failed")


def test_restore_diff_and_paging(api: Api) -> None:
    api.admin.post("/v1/prompts", json={"name": "bot", "content": api.content("Hello all")})
    api.admin.post("/v1/prompts/bot/versions", json={"content": api.content("Hello you")})
    restored = api.admin.post("/v1/prompts/bot/versions/1/restore", json={"message": "undo"})
    assert restored.status_code == 201, restored.text
    assert restored.json()["number"] == 3 and restored.json()["restored_from"] == 1
    version = api.admin.get("/v1/prompts/bot/versions/3").json()
    assert version["restored_from"] == 1 and version["message"] == "undo"
    again = api.admin.post("/v1/prompts/bot/versions/1/restore", json={})
    assert again.status_code == 200 and again.json()["created"] is False
    api.assert_problem(
        api.admin.post("/v1/prompts/bot/versions/7/restore", json={}), 404, "version_not_found"
    )

    diff = api.admin.get("/v1/prompts/bot/diff", params={"from": 1, "to": 2})
    assert diff.status_code == 200, diff.text
    data = diff.json()
    assert data["changed"] is True and data["from_version"] == 1 and data["to_version"] == 2
    changed = [field for field in data["fields"] if field["change"] == "modified"]
    assert changed[0]["path"] == "messages[0].content"
    assert {"op": "delete", "text": "all"} in changed[0]["tokens"]
    assert {"op": "insert", "text": "you"} in changed[0]["tokens"]
    assert "[-all-]{+you+}" in data["unified"] and data["unified"].startswith("--- bot@1")
    head_diff = api.admin.get("/v1/prompts/bot/diff").json()
    assert (head_diff["from_version"], head_diff["to_version"]) == (2, 3)
    api.assert_problem(
        api.admin.get("/v1/prompts/bot/diff", params={"from": 1, "to": 9}),
        404,
        "version_not_found",
    )
    api.admin.post("/v1/prompts", json={"name": "solo", "content": api.content()})
    api.assert_problem(
        api.admin.get("/v1/prompts/solo/diff"), 422, "nothing_to_compare", "query.from"
    )

    pages = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = api.admin.get("/v1/prompts/bot/versions", params=params).json()
        pages.append([version["number"] for version in page["items"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == [[1, 2], [3]]

    for name in ("c-bot", "a-bot", "b-bot"):
        api.admin.post("/v1/prompts", json={"name": name})
    first = api.admin.get("/v1/prompts", params={"limit": 2}).json()
    assert [p["name"] for p in first["items"]] == ["a-bot", "b-bot"]
    second = api.admin.get("/v1/prompts", params={"limit": 2, "cursor": first["next_cursor"]})
    assert [p["name"] for p in second.json()["items"]] == ["bot", "c-bot"]
    third = api.admin.get(
        "/v1/prompts", params={"limit": 2, "cursor": second.json()["next_cursor"]}
    ).json()
    assert [p["name"] for p in third["items"]] == ["solo"] and third["next_cursor"] is None
    listed = {p["name"]: p for p in first["items"] + second.json()["items"]}
    assert listed["bot"]["head"] == 3 and listed["a-bot"]["head"] is None
    api.assert_problem(
        api.admin.get("/v1/prompts", params={"cursor": "garbage!"}),
        422,
        "invalid_cursor",
        "query.cursor",
    )
    api.assert_problem(
        api.admin.get("/v1/prompts", params={"limit": 0}), 422, "validation_failed", "query.limit"
    )
    api.assert_problem(
        api.admin.get("/v1/prompts", params={"limit": 201}), 422, "validation_failed", "query.limit"
    )


def test_archive_and_unarchive(api: Api) -> None:
    deployer = api.as_role("deployer")
    api.admin.post("/v1/prompts", json={"name": "bot", "content": api.content()})
    deployer.post("/v1/prompts/bot/environments/production/promote", json={"version": 1})
    api.assert_problem(
        api.as_role("editor").post("/v1/prompts/bot/archive", json={"reason": "old"}),
        403,
        "role_required",
    )
    api.assert_problem(
        deployer.post(
            "/v1/prompts/bot/archive", json={"reason": "old"}, headers={"If-Match": '"1"'}
        ),
        409,
        "stale_revision",
    )
    archived = deployer.post("/v1/prompts/bot/archive", json={"reason": "replaced"})
    assert archived.status_code == 200 and archived.json()["archived"] is True
    assert api.admin.get("/v1/prompts/bot").json()["archived"] is True
    api.assert_problem(
        deployer.post("/v1/prompts/bot/archive", json={"reason": "again"}), 409, "already_archived"
    )
    api.assert_problem(api.admin.get("/v1/prompts/bot/resolve"), 409, "prompt_archived")
    api.assert_problem(
        api.admin.post("/v1/prompts/bot/compile", json={"version": 1}), 409, "prompt_archived"
    )
    api.assert_problem(
        deployer.post("/v1/prompts/bot/environments/staging/promote", json={"version": 1}),
        409,
        "prompt_archived",
    )
    api.assert_problem(
        api.admin.post("/v1/prompts/bot/versions", json={"content": api.content("v2")}),
        409,
        "prompt_archived",
    )
    api.assert_problem(
        deployer.post("/v1/prompts/bot/archive", json={"reason": ""}),
        422,
        "validation_failed",
        "body.reason",
    )
    unarchived = deployer.post("/v1/prompts/bot/unarchive", json={"reason": "needed again"})
    assert unarchived.status_code == 200 and unarchived.json()["archived"] is False
    assert api.admin.get("/v1/prompts/bot/resolve").json()["version"] == 1
    api.assert_problem(
        deployer.post("/v1/prompts/bot/unarchive", json={"reason": "x"}), 409, "not_archived"
    )
