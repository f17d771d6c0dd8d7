"""Commands and resolve, measured against baselines in the same run.

1. commit and promote commands per second through the PromptRecord application on
   PostgreSQL, against a raw psycopg single-row INSERT + COMMIT loop into a scratch table
   (target >= 0.15x);
2. resolve in-process from a LiveState over a realistic state (many prompts, versions,
   pins, active rollouts): median time per call, against a plain dict lookup on the same
   state (target <= 5 us per call);
3. resolve over HTTP (a real uvicorn process) against a constant-JSON route mounted in the
   same app, runs interleaved C R C R C, best run of each: throughput and p50/p99
   latency (target >= 0.8x throughput);
4. projection lag: this process promotes through the application, and a separate API
   process (uvicorn, as `serve` runs it) is polled with resolve until the new position is
   visible; p50/p95 with LISTEN/NOTIFY against the same server with polling only
   (target p95 <= 200 ms).

Usage: .venv/bin/python bench/commands.py [--database-url postgresql://root@127.0.0.1/test]
       [--only commands,inprocess,http,lag]
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg

from promptrecord.api.routes.resolve import _encode_answer, _resolved_at
from promptrecord.domain.application import PromptRecord
from promptrecord.domain.base import Actor
from promptrecord.domain.resolution import resolve
from promptrecord.projections.live import LiveState
from promptrecord.settings import Settings

ACTOR = Actor("bench", "bench")


def content(i: int) -> dict[str, Any]:
    return {
        "type": "chat",
        "messages": [
            {"role": "system", "content": f"You help {{{{ company }}}}. Revision {i}."},
            {"role": "user", "content": "{{ question }}"},
        ],
        "model": {"provider": "anthropic", "name": "claude-sonnet-4-5-20250929"},
    }


def raw_inserts(conn: psycopg.Connection[Any], schema: str, n: int) -> float:
    started = time.perf_counter()
    for i in range(n):
        conn.execute(f"INSERT INTO {schema}.scratch (body) VALUES (%s)", (f'{{"i": {i}}}',))
        conn.commit()
    return n / (time.perf_counter() - started)


class CommandRun:
    """Commits and promotes on PROMPTS prompts, continuing where the last round stopped."""

    def __init__(self, settings: Settings, prompts: int = 20) -> None:
        self.app = PromptRecord(env=settings.eventsourcing_env())
        self.app.create_workspace("bench")
        self.names = [f"p{i}" for i in range(prompts)]
        for name in self.names:
            self.app.create_prompt("bench", ACTOR, name=name, content=content(0))
        self.commits = 0
        self.promotes = 0

    def commit(self, n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            self.commits += 1
            name = self.names[self.commits % len(self.names)]
            self.app.commit_version("bench", name, content(self.commits), ACTOR, message="bench")
        return n / (time.perf_counter() - started)

    def promote(self, n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            # alternate versions 1 and 2 so every promote changes what serves
            self.promotes += 1
            name = self.names[self.promotes % len(self.names)]
            version = 1 + (self.promotes // len(self.names)) % 2
            self.app.promote("bench", name, "production", version, ACTOR)
        return n / (time.perf_counter() - started)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- resolve in-process ----------------------------------------------------------------------


def build_state(settings: Settings, prompts: int, pins: int) -> list[tuple[str, str | None]]:
    """Workspace `bench-live`: `prompts` prompts of 3 versions, v1 promoted in production,
    every fourth with a rollout of v2 to 20% by tenant, `pins` tenant pins. Returns the
    (prompt, tenant) requests to resolve: a mix of promoted, rollout and pinned answers."""
    app = PromptRecord(env=settings.eventsourcing_env())
    app.create_workspace("bench-live")
    names = [f"prompt-{i:04d}" for i in range(prompts)]
    for i, name in enumerate(names):
        app.create_prompt("bench-live", ACTOR, name=name, content=content(i))
        app.commit_version("bench-live", name, content(i + 1), ACTOR)
        app.commit_version("bench-live", name, content(i + 2), ACTOR)
        app.promote("bench-live", name, "production", 1, ACTOR)
        if i % 4 == 0:
            app.start_rollout("bench-live", name, "production", 2, 0.2, ACTOR)
    for j in range(pins):
        app.pin("bench-live", f"tenant-{j % 50}", names[j % prompts], "production", 3, ACTOR)
    app.close()
    return [(names[(k * 7) % prompts], f"tenant-{k % 60}") for k in range(1000)]


def per_call_us(calls: list[Any], reps: int = 10) -> dict[str, float]:
    """Each call timed on its own, `reps` passes over `calls`: the median and p90 per call,
    in microseconds (the timer's own ~0.1 us included, as in the baseline), and the mean
    of the fastest pass. A call descheduled by another process on this shared machine is
    an outlier the median ignores, where a pass's mean would carry it."""
    clock = time.perf_counter_ns
    times: list[int] = []
    passes = []
    for _ in range(reps):
        started = clock()
        for call in calls:
            t0 = clock()
            call()
            times.append(clock() - t0)
        passes.append((clock() - started) / len(calls))
    times.sort()
    return {
        "median": statistics.median(times) / 1000,
        "p90": times[int(len(times) * 0.9)] / 1000,
        "best_pass_mean": min(passes) / 1000,
    }


def inprocess_resolve(settings: Settings, prompts: int, pins: int) -> dict[str, dict[str, float]]:
    requests = build_state(settings, prompts, pins)
    live = LiveState(PromptRecord(env=settings.eventsourcing_env()), listen=False)
    live.catch_up()
    state = live.state
    reasons: dict[str, int] = {}
    for name, tenant in requests:
        found = resolve(state, "bench-live", name, "production", tenant, None, datetime.now(UTC))
        reasons[found.reason] = reasons.get(found.reason, 0) + 1
    print(
        f"state: {len(state.prompts)} prompts, {len(state.pins)} pins, "
        f"{sum(1 for d in state.deployments.values() if d.rollout)} active rollouts, "
        f"position {state.position}; requests: "
        + ", ".join(f"{n} {reason}" for reason, n in sorted(reasons.items()))
    )

    def lookup(name: str) -> Any:
        return lambda: state.prompts.get(("bench-live", name))

    def resolved(name: str, tenant: str | None) -> Any:
        return lambda: live.read(
            lambda s: resolve(s, "bench-live", name, "production", tenant, None, datetime.now(UTC))
        )

    def answered(name: str, tenant: str | None) -> Any:
        # what the route does between reading its query and the HTTP response
        def call() -> bytes:
            resolution, position = live.read(
                lambda s: _resolved_at(s, "bench-live", name, "production", tenant, None)
            )
            return _encode_answer(resolution, position, name, "production", tenant, None)

        return call

    baseline = per_call_us([lookup(name) for name, _ in requests])
    resolve_us = per_call_us([resolved(name, tenant) for name, tenant in requests])
    route_us = per_call_us([answered(name, tenant) for name, tenant in requests])
    live.app.close()
    return {"dict lookup": baseline, "resolve via live.read": resolve_us, "route body": route_us}


# --- a separate API process ----------------------------------------------------------------


class Server:
    """bench/_server.py (the app as `serve` runs it, plus /bench/constant) in its own process."""

    def __init__(self, settings: Settings, listen: bool = True) -> None:
        self.port = free_port()
        env = {**os.environ, **_settings_env(settings)}
        if not listen:
            env["BENCH_LIVE_LISTEN"] = "0"
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("_server.py")), str(self.port)], env=env
        )
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.close()
                raise RuntimeError("the bench server did not start")
            time.sleep(0.1)

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def _client(url: str, headers: dict[str, str], count: int) -> list[float]:
    """One keep-alive connection sending `count` requests back to back; their latencies."""
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    latencies = []
    for _ in range(count):
        t0 = time.perf_counter()
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        response.read()
        latencies.append(time.perf_counter() - t0)
        if response.status != 200:
            raise RuntimeError(f"{url} answered {response.status}")
    conn.close()
    return latencies


