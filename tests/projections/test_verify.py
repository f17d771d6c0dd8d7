"""`verify` against a log tampered with through SQL, on SQLite and PostgreSQL; the PG triggers."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from psycopg import sql
from support.cli import run_verify

from promptrecord.api import cli_verify
from promptrecord.domain.application import PromptRecord
from promptrecord.domain.base import SYSTEM, Actor
from promptrecord.domain.pin import TenantPin
from promptrecord.domain.prompt import Prompt
from promptrecord.projections.verify import KINDS, VerifyReport, verify_log
from promptrecord.settings import Settings

ALICE = Actor("key-alice", "alice")
SUPPORT_BOT = Prompt.create_id("acme", "support-bot")
IMMUTABLE = "promptrecord events are immutable"


def content(text: str) -> dict[str, Any]:
    model = {"provider": "anthropic", "name": "claude-sonnet-4-5-20250929"}
    return {"type": "text", "text": text, "model": model}


@dataclass(frozen=True)
class Row:
    position: int
    aggregate_id: UUID
    version: int
    topic: str
    state: bytes


class StoredLog:
    """The events table reached around the application, as someone with database access would.

    On PostgreSQL every change goes through `session_replication_role = replica`, which only a
    superuser may set and which skips the triggers that otherwise refuse it.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        env = settings.eventsourcing_env()
        self.postgres = settings.is_postgres
        self.table = "promptrecord_events" if self.postgres else "stored_events"
        self.position = "notification_id" if self.postgres else "rowid"
        self.sqlite_path = env.get("SQLITE_DBNAME", "")

    def _execute(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.postgres:
            with psycopg.connect(self.settings.database_url, autocommit=True) as conn:
                conn.execute("SET session_replication_role = replica")
                schema = sql.Identifier(self.settings.database_schema or "public")
                query = sql.SQL(statement.replace("{table}", "{schema}.{table}")).format(
                    schema=schema, table=sql.Identifier(self.table)
                )
                cursor = conn.execute(query, params)
                return cursor.fetchall() if cursor.description else []
        text = statement.replace("{table}", self.table).replace("%s", "?")
        values = tuple(p.hex if isinstance(p, UUID) else p for p in params)
        with closing(sqlite3.connect(self.sqlite_path)) as db, db:  # close, and commit
            return db.execute(text, values).fetchall()

    def rows(self) -> list[Row]:
        found = self._execute(
            f"SELECT {self.position}, originator_id, originator_version, topic, state "
            f"FROM {{table}} ORDER BY {self.position}"
        )
        return [Row(p, UUID(str(a)), v, t, bytes(s)) for p, a, v, t, s in found]

    def row(self, aggregate_id: UUID, version: int) -> Row:
        return next(
            r for r in self.rows() if r.aggregate_id == aggregate_id and r.version == version
        )

    def set_state(self, aggregate_id: UUID, version: int, state: bytes) -> None:
        self._execute(
            "UPDATE {table} SET state = %s WHERE originator_id = %s AND originator_version = %s",
            (state, aggregate_id, version),
        )

    def edit(self, aggregate_id: UUID, version: int, **changes: Any) -> None:
        state = json.loads(self.row(aggregate_id, version).state)
        state.update(changes)
        self.set_state(aggregate_id, version, json.dumps(state).encode())

    def set_topic(self, aggregate_id: UUID, version: int, topic: str) -> None:
        self._execute(
            "UPDATE {table} SET topic = %s WHERE originator_id = %s AND originator_version = %s",
            (topic, aggregate_id, version),
        )

    def delete(self, aggregate_id: UUID, version: int) -> None:
        self._execute(
            "DELETE FROM {table} WHERE originator_id = %s AND originator_version = %s",
            (aggregate_id, version),
        )

    def set_position(self, aggregate_id: UUID, version: int, position: int) -> None:
        self._execute(
            f"UPDATE {{table}} SET {self.position} = %s "
            "WHERE originator_id = %s AND originator_version = %s",
            (position, aggregate_id, version),
        )


def build_history(application: PromptRecord) -> None:
    """Workspace acme, `support-bot` with versions 1-4 (aggregate versions 2-5), a deployment,
    a pin, and a second prompt written last, so no tamper hits the log's end."""
    application.create_workspace("acme")
    application.create_prompt("acme", ALICE, name="support-bot", content=content("one"))
    for number, message in ((2, "second"), (3, "third"), (4, "fourth")):
        application.commit_version(
            "acme", "support-bot", content(f"text {number}"), ALICE, message=message
        )
    application.promote("acme", "support-bot", "development", 2, ALICE)
    application.pin("acme", "tenant-1", "support-bot", "development", 3, ALICE)
    application.create_prompt("acme", ALICE, name="other", content=content("other"))


@pytest.fixture
def app(backend: Settings) -> Iterator[PromptRecord]:
    application = PromptRecord(env=backend.eventsourcing_env())
    build_history(application)
    try:
        yield application
    finally:
        application.close()


@pytest.fixture
def stored(backend: Settings) -> StoredLog:
    return StoredLog(backend)


def problems(report: VerifyReport) -> list[tuple[str, int | None]]:
    return [(problem.kind, problem.version) for problem in report.problems]


@pytest.mark.parametrize("batch_size", [1, 4, 2000])
def test_an_intact_log_has_no_problems(
    app: PromptRecord, stored: StoredLog, batch_size: int
) -> None:
    report = verify_log(app, batch_size=batch_size)
    assert report.intact, report.problems
    assert report.events_checked == len(stored.rows()) == 13
    assert report.aggregates_checked == 5  # workspace, 2 prompts, deployment, pin
    assert report.last_position == stored.rows()[-1].position


def test_an_edited_event_is_named_with_its_prompt_and_version(
    app: PromptRecord, stored: StoredLog
) -> None:
    stored.edit(SUPPORT_BOT, 3, message="nothing to see here")
    report = verify_log(app, batch_size=4)
    assert problems(report) == [("edited", 3)]
    problem = report.problems[0]
    assert problem.aggregate_id == SUPPORT_BOT
    assert problem.aggregate_type == "Prompt"
    assert problem.key == ("acme", "support-bot")
    assert problem.position == stored.row(SUPPORT_BOT, 3).position
    assert problem.message.startswith(
        f"Version 3 of prompt 'support-bot' (workspace 'acme'), at position {problem.position}, "
        "was changed after it was written"
    )


def test_an_edited_first_event_is_found(app: PromptRecord, stored: StoredLog) -> None:
    stored.edit(SUPPORT_BOT, 1, title="renamed")
    assert problems(verify_log(app)) == [("edited", 1)]


def test_a_rewritten_link_is_found(app: PromptRecord, stored: StoredLog) -> None:
    stored.edit(SUPPORT_BOT, 1, prev_hash="0" * 64)
    report = verify_log(app)
    assert problems(report) == [("edited", 1)]
    assert "no longer starts the chain" in report.problems[0].message


def test_a_rewritten_middle_link_is_one_edit(app: PromptRecord, stored: StoredLog) -> None:
    stored.edit(SUPPORT_BOT, 3, prev_hash="0" * 64)
    report = verify_log(app)
    assert problems(report) == [("edited", 3)]
    assert "no longer links to version 2" in report.problems[0].message


def test_edits_far_apart_are_each_found(app: PromptRecord, stored: StoredLog) -> None:
    stored.edit(SUPPORT_BOT, 2, message="one")
    stored.edit(SUPPORT_BOT, 4, message="two")
    assert problems(verify_log(app)) == [("edited", 2), ("edited", 4)]


def test_a_deleted_middle_event_is_found(app: PromptRecord, stored: StoredLog) -> None:
    position = stored.row(SUPPORT_BOT, 3).position
    stored.delete(SUPPORT_BOT, 3)
    report = verify_log(app, batch_size=4)
    assert sorted(problems(report), key=str) == [("deleted", 3), ("gap", None)]
    gap = next(p for p in report.problems if p.kind == "gap")
    assert gap.position == position
    assert gap.message.startswith(f"Position {position} is missing")
    deleted = next(p for p in report.problems if p.kind == "deleted")
    assert deleted.message.startswith(
        "Version 3 of prompt 'support-bot' (workspace 'acme') is missing"
    )


def test_a_deleted_last_event_of_an_aggregate_shows_as_a_gap(
    app: PromptRecord, stored: StoredLog
) -> None:
    # The chain alone cannot see it: nothing comes after the last event to name it.
    position = stored.row(SUPPORT_BOT, 5).position
    stored.delete(SUPPORT_BOT, 5)
    report = verify_log(app)
    assert problems(report) == [("gap", None)]
    assert report.problems[0].position == position


def test_swapped_events_are_reported_as_reordered(app: PromptRecord, stored: StoredLog) -> None:
    third, fourth = stored.row(SUPPORT_BOT, 3), stored.row(SUPPORT_BOT, 4)
    stored.set_state(SUPPORT_BOT, 3, fourth.state)
    stored.set_state(SUPPORT_BOT, 4, third.state)
    report = verify_log(app, batch_size=3)
    assert problems(report) == [("reordered", 3), ("reordered", 4)]
    assert "written as version 4" in report.problems[0].message
    assert "written as version 3" in report.problems[1].message


def test_swapped_positions_are_reported_as_reordered(app: PromptRecord, stored: StoredLog) -> None:
    third, fourth = stored.row(SUPPORT_BOT, 3), stored.row(SUPPORT_BOT, 4)
    stored.set_position(SUPPORT_BOT, 3, 1_000_000)  # out of the way of the unique index
    stored.set_position(SUPPORT_BOT, 4, third.position)
    stored.set_position(SUPPORT_BOT, 3, fourth.position)
    report = verify_log(app)
    assert problems(report) == [("reordered", 3)]
    assert report.problems[0].position == fourth.position
    assert "was recorded after version 4" in report.problems[0].message


def test_an_undecodable_row_is_reported_and_the_run_goes_on(
    app: PromptRecord, stored: StoredLog
) -> None:
    position = stored.row(SUPPORT_BOT, 3).position
    stored.set_state(SUPPORT_BOT, 3, b'{"message": "half an edit')
    pin = TenantPin.create_id("acme", "tenant-1", "support-bot", "development")
    stored.set_topic(pin, 2, "promptrecord.domain.pin:TenantPin.NoSuchEvent")
    report = verify_log(app, batch_size=2)
    assert problems(report) == [("unreadable", 3), ("unreadable", 2)]
    assert report.problems[0].position == position
    assert report.events_checked == 13
    assert "cannot be read" in report.problems[0].message
    assert "pin of tenant 'tenant-1'" in report.problems[1].message


def test_a_refused_concurrent_save_leaves_no_hole_in_the_log(
    app: PromptRecord, backend: Settings, stored: StoredLog
) -> None:
    other = PromptRecord(env=backend.eventsourcing_env())
    try:
        mine, theirs = app.prompt("acme", "other"), other.prompt("acme", "other")
        mine.archive("mine", SYSTEM.as_dict(), app.clock())
        theirs.archive("theirs", SYSTEM.as_dict(), other.clock())
        app.save(mine)
        with pytest.raises(IntegrityError):
            other.save(theirs)
    finally:
        other.close()
    app.create_prompt("acme", ALICE, name="after", content=content("after"))
    positions = [row.position for row in stored.rows()]
    assert positions == list(range(1, len(positions) + 1))
    assert verify_log(app).intact


# --- PostgreSQL: the table refuses changes ------------------------------------------------


def _events_table(settings: Settings) -> sql.Composed:
    schema = sql.Identifier(settings.database_schema or "public")
    return sql.SQL("{}.promptrecord_events").format(schema)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE {} SET state = state",
        "DELETE FROM {} WHERE originator_version = 2",
        "TRUNCATE {}",
    ],
)
def test_postgres_refuses_changes_to_events(postgres_settings: Settings, statement: str) -> None:
    application = PromptRecord(env=postgres_settings.eventsourcing_env())
    application.create_workspace("acme")
    application.close()
    with psycopg.connect(postgres_settings.database_url, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.RaiseException, match=IMMUTABLE):
            conn.execute(sql.SQL(statement).format(_events_table(postgres_settings)))
        count = conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(_events_table(postgres_settings))
        ).fetchone()
    assert count == (2,)


