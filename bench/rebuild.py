"""Rebuilding every view against reading the raw notification log, in the same run.

Writes N events (default 20,000) into a fresh PostgreSQL schema (dropped at the end), then
measures events per second of

(a) reading the raw notification log end to end: `recorder.select_notifications` in pages
    of 1,000 (the rebuild's page), each notification deserialised with the application's
    mapper, as the projector does; and
(b) `promptrecord rebuild` of all views (`ViewStore.rebuild`), which does (a) and folds
    every event into the views in one transaction.

Target: rebuild >= 0.25x the raw read. The same is measured on SQLite as a second line.
The two are interleaved for `--rounds` rounds and the median ratio is reported.

Usage: .venv/bin/python bench/rebuild.py [--database-url URL] [--events N] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import platform
import pstats
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from promptrecord.domain.application import PromptRecord
from promptrecord.domain.base import Actor
from promptrecord.domain.pin import TenantPin
from promptrecord.projections.views import open_view_store
from promptrecord.settings import Settings

ACTOR = Actor("bench", "bench")
WS = "bench"
PAGE = 1000
START = datetime(2026, 3, 14, 9, 0, tzinfo=UTC)


def content(text: str) -> dict[str, Any]:
    return {
        "type": "chat",
        "messages": [
            {"role": "system", "content": f"You help {{{{ company }}}}. {text}"},
            {"role": "user", "content": "{{ question }}"},
        ],
        "model": {"provider": "anthropic", "name": "claude-sonnet-4-5-20250929"},
    }


def write_events(app: PromptRecord, events: int) -> int:
    """About `events` events: versions and promotions by command, rollout adjustments and
    pins in bulk (many per commit); returns the last log position."""
    actor = ACTOR.as_dict()
    app.create_workspace(WS)
    now = START
    chunk = 0
    while (app.recorder.max_notification_id() or 0) < events:
        name = f"p{chunk}"
        app.create_prompt(WS, ACTOR, name=name, content=content("one"))
        for step in range(2, 22):  # 20 versions, each promoted: 40 commands
            app.commit_version(WS, name, content(f"v{step}"), ACTOR)
            app.promote(WS, name, "development", step, ACTOR)
        app.promote(WS, name, "staging", 20, ACTOR)
        app.promote(WS, name, "production", 20, ACTOR)
        app.start_rollout(WS, name, "production", 21, 0.1, ACTOR)
        deployment = app.deployment(WS, name, "production")
        assert deployment is not None
        for step in range(400):
            now += timedelta(seconds=1)
            deployment.adjust_rollout(0.05 + (step % 90) / 100, "", actor, now)
        app.save(deployment)
        pins = []
        for n in range(200):
            pin = TenantPin(
                workspace=WS,
                tenant=f"t{chunk}-{n}",
                prompt=name,
                environment="production",
                actor=actor,
                timestamp=now,
            )
            pin.pin(20 + n % 2, now + timedelta(seconds=1 + n), "", actor, now)
            pins.append(pin)
        app.save(*pins)
        chunk += 1
    return app.recorder.max_notification_id() or 0


def read_raw(app: PromptRecord) -> tuple[int, float]:
    """Every notification, deserialised: (events, seconds)."""
    started, count, position = time.perf_counter(), 0, 0
    while True:
        page = app.recorder.select_notifications(
            start=position, limit=PAGE, inclusive_of_start=False
        )
        for notification in page:
            app.mapper.to_domain_event(notification)
        count += len(page)
        if len(page) < PAGE:
            return count, time.perf_counter() - started
        position = page[-1].id


def measure(label: str, settings: Settings, events: int, rounds: int, profile: bool) -> str:
    app = PromptRecord(env=settings.eventsourcing_env(), clock=lambda: START)
    try:
        began = time.perf_counter()
        end = write_events(app, events)
        print(f"{label}: wrote {end:,} events in {time.perf_counter() - began:.1f} s")
        store = open_view_store(app)
        raws: list[float] = []
        rebuilds: list[float] = []
        ratios: list[float] = []
        for index in range(rounds):
            count, seconds = read_raw(app)
            assert count == end, (count, end)
            raw = count / seconds
            report = store.rebuild(app.read_events)
            assert report.events == end, (report.events, end)
            rebuild = report.events_per_second
            raws.append(raw)
            rebuilds.append(rebuild)
            ratios.append(rebuild / raw)
            print(
                f"{label} round {index + 1}: raw read {raw:8,.0f} events/s  "
                f"rebuild {rebuild:8,.0f} events/s  ({rebuild / raw:.3f})"
            )
        if profile:
            profiler = cProfile.Profile()
            profiler.enable()
            store.rebuild(app.read_events)
            profiler.disable()
            stats = pstats.Stats(profiler, stream=sys.stdout)
            stats.sort_stats("tottime").print_stats(20)
        ratio = statistics.median(ratios)
        verdict = "met" if ratio >= 0.25 else "NOT met"
        return (
            f"{label:<10} {end:,} events: raw read {statistics.median(raws):,.0f}/s, "
            f"rebuild all views {statistics.median(rebuilds):,.0f}/s, "
            f"median ratio {ratio:.3f} (target >= 0.25: {verdict})"
        )
    finally:
        app.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default="postgresql://root@127.0.0.1:5432/test")
    parser.add_argument("--events", type=int, default=20_000, help="events to write (about)")
    parser.add_argument("--rounds", type=int, default=3, help="raw read + rebuild rounds")
    parser.add_argument("--profile", action="store_true", help="cProfile one more rebuild")
    parser.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only")
    args = parser.parse_args()

    schema = "bench_" + uuid.uuid4().hex[:10]
    with psycopg.connect(args.database_url, autocommit=True) as conn:
        row = conn.execute("select version()").fetchone()
        server = str(row[0]).split(" on ")[0] if row else "PostgreSQL ?"
        conn.execute(f"CREATE SCHEMA {schema}")
    print(
        f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, {server}, "
        f"SQLite {sqlite3.sqlite_version}"
    )
    lines = []
    try:
        settings = Settings(database_url=args.database_url, database_schema=schema)
        lines.append(measure("PostgreSQL", settings, args.events, args.rounds, args.profile))
    finally:
        with psycopg.connect(args.database_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
    if not args.no_sqlite:
        with tempfile.TemporaryDirectory() as folder:
            settings = Settings(database_url=f"sqlite:///{Path(folder) / 'bench.db'}")
            lines.append(measure("SQLite", settings, args.events, args.rounds, args.profile))
    print()
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
