"""At-time audit answers from the views, against a plain indexed SELECT, in the same run.

Writes a history of `--events` events (default 1,000,000) into a fresh PostgreSQL schema
(dropped at the end, also on Ctrl-C): `--prompts` prompts (1,000) with versions,
promotions, rollouts started, adjusted, completed and aborted, rollbacks, and pins, unpins
and re-pins of `--tenants` tenants (10,000), over about six months of clock time. Prompts
are created by command; everything after is done with the aggregates' own command methods
in memory (so every invariant and the hash chain hold) and saved many aggregates per
insert. Then it rebuilds every view and asks `--questions` random questions "which version
did tenant X get of prompt P in environment E at time T" through `ViewAudit.answer_at`,
timing each, and the same parameters as one indexed SELECT on the pin intervals table.

Target: answer_at p99 <= 10 ms.

The questions are timed twice: as rebuilt (the tables have statistics only if autovacuum
got to them), and after ANALYZE of the views' tables, as autovacuum would soon do.

Usage: .venv/bin/python bench/audit.py [--database-url URL] [--events N] [--questions N]
           [--warmup N] [--profile] [--explain]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import os
import platform
import pstats
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from promptrecord.domain.application import PromptRecord
from promptrecord.domain.base import Actor
from promptrecord.domain.deployment import Deployment
from promptrecord.domain.errors import DomainError
from promptrecord.domain.pin import TenantPin
from promptrecord.domain.prompt import Prompt
from promptrecord.projections.view_audit import ViewAudit, _MomentQuery
from promptrecord.projections.views import open_view_store
from promptrecord.settings import Settings

WS = "bench"
START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
SPAN = timedelta(days=182)
ENVIRONMENTS = ("staging", "production")
ACTORS = [Actor(f"key{i}", f"deployer {i}").as_dict() for i in range(8)]
BATCH = 5000  # events per insert
PIN_MAX_TTL = 90 * 24 * 3600


def content(prompt: int, revision: int) -> dict[str, Any]:
    return {
        "type": "chat",
        "messages": [
            {
                "role": "system",
                "content": f"You help {{{{ company }}}} with {prompt}. Revision {revision}.",
            },
            {"role": "user", "content": "{{ question }}"},
        ],
        "model": {"provider": "anthropic", "name": "claude-sonnet-4-5-20250929"},
    }


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class History:
    """Generates the history: one random action per step, the clock moving each step."""

    def __init__(self, app: PromptRecord, prompts: int, tenants: int, seed: int = 7) -> None:
        self.app = app
        self.rng = random.Random(seed)
        self.now = START
        app.clock = lambda: self.now
        self.names = [f"prompt-{i:04d}" for i in range(prompts)]
        self.tenants = [f"tenant-{i:05d}" for i in range(tenants)]
        self.prompts: dict[str, Prompt] = {}
        self.deployments: dict[tuple[str, str], Deployment] = {}
        self.pins: dict[tuple[str, str, str], TenantPin] = {}
        self.pending: dict[int, Any] = {}  # id(aggregate) -> aggregate with unsaved events
        self.pending_events = 0
        self.saved = 0
        self.counts: dict[str, int] = {}

    # --- setup by command ----------------------------------------------------------------

    def setup(self) -> None:
        """Workspace and prompts (first version) by command; first promotions in memory."""
        self.app.create_workspace(WS)
        for i, name in enumerate(self.names):
            self.app.create_prompt(WS, self._actor_obj(), name=name, content=content(i, 1))
            self.prompts[name] = self.app.prompt(WS, name)
            self.now += timedelta(seconds=5)
        for name in self.names:
            for env in ENVIRONMENTS:
                dep = Deployment(
                    workspace=WS, prompt=name, environment=env, actor=self._actor(),
                    timestamp=self.now,
                )  # fmt: skip
                dep.promote(1, None, "initial", self._actor(), self.now)
                self.deployments[(name, env)] = dep
                self._touch(dep, 2)
            self.now += timedelta(seconds=5)
        self.flush()
        self.saved = self.app.recorder.max_notification_id() or 0

    def _actor(self) -> dict[str, Any]:
        return self.rng.choice(ACTORS)

    def _actor_obj(self) -> Actor:
        return Actor.from_dict(self._actor())

    def _touch(self, aggregate: Any, events: int = 1) -> None:
        self.pending[id(aggregate)] = aggregate
        self.pending_events += events

    def flush(self) -> None:
        if self.pending:
            self.app.save(*self.pending.values())
            self.saved += self.pending_events
            self.pending.clear()
            self.pending_events = 0

    # --- actions, each with the aggregates' own methods ----------------------------------

    def commit(self) -> None:
        name = self.rng.choice(self.names)
        prompt = self.prompts[name]
        revision = len(prompt.versions) + 1
        normalised, digest, variables, warnings = self.app._prepare(
            content(self.names.index(name), revision)
        )
        prompt.commit(
            content=normalised, content_hash=digest, variables=variables,
            message=f"revision {revision}", warnings=warnings, git_sha=None, git_path=None,
            restored_from=None, actor=self._actor(), timestamp=self.now,
        )  # fmt: skip
        self._touch(prompt)
        self._count("commit")

    def deploy(self) -> None:
        name = self.rng.choice(self.names)
        env = "production" if self.rng.random() < 0.7 else "staging"
        dep = self.deployments[(name, env)]
        prompt = self.prompts[name]
        versions = len(prompt.versions)
        actor, now, rng = self._actor(), self.now, self.rng
        if dep.rollout is not None:
            roll = rng.random()
            if roll < 0.6:
                dep.adjust_rollout(round(rng.uniform(0.01, 0.99), 2), "", actor, now)
                self._count("adjust")
            elif roll < 0.8:
                dep.complete_rollout("looks good", actor, now)
                self._count("complete")
            elif roll < 0.92:
                dep.abort_rollout("error rate", actor, now)
                self._count("abort")
            else:
                dep.rollback(None, "incident during rollout", actor, now)
                self._count("rollback")
        else:
            candidate = rng.randint(max(1, versions - 3), versions)
            roll = rng.random()
            if candidate != dep.serving and roll < 0.45:
                dep.start_rollout(
                    uuid.UUID(int=rng.getrandbits(128)).hex, candidate,
                    round(rng.uniform(0.01, 0.5), 2), "tenant", None, "", actor, now,
                )  # fmt: skip
                self._count("rollout")
            elif candidate != dep.serving and roll < 0.85:
                dep.promote(candidate, None, "", actor, now)
                self._count("promote")
            elif len(dep.stack) >= 2:
                dep.rollback(None, "kill switch", actor, now)
                self._count("rollback")
            else:
                return
        self._touch(dep)

    def pin(self) -> None:
        # every tenant gets a pin first, then pins go to tenants at random
        first = self.counts.get("pin", 0)
        fresh = first < len(self.tenants)
        tenant = self.tenants[first] if fresh else self.rng.choice(self.tenants)
        # each tenant keeps to a few prompts, so the same pins are unpinned and re-pinned
        name = self.names[(int(tenant[-5:]) * 7 + self.rng.randrange(3)) % len(self.names)]
        env = "production" if self.rng.random() < 0.8 else "staging"
        key = (tenant, name, env)
        pin = self.pins.get(key)
        actor, now = self._actor(), self.now
        if pin is None:
            pin = TenantPin(
                workspace=WS, tenant=tenant, prompt=name, environment=env, actor=actor,
                timestamp=now,
            )  # fmt: skip
            self.pins[key] = pin
            self._touch(pin)
        if pin.active_at(now) and not fresh and self.rng.random() < 0.4:
            pin.unpin("customer asked", actor, now)
            self._count("unpin")
        else:
            versions = len(self.prompts[name].versions)
            version = self.rng.randint(max(1, versions - 5), versions)
            ttl = self.rng.randint(3600, PIN_MAX_TTL)
            pin.pin(version, now + timedelta(seconds=ttl), "hold for customer", actor, now)
            self._count("pin" if fresh else "re-pin")
        self._touch(pin)

    def _count(self, kind: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1

    def run(self, events: int) -> None:
        began = time.perf_counter()
        step = SPAN / max(1, events - self.saved)
        last_report = began
        while self.saved + self.pending_events < events:
            before = self.pending_events
            roll = self.rng.random()
            if roll < 0.08:
                self.commit()
            elif roll < 0.45:
                self.deploy()
            else:
                self.pin()
            # the clock moves in proportion to the events written, so the history spans SPAN
            self.now += step * (self.pending_events - before) * self.rng.uniform(0.5, 1.5)
            if self.pending_events >= BATCH:
                self.flush()
                if time.perf_counter() - last_report > 5:
                    last_report = time.perf_counter()
                    rate = self.saved / (last_report - began)
                    log(f"  {self.saved:,} events ({rate:,.0f}/s), clock at {self.now:%Y-%m-%d}")
        self.flush()


def percentile(sorted_values: list[float], p: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * p))]


def measure(
    label: str,
    conn: psycopg.Connection[Any],
    select: str,
    audit: ViewAudit,
    questions: list[tuple[str, str, str, str, datetime]],
    warmup: int,
) -> None:
    """Time every question through `answer_at` and the baseline SELECT, interleaved."""
    for q in questions[:warmup]:
        # Warm up both. The pool hands its connections round, and each prepares the
        # statement after 5 uses; PostgreSQL then plans it 5 more times before it keeps
        # one plan: so warm-up takes about 10 answers per pooled connection.
        conn.execute(select, q).fetchall()
        with contextlib.suppress(DomainError):
            audit.answer_at(*q)
    audit_times: list[float] = []
    select_times: list[float] = []
    reasons: dict[str, int] = {}
    # interleaved, so drift in the machine moves both sides
    for q in questions:
        t0 = time.perf_counter()
        conn.execute(select, q).fetchall()
        select_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        try:
            reason = audit.answer_at(*q).reason
        except DomainError as refusal:
            reason = f"refused:{refusal.code}"
        audit_times.append(time.perf_counter() - t0)
        reasons[reason] = reasons.get(reason, 0) + 1
    audit_times.sort()
    select_times.sort()
    a50, a99 = statistics.median(audit_times) * 1000, percentile(audit_times, 0.99) * 1000
    s50, s99 = statistics.median(select_times) * 1000, percentile(select_times, 0.99) * 1000
    print(f"{label}: {len(questions):,} questions after {warmup:,} to warm up")
    print("  answers: " + ", ".join(f"{k} {v:,}" for k, v in sorted(reasons.items())))
    print(f"  indexed SELECT (pin_intervals)  p50 {s50:7.3f} ms  p99 {s99:7.3f} ms")
    print(f"  ViewAudit.answer_at            p50 {a50:7.3f} ms  p99 {a99:7.3f} ms")
    print(
        f"  answer_at / SELECT             p50 {a50 / s50:.1f}x  p99 {a99 / s99:.1f}x   "
        f"(target: answer_at p99 <= 10 ms: {'met' if a99 <= 10 else 'NOT met'})"
    )


def explain(
    conn: psycopg.Connection[Any],
    audit: ViewAudit,
    question: tuple[str, str, str, str, datetime],
) -> None:
    """The plan of the one statement `answer_at` runs, with its timings, on stderr."""
    query = _MomentQuery(audit.store)
    text = query.text.replace("?", "%s")
    values = query.values(question[:4], question[4])
    for (line,) in conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + text, values).fetchall():
        log(line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default="postgresql://root@127.0.0.1:5432/test")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--prompts", type=int, default=1_000)
    parser.add_argument("--tenants", type=int, default=10_000, help="tenants that get pins")
    parser.add_argument("--questions", type=int, default=2_000)
    parser.add_argument("--warmup", type=int, default=200, help="questions asked untimed first")
    parser.add_argument("--profile", action="store_true", help="cProfile answer_at")
    parser.add_argument("--explain", action="store_true", help="EXPLAIN ANALYZE one answer")
    args = parser.parse_args()
    schema = "bench_" + uuid.uuid4().hex[:10]
    with psycopg.connect(args.database_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        server_version = conn.execute("SELECT version()").fetchone()[0]  # type: ignore[index]
    app: PromptRecord | None = None
    try:
        print(
            f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}, {server_version}"
        )
        settings = Settings(database_url=args.database_url, database_schema=schema)
        app = PromptRecord(env=settings.eventsourcing_env())
        history = History(app, args.prompts, args.tenants)
        began = time.perf_counter()
        log(f"writing {args.events:,} events into schema {schema}")
        history.setup()
        history.run(args.events)
        written = app.recorder.max_notification_id() or 0
        generated = time.perf_counter() - began
        pinned = len({tenant for tenant, _, _ in history.pins})
        print(
            f"history: {written:,} events, {len(history.names):,} prompts, {pinned:,} pinned "
            f"tenants, {START:%Y-%m-%d} .. {history.now:%Y-%m-%d}, written in {generated:.0f} s"
        )
        print("  " + ", ".join(f"{k} {v:,}" for k, v in sorted(history.counts.items())))

        store = open_view_store(app)
        log("rebuilding the views")
        shown = [time.perf_counter()]

        def progress(count: int, position: int) -> None:
            if time.perf_counter() - shown[0] > 10:
                shown[0] = time.perf_counter()
                log(f"  {count:,} of {written:,} events folded")

        report = store.rebuild(app.read_events, progress=progress)
        print(
            f"views rebuilt: {report.events:,} events in {report.seconds:.0f} s "
            f"({report.events_per_second:,.0f}/s)"
        )

        # Questions: half about a tenant's pinned prompt, half about any prompt.
        rng = random.Random(11)
        keys = list(history.pins)
        first = START + timedelta(days=1)
        span = (history.now - first).total_seconds()
        questions = []
        for i in range(args.questions):
            if i % 2 == 0:
                tenant, name, env = rng.choice(keys)
            else:
                tenant = rng.choice(history.tenants)
                name = rng.choice(history.names)
                env = rng.choice(ENVIRONMENTS)
            at = first + timedelta(seconds=rng.uniform(0, span))
            questions.append((WS, tenant, name, env, at))

        audit = ViewAudit(store, app)
        table = f"{schema}.promptrecord_view_pin_intervals"
        select = (
            f"SELECT * FROM {table} WHERE workspace = %s AND tenant = %s AND prompt = %s "
            "AND environment = %s AND valid_from <= %s ORDER BY valid_from DESC LIMIT 1"
        )
        with psycopg.connect(args.database_url, autocommit=True) as conn:
            autovacuum = conn.execute("SHOW autovacuum").fetchone()[0]  # type: ignore[index]
            print(f"  server autovacuum: {autovacuum}")
            # As rebuilt: the tables have statistics only if autovacuum analyzed them.
            measure("as rebuilt", conn, select, audit, questions, args.warmup)
            # What autovacuum does to freshly loaded tables soon after (when it is on).
            began = time.perf_counter()
            conn.execute(f"ANALYZE {schema}.promptrecord_view_audit_log")
            for name in ("pin_intervals", "deployment_intervals", "versions", "catalog"):
                conn.execute(f"ANALYZE {schema}.promptrecord_view_{name}")
            print(f"  ANALYZE of the views' tables: {time.perf_counter() - began:.1f} s")
            measure("after ANALYZE", conn, select, audit, questions, args.warmup)
            if args.explain:
                explain(conn, audit, questions[0])
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            for q in questions[:500]:
                with contextlib.suppress(DomainError):
                    audit.answer_at(*q)
            profiler.disable()
            stats = pstats.Stats(profiler, stream=sys.stderr)
            stats.sort_stats("cumulative").print_stats(25)
    finally:
        if app is not None:
            app.close()
        with psycopg.connect(args.database_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
    return 0


if __name__ == "__main__":
    sys.exit(main())
