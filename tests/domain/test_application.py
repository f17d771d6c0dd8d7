"""Every command of the PromptRecord application: what it writes, and every way it refuses.

Runs on SQLite and PostgreSQL (the ``record`` fixture is parametrised by ``backend``).
Each refusal is checked for its error class and stable ``code``, and for writing nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from support.refusals import log_end, refused

from promptrecord.domain.application import PromptRecord
from promptrecord.domain.base import Actor, event_digest
from promptrecord.domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from promptrecord.domain.policy import EnvironmentPolicy
from promptrecord.domain.resolution import ResolutionState, resolve

WS = "acme"


# --------------------------------------------------------------------------- helpers


def events_between(record: Any, after: int, upto: int) -> list[Any]:
    return [event for position, event in record.events() if after < position <= upto]


def names(events: list[Any]) -> list[str]:
    return [type(event).__qualname__ for event in events]


def served(record: Any, name: str, env: str, tenant: str | None = None) -> tuple[int, str]:
    """(version, reason) `resolve` gives over the state folded from the whole log, now."""
    state = ResolutionState()
    for position, event in record.events():
        state.apply(event, position)
    answer = resolve(state, WS, name, env, tenant, None, record.clock.now)
    return answer.version.number, answer.reason


def floating(record: Any, name: str, models: list[tuple[str, str]]) -> None:
    record.app.create_prompt(WS, record.alice, name=name)
    for i, (provider, model) in enumerate(models):
        content = record.text(f"version {i}", model=model, provider=provider)
        record.app.commit_version(WS, name, content, record.alice)


# --------------------------------------------------------------------------- workspaces


def test_create_workspace_writes_workspace_and_bootstrap_key(record: Any) -> None:
    result, token = record.app.create_workspace("globex", name="Globex")
    assert result.position is not None and result.revision == 2
    assert re.fullmatch(r"pr_[0-9a-f]{16}_\S{20,}", token)
    assert token.startswith(f"pr_{result.value}_")
    ws = record.app.workspace("globex")
    assert ws.name == "Globex"
    assert ws.environments == ["development", "staging", "production"]
    key = ws.keys[result.value]
    assert key["role"] == "admin"
    assert token.split("_", 2)[2] not in str(key)  # only the hash of the secret is kept
    assert names(events_between(record, result.position - 2, result.position)) == [
        "Workspace.Created",
        "Workspace.ApiKeyIssued",
    ]


def test_create_workspace_with_custom_environments(record: Any) -> None:
    record.app.create_workspace("initech", environments=["dev", "prod"])
    assert record.app.workspace("initech").environments == ["dev", "prod"]
    refused(
        record,
        InvalidInput,
        "invalid_input",
        record.app.create_workspace,
        "hooli",
        environments=["dev", "dev"],
    )
    refused(
        record,
        InvalidInput,
        "invalid_input",
        record.app.create_workspace,
        "hooli",
        environments=["Prod!"],
    )


def test_create_workspace_twice_is_refused(record: Any) -> None:
    refused(record, Conflict, "workspace_exists", record.app.create_workspace, WS)


@pytest.mark.parametrize("slug", ["Acme", "-acme", "ac me", "", "a" * 64, "acme_corp", "acmé"])
def test_bad_workspace_slug_is_refused(record: Any, slug: str) -> None:
    error = refused(record, InvalidInput, "invalid_input", record.app.create_workspace, slug)
    assert error.field == "slug"


def test_unknown_workspace_is_not_found(record: Any) -> None:
    refused(
        record,
        NotFound,
        "workspace_not_found",
        record.app.create_prompt,
        "nope",
        record.alice,
        name="bot",
    )
    with pytest.raises(NotFound) as caught:
        record.app.workspace("nope")
    assert caught.value.code == "workspace_not_found"


def test_set_environments_appends_but_never_removes(record: Any) -> None:
    ws = record.app.workspace(WS)
    envs = ["development", "staging", "canary", "production"]
    result = record.app.set_environments(WS, envs, record.bob, ws.version)
    assert record.app.workspace(WS).environments == envs
    refused(
        record,
        Conflict,
        "stale_revision",
        record.app.set_environments,
        WS,
        [*envs, "eu"],
        record.bob,
        ws.version,
    )
    error = refused(
        record,
        Conflict,
        "environment_removed",
        record.app.set_environments,
        WS,
        ["development", "production"],
        record.bob,
        result.revision,
    )
    assert "staging" in error.detail and "canary" in error.detail


def test_set_policy_on_unknown_environment_is_refused(record: Any) -> None:
    refused(
        record,
        NotFound,
        "environment_not_found",
        record.app.set_policy,
        WS,
        "qa",
        EnvironmentPolicy(required_approvals=1),
        record.bob,
    )


# --------------------------------------------------------------------------- prompts


def test_create_prompt_with_a_name_and_first_version(record: Any) -> None:
    result = record.app.create_prompt(
        WS,
        record.alice,
        name="support-bot",
        title="Support bot",
        description="answers tickets",
        content=record.text("Hello {{ customer }}"),
    )
    assert result.value == "support-bot"
    assert result.revision == 2
    prompt = record.app.prompt(WS, "support-bot")
    assert (prompt.title, prompt.description, prompt.archived) == (
        "Support bot",
        "answers tickets",
        False,
    )
    [version] = prompt.versions
    assert version["number"] == 1
    assert version["message"] == "first version"
    assert version["variables"] == ["customer"]
    assert version["author"] == record.alice.as_dict()
    assert version["committed_at"] == record.clock.now


def test_create_prompt_without_content_has_no_versions(record: Any) -> None:
    result = record.app.create_prompt(WS, record.alice, name="empty")
    assert result.revision == 1
    assert record.app.prompt(WS, "empty").versions == []
    assert record.app.prompt(WS, "empty").title == "empty"


@pytest.mark.parametrize(
    "name",
    ["Support", "-bot", ".bot", "bot!", "a" * 65, "", "sup port", "bot/eu", "ünicode"],
)
def test_bad_prompt_names_are_refused(record: Any, name: str) -> None:
    error = refused(
        record, InvalidInput, "invalid_input", record.app.create_prompt, WS, record.alice, name=name
    )
    assert error.field == "name"


@pytest.mark.parametrize("name", ["a", "0", "a" * 64, "support-bot.v2_eu", "9lives"])
def test_good_prompt_names_are_accepted(record: Any, name: str) -> None:
    assert record.app.create_prompt(WS, record.alice, name=name).value == name


def test_prompt_named_from_title_is_kebab_plus_8_hex(record: Any) -> None:
    first = record.app.create_prompt(WS, record.alice, title="Support Bot: EU (v2)!").value
    second = record.app.create_prompt(WS, record.alice, title="Support Bot: EU (v2)!").value
    assert re.fullmatch(r"support-bot-eu-v2-[0-9a-f]{8}", first)
    assert re.fullmatch(r"support-bot-eu-v2-[0-9a-f]{8}", second)
    assert first != second
    assert record.app.prompt(WS, first).title == "Support Bot: EU (v2)!"
    punctuation = record.app.create_prompt(WS, record.alice, title="!!!").value
    assert re.fullmatch(r"prompt-[0-9a-f]{8}", punctuation)
    long_name = record.app.create_prompt(WS, record.alice, title="word " * 40).value
    assert len(long_name) <= 64
    assert re.fullmatch(r"^[a-z0-9][a-z0-9._-]{0,63}$", long_name)


def test_prompt_without_name_or_title_is_refused(record: Any) -> None:
    error = refused(
        record, InvalidInput, "invalid_input", record.app.create_prompt, WS, record.alice, title=" "
    )
    assert error.field == "name"


def test_creating_an_existing_prompt_is_refused(record: Any) -> None:
    record.new_prompt("bot", "v1")
    refused(record, Conflict, "prompt_exists", record.app.create_prompt, WS, record.bob, name="bot")


def test_prompts_of_two_workspaces_do_not_collide(record: Any) -> None:
    record.app.create_workspace("globex")
    record.new_prompt("bot", "acme's")
    record.app.create_prompt("globex", record.bob, name="bot", content=record.text("globex's"))
    assert record.app.prompt(WS, "bot").versions[0]["content"]["text"] == "acme's"
    assert record.app.prompt("globex", "bot").versions[0]["content"]["text"] == "globex's"


# --------------------------------------------------------------------------- commits


def test_commits_number_versions_and_extract_variables(record: Any) -> None:
    record.app.create_prompt(WS, record.alice, name="bot")
    contents = [
        record.text("Hello {{ name }}"),
        record.chat(
            ("system", "You are {{ persona }}."),
            ("user", "{{ question }}{% for d in docs %} {{ d.title }}{% endfor %}"),
        ),
        record.text("No variables at all"),
    ]
    positions = []
    for expected, content in enumerate(contents, start=1):
        result = record.app.commit_version(WS, "bot", content, record.alice, message=f"m{expected}")
        assert result.value == (expected, True)
        assert result.revision == expected + 1
        positions.append(result.position)
    assert positions == sorted(positions) and None not in positions
    versions = record.app.prompt(WS, "bot").versions
    assert [v["number"] for v in versions] == [1, 2, 3]
    assert [v["parent"] for v in versions] == [None, 1, 2]
    assert [v["variables"] for v in versions] == [["name"], ["docs", "persona", "question"], []]
    assert [v["message"] for v in versions] == ["m1", "m2", "m3"]
    assert len({v["content_hash"] for v in versions}) == 3
    assert all(v["content_hash"].startswith("sha256:") for v in versions)


def test_commit_keeps_git_provenance(record: Any) -> None:
    record.app.create_prompt(WS, record.alice, name="bot")
    record.app.commit_version(
        WS, "bot", record.text("x"), record.ci, git_sha="a" * 40, git_path="prompts/bot"
    )
    version = record.app.prompt(WS, "bot").versions[0]
    assert (version["git_sha"], version["git_path"]) == ("a" * 40, "prompts/bot")


@pytest.mark.parametrize(
    ("provider", "model", "floats"),
    [
        ("anthropic", "claude-sonnet-4-6", True),
        ("openai", "gpt-4o", True),
        ("anthropic", "claude-3-5-haiku-latest", True),
        ("openai", "gpt-4o-latest", True),
        ("ollama", "llama3:latest", True),
        ("anthropic", "claude-sonnet-4-5-20250929", False),
        ("openai", "gpt-4o-2024-08-06", False),
        ("vllm", "meta-llama/Llama-3.1-8B-Instruct", False),
    ],
)
def test_floating_model_names_draw_a_warning(
    record: Any, provider: str, model: str, floats: bool
) -> None:
    record.app.create_prompt(WS, record.alice, name="bot")
    record.app.commit_version(
        WS, "bot", record.text("hi", model=model, provider=provider), record.alice
    )
    warnings = record.app.prompt(WS, "bot").versions[0]["warnings"]
    if floats:
        assert len(warnings) == 1 and model in warnings[0]
    else:
        assert warnings == []


def test_identical_content_returns_the_head_and_writes_nothing(record: Any) -> None:
    record.new_prompt("bot", "one", "two")
    before = log_end(record)
    result = record.app.commit_version(
        WS, "bot", record.text("two"), record.bob, message="a different message"
    )
    assert result.value == (2, False)
    assert result.position is None
    assert result.revision == 3
    assert log_end(record) == before
    # The same content spelled differently (type inferred, keys reordered) is still the head.
    respelled = {"model": {"name": record.DATED_MODEL, "provider": "anthropic"}, "text": "two"}
    assert record.app.commit_version(WS, "bot", respelled, record.bob).value == (2, False)
    assert len(record.app.prompt(WS, "bot").versions) == 2
    # Identical to an older version but not the head: a new version.
    assert record.app.commit_version(WS, "bot", record.text("one"), record.bob).value == (3, True)


def test_template_syntax_error_is_refused_with_field_and_line(record: Any) -> None:
    record.new_prompt("bot", "v1")
    error = refused(
        record,
        InvalidInput,
        "template_syntax",
        record.app.commit_version,
        WS,
        "bot",
        record.chat(("system", "fine"), ("user", "first\nsecond {{ name }\nthird")),
        record.alice,
    )
    assert error.field == "messages[1].content"
    assert error.extra["line"] == 2
    assert error.extra["column"] == 16
    assert "line 2" in error.detail
    error = refused(
        record,
        InvalidInput,
        "template_syntax",
        record.app.create_prompt,
        WS,
        record.alice,
        name="other",
        content=record.text("Hello {{ name"),
    )
    assert error.field == "text"
    assert error.extra["line"] == 1
    with pytest.raises(NotFound):
        record.app.prompt(WS, "other")


@pytest.mark.parametrize(
    "content",
    [
        {"type": "text", "text": "", "model": {"provider": "anthropic", "name": "x"}},
        {"type": "text", "text": "hi"},
        {"type": "chat", "messages": [], "model": {"provider": "anthropic", "name": "x"}},
        {"type": "image", "text": "hi", "model": {"provider": "anthropic", "name": "x"}},
        {"text": "hi", "model": {"provider": "anthropic", "name": "x", "temperature": 3}},
        {"text": "hi", "model": {"provider": "anthropic", "name": "x"}, "extra": 1},
        "just a string",
    ],
)
def test_invalid_content_is_refused(record: Any, content: Any) -> None:
    record.new_prompt("bot", "v1")
    refused(
        record,
        InvalidInput,
        "invalid_content",
        record.app.commit_version,
        WS,
        "bot",
        content,
        record.alice,
    )


def test_commit_to_unknown_prompt_is_not_found(record: Any) -> None:
    refused(
        record,
        NotFound,
        "prompt_not_found",
        record.app.commit_version,
        WS,
        "ghost",
        record.text("x"),
        record.alice,
    )


def test_commit_with_stale_expected_revision_is_a_conflict(record: Any) -> None:
    record.new_prompt("bot", "v1")
    revision = record.app.prompt(WS, "bot").version
    ok = record.app.commit_version(
        WS, "bot", record.text("v2"), record.alice, expected_revision=revision
    )
    assert ok.value == (2, True)
    error = refused(
        record,
        Conflict,
        "stale_revision",
        record.app.commit_version,
        WS,
        "bot",
        record.text("v3"),
        record.bob,
        expected_revision=revision,
    )
    assert error.extra["current_revision"] == ok.revision


def test_restore_commits_the_old_content_with_restored_from(record: Any) -> None:
    record.new_prompt("bot", "one", "two")
    result = record.app.restore_version(WS, "bot", 1, record.bob)
    assert result.value == (3, True)
    v1, _, v3 = record.app.prompt(WS, "bot").versions
    assert v3["restored_from"] == 1
    assert v3["content"] == v1["content"]
    assert v3["content_hash"] == v1["content_hash"]
    assert v3["author"] == record.bob.as_dict()
    assert v3["parent"] == 2
    assert v3["message"] == "restore version 1"
    assert v1["restored_from"] is None
    # Restoring what the head already holds writes nothing.
    again = record.app.restore_version(WS, "bot", 1, record.bob)
    assert again.value == (3, False) and again.position is None
    refused(
        record,
        NotFound,
        "version_not_found",
        record.app.restore_version,
        WS,
        "bot",
        9,
        record.bob,
    )
    refused(
        record,
        Conflict,
        "stale_revision",
        record.app.restore_version,
        WS,
        "bot",
        2,
        record.bob,
        expected_revision=2,
    )


def test_archive_and_unarchive(record: Any) -> None:
    record.new_prompt("bot", "one", "two")
    revision = record.app.prompt(WS, "bot").version
    result = record.app.archive(WS, "bot", "retired", record.bob, revision)
    assert record.app.prompt(WS, "bot").archived
    refused(
        record, Conflict, "already_archived", record.app.archive, WS, "bot", "x", record.bob, None
    )
    refused(
        record,
        Conflict,
        "prompt_archived",
        record.app.commit_version,
        WS,
        "bot",
        record.text("three"),
        record.alice,
    )
    refused(
        record,
        Conflict,
        "prompt_archived",
        record.app.restore_version,
        WS,
        "bot",
        1,
        record.alice,
        message="again",
    )
    refused(
        record,
        Conflict,
        "stale_revision",
        record.app.unarchive,
        WS,
        "bot",
        "back",
        record.bob,
        revision,
    )
    record.app.unarchive(WS, "bot", "back", record.bob, result.revision)
    assert not record.app.prompt(WS, "bot").archived
    refused(
        record, Conflict, "not_archived", record.app.unarchive, WS, "bot", "x", record.bob, None
    )
    assert record.app.commit_version(WS, "bot", record.text("three"), record.alice).value == (
        3,
        True,
    )
    refused(
        record,
        NotFound,
        "prompt_not_found",
        record.app.archive,
        WS,
        "ghost",
        "x",
        record.bob,
        None,
    )


# --------------------------------------------------------------------------- promotion


def test_direct_promotion(record: Any) -> None:
    record.new_prompt("bot", "one", "two")
    result = record.app.promote(WS, "bot", "production", 1, record.bob, reason="launch")
    assert result.value == {"status": "promoted"}
    assert result.revision == 2  # Created + Promoted
    assert names(events_between(record, result.position - 2, result.position)) == [
        "Deployment.Created",
        "Deployment.Promoted",
    ]
    assert record.app.deployment(WS, "bot", "production").serving == 1
    assert served(record, "bot", "production") == (1, "promoted")
    second = record.app.promote(WS, "bot", "production", 2, record.bob)
    promoted = events_between(record, second.position - 1, second.position)[0]
    assert (promoted.version, promoted.previous) == (2, 1)
    assert served(record, "bot", "production") == (2, "promoted")
    assert record.app.deployment(WS, "bot", "staging") is None


def test_promotion_refusals(record: Any) -> None:
    record.new_prompt("bot", "one", "two")
    record.app.promote(WS, "bot", "production", 1, record.bob)
    refused(
        record,
        Conflict,
        "already_serving",
        record.app.promote,
        WS,
        "bot",
        "production",
        1,
        record.bob,
    )
    error = refused(
        record,
        NotFound,
        "version_not_found",
        record.app.promote,
        WS,
        "bot",
        "production",
        7,
        record.bob,
    )
    assert error.field == "version"
    refused(
        record,
        NotFound,
        "version_not_found",
        record.app.promote,
        WS,
        "bot",
        "production",
        0,
        record.bob,
    )
    error = refused(
        record,
        NotFound,
        "environment_not_found",
        record.app.promote,
        WS,
        "bot",
        "qa",
        1,
        record.bob,
    )
    assert error.field == "environment"
    refused(
        record,
        NotFound,
        "prompt_not_found",
        record.app.promote,
        WS,
        "ghost",
        "production",
        1,
        record.bob,
    )
    refused(
        record,
        Conflict,
        "stale_revision",
        record.app.promote,
        WS,
        "bot",
        "production",
        2,
        record.bob,
        expected_revision=1,
    )
    revision = record.app.deployment(WS, "bot", "production").version
    ok = record.app.promote(WS, "bot", "production", 2, record.bob, expected_revision=revision)
    assert ok.revision == revision + 1


def test_archived_prompt_cannot_be_deployed(record: Any) -> None:
    record.new_prompt("bot", "one", "two")
    record.app.promote(WS, "bot", "production", 1, record.bob)
    record.app.archive(WS, "bot", "retired", record.bob, None)
    for call, args in [
        (record.app.promote, (WS, "bot", "production", 2, record.bob)),
        (record.app.promote, (WS, "bot", "staging", 1, record.bob)),
        (record.app.start_rollout, (WS, "bot", "production", 2, 0.5, record.bob)),
    ]:
        refused(record, Conflict, "prompt_archived", call, *args)
    with pytest.raises(Conflict) as caught:
        served(record, "bot", "production")
    assert caught.value.code == "prompt_archived"


def approvals_policy(record: Any, **overrides: Any) -> None:
    policy = EnvironmentPolicy(required_approvals=2, four_eyes=True, **overrides)
    record.app.set_policy(WS, "production", policy, record.bob)


def test_promotion_with_approvals_and_four_eyes(record: Any) -> None:
    record.new_prompt("bot", "one")  # alice wrote version 1
    approvals_policy(record)
    request = record.app.promote(WS, "bot", "production", 1, record.bob, reason="ship it")
    assert request.value["status"] == "pending_approval"
    request_id = request.value["request_id"]
    assert record.app.deployment(WS, "bot", "production").serving is None
    assert names(events_between(record, request.position - 1, request.position)) == [
        "Deployment.PromotionRequested"
    ]
    with pytest.raises(NotFound):
        served(record, "bot", "production")
    approve = record.app.approve
    # The requester may not approve, nor may the version's author.
    refused(
        record, Forbidden, "four_eyes", approve, WS, "bot", "production", request_id, record.bob
    )
    error = refused(
        record, Forbidden, "four_eyes", approve, WS, "bot", "production", request_id, record.alice
    )
    assert "author" in error.detail
    first = approve(WS, "bot", "production", request_id, record.carol)
    assert first.value == {"status": "pending_approval", "request_id": request_id, "approvals": 1}
    assert record.app.deployment(WS, "bot", "production").serving is None
    refused(
        record,
        Conflict,
        "already_approved",
        approve,
        WS,
        "bot",
        "production",
        request_id,
        record.carol,
    )
    # Another key acting for carol is still carol.
    refused(
        record,
        Conflict,
        "already_approved",
        approve,
        WS,
        "bot",
        "production",
        request_id,
        replace(record.ci, on_behalf_of=record.carol.key_id),
    )
    second = approve(WS, "bot", "production", request_id, record.dave, reason="lgtm")
    assert second.value == {"status": "promoted", "request_id": request_id, "approvals": 2}
    assert names(events_between(record, first.position, second.position)) == [
        "Deployment.PromotionApproved",
        "Deployment.Promoted",
    ]
    promoted = events_between(record, second.position - 1, second.position)[0]
    assert promoted.request_id == request_id
    assert promoted.reason == "ship it"
    assert record.app.deployment(WS, "bot", "production").serving == 1
    assert served(record, "bot", "production") == (1, "promoted")
    refused(
        record,
        Conflict,
        "request_closed",
        approve,
        WS,
        "bot",
        "production",
        request_id,
        record.carol,
    )


def test_on_behalf_of_counts_as_the_identity(record: Any) -> None:
    record.new_prompt("bot", "one")
    approvals_policy(record)
    requester = Actor("key-ci", "ci pipeline", on_behalf_of="frank")
    request_id = record.app.promote(WS, "bot", "production", 1, requester).value["request_id"]
    # Frank through another key is still the requester.
    other_key_for_frank = Actor("key-ci-2", "second pipeline", on_behalf_of="frank")
    refused(
        record,
        Forbidden,
        "four_eyes",
        record.app.approve,
        WS,
        "bot",
        "production",
        request_id,
        other_key_for_frank,
    )
    # The requester's own key stays the requester, whoever it claims to act for.
    refused(
        record,
        Forbidden,
        "four_eyes",
        record.app.approve,
        WS,
        "bot",
        "production",
        request_id,
        Actor("key-ci", "ci pipeline", on_behalf_of="grace"),
    )
    # Another key acting for grace is grace; a key cannot approve twice by naming two people.
    grace = Actor("key-ci-3", "release bot", on_behalf_of="grace")
    first = record.app.approve(WS, "bot", "production", request_id, grace)
    assert first.value["status"] == "pending_approval"
    refused(
        record,
        Conflict,
        "already_approved",
        record.app.approve,
        WS,
        "bot",
        "production",
        request_id,
        Actor("key-ci-3", "release bot", on_behalf_of="heidi"),
    )
    refused(
        record,
        Conflict,
        "already_approved",
        record.app.approve,
        WS,
        "bot",
        "production",
        request_id,
        Actor("key-ci-4", "another bot", on_behalf_of="grace"),
    )
    heidi = Actor("key-ci-4", "another bot", on_behalf_of="heidi")
    second = record.app.approve(WS, "bot", "production", request_id, heidi)
    assert second.value["status"] == "promoted"
    approved = [
        event.actor
        for _, event in record.events()
        if type(event).__qualname__ == "Deployment.PromotionApproved"
    ]
    assert approved == [grace.as_dict(), heidi.as_dict()]
    assert record.app.deployment(WS, "bot", "production").serving == 1


def test_author_acting_through_ci_cannot_approve(record: Any) -> None:
    record.new_prompt("bot", "one")
    approvals_policy(record)
    request_id = record.app.promote(WS, "bot", "production", 1, record.bob).value["request_id"]
    for_alice = Actor("key-ci", "ci", on_behalf_of=record.alice.key_id)
    refused(
        record,
        Forbidden,
        "four_eyes",
        record.app.approve,
        WS,
        "bot",
        "production",
        request_id,
        for_alice,
    )


def test_without_four_eyes_the_requester_may_approve(record: Any) -> None:
    record.new_prompt("bot", "one")
    record.app.set_policy(WS, "staging", EnvironmentPolicy(required_approvals=1), record.bob)
    request_id = record.app.promote(WS, "bot", "staging", 1, record.alice).value["request_id"]
    result = record.app.approve(WS, "bot", "staging", request_id, record.alice)
    assert result.value["status"] == "promoted"


def test_reject_closes_a_request(record: Any) -> None:
    record.new_prompt("bot", "one")
    approvals_policy(record)
    request_id = record.app.promote(WS, "bot", "production", 1, record.bob).value["request_id"]
    refused(
        record,
        Conflict,
        "request_pending",
        record.app.promote,
        WS,
        "bot",
        "production",
        1,
        record.carol,
    )
    result = record.app.reject(WS, "bot", "production", request_id, record.carol, reason="no")
    assert result.value == {"status": "rejected", "request_id": request_id}
    assert record.app.deployment(WS, "bot", "production").serving is None
    for call in (record.app.approve, record.app.reject):
        refused(
            record,
            Conflict,
            "request_closed",
            call,
            WS,
            "bot",
            "production",
            request_id,
            record.dave,
        )
    error = refused(
        record,
        NotFound,
        "request_not_found",
        record.app.approve,
        WS,
        "bot",
        "production",
        "nope",
        record.dave,
    )
    assert error.field == "request_id"
    # After a rejection the same version may be requested again.
    again = record.app.promote(WS, "bot", "production", 1, record.bob)
    assert again.value["status"] == "pending_approval"
    assert again.value["request_id"] != request_id


def test_approve_and_reject_check_the_expected_revision(record: Any) -> None:
    record.new_prompt("bot", "one")
    approvals_policy(record)
    request_id = record.app.promote(WS, "bot", "production", 1, record.bob).value["request_id"]
    revision = record.app.deployment(WS, "bot", "production").version
    for call, actor in [(record.app.approve, record.carol), (record.app.reject, record.dave)]:
        error = refused(
            record,
            Conflict,
            "stale_revision",
            call,
            WS,
            "bot",
            "production",
            request_id,
            actor,
            expected_revision=revision - 1,
        )
        assert error.extra["current_revision"] == revision
    first = record.app.approve(
        WS, "bot", "production", request_id, record.carol, expected_revision=revision
    )
    assert first.revision == revision + 1
    refused(
        record,
        Conflict,
        "stale_revision",
        record.app.reject,
        WS,
        "bot",
        "production",
        request_id,
        record.dave,
        expected_revision=revision,
    )


def test_set_policy_refuses_an_invalid_policy(record: Any) -> None:
    """The command itself validates: the CLI, the demo and imports call it without HTTP."""
    for policy, field in [
        (EnvironmentPolicy(required_approvals=11), "policy.required_approvals"),
        (EnvironmentPolicy(required_approvals=-1), "policy.required_approvals"),
        (EnvironmentPolicy(pin_default_ttl_seconds=10), "policy.pin_default_ttl_seconds"),
        (
            EnvironmentPolicy(pin_default_ttl_seconds=3600, pin_max_ttl_seconds=600),
            "policy.pin_max_ttl_seconds",
        ),
    ]:
        error = refused(
            record,
            InvalidInput,
            "invalid_input",
            record.app.set_policy,
            WS,
            "production",
            policy,
            record.bob,
        )
        assert error.field == field


def test_a_refused_approval_leaves_no_trace(record: Any) -> None:
    """The last approval runs the promotion in the same commit; if that is refused, the
    approval is not kept either (not in the log, not in any cached aggregate)."""
    record.new_prompt("bot", "one")
    record.app.set_policy(WS, "production", EnvironmentPolicy(required_approvals=1), record.bob)
    request_id = record.app.promote(WS, "bot", "production", 1, record.bob).value["request_id"]
    record.app.archive(WS, "bot", "paused", record.bob, None)
    refused(
        record,
        Conflict,
        "prompt_archived",
        record.app.approve,
        WS,
        "bot",
        "production",
        request_id,
        record.carol,
    )
    record.app.unarchive(WS, "bot", "resumed", record.bob, None)
    result = record.app.approve(WS, "bot", "production", request_id, record.carol)
    assert result.value == {"status": "promoted", "request_id": request_id, "approvals": 1}


def test_two_instances_on_one_store_see_each_others_commands(record: Any) -> None:
    """Each instance caches aggregates; commands must still start from the stored state."""
    one, two = record.app, record.second_app()
    record.new_prompt("bot", "one")
    assert two.prompt(WS, "bot").version == 2  # two has the prompt cached now
    first = one.commit_version(WS, "bot", record.text("two"), record.alice, expected_revision=2)
    second = two.commit_version(WS, "bot", record.text("three"), record.bob, expected_revision=3)
    assert (first.value, second.value) == ((2, True), (3, True))
    refused(
        record,
        Conflict,
        "stale_revision",
        one.commit_version,
        WS,
        "bot",
        record.text("four"),
        record.alice,
        expected_revision=3,
    )
    one.promote(WS, "bot", "production", 1, record.bob)
    two.promote(WS, "bot", "production", 3, record.bob)
    assert one.rollback(WS, "bot", "production", "x", record.carol).value["version"] == 1
    refused(
        record,
        Conflict,
        "nothing_to_roll_back_to",
        two.rollback,
        WS,
        "bot",
        "production",
        "y",
        record.carol,
    )
    two.pin(WS, "t1", "bot", "production", 2, record.bob)
    one.unpin(WS, "t1", "bot", "production", record.bob)
    refused(record, Conflict, "not_pinned", two.unpin, WS, "t1", "bot", "production", record.bob)
    one.archive(WS, "bot", "x", record.bob, None)
    refused(
        record,
        Conflict,
        "prompt_archived",
        two.commit_version,
        WS,
        "bot",
        record.text("five"),
        record.alice,
    )
    assert [v["number"] for v in two.prompt(WS, "bot").versions] == [1, 2, 3]


def test_approving_where_nothing_was_ever_requested(record: Any) -> None:
    record.new_prompt("bot", "one")
    refused(
        record,
        NotFound,
        "not_deployed",
        record.app.approve,
        WS,
        "bot",
        "production",
        "abc",
        record.carol,
    )


def test_rollout_through_approvals(record: Any) -> None:
    record.new_prompt("bot", "one", "two")
    record.app.promote(WS, "bot", "production", 1, record.bob)
    approvals_policy(record)
    request = record.app.start_rollout(
        WS, "bot", "production", 2, 0.25, record.bob, key_by="user", reason="canary"
    )
    assert request.value["status"] == "pending_approval"
    assert record.app.deployment(WS, "bot", "production").rollout is None
    request_id = request.value["request_id"]
    record.app.approve(WS, "bot", "production", request_id, record.carol)
    result = record.app.approve(WS, "bot", "production", request_id, record.dave)
    assert result.value["status"] == "rollout_started"
    rollout = record.app.deployment(WS, "bot", "production").rollout
    assert (rollout["baseline"], rollout["candidate"], rollout["share"], rollout["key_by"]) == (
        1,
        2,
        0.25,
        "user",
    )


def test_require_previous_environment(record: Any) -> None:
    record.new_prompt("bot", "one", "two")
    policy = EnvironmentPolicy(require_previous_environment=True)
    record.app.set_policy(WS, "production", policy, record.bob)
    record.app.set_policy(WS, "development", policy, record.bob)  # first: nothing before it
    refused(
        record,
        Conflict,
        "previous_environment_required",
        record.app.promote,
        WS,
        "bot",
        "production",
        1,
        record.bob,
    )
    record.app.promote(WS, "bot", "development", 1, record.bob)
    record.app.promote(WS, "bot", "staging", 1, record.bob)
    assert record.app.promote(WS, "bot", "production", 1, record.bob).value["status"] == "promoted"
    # A rollout that has not completed has not served staging.
    record.app.start_rollout(WS, "bot", "staging", 2, 0.5, record.bob)
    refused(
        record,
        Conflict,
        "previous_environment_required",
        record.app.start_rollout,
        WS,
        "bot",
        "production",
        2,
        0.5,
        record.bob,
    )
    record.app.complete_rollout(WS, "bot", "staging", record.bob)
    # Having served staging once is enough, even after staging rolled away from it.
    record.app.rollback(WS, "bot", "staging", "bad in staging", record.bob)
    assert record.app.deployment(WS, "bot", "staging").serving == 1
    assert record.app.promote(WS, "bot", "production", 2, record.bob).value["status"] == "promoted"


def test_a_named_rollback_target_has_served_the_environment(record: Any) -> None:
    """After rolling staging back to v1, v1 serves staging: production must count it."""
    record.new_prompt("bot", "one", "two")
    policy = EnvironmentPolicy(require_previous_environment=True)
    record.app.set_policy(WS, "production", policy, record.bob)
    record.app.promote(WS, "bot", "staging", 2, record.bob)
    record.app.rollback(WS, "bot", "staging", "v2 misbehaves", record.carol, to_version=1)
    assert served(record, "bot", "staging") == (1, "promoted")
    # Promoting v1 to staging "first" is impossible: it already serves there.
    refused(
        record,
        Conflict,
        "already_serving",
        record.app.promote,
        WS,
        "bot",
        "staging",
        1,
        record.bob,
    )
    result = record.app.promote(WS, "bot", "production", 1, record.bob)
    assert result.value == {"status": "promoted"}


@pytest.mark.parametrize(
    ("provider", "model", "allowed"),
    [
        ("anthropic", "claude-sonnet-4-6", False),
        ("openai", "gpt-4o", False),
        ("anthropic", "claude-3-5-haiku-latest", False),
        ("openai", "gpt-4o-latest", False),
        ("anthropic", "claude-sonnet-4-5-20250929", True),
        ("openai", "gpt-4o-2024-08-06", True),
    ],
)
def test_refuse_floating_models(record: Any, provider: str, model: str, allowed: bool) -> None:
    floating(record, "bot", [("anthropic", record.DATED_MODEL), (provider, model)])
    record.app.set_policy(
        WS, "production", EnvironmentPolicy(refuse_floating_models=True), record.bob
    )
    # Environments without the policy serve anything.
    assert record.app.promote(WS, "bot", "staging", 2, record.bob).value["status"] == "promoted"
    if allowed:
        assert record.app.promote(WS, "bot", "production", 2, record.bob).value == {
            "status": "promoted"
        }
        return
    error = refused(
        record,
        Conflict,
        "floating_model",
        record.app.promote,
        WS,
        "bot",
        "production",
        2,
        record.bob,
    )
    assert model in error.detail
    record.app.promote(WS, "bot", "production", 1, record.bob)
    refused(
        record,
        Conflict,
        "floating_model",
        record.app.start_rollout,
        WS,
        "bot",
        "production",
        2,
        0.1,
        record.bob,
    )


# --------------------------------------------------------------------------- rollouts


def rollout_prompt(record: Any) -> None:
    record.new_prompt("bot", "one", "two", "three")
    record.app.promote(WS, "bot", "production", 1, record.bob)


def test_rollout_start_adjust_complete(record: Any) -> None:
    rollout_prompt(record)
    started = record.app.start_rollout(WS, "bot", "production", 2, 0.1, record.bob, reason="canary")
    assert started.value == {"status": "rollout_started"}
    event = events_between(record, started.position - 1, started.position)[0]
    assert type(event).__qualname__ == "Deployment.RolloutStarted"
    assert (event.baseline, event.candidate, event.share, event.key_by) == (1, 2, 0.1, "tenant")
    assert re.fullmatch(r"[0-9a-f]{32}", event.rollout_id)
    deployment = record.app.deployment(WS, "bot", "production")
    assert deployment.rollout["rollout_id"] == event.rollout_id
    assert deployment.serving == 1
    assert served(record, "bot", "production")[1] == "rollout"

    adjusted = record.app.adjust_rollout(WS, "bot", "production", 0.5, record.bob)
    event = events_between(record, adjusted.position - 1, adjusted.position)[0]
    assert (type(event).__qualname__, event.share) == ("Deployment.RolloutAdjusted", 0.5)
    rollout = record.app.deployment(WS, "bot", "production").rollout
    assert rollout["share"] == 0.5
    assert rollout["rollout_id"] == deployment.rollout["rollout_id"]

    refused(
        record,
        Conflict,
        "rollout_active",
        record.app.start_rollout,
        WS,
        "bot",
        "production",
        3,
        0.2,
        record.bob,
    )
    refused(
        record,
        Conflict,
        "rollout_active",
        record.app.promote,
        WS,
        "bot",
        "production",
        3,
        record.bob,
    )
    done = record.app.complete_rollout(WS, "bot", "production", record.bob)
    assert done.value == {"status": "promoted", "version": 2}
    deployment = record.app.deployment(WS, "bot", "production")
    assert (deployment.serving, deployment.rollout) == (2, None)
    assert served(record, "bot", "production") == (2, "promoted")
    for call, args in [
        (record.app.adjust_rollout, (WS, "bot", "production", 0.3, record.bob)),
        (record.app.complete_rollout, (WS, "bot", "production", record.bob)),
        (record.app.abort_rollout, (WS, "bot", "production", record.bob)),
    ]:
        refused(record, Conflict, "no_rollout", call, *args)


def test_rollout_abort_keeps_the_baseline(record: Any) -> None:
    rollout_prompt(record)
    record.app.start_rollout(WS, "bot", "production", 3, 0.5, record.bob)
    result = record.app.abort_rollout(WS, "bot", "production", record.bob, reason="errors")
    assert result.value == {"status": "aborted"}
    deployment = record.app.deployment(WS, "bot", "production")
    assert (deployment.serving, deployment.rollout) == (1, None)
    assert served(record, "bot", "production", tenant="anyone") == (1, "promoted")
    # A new rollout after an abort gets a new id.
    record.app.start_rollout(WS, "bot", "production", 3, 0.5, record.bob)
    ids = [
        event.rollout_id
        for _, event in record.events()
        if type(event).__qualname__ == "Deployment.RolloutStarted"
    ]
    assert len(ids) == 2 and ids[0] != ids[1]


@pytest.mark.parametrize("share", [0, 1, 1.5, -0.1, 0.0, 1.0, True, "0.5", float("nan")])
def test_rollout_share_outside_zero_one_is_refused(record: Any, share: Any) -> None:
    rollout_prompt(record)
    error = refused(
        record,
        InvalidInput,
        "share_out_of_range",
        record.app.start_rollout,
        WS,
        "bot",
        "production",
        2,
        share,
        record.bob,
    )
    assert error.field == "share"
    record.app.start_rollout(WS, "bot", "production", 2, 0.5, record.bob)
    refused(
        record,
        InvalidInput,
        "share_out_of_range",
        record.app.adjust_rollout,
        WS,
        "bot",
        "production",
        share,
        record.bob,
    )
    assert record.app.deployment(WS, "bot", "production").rollout["share"] == 0.5


def test_rollout_refusals(record: Any) -> None:
    record.new_prompt("bot", "one", "two")
    refused(
        record,
        Conflict,
        "no_baseline",
        record.app.start_rollout,
        WS,
        "bot",
        "production",
        2,
        0.1,
        record.bob,
    )
    for call, args in [
        (record.app.adjust_rollout, (WS, "bot", "production", 0.3, record.bob)),
        (record.app.complete_rollout, (WS, "bot", "production", record.bob)),
        (record.app.abort_rollout, (WS, "bot", "production", record.bob)),
    ]:
        refused(record, NotFound, "not_deployed", call, *args)
    record.app.promote(WS, "bot", "production", 1, record.bob)
    refused(
        record,
        Conflict,
        "already_serving",
        record.app.start_rollout,
        WS,
        "bot",
        "production",
        1,
        0.1,
        record.bob,
    )
    refused(
        record,
        NotFound,
        "version_not_found",
        record.app.start_rollout,
        WS,
        "bot",
        "production",
        5,
        0.1,
        record.bob,
    )
    error = refused(
        record,
        InvalidInput,
        "invalid_input",
        record.app.start_rollout,
        WS,
        "bot",
        "production",
        2,
        0.1,
        record.bob,
        key_by="cookie",
    )
    assert error.field == "key_by"
    refused(
        record,
        Conflict,
        "stale_revision",
        record.app.start_rollout,
        WS,
        "bot",
        "production",
        2,
        0.1,
        record.bob,
        expected_revision=1,
    )
    record.app.start_rollout(WS, "bot", "production", 2, 0.1, record.bob)
    revision = record.app.deployment(WS, "bot", "production").version
    for call, args in [
        (record.app.adjust_rollout, (WS, "bot", "production", 0.3, record.bob)),
        (record.app.complete_rollout, (WS, "bot", "production", record.bob)),
        (record.app.abort_rollout, (WS, "bot", "production", record.bob)),
    ]:
        refused(record, Conflict, "stale_revision", call, *args, expected_revision=revision - 1)
    # Completing a rollout of an archived prompt is refused; aborting it is not.
    record.app.archive(WS, "bot", "retired", record.bob, None)
    refused(
        record,
        Conflict,
        "prompt_archived",
        record.app.complete_rollout,
        WS,
        "bot",
        "production",
        record.bob,
    )
    record.app.abort_rollout(WS, "bot", "production", record.bob, expected_revision=revision)


# --------------------------------------------------------------------------- rollback


def test_rollback_walks_back_through_what_served(record: Any) -> None:
    rollout_prompt(record)
    record.app.promote(WS, "bot", "production", 2, record.bob)
    record.app.promote(WS, "bot", "production", 3, record.bob)
    first = record.app.rollback(WS, "bot", "production", "3 is broken", record.carol)
    assert first.value == {"status": "rolled_back", "version": 2}
    event = events_between(record, first.position - 1, first.position)[0]
    assert type(event).__qualname__ == "Deployment.RolledBack"
    assert (event.from_version, event.to_version, event.reason) == (3, 2, "3 is broken")
    assert served(record, "bot", "production") == (2, "promoted")
    second = record.app.rollback(WS, "bot", "production", "2 is broken too", record.carol)
    assert second.value["version"] == 1
    assert served(record, "bot", "production") == (1, "promoted")
    refused(
        record,
        Conflict,
        "nothing_to_roll_back_to",
        record.app.rollback,
        WS,
        "bot",
        "production",
        "and 1?",
        record.carol,
    )


def test_rollback_to_a_named_version(record: Any) -> None:
    rollout_prompt(record)
    record.app.promote(WS, "bot", "production", 2, record.bob)
    record.app.promote(WS, "bot", "production", 3, record.bob)
    result = record.app.rollback(WS, "bot", "production", "back to 1", record.carol, to_version=1)
    assert result.value["version"] == 1
    assert served(record, "bot", "production") == (1, "promoted")
    refused(
        record,
        Conflict,
        "already_serving",
        record.app.rollback,
        WS,
        "bot",
        "production",
        "again",
        record.carol,
        to_version=1,
    )
    refused(
        record,
        NotFound,
        "version_not_found",
        record.app.rollback,
        WS,
        "bot",
        "production",
        "x",
        record.carol,
        to_version=9,
    )
    # The previous version is the one served before the named rollback.
    assert record.app.rollback(WS, "bot", "production", "undo", record.carol).value["version"] == 3


def test_rollback_during_a_rollout_serves_the_baseline(record: Any) -> None:
    rollout_prompt(record)
    record.app.start_rollout(WS, "bot", "production", 2, 0.9, record.bob)
    result = record.app.rollback(WS, "bot", "production", "candidate errors", record.carol)
    assert result.value["version"] == 1
    deployment = record.app.deployment(WS, "bot", "production")
    assert (deployment.serving, deployment.rollout) == (1, None)
    for tenant in ("t1", "t2", "t3", "t4"):
        assert served(record, "bot", "production", tenant) == (1, "promoted")
    refused(
        record,
        Conflict,
        "no_rollout",
        record.app.complete_rollout,
        WS,
        "bot",
        "production",
        record.bob,
    )
    refused(
        record,
        Conflict,
        "nothing_to_roll_back_to",
        record.app.rollback,
        WS,
        "bot",
        "production",
        "again",
        record.carol,
    )
    # Named rollback to the baseline during a rollout ends the rollout too.
    record.app.start_rollout(WS, "bot", "production", 3, 0.5, record.bob)
    result = record.app.rollback(WS, "bot", "production", "stop", record.carol, to_version=1)
    assert result.value["version"] == 1
    assert record.app.deployment(WS, "bot", "production").rollout is None


@pytest.mark.parametrize("reason", ["", "   ", "\n"])
def test_rollback_needs_a_reason(record: Any, reason: str) -> None:
    rollout_prompt(record)
    record.app.promote(WS, "bot", "production", 2, record.bob)
    error = refused(
        record,
        InvalidInput,
        "invalid_input",
        record.app.rollback,
        WS,
        "bot",
        "production",
        reason,
        record.carol,
    )
    assert error.field == "reason"


def test_rollback_refusals(record: Any) -> None:
    record.new_prompt("bot", "one", "two")
    refused(
        record,
        NotFound,
        "not_deployed",
        record.app.rollback,
        WS,
        "bot",
        "production",
        "x",
        record.carol,
    )
    record.app.promote(WS, "bot", "production", 1, record.bob)
    refused(
        record,
        Conflict,
        "nothing_to_roll_back_to",
        record.app.rollback,
        WS,
        "bot",
        "production",
        "x",
        record.carol,
    )
    refused(
        record,
        NotFound,
        "environment_not_found",
        record.app.rollback,
        WS,
        "bot",
        "qa",
        "x",
        record.carol,
    )
    refused(
        record,
        NotFound,
        "prompt_not_found",
        record.app.rollback,
        WS,
        "ghost",
        "production",
        "x",
        record.carol,
    )
    record.app.promote(WS, "bot", "production", 2, record.bob)
    refused(
        record,
        Conflict,
        "stale_revision",
        record.app.rollback,
        WS,
        "bot",
        "production",
        "x",
        record.carol,
        expected_revision=2,
    )
    # The kill switch works on an archived prompt (it stays unservable, but is ready).
    record.app.archive(WS, "bot", "retired", record.bob, None)
    assert record.app.rollback(WS, "bot", "production", "x", record.carol).value["version"] == 1


# --------------------------------------------------------------------------- pins


def pin_policy(record: Any) -> None:
    policy = EnvironmentPolicy(pin_default_ttl_seconds=3600, pin_max_ttl_seconds=7200)
    record.app.set_policy(WS, "production", policy, record.bob)


def test_pin_default_ttl_comes_from_the_policy(record: Any) -> None:
    record.new_prompt("bot", "one", "two")
    record.app.promote(WS, "bot", "production", 2, record.bob)
    pin_policy(record)
    now = record.clock.now
    result = record.app.pin(WS, "acme-tenant", "bot", "production", 1, record.bob, reason="eu")
    assert result.value == {"version": 1, "expires_at": now + timedelta(seconds=3600)}
    event = events_between(record, result.position - 1, result.position)[0]
    assert type(event).__qualname__ == "TenantPin.Pinned"
    assert (event.version, event.expires_at, event.reason) == (1, now + timedelta(hours=1), "eu")
    assert served(record, "bot", "production", "acme-tenant") == (1, "pinned")
    assert served(record, "bot", "production", "other") == (2, "promoted")
    # Without a policy the default is seven days.
    staging = record.app.pin(WS, "acme-tenant", "bot", "staging", 1, record.bob)
    assert staging.value["expires_at"] == now + timedelta(days=7)


def test_pin_ttl_and_expiry_bounds(record: Any) -> None:
    record.new_prompt("bot", "one")
    pin_policy(record)
    now = record.clock.now
    pin = record.app.pin
    assert pin(WS, "t1", "bot", "production", 1, record.bob, ttl_seconds=60).value[
        "expires_at"
    ] == now + timedelta(seconds=60)
    assert pin(WS, "t2", "bot", "production", 1, record.bob, ttl_seconds=7200).value[
        "expires_at"
    ] == now + timedelta(seconds=7200)
    at_ceiling = now + timedelta(seconds=7200)
    assert pin(WS, "t3", "bot", "production", 1, record.bob, expires_at=at_ceiling).value[
        "expires_at"
    ] == (at_ceiling)
    for kwargs in (
        {"ttl_seconds": 7201},
        {"expires_at": now + timedelta(seconds=7201)},
        {"expires_at": now + timedelta(days=365)},
    ):
        error = refused(
            record,
            InvalidInput,
            "pin_too_long",
            pin,
            WS,
            "t4",
            "bot",
            "production",
            1,
            record.bob,
            **kwargs,
        )
        assert error.field == "expires_at"
    for kwargs in (
        {"expires_at": now - timedelta(seconds=1)},
        {"expires_at": now},
        {"expires_at": datetime(2030, 1, 1)},  # no timezone
        {"expires_at": now + timedelta(seconds=60), "ttl_seconds": 60},
    ):
        error = refused(
            record,
            InvalidInput,
            "invalid_input",
            pin,
            WS,
            "t4",
            "bot",
            "production",
            1,
            record.bob,
            **kwargs,
        )
        assert error.field == "expires_at"


@pytest.mark.parametrize("ttl", [0, -5])
def test_pin_with_zero_or_negative_ttl_is_refused(record: Any, ttl: int) -> None:
    """ttl_seconds=0 asks for a pin that has already expired: refused, not the default TTL."""
    record.new_prompt("bot", "one")
    error = refused(
        record,
        InvalidInput,
        "invalid_input",
        record.app.pin,
        WS,
        "t1",
        "bot",
        "production",
        1,
        record.bob,
        ttl_seconds=ttl,
    )
    assert error.field == "ttl_seconds"
    assert record.app.pin_of(WS, "t1", "bot", "production") is None


def test_pin_refusals(record: Any) -> None:
    record.new_prompt("bot", "one")
    pin = record.app.pin
    refused(record, NotFound, "version_not_found", pin, WS, "t", "bot", "production", 2, record.bob)
    refused(record, NotFound, "environment_not_found", pin, WS, "t", "bot", "qa", 1, record.bob)
    refused(
        record, NotFound, "prompt_not_found", pin, WS, "t", "ghost", "production", 1, record.bob
    )
    for tenant in ("", "x" * 257, "tab\there"):
        error = refused(
            record,
            InvalidInput,
            "invalid_input",
            pin,
            WS,
            tenant,
            "bot",
            "production",
            1,
            record.bob,
        )
        assert error.field == "tenant"
    first = pin(WS, "t", "bot", "production", 1, record.bob)
    refused(
        record,
        Conflict,
        "stale_revision",
        pin,
        WS,
        "t",
        "bot",
        "production",
        1,
        record.bob,
        expected_revision=first.revision - 1,
    )
    again = pin(WS, "t", "bot", "production", 1, record.bob, expected_revision=first.revision)
    assert again.revision == first.revision + 1


def test_unpin(record: Any) -> None:
    record.new_prompt("bot", "one", "two")
    record.app.promote(WS, "bot", "production", 2, record.bob)
    pinned = record.app.pin(WS, "t1", "bot", "production", 1, record.bob)
    refused(
        record,
        Conflict,
        "stale_revision",
        record.app.unpin,
        WS,
        "t1",
        "bot",
        "production",
        record.bob,
        expected_revision=pinned.revision - 1,
    )
    result = record.app.unpin(WS, "t1", "bot", "production", record.bob, reason="done")
    assert names(events_between(record, result.position - 1, result.position)) == [
        "TenantPin.Unpinned"
    ]
    assert served(record, "bot", "production", "t1") == (2, "promoted")
    refused(
        record, Conflict, "not_pinned", record.app.unpin, WS, "t1", "bot", "production", record.bob
    )
    error = refused(
        record, NotFound, "not_pinned", record.app.unpin, WS, "t9", "bot", "production", record.bob
    )
    assert "never" in error.detail


def test_unpin_an_expired_pin_is_a_conflict(record: Any) -> None:
    record.new_prompt("bot", "one", "two")
    record.app.promote(WS, "bot", "production", 2, record.bob)
    record.app.pin(WS, "t1", "bot", "production", 1, record.bob, ttl_seconds=120)
    record.clock.advance(119)
    assert served(record, "bot", "production", "t1") == (1, "pinned")
    record.clock.advance(1)  # exactly at expires_at: expired
    assert served(record, "bot", "production", "t1") == (2, "promoted")
    error = refused(
        record, Conflict, "pin_expired", record.app.unpin, WS, "t1", "bot", "production", record.bob
    )
    assert "expired" in error.detail
    # A new pin replaces the expired one and can be unpinned.
    record.app.pin(WS, "t1", "bot", "production", 1, record.bob, ttl_seconds=60)
    record.app.unpin(WS, "t1", "bot", "production", record.bob)


def test_pins_obey_archive_and_floating_models_but_not_ordering(record: Any) -> None:
    floating(record, "bot", [("anthropic", record.DATED_MODEL), ("openai", "gpt-4o")])
    policy = EnvironmentPolicy(refuse_floating_models=True, require_previous_environment=True)
    record.app.set_policy(WS, "production", policy, record.bob)
    pin = record.app.pin
    refused(record, Conflict, "floating_model", pin, WS, "t1", "bot", "production", 2, record.bob)
    # A pin is an override: the version need not have served staging first.
    assert pin(WS, "t1", "bot", "production", 1, record.bob).value["version"] == 1
    assert served(record, "bot", "production", "t1") == (1, "pinned")
    record.app.archive(WS, "bot", "retired", record.bob, None)
    refused(record, Conflict, "prompt_archived", pin, WS, "t2", "bot", "staging", 1, record.bob)
    # The pin made before the archive is kept, but nothing of an archived prompt is served.
    with pytest.raises(Conflict) as caught:
        served(record, "bot", "production", "t1")
    assert caught.value.code == "prompt_archived"
    record.app.unarchive(WS, "bot", "back", record.bob, None)
    assert served(record, "bot", "production", "t1") == (1, "pinned")


# --------------------------------------------------------------------------- the log


Span = tuple[int, int, Actor, datetime]


def workload(record: Any, actor_for: Callable[[str], Actor]) -> list[Span]:
    """One of every command, each by its own actor a second after the one before.

    Returns (after, upto, actor, time) per command: its events are the positions after..upto.
    """
    app = record.app
    spans: list[Span] = []

    def run(label: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        actor = actor_for(label)
        at = record.clock.advance(1)
        before = log_end(record)
        result = call(*args, actor=actor, **kwargs)
        result = result[0] if isinstance(result, tuple) else result
        spans.append((before, result.position, actor, at))
        return result

    run("policy", app.set_policy, WS, "staging", EnvironmentPolicy(required_approvals=1))
    key_id = run("key", app.issue_key, WS, "ci", "deployer").value
    run("revoke", app.revoke_key, WS, key_id, "rotated")
    envs = ["development", "staging", "production", "eu"]
    run("environments", app.set_environments, WS, envs, expected_revision=None)
    run("create", app.create_prompt, WS, name="bot", content=record.text("one {{ x }}"))
    run("commit", app.commit_version, WS, "bot", record.text("two"))
    run("commit3", app.commit_version, WS, "bot", record.text("three"))
    run("restore", app.restore_version, WS, "bot", 1)
    run("promote", app.promote, WS, "bot", "production", 1)
    run("rollout", app.start_rollout, WS, "bot", "production", 2, 0.2)
    run("adjust", app.adjust_rollout, WS, "bot", "production", 0.4)
    run("complete", app.complete_rollout, WS, "bot", "production")
    run("rollout2", app.start_rollout, WS, "bot", "production", 3, 0.2)
    run("abort", app.abort_rollout, WS, "bot", "production")
    run("rollback", app.rollback, WS, "bot", "production", "incident")
    request = run("request", app.promote, WS, "bot", "staging", 1)
    run("approve", app.approve, WS, "bot", "staging", request.value["request_id"])
    request = run("request2", app.promote, WS, "bot", "staging", 2)
    run("reject", app.reject, WS, "bot", "staging", request.value["request_id"])
    run("pin", app.pin, WS, "t1", "bot", "production", 2)
    run("unpin", app.unpin, WS, "t1", "bot", "production")
    run("archive", app.archive, WS, "bot", "retired", expected_revision=None)
    run("unarchive", app.unarchive, WS, "bot", "back", expected_revision=None)
    return spans


def test_every_event_carries_the_actor_and_time_of_its_command(record: Any) -> None:
    def actor_for(label: str) -> Actor:
        return Actor(f"key-{label}", f"{label} key", on_behalf_of=f"user-{label}")

    spans = workload(record, actor_for)
    by_position = dict(record.events())
    covered = 0
    for after, upto, actor, at in spans:
        assert upto > after
        for position in range(after + 1, upto + 1):
            event = by_position[position]
            name = type(event).__qualname__
            assert event.actor == actor.as_dict(), name
            assert event.timestamp == at, name
            covered += 1
    assert covered == len(by_position) - 2  # all but the workspace bootstrap
    for _, event in record.events():
        assert set(event.actor) == {"key_id", "key_name", "on_behalf_of"}
    bootstrap = [event for _, event in record.events()][:2]
    assert [e.actor["key_id"] for e in bootstrap] == ["system", "system"]


def test_events_form_a_hash_chain_per_aggregate(record: Any) -> None:
    workload(record, lambda label: record.bob)
    previous: dict[Any, tuple[int, str]] = {}
    seen_types = set()
    for _, event in record.events():
        seen_types.add(type(event).__qualname__)
        version, digest = previous.get(event.originator_id, (0, ""))
        assert event.originator_version == version + 1
        assert event.prev_hash == digest, f"chain broken at {type(event).__qualname__}"
        previous[event.originator_id] = (event.originator_version, event_digest(event))
    assert len(previous) == 5  # workspace, prompt, two deployments, pin
    assert len(seen_types) >= 22
    # The chain ends in the aggregate's own hash.
    prompt = record.app.prompt(WS, "bot")
    assert prompt.chain_hash == previous[prompt.id][1]


def test_event_digest_covers_every_attribute(record: Any) -> None:
    record.new_prompt("bot", "one")
    _, event = record.events()[-1]
    digest = event_digest(event)
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert event_digest(event) == digest
    for attribute, value in [
        ("message", "edited"),
        ("number", 2),
        ("prev_hash", "0" * 64),
        ("actor", {**event.actor, "key_id": "mallory"}),
        ("timestamp", event.timestamp + timedelta(microseconds=1)),
    ]:
        saved = getattr(event, attribute)
        object.__setattr__(event, attribute, value)
        try:
            assert event_digest(event) != digest, attribute
        finally:
            object.__setattr__(event, attribute, saved)


def test_chain_survives_snapshots(record: Any) -> None:
    app = PromptRecord(env=record.env(), clock=record.clock, snapshot_interval=2)
    record._others.append(app)
    app.create_prompt(WS, record.alice, name="snap")
    for i in range(7):
        app.commit_version(WS, "snap", record.text(f"v{i}"), record.alice)
        app.promote(WS, "snap", "staging", i + 1, record.bob)
    assert app.snapshots is not None
    prompt_id = app.prompt(WS, "snap").id
    assert len(list(app.snapshots.get(prompt_id))) >= 3
    # Both the snapshotting app and the plain one see an intact chain and the same head.
    assert record.app.prompt(WS, "snap").chain_hash == app.prompt(WS, "snap").chain_hash
    last: dict[Any, str] = {}
    for _, event in record.events():
        assert event.prev_hash == last.get(event.originator_id, "")
        last[event.originator_id] = event_digest(event)
    assert app.deployment(WS, "snap", "staging").stack == list(range(1, 8))


def test_frozen_clock_stamps_every_event_of_a_command(record: Any) -> None:
    """`frozen_clock(at)` runs commands "as if at `at`": every event they write says `at`."""
    at = record.clock.now - timedelta(days=30)
    before = log_end(record)
    with record.app.frozen_clock(at):
        record.app.create_workspace("globex")
        record.app.set_policy(WS, "staging", EnvironmentPolicy(required_approvals=1), record.bob)
        record.app.create_prompt(WS, record.alice, name="bot", content=record.text("one"))
        record.app.promote(WS, "bot", "production", 1, record.bob)
        record.app.pin(WS, "t1", "bot", "production", 1, record.bob)
        record.app.archive(WS, "bot", "retired", record.bob, None)
        record.app.unarchive(WS, "bot", "back", record.bob, None)
    assert record.app.clock is record.clock
    written = events_between(record, before, log_end(record))
    stamps = {type(event).__qualname__: event.timestamp for event in written}
    wrong = {name: stamp for name, stamp in stamps.items() if stamp != at}
    assert not wrong, f"events not stamped with the application clock: {sorted(wrong)}"
