"""List and read endpoints answer from the views: in two API processes' worth of services
over one database, with the projector elsewhere, `after=` waits for a command's position;
with no projector it answers 503 `views_behind`; reads of this process's own writes wait
for them without being told; and the live state starts from the views, not a replay."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from fastapi import FastAPI

from promptrecord.api.app import create_app
from promptrecord.api.services import Services
from promptrecord.domain.base import Actor
from promptrecord.projections.runner import Projector
from promptrecord.projections.views import open_view_store
from promptrecord.settings import Settings

if TYPE_CHECKING:
    from tests.api.conftest import Api

ALICE = Actor("key-alice", "alice")
Serve = Callable[[FastAPI], AbstractContextManager[str]]


def content(text: str) -> dict[str, Any]:
    model = {"provider": "anthropic", "name": "claude-sonnet-4-5-20250929"}
    return {"type": "text", "text": text, "model": model}


@pytest.fixture
def two_servers(backend: Settings, serve: Serve) -> Iterator[tuple[Services, Services, str, str]]:
    """A writer and a reader server over one database, neither keeping the views."""
    settings = backend.model_copy(update={"embedded_projector": False, "views_wait_timeout": 1.0})
    with ExitStack() as stack:
        writer = Services.open(settings)
        stack.callback(writer.close)
        reader = Services.open(settings)
        stack.callback(reader.close)
        created, token = writer.app.create_workspace("acme")
        writer.read_own_write(created.position)
        writer_url = stack.enter_context(serve(create_app(services=writer)))
        reader_url = stack.enter_context(serve(create_app(services=reader)))
        yield writer, reader, token, f"{writer_url}|{reader_url}"


def clients(urls: str, token: str) -> tuple[httpx.Client, httpx.Client]:
    writer_url, reader_url = urls.split("|")
    headers = {"Authorization": f"Bearer {token}"}
    return (
        httpx.Client(base_url=writer_url, headers=headers, timeout=30),
        httpx.Client(base_url=reader_url, headers=headers, timeout=30),
    )


def test_after_waits_for_a_projector_in_another_process(
    two_servers: tuple[Services, Services, str, str],
) -> None:
    _writer, reader, token, urls = two_servers
    to_writer, to_reader = clients(urls, token)
    created = to_writer.post("/v1/prompts", json={"name": "bot", "content": content("one")})
    assert created.status_code == 201, created.text
    position = created.json()["position"]

    # No projector runs: the views never get there, and the reader says so.
    behind = to_reader.get("/v1/prompts/bot/versions", params={"after": position})
    assert behind.status_code == 503, behind.text
    problem = behind.json()
    assert problem["code"] == "views_behind" and problem["field"] == "query.after"
    assert problem["position"] < position and behind.headers["Retry-After"] == "1"
    # The writer waits for its own write even unasked, and says so the same way.
    assert to_writer.get("/v1/prompts/bot").json()["code"] == "views_behind"

    store = open_view_store(reader.app)
    projector = Projector(reader.app, store, poll_interval=0.05)
    projector.start()
    try:
        listed = to_reader.get("/v1/prompts/bot/versions", params={"after": position})
        assert listed.status_code == 200, listed.text
        assert [v["number"] for v in listed.json()["items"]] == [1]
        committed = to_writer.post("/v1/prompts/bot/versions", json={"content": content("two")})
        head = to_writer.get("/v1/prompts/bot")  # read-your-writes in the writing process
        assert head.status_code == 200 and head.json()["versions"] == 2
        assert head.headers["ETag"] == committed.headers["ETag"]
        after = {"after": committed.json()["position"]}
        version = to_reader.get("/v1/prompts/bot/versions/2", params=after)
        assert version.status_code == 200 and version.json()["content"]["text"] == "two"
    finally:
        projector.stop()
        projector.join()
        to_writer.close()
        to_reader.close()


def test_bad_after_is_a_422(api: Api) -> None:
    for value in ("-1", "soon"):
        response = api.admin.get("/v1/prompts", params={"after": value})
        api.assert_problem(response, 422, "validation_failed", "query.after")


def test_reads_page_in_the_views(api: Api) -> None:
    for name in ("a", "b", "c"):
        response = api.admin.post("/v1/prompts", json={"name": name, "content": content(name)})
        assert response.status_code == 201, response.text
    for n in range(2, 5):
        api.admin.post("/v1/prompts/a/versions", json={"content": content(f"a{n}")})
    first = api.admin.get("/v1/prompts", params={"limit": 2}).json()
    assert [p["name"] for p in first["items"]] == ["a", "b"]
    rest = api.admin.get("/v1/prompts", params={"limit": 2, "cursor": first["next_cursor"]})
    assert [p["name"] for p in rest.json()["items"]] == ["c"]
    assert rest.json()["next_cursor"] is None
    page = api.admin.get("/v1/prompts/a/versions", params={"limit": 3}).json()
    assert [v["number"] for v in page["items"]] == [1, 2, 3]
    tail = api.admin.get("/v1/prompts/a/versions", params={"cursor": page["next_cursor"]})
    assert [v["number"] for v in tail.json()["items"]] == [4]
    # A cursor of another list is refused, not misread.
    wrong = api.admin.get("/v1/prompts/a/versions", params={"cursor": first["next_cursor"]})
    api.assert_problem(wrong, 422, "invalid_cursor", "query.cursor")
    missing = api.admin.get("/v1/prompts/zzz/versions")
    api.assert_problem(missing, 404, "prompt_not_found", "name")
    api.assert_problem(
        api.admin.get("/v1/prompts/a/versions/9"), 404, "version_not_found", "version"
    )


def test_live_state_starts_from_the_views(backend: Settings) -> None:
    """A second process seeded from the views resolves like the first, having read only
    the events after the views' position from the log."""
    settings = backend.model_copy(update={"embedded_projector": True})
    first = Services.open(settings)
    try:
        first.app.create_workspace("acme")
        first.app.create_prompt("acme", ALICE, name="bot", content=content("one"))
        first.app.commit_version("acme", "bot", content("two"), ALICE)
        first.app.promote("acme", "bot", "production", 1, ALICE)
        done = first.app.pin("acme", "t1", "bot", "production", 2, ALICE)
        first.views(done.position)  # the views have it all
        assert first.projector is not None
        first.projector.stop()
        first.projector.join()
        late = first.app.commit_version("acme", "bot", content("three"), ALICE)
        views_position = first.view_store.position()
        assert views_position < late.position  # the views miss the last commit
        # Mark the views' copy of the pin, so the test can tell where the state came from.
        store = first.view_store
        with store._write() as sql:  # type: ignore[attr-defined]
            sql.run(f"UPDATE {store._qualified('promptrecord_view_pins')} SET version = 1")  # type: ignore[attr-defined]
    finally:
        first.close()
    second = Services.open(backend.model_copy(update={"embedded_projector": False}))
    try:
        seeded_at = second.live.state.position
        assert second.live.state.position >= views_position
        assert second.live.state.prompts[("acme", "bot")].versions.keys() == {1, 2, 3}
        # version 1: the marked row of the views, which a replay of the log would not give
        assert second.live.state.pins[("acme", "t1", "bot", "production")].version == 1
        assert seeded_at == late.position  # then it followed the log for the rest
    finally:
        second.close()
