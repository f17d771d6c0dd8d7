"""The projector follows the log written by another application, on SQLite and PostgreSQL.

The writer is one `PromptRecord`; the projector reads through another, as the projector
process follows API processes. Covered: following commands made after it started and
resuming after a restart; a view failing on an event stops it with an error naming the
event, without applying it or anything after it; on PostgreSQL, LISTEN/NOTIFY wakes it
long before its poll, and a killed LISTEN connection does not silence it; SIGTERM stops
the `projector` command cleanly; `rebuild` from the command line.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from promptrecord.api.cli_projector import main
from promptrecord.domain.application import PromptRecord
from promptrecord.domain.base import Actor
from promptrecord.domain.pin import TenantPin
from promptrecord.projections.folding import LoggedEvent, View
from promptrecord.projections.folding_history import PinIntervalsView
from promptrecord.projections.runner import Projector
from promptrecord.projections.views import VIEW_NAMES, ViewError, ViewStore, open_view_store
from promptrecord.settings import Settings

START = datetime(2026, 3, 14, 9, 0, tzinfo=UTC)
MODEL = "claude-sonnet-4-5-20250929"
ACTOR = Actor("key-runner", "runner test")
WS, BOT, PROD = "acme", "bot", "production"
SMALL_POOL = {"POSTGRES_POOL_SIZE": "2", "POSTGRES_MAX_OVERFLOW": "6"}


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def content(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text, "model": {"provider": "anthropic", "name": MODEL}}


class Apps:
    """A writer and a follower on one store; the follower's views; projectors to close."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        env = {**settings.eventsourcing_env(), **SMALL_POOL}
        self.writer = PromptRecord(env=env, clock=Clock())
        self.follower = PromptRecord(env=env)
        self.projectors: list[Projector] = []

    def store(self, views: list[View] | None = None) -> ViewStore:
        return open_view_store(self.follower, views)

    def projector(self, store: ViewStore, **options: Any) -> Projector:
        projector = Projector(self.follower, store, **{"poll_interval": 0.05, **options})
        self.projectors.append(projector)
        projector.start()
        return projector

    def end(self) -> int:
        return int(self.writer.recorder.max_notification_id() or 0)

    def close(self) -> None:
        for projector in self.projectors:
            projector.stop()
        for projector in self.projectors:
            with contextlib.suppress(Exception):  # a failed one was asserted on already
                projector.join(timeout=10)
        self.writer.close()
        self.follower.close()


@pytest.fixture
def apps(backend: Settings) -> Iterator[Apps]:
    pair = Apps(backend)
    try:
        yield pair
    finally:
        pair.close()


def seed(app: PromptRecord) -> int:
    app.create_workspace(WS)
    app.create_prompt(WS, ACTOR, name=BOT, content=content("one"))
    app.commit_version(WS, BOT, content("two"), ACTOR)
    return int(app.promote(WS, BOT, PROD, 1, ACTOR).position or 0)


def dump_all(store: ViewStore) -> dict[str, list[dict[str, Any]]]:
    return {name: store.dump(name) for name in (*VIEW_NAMES, "subjects")}


def test_the_projector_follows_commands_made_after_it_started(apps: Apps) -> None:
    store = apps.store()
    projector = apps.projector(store)
    assert projector.wait(seed(apps.writer), timeout=10)
    assert store.deployments(WS)[0].serving_version == 1

    result = apps.writer.start_rollout(WS, BOT, PROD, 2, 0.25, ACTOR)
    assert projector.wait(result.position or 0, timeout=10)
    split = store.deployments(WS)[0].rollout
    assert split is not None and (split.candidate, split.share) == (2, 0.25)
    result = apps.writer.pin(WS, "t1", BOT, PROD, 2, ACTOR, ttl_seconds=60)
    assert projector.wait(result.position or 0, timeout=10)
    assert [p.tenant for p in store.pins(WS)] == ["t1"]

    projector.stop()
    projector.join()
    stopped_at = store.position()
    assert stopped_at == apps.end()

    # Commands while it is down are applied after a restart, from where it stopped.
    apps.writer.complete_rollout(WS, BOT, PROD, ACTOR)
    last = apps.writer.unpin(WS, "t1", BOT, PROD, ACTOR).position or 0
    again = apps.projector(store)
    assert again.wait(last, timeout=10)
    assert store.deployments(WS)[0].serving_version == 2
    assert store.pins(WS) == []
    audit = store.audit_log(WS, limit=1000)
    assert [e.position for e in audit] == [p for p, _ in apps.follower.read_events(0, 1000)]

    applied = dump_all(store)
    again.stop()
    again.join()
    store.rebuild(apps.follower.read_events)
    assert dump_all(store) == applied