def load(url: str, headers: dict[str, str], total: int, clients: int) -> dict[str, float]:
    """`clients` processes with a keep-alive connection each; cheap enough per request that
    the server, not the load generator, sets the pace."""
    _client(url, headers, 50)  # warm up
    per_client = total // clients
    with multiprocessing.Pool(clients) as pool:
        started = time.perf_counter()
        runs = pool.starmap(_client, [(url, headers, per_client)] * clients)
        elapsed = time.perf_counter() - started
    latencies = sorted(t for run in runs for t in run)
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
    }


def http_workspace(settings: Settings) -> str:
    """Workspace `bench-http` with support-bot v1 promoted and v2 rolling out, and lag-bot
    (2 versions, not deployed); its token."""
    app = PromptRecord(env=settings.eventsourcing_env())
    _, token = app.create_workspace("bench-http")
    app.create_prompt("bench-http", ACTOR, name="support-bot", content=content(1))
    app.commit_version("bench-http", "support-bot", content(2), ACTOR)
    app.promote("bench-http", "support-bot", "production", 1, ACTOR)
    app.start_rollout("bench-http", "support-bot", "production", 2, 0.2, ACTOR)
    app.create_prompt("bench-http", ACTOR, name="lag-bot", content=content(1))  # for lag
    app.commit_version("bench-http", "lag-bot", content(2), ACTOR)
    app.close()
    return token