def test_postgres_snapshots_stay_writable_and_triggers_are_made_once(
    postgres_settings: Settings,
) -> None:
    env = postgres_settings.eventsourcing_env()
    application = PromptRecord(env=env)
    application.create_workspace("acme")
    workspace_id = application.workspace("acme").id
    application.take_snapshot(workspace_id)
    PromptRecord(env=env).close()  # a second process starting on the same schema
    application.close()
    schema = sql.Identifier(postgres_settings.database_schema or "public")
    with psycopg.connect(postgres_settings.database_url, autocommit=True) as conn:
        changed = conn.execute(
            sql.SQL("DELETE FROM {}.promptrecord_snapshots").format(schema)
        ).rowcount
        triggers = conn.execute(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = %s::regclass ORDER BY tgname",
            (f'"{postgres_settings.database_schema}".promptrecord_events',),
        ).fetchall()
    assert changed == 1
    assert triggers == [("promptrecord_events_immutable",), ("promptrecord_events_no_truncate",)]


# --- the command line ----------------------------------------------------------------------


def test_cli_exits_0_on_an_intact_log(
    app: PromptRecord,
    backend: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run_verify(backend, monkeypatch) == 0
    out = capsys.readouterr().out
    assert "verified 13 events of 5 aggregates" in out
    assert out.rstrip().endswith("intact")


def test_cli_exits_1_and_names_each_problem(
    app: PromptRecord,
    backend: Settings,
    stored: StoredLog,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    stored.edit(SUPPORT_BOT, 2, message="rewritten")
    assert run_verify(backend, monkeypatch) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("1 problem(s) found")
    assert lines[1].split()[0] == "edited"
    assert "Version 2 of prompt 'support-bot' (workspace 'acme')" in lines[1]
    assert run_verify(backend, monkeypatch, "--json") == 1
    report = json.loads(capsys.readouterr().out)
    assert report["intact"] is False
    assert report["events_checked"] == 13
    assert report["problems"][0]["kind"] == "edited"
    assert report["problems"][0]["key"] == ["acme", "support-bot"]
    assert report["problems"][0]["aggregate_id"] == str(SUPPORT_BOT)


def test_cli_exits_2_when_there_is_no_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = Settings(database_url=f"sqlite:///{tmp_path}/missing.db")
    assert run_verify(missing, monkeypatch) == 2
    assert "no database at" in capsys.readouterr().err
    assert not (tmp_path / "missing.db").exists()


def test_cli_exits_2_when_postgres_is_unreachable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli_verify, "CONNECT_TIMEOUT", 1)
    unreachable = Settings(database_url="postgresql://nobody@127.0.0.1:9/none")
    assert run_verify(unreachable, monkeypatch) == 2
    err = capsys.readouterr().err
    assert "cannot read the event log in PostgreSQL 127.0.0.1:9/none" in err


# --- any tampering before an aggregate's last event is found -------------------------------


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file holding the `app` history, copied for each generated example."""
    path = tmp_path_factory.mktemp("verify") / "template.db"
    application = PromptRecord(env=Settings(database_url=f"sqlite:///{path}").eventsourcing_env())
    build_history(application)
    application.close()
    return path


TAMPERS = st.sampled_from(["edit", "delete", "swap", "garble"])


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    tampers=st.lists(
        st.tuples(TAMPERS, st.integers(0, 10**6), st.integers(0, 10**6)), min_size=1, max_size=3
    )
)
def test_any_tampering_short_of_an_aggregates_last_event_is_found(
    template: Path, tmp_path: Path, tampers: list[tuple[str, int, int]]
) -> None:
    path = tmp_path / f"{uuid4().hex}.db"
    shutil.copy(template, path)
    copy = Settings(database_url=f"sqlite:///{path}")
    stored = StoredLog(copy)
    original = stored.rows()
    last_of = {row.aggregate_id: row.version for row in original}
    # The log's own last row may vanish unseen (its position is reused), and an edit to an
    # aggregate's last event has no successor to reveal it: both are left alone. Each row is
    # tampered with once at most, so every tamper starts from what was written.
    untouched = [row for row in original[:-1] if row.version < last_of[row.aggregate_id]]
    for tamper, first, second in tampers:
        if not untouched:
            break
        row = untouched.pop(first % len(untouched))
        if tamper == "edit":
            stored.edit(row.aggregate_id, row.version, actor={"key_id": f"forged-{second}"})
        elif tamper == "delete":
            stored.delete(row.aggregate_id, row.version)
        elif tamper == "garble":
            stored.set_state(row.aggregate_id, row.version, row.state[: second % len(row.state)])
        else:
            siblings = [r for r in untouched if r.aggregate_id == row.aggregate_id]
            if not siblings:
                continue
            other = siblings[second % len(siblings)]
            untouched.remove(other)
            stored.set_state(row.aggregate_id, row.version, other.state)
            stored.set_state(other.aggregate_id, other.version, row.state)
    assume(stored.rows() != original)  # a swap undone by a second swap changes nothing
    application = PromptRecord(env=copy.eventsourcing_env())
    try:
        report = verify_log(application, batch_size=3)
    finally:
        application.close()
    assert not report.intact
    assert {problem.kind for problem in report.problems} <= set(KINDS)
