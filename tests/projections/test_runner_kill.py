"""A projector process SIGKILLed again and again during a catch-up loses and repeats nothing.

PostgreSQL. More than 10,000 events are written first (rollout adjustments and pins, many in
one commit, so batches end in the middle of commits). `promptrecord projector` (the command
line's own entry point, with small batches) is killed with SIGKILL 20 times at random moments
(seeded) while it catches up, and restarted each time; a last run finishes. Its views equal a
clean rebuild, and a counting view the process folds beside the others shows every event
applied exactly once: none twice, none skipped.
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
from promptrecord.projections.views import VIEW_NAMES, ViewStore, open_view_store
from promptrecord.settings import Settings

START = datetime(2026, 3, 14, 9, 0, tzinfo=UTC)
MODEL = "claude-sonnet-4-5-20250929"
ACTOR = Actor("key-kill", "kill test")
WS, BOT, PROD = "acme", "bot", "production"
KILLS = 20
EVENTS = 10_000
CHUNKS = 17  # 600 events each: 300 rollout adjustments, 150 pins of 2 events
BATCH = "25"  # events per projector transaction: small, so the catch-up outlasts the kills

# `promptrecord projector` with one more view, which counts how often each event is folded.
PROJECTOR = """
import sys
from promptrecord.api import cli_projector
from promptrecord.projections import views
from promptrecord.projections.folding import INT, Column, Table, View

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


open_view_store = views.open_view_store
views.open_view_store = lambda app, _=None: open_view_store(
    app, [*views.default_views(), Applications()]
)
sys.exit(cli_projector.main(["projector", *sys.argv[1:]]))
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
    for chunk in range(CHUNKS):
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


def reaches(store: ViewStore, least: int) -> Callable[[], bool]:
    return lambda: store.position() >= least


def test_sigkilled_projector_ends_with_views_equal_to_a_rebuild(
    postgres_settings: Settings, tmp_path: Path
) -> None:
    clock_now = [START]
    app = PromptRecord(env=postgres_settings.eventsourcing_env(), clock=lambda: clock_now[0])
    try:
        end = write_history(app)
        assert end >= EVENTS
        store = open_view_store(app)
        script = tmp_path / "projector.py"
        script.write_text(PROJECTOR)
        env = {
            **os.environ,
            "PROMPTRECORD_DATABASE_URL": postgres_settings.database_url,
            "PROMPTRECORD_DATABASE_SCHEMA": postgres_settings.database_schema or "",
        }
        args = ["--batch-size", BATCH, "--poll-interval", "0.2"]
        # Kill moments spread over the whole catch-up: each run is killed once the views
        # pass a random position, a random few milliseconds later (mostly mid-transaction).
        rng = random.Random(20260314)
        targets = sorted(rng.sample(range(1, end - 20 * int(BATCH)), KILLS))
        killed_at: list[int] = []
        for target in targets:
            least = max(target, store.position() + 1)
            process = subprocess.Popen(
                [sys.executable, str(script), *args], env=env, stderr=subprocess.DEVNULL
            )
            try:
                eventually(reaches(store, least))
                time.sleep(rng.uniform(0.0, 0.03))
            finally:
                process.kill()
                process.wait()
            killed_at.append(store.position())
        # Every kill landed mid-catch-up, each after the last one's run had made progress.
        assert killed_at == sorted(set(killed_at)), killed_at
        assert len(killed_at) == KILLS and killed_at[-1] < end, (killed_at, end)

        last = subprocess.Popen(
            [sys.executable, str(script), *args], env=env, stderr=subprocess.PIPE, text=True
        )
        try:
            eventually(lambda: store.position() == end)
            last.terminate()
            _, stderr = last.communicate(timeout=10)
        finally:
            last.kill()
        assert last.returncode == 0, stderr

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