class PinIntervalsFailingOnVersion2(PinIntervalsView):
    """The pin intervals view with a bug: it cannot fold a pin on version 2."""

    def fold(self, logged: LoggedEvent, ctx: Any) -> None:
        if logged.type == "TenantPin.Pinned" and logged.event.version == 2:
            raise RuntimeError("pins on version 2 are not understood")
        super().fold(logged, ctx)


def test_a_failing_view_stops_the_projector_naming_the_event(apps: Apps) -> None:
    seed(apps.writer)
    apps.writer.pin(WS, "t1", BOT, PROD, 1, ACTOR, ttl_seconds=60)
    poisoned = apps.writer.pin(WS, "t2", BOT, PROD, 2, ACTOR, ttl_seconds=60).position or 0
    apps.writer.promote(WS, BOT, PROD, 2, ACTOR)
    broken = apps.store(
        [
            PinIntervalsFailingOnVersion2() if v.name == "pin_intervals" else v
            for v in apps.store().views
        ]
    )
    projector = apps.projector(broken, batch_size=100)  # the bad event is mid-batch

    deadline = time.monotonic() + 10
    while projector.error is None and time.monotonic() < deadline:
        time.sleep(0.02)
    with pytest.raises(ViewError) as stopped:
        projector.join()
    error = stopped.value
    pin_id = str(TenantPin.create_id(WS, "t2", BOT, PROD))
    assert (error.view, error.position, error.type_name) == (
        "pin_intervals",
        poisoned,
        "TenantPin.Pinned",
    )
    assert error.aggregate_id == pin_id
    message = str(error)
    for part in (f"event {poisoned}", "TenantPin.Pinned", pin_id, "pins on version 2"):
        assert part in message
    assert "rebuild pin_intervals" in message

    # Everything before the event is applied; nothing of it, nor after it.
    assert broken.position() == poisoned - 1
    assert [p.tenant for p in broken.pins(WS)] == ["t1"]
    assert broken.audit_log(WS, limit=1000)[-1].position == poisoned - 1
    assert broken.deployments(WS)[0].serving_version == 1

    # With the view fixed, a new projector resumes at that event.
    fixed = apps.store()
    resumed = apps.projector(fixed)
    assert resumed.wait(apps.end(), timeout=10)
    assert [p.tenant for p in fixed.pins(WS)] == ["t1", "t2"]
    assert fixed.deployments(WS)[0].serving_version == 2
    applied = dump_all(fixed)
    resumed.stop()
    resumed.join()
    fixed.rebuild(apps.follower.read_events)
    assert dump_all(fixed) == applied


def listeners(settings: Settings) -> list[int]:
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND query ILIKE 'LISTEN%%' AND pid <> pg_backend_pid()"
        ).fetchall()
    return [row[0] for row in rows]