def http_resolve(
    settings: Settings, token: str, total: int, concurrency: int
) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
    """Constant and resolve runs interleaved, C R C R C, so a change in the machine's load
    (other processes share its 2 cores) moves both sides; their results, in order."""
    server = Server(settings)
    constant_url = f"{server.base}/bench/constant"
    resolve_url = f"{server.base}/v1/prompts/support-bot/resolve?environment=production&tenant=acme"
    headers = {"Authorization": f"Bearer {token}"}
    constant: list[dict[str, float]] = []
    resolved: list[dict[str, float]] = []
    try:
        for _ in range(2):
            constant.append(load(constant_url, headers, total, concurrency))
            resolved.append(load(resolve_url, headers, total, concurrency))
        constant.append(load(constant_url, headers, total, concurrency))
    finally:
        server.close()
    return constant, resolved


# --- projection lag --------------------------------------------------------------------------


def lag(settings: Settings, token: str, commits: int, listen: bool) -> dict[str, float]:
    """Promote `commits` times here; after each, poll the other process with resolve until
    its answer reflects the promote's log position. Milliseconds from the command's return
    (its COMMIT is done) to the first answer that shows it."""
    app = PromptRecord(env=settings.eventsourcing_env())
    server = Server(settings, listen=listen)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    headers = {"Authorization": f"Bearer {token}"}
    path = "/v1/prompts/lag-bot/resolve?environment=production&tenant=acme"
    lags = []
    polls = 0
    try:
        for i in range(commits):
            version = 1 + i % 2
            result = app.promote("bench-http", "lag-bot", "production", version, ACTOR)
            committed = time.perf_counter()
            deadline = committed + 10
            while True:
                conn.request("GET", path, headers=headers)
                response = conn.getresponse()
                answer = json.loads(response.read())
                polls += 1
                if response.status == 200 and answer["position"] >= result.position:
                    assert answer["version"] == version, answer
                    lags.append(time.perf_counter() - committed)
                    break
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"position {result.position} not visible after 10 s")
                time.sleep(0.0005)
            # a random pause, so commits do not fall into step with the server's polls
            time.sleep(random.uniform(0.005, 0.1))
    finally:
        conn.close()
        server.close()
        app.close()
    lags.sort()
    return {
        "p50_ms": statistics.median(lags) * 1000,
        "p95_ms": lags[int(len(lags) * 0.95) - 1] * 1000,
        "max_ms": lags[-1] * 1000,
        "polls": polls / len(lags),
    }


def _settings_env(settings: Settings) -> dict[str, str]:
    env = {"PROMPTRECORD_DATABASE_URL": settings.database_url}
    if settings.database_schema:
        env["PROMPTRECORD_DATABASE_SCHEMA"] = settings.database_schema
    return env


# --- main ------------------------------------------------------------------------------------

SECTIONS = ("commands", "inprocess", "http", "lag")


