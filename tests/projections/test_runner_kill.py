"""A projector process SIGKILLed again and again during a catch-up loses and repeats nothing.

PostgreSQL. About 3,000 events are written first (rollout adjustments and pins, many in one
commit, so batches end in the middle of commits). A projector process with small batches
is killed with SIGKILL at random moments while it catches up, then restarted; a last run
finishes. Its views equal a clean rebuild, and a counting view the process folds beside the
others shows every event applied exactly once.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from promptrecord.domain.application import PromptRecord
from promptrecord.domain.base import Actor
from promptrecord.domain.pin import TenantPin
from promptrecord.projections.views import VIEW_NAMES, open_view_store
from promptrecord.settings import Settings

START = datetime(2026, 3, 14, 9, 0, tzinfo=UTC)
MODEL = "claude-sonnet-4-5-20250929"
ACTOR = Actor("key-kill", "kill test")
WS, BOT, PROD = "acme", "bot", "production"
KILLS = 8

# The projector process: the usual views plus one that counts how often each event is folded.
PROJECTOR = """
import sys
from promptrecord.domain.application import PromptRecord
from promptrecord.projections.folding import INT, Column, Table, View
from promptrecord.projections.runner import run_projector
from promptrecord.projections.views import default_views, open_view_store
from promptrecord.settings import Settings

COUNTS = Table(
    "test_applications",
    (Column("position", INT, False), Column("applications", INT, False)),
    key=("position",),
)


class Applications(View):
    name = "test_applications"
    tables = (COUNTS,)

    def fold(self, logged, ctx):
        row = ctx.get(COUNTS, (logged.position,))
        count = (row["applications"] if row else 0) + 1
        ctx.put(COUNTS, {"position": logged.position, "applications": count})


app = PromptRecord(env=Settings().eventsourcing_env())
store = open_view_store(app, [*default_views(), Applications()])
run_projector(app, store, poll_interval=0.2, batch_size=int(sys.argv[1]))
app.close()
"""


def content(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text, "model": {"provider": "anthropic", "name": MODEL}}


def write_history(app: PromptRecord) -> int:
    actor = ACTOR.as_dict()
    app.create_workspace(WS)
    app.create_prompt(WS, ACTOR, name=BOT, content=content("one"))
    app.commit_version(WS, BOT, content("two"), ACTOR)
    app.promote(WS, BOT, PROD, 1, ACTOR)
    app.start_rollout(WS, BOT, PROD, 2, 0.1, ACTOR)
    now = START
    for chunk in range(5):
        deployment = app.deployment(WS, BOT, PROD)
        assert deployment is not None
        for step in range(300):
            now += timedelta(seconds=1)
            deployment.adjust_rollout(0.05 + (step % 90) / 100, "", actor, now)
        app.save(deployment)
        pins = []
        for n in range(150):
            pin = TenantPin(
                workspace=WS,
                tenant=f"t{chunk}-{n}",
                prompt=BOT,
                environment=PROD,
                actor=actor,
                timestamp=now,
            )
            pin.pin(1 + n % 2, now + timedelta(seconds=1 + n), "", actor, now)
            pins.append(pin)
        app.save(*pins)
    app.complete_rollout(WS, BOT, PROD, ACTOR)
    return int(app.rollback(WS, BOT, PROD, "the end", ACTOR).position or 0)


def eventually(condition: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
    return found


def test_sigkilled_projector_ends_with_views_equal_to_a_rebuild(
    postgres_settings: Settings, tmp_path: Path
) -> None:
    clock_now = [START]
    app = PromptRecord(env=postgres_settings.eventsourcing_env(), clock=lambda: clock_now[0])
    try:
        end = write_history(app)
        assert end >= 3000
        store = open_view_store(app)
        script = tmp_path / "projector.py"
        script.write_text(PROJECTOR)
        env = {
            **os.environ,
            "PROMPTRECORD_DATABASE_URL": postgres_settings.database_url,
            "PROMPTRECORD_DATABASE_SCHEMA": postgres_settings.database_schema or "",
        }
        rng = random.Random(20260314)
        killed_at: list[int] = []
        for _ in range(KILLS):
            before = store.position()
            process = subprocess.Popen(
                [sys.executable, str(script), "20"], env=env, stderr=subprocess.DEVNULL
            )
            try:
                eventually(lambda b=before: store.position() > b)
                time.sleep(rng.uniform(0.0, 0.15))
            finally:
                process.kill()
                process.wait()
            killed_at.append(store.position())
        assert len({p for p in killed_at if p < end}) >= 5, killed_at  # killed mid-catch-up

        process = subprocess.Popen(
            [sys.executable, str(script), "20"], env=env, stderr=subprocess.PIPE, text=True
        )
        try:
            eventually(lambda: store.position() == end)
            process.terminate()
            _, stderr = process.communicate(timeout=10)
        finally:
            process.kill()
        assert process.returncode == 0, stderr

        schema = postgres_settings.database_schema or "public"
        with psycopg.connect(postgres_settings.database_url) as conn:
            counts = conn.execute(
                sql.SQL("SELECT position, applications FROM {}.{} ORDER BY position").format(
                    sql.Identifier(schema), sql.Identifier("promptrecord_view_test_applications")
                )
            ).fetchall()
        assert [position for position, _ in counts] == list(range(1, end + 1))
        assert {applications for _, applications in counts} == {1}

        projected = {name: store.dump(name) for name in (*VIEW_NAMES, "subjects")}
        assert len(projected["audit_log"]) == end
        store.rebuild(app.read_events)
        rebuilt = {name: store.dump(name) for name in (*VIEW_NAMES, "subjects")}
        for name in projected:
            assert projected[name] == rebuilt[name], name
    finally:
        app.close()
