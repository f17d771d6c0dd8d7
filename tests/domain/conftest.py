"""Fixtures of the domain tests: a `PromptRecord` on each backend with a clock the test drives.

``record``  a `Record`: the application (``record.app``) built on the ``backend`` fixture
            (SQLite and PostgreSQL, isolated per test), a `Clock` it reads the time from
            (``record.clock.now``, ``record.clock.advance(seconds)``), the workspace ``acme``
            already created, and actors: alice (editor, writes the versions), bob and carol
            (deployers), dave (a third deployer for approvals), ci (a CI key).
``clock``   the `Clock` alone (starts at 2026-03-14 09:00 UTC).

Test modules cannot import this file (pytest runs with ``--import-mode=importlib``), so what
they share is reached through the ``record`` object.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from promptrecord.domain.application import PromptRecord
from promptrecord.domain.base import Actor
from promptrecord.settings import Settings

START = datetime(2026, 3, 14, 9, 0, tzinfo=UTC)
DATED_MODEL = "claude-sonnet-4-5-20250929"

ALICE = Actor("key-alice", "alice (editor)")
BOB = Actor("key-bob", "bob (deployer)")
CAROL = Actor("key-carol", "carol (deployer)")
DAVE = Actor("key-dave", "dave (deployer)")
CI = Actor("key-ci", "ci pipeline")

# Few connections per application: a test builds one or two, the concurrency test twenty.
SMALL_POOL = {"POSTGRES_POOL_SIZE": "2", "POSTGRES_MAX_OVERFLOW": "4"}


class Clock:
    """The application's clock: `now` is what every command sees; `advance` moves it on."""

    def __init__(self, start: datetime = START) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


def text_content(
    text: str, model: str = DATED_MODEL, provider: str = "anthropic", **extra: Any
) -> dict[str, Any]:
    return {"type": "text", "text": text, "model": {"provider": provider, "name": model}, **extra}


def chat_content(*messages: tuple[str, str], model: str = DATED_MODEL) -> dict[str, Any]:
    return {
        "type": "chat",
        "messages": [{"role": role, "content": body} for role, body in messages],
        "model": {"provider": "anthropic", "name": model, "temperature": 0.2},
    }


@dataclass
class Record:
    """One application on one isolated store, with its clock, workspace and actors."""

    app: PromptRecord
    clock: Clock
    settings: Settings
    admin_token: str
    workspace: str = "acme"
    alice: Actor = ALICE
    bob: Actor = BOB
    carol: Actor = CAROL
    dave: Actor = DAVE
    ci: Actor = CI
    _others: list[PromptRecord] = field(default_factory=list)

    text = staticmethod(text_content)
    chat = staticmethod(chat_content)
    DATED_MODEL = DATED_MODEL

    def env(self) -> dict[str, str]:
        return {**self.settings.eventsourcing_env(), **SMALL_POOL}

    def second_app(self) -> PromptRecord:
        """Another application instance on the same store (its own connections)."""
        other = PromptRecord(env=self.env(), clock=self.clock)
        self._others.append(other)
        return other

    def events(self, app: PromptRecord | None = None) -> list[tuple[int, Any]]:
        """The whole log, paged, as (position, event)."""
        source = app or self.app
        out: list[tuple[int, Any]] = []
        while True:
            page = list(source.read_events(out[-1][0] if out else 0, 200))
            out += page
            if len(page) < 200:
                return out

    def event_names(self) -> list[str]:
        return [type(event).__qualname__ for _, event in self.events()]

    def new_prompt(self, name: str, *texts: str, model: str = DATED_MODEL) -> str:
        """Create prompt `name` with one version per text, all by alice."""
        self.app.create_prompt(self.workspace, self.alice, name=name)
        for body in texts:
            self.app.commit_version(
                self.workspace, name, text_content(body, model=model), self.alice
            )
        return name

    def close(self) -> None:
        for app in [*self._others, self.app]:
            app.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def record(backend: Settings, clock: Clock) -> Iterator[Record]:
    app = PromptRecord(env={**backend.eventsourcing_env(), **SMALL_POOL}, clock=clock)
    _, token = app.create_workspace("acme", name="Acme Corp")
    rec = Record(app=app, clock=clock, settings=backend, admin_token=token)
    try:
        yield rec
    finally:
        rec.close()