def run_commands(settings: Settings, database_url: str, schema: str, args: Any) -> None:
    # Rounds interleave the baseline with the commands, so a change in the disk's
    # fsync speed during the run moves both sides of each ratio.
    run = CommandRun(settings)
    rows = []
    with psycopg.connect(database_url, autocommit=False) as conn:
        conn.execute(f"CREATE TABLE {schema}.scratch (id bigserial primary key, body jsonb)")
        conn.commit()
        for _ in range(args.rounds):
            raw = raw_inserts(conn, schema, args.n)
            rows.append((raw, run.commit(args.n), run.promote(args.n)))
    run.app.close()
    for i, (raw, commit_rate, promote_rate) in enumerate(rows, 1):
        print(
            f"round {i}: raw {raw:6.0f}/s  commit {commit_rate:5.0f}/s "
            f"({commit_rate / raw:.3f})  promote {promote_rate:5.0f}/s "
            f"({promote_rate / raw:.3f})"
        )
    commit_ratio = statistics.median(c / r for r, c, _ in rows)
    promote_ratio = statistics.median(p / r for r, _, p in rows)
    print(f"commit / raw INSERT+COMMIT   median ratio {commit_ratio:.3f}  (target >= 0.15)")
    print(f"promote / raw INSERT+COMMIT  median ratio {promote_ratio:.3f}  (target >= 0.15)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default="postgresql://root@127.0.0.1:5432/test")
    parser.add_argument("-n", type=int, default=300, help="commands of each kind per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=4000, help="HTTP requests per run")
    parser.add_argument("--concurrency", type=int, default=2, help="client processes")
    parser.add_argument("--prompts", type=int, default=300, help="prompts in the live state")
    parser.add_argument("--pins", type=int, default=300, help="tenant pins in the live state")
    parser.add_argument("--lag-commits", type=int, default=200, help="promotes per lag run")
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help=f"comma-separated: {', '.join(SECTIONS)}"
    )
    args = parser.parse_args()
    sections = {part.strip() for part in args.only.split(",") if part.strip()}
    if not sections <= set(SECTIONS):
        parser.error(f"--only takes {', '.join(SECTIONS)}")
    schema = "bench_" + uuid.uuid4().hex[:10]
    with psycopg.connect(args.database_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        settings = Settings(database_url=args.database_url, database_schema=schema)
        print(
            f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}, PostgreSQL at {args.database_url}"
        )
        if "commands" in sections:
            run_commands(settings, args.database_url, schema, args)
        if "inprocess" in sections:
            timed = inprocess_resolve(settings, args.prompts, args.pins)
            baseline = timed["dict lookup"]["median"]
            for label, t in timed.items():
                print(
                    f"{label:22s} median {t['median']:6.2f} us  p90 {t['p90']:6.2f} us  "
                    f"(best pass mean {t['best_pass_mean']:6.2f} us)  "
                    f"{t['median'] / baseline:5.1f}x the dict lookup"
                )
            print(
                "route body = live.read(resolve) + encoding the answer, as the route does; "
                "target: resolve median <= 5 us"
            )
        token = http_workspace(settings) if sections & {"http", "lag"} else ""
        if "http" in sections:
            constant, resolved = http_resolve(settings, token, args.requests, args.concurrency)
            best_constant = max(constant, key=lambda r: r["rps"])
            best_resolve = max(resolved, key=lambda r: r["rps"])
            for label, best, runs in (
                ("constant route (HTTP)", best_constant, constant),
                ("resolve (HTTP)", best_resolve, resolved),
            ):
                print(
                    f"{label:22s} {best['rps']:9.0f} /s   p50 {best['p50_ms']:.2f} ms  "
                    f"p99 {best['p99_ms']:.2f} ms   (runs: "
                    + ", ".join(f"{r['rps']:.0f}" for r in runs)
                    + ")"
                )
            ratio = best_resolve["rps"] / best_constant["rps"]
            print(f"resolve / constant, best run of each  {ratio:.3f}  (target >= 0.8)")
        if "lag" in sections:
            for listen in (True, False):
                found = lag(settings, token, args.lag_commits, listen)
                label = "LISTEN/NOTIFY + polling" if listen else "polling only (baseline)"
                print(
                    f"lag, {label:24s} p50 {found['p50_ms']:6.1f} ms  "
                    f"p95 {found['p95_ms']:6.1f} ms  max {found['max_ms']:6.1f} ms  "
                    f"({found['polls']:.1f} resolves per commit; target p95 <= 200 ms)"
                )
    finally:
        with psycopg.connect(args.database_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
    return 0


if __name__ == "__main__":
    sys.exit(main())
