"""Audit answers over HTTP default to the views and equal replay; `verify` compares the two.

Both backends. The views are folded in the test (no projector runs beside the test server),
so each test decides how far they have got.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

import pytest
from support.cli import run_verify

from promptrecord.domain.application import PromptRecord
from promptrecord.domain.base import Actor
from promptrecord.projections.folding_history import DEPLOYMENT_INTERVALS
from promptrecord.projections.view_sql import SqlViewStore
from promptrecord.projections.views import ViewStore, open_view_store
from promptrecord.settings import Settings

if TYPE_CHECKING:
    from tests.api.conftest import Api

ALICE = Actor("key-alice", "alice")
BASE = "/v1/audit/tenants/{tenant}/prompts/bot"


def content(text: str) -> dict[str, Any]:
    model = {"provider": "anthropic", "name": "claude-sonnet-4-5-20250929"}
    return {"type": "text", "text": text, "model": model}


def history(app: PromptRecord, workspace: str) -> None:
    """bot v1-v3 in production: v1 promoted, a rollout to v3 adjusted, tenant-1 pinned to v2."""
    app.create_prompt(workspace, ALICE, name="bot", content=content("one"))
    app.commit_version(workspace, "bot", content("two"), ALICE)
    app.commit_version(workspace, "bot", content("three"), ALICE)
    app.promote(workspace, "bot", "production", 1, ALICE)
    app.start_rollout(workspace, "bot", "production", 3, 0.5, ALICE)
    app.adjust_rollout(workspace, "bot", "production", 0.7, ALICE)
    app.pin(workspace, "tenant-1", "bot", "production", 2, ALICE)


def catch_up(store: ViewStore, app: PromptRecord) -> None:
    store.apply(store.position(), list(app.read_events(store.position(), 10_000)))


def now() -> str:
    return (datetime.now(UTC) + timedelta(seconds=1)).isoformat().replace("+00:00", "Z")


def test_answers_default_to_views_and_equal_replay(api: Api) -> None:
    app = api.services.app
    history(app, "acme")
    api.services.live.catch_up()
    catch_up(api.services.view_store, app)
    start = (datetime.now(UTC) - timedelta(minutes=5)).isoformat().replace("+00:00", "Z")
    for tenant in ("tenant-1", "tenant-2", "tenant-3"):
        path = BASE.format(tenant=tenant)
        at = {"environment": "production", "at": now()}
        window = {"environment": "production", "from": start, "to": now()}
        for params, url in ((at, path), (window, path + "/intervals")):
            views = api.admin.get(url, params=params)
            replay = api.admin.get(url, params={**params, "method": "replay"})
            assert views.status_code == replay.status_code == 200, views.text
            from_views, from_replay = views.json(), replay.json()
            assert (from_views.pop("method"), from_replay.pop("method")) == ("views", "replay")
            assert from_views == from_replay


def test_views_behind_the_live_state_answer_by_replay(api: Api) -> None:
    app = api.services.app
    projector = api.services.projector
    assert projector is not None
    projector.stop()  # as if `promptrecord projector` had stopped
    projector.join()
    history(app, "acme")
    catch_up(api.services.view_store, app)
    app.unpin("acme", "tenant-1", "bot", "production", ALICE)  # the views never see this
    api.services.live.catch_up()
    response = api.admin.get(BASE.format(tenant="tenant-1"), params={"at": now()})
    assert response.status_code == 200, response.text
    assert response.json()["method"] == "replay"
    assert response.json()["reason"] == "rollout"  # the unpin the views had not applied


# --- promptrecord verify --------------------------------------------------------------------


@pytest.fixture
def app(backend: Settings) -> Iterator[PromptRecord]:
    application = PromptRecord(env=backend.eventsourcing_env())
    application.create_workspace("acme")
    history(application, "acme")
    try:
        yield application
    finally:
        application.close()


def test_verify_finds_views_equal_to_replay(
    app: PromptRecord,
    backend: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    open_view_store(app).rebuild(app.read_events)
    code = run_verify(backend, monkeypatch, "--json")
    report = json.loads(capsys.readouterr().out)
    assert code == 0, report
    views = report["views"]
    assert views["skipped"] is None and views["problems"] == []
    assert views["deployments"] == 1 and views["tenants"] >= 2 and views["answers"] > 5


def test_verify_names_a_view_row_altered_through_sql(
    app: PromptRecord,
    backend: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store = cast(SqlViewStore, open_view_store(app))
    store.rebuild(app.read_events)
    with store._write() as sql:
        table = store._qualified(DEPLOYMENT_INTERVALS.full_name)
        sql.run(
            f'UPDATE {table} SET "serving_version" = 2 WHERE "cause_type" = ?',
            ["Deployment.Promoted"],
        )
    code = run_verify(backend, monkeypatch)
    out = capsys.readouterr().out
    assert code == 1, out
    mismatches = [line for line in out.splitlines() if "view_mismatch" in line]
    assert mismatches, out
    assert "prompt 'bot' in production" in mismatches[0]
    assert "the views answer version 2" in mismatches[0] and "replay answers version 1" in out


def test_verify_skips_views_never_built(
    app: PromptRecord,
    backend: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = run_verify(backend, monkeypatch)
    captured = capsys.readouterr()
    assert code == 0, captured
    assert "views not compared with replay: the views were never built" in captured.err
    assert "promptrecord rebuild" in captured.err
    code = run_verify(backend, monkeypatch, "--require-views")
    assert code == 2
    assert "views not compared" in capsys.readouterr().err