def eventually(condition: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
    return found


def test_notify_wakes_the_projector_long_before_its_poll(postgres_settings: Settings) -> None:
    apps = Apps(postgres_settings)
    try:
        projector = apps.projector(apps.store(), poll_interval=60)
        eventually(lambda: listeners(postgres_settings))
        started = time.monotonic()
        assert projector.wait(seed(apps.writer), timeout=10)
        assert time.monotonic() - started < 5
    finally:
        apps.close()


def test_a_killed_listen_connection_does_not_silence_the_projector(
    postgres_settings: Settings,
) -> None:
    apps = Apps(postgres_settings)
    # Other processes on this database may LISTEN too (API processes' live state): only the
    # connections that appear with this projector are its own.
    others = set(listeners(postgres_settings))
    try:
        projector = apps.projector(apps.store(), poll_interval=0.3)
        assert projector.wait(seed(apps.writer), timeout=10)
        first = eventually(lambda: set(listeners(postgres_settings)) - others)
        with psycopg.connect(postgres_settings.database_url, autocommit=True) as conn:
            for pid in first:
                conn.execute("SELECT pg_terminate_backend(%s)", [pid])
        result = apps.writer.promote(WS, BOT, PROD, 2, ACTOR)
        assert projector.wait(result.position or 0, timeout=10)
        assert apps.store().deployments(WS)[0].serving_version == 2
        # It subscribed again on a new connection.
        second = eventually(lambda: set(listeners(postgres_settings)) - others - first)
        # Killed while idle, the lost connection alone makes it subscribe again.
        with psycopg.connect(postgres_settings.database_url, autocommit=True) as conn:
            for pid in second:
                conn.execute("SELECT pg_terminate_backend(%s)", [pid])
        eventually(lambda: set(listeners(postgres_settings)) - others - first - second)
        assert projector.resubscriptions >= 3
        result = apps.writer.promote(WS, BOT, "staging", 1, ACTOR)
        assert projector.wait(result.position or 0, timeout=10)
        assert projector.error is None
    finally:
        apps.close()


def command_env(settings: Settings) -> dict[str, str]:
    env = {**os.environ, "PROMPTRECORD_DATABASE_URL": settings.database_url}
    if settings.database_schema:
        env["PROMPTRECORD_DATABASE_SCHEMA"] = settings.database_schema
    return env


def test_sigterm_stops_the_projector_command_cleanly(apps: Apps) -> None:
    last = seed(apps.writer)
    store = apps.store()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "promptrecord.api.cli_projector",
            "projector",
            "--poll-interval",
            "0.1",
        ],
        env=command_env(apps.settings),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        eventually(lambda: store.position() >= last, timeout=20)
        last = apps.writer.promote(WS, BOT, PROD, 2, ACTOR).position or 0
        eventually(lambda: store.position() >= last)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    assert "received SIGTERM" in stderr
    assert f"projector stopped at position {last}" in stderr


def test_rebuild_from_the_command_line(
    apps: Apps, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    end = seed(apps.writer)
    for name, value in command_env(apps.settings).items():
        if name.startswith("PROMPTRECORD_"):
            monkeypatch.setenv(name, value)
    assert main(["rebuild", "--json"]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert result["views"] == list(VIEW_NAMES)
    assert (result["events"], result["position"], result["outdated"]) == (end, end, [])
    assert result["events_per_second"] > 0
    assert "\rrebuilding all views [" in err and "100%" in err

    assert main(["rebuild", "pins"]) == 0
    out, _ = capsys.readouterr()
    assert out.startswith(f"rebuilt pins from {end:,} events in ")
    assert apps.store().deployments(WS)[0].serving_version == 1

    with pytest.raises(SystemExit) as refused:
        main(["rebuild", "pin"])
    assert refused.value.code == 2
    assert "invalid choice: 'pin'" in capsys.readouterr().err


def test_the_commands_say_what_to_do_when_they_cannot_start(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["projector", "--database-url", "mysql://somewhere/db"]) == 2
    assert "neither sqlite:///PATH nor postgresql://" in capsys.readouterr().err
    missing = f"sqlite:///{tmp_path}/no/such/dir/x.db"
    assert main(["rebuild", "--database-url", missing]) == 2
    err = capsys.readouterr().err
    assert "cannot open the event store" in err and "PROMPTRECORD_DATABASE_URL" in err
    assert main(["projector", "--poll-interval", "0"]) == 2
