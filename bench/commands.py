"""Commands and resolve, measured against baselines in the same run.

1. commit and promote commands per second through the PromptRecord application on
   PostgreSQL, against a raw psycopg single-row INSERT + COMMIT loop into a scratch table
   (target >= 0.15x);
2. resolve over HTTP (a real uvicorn process) against a constant-JSON route mounted in the
   same app: throughput and p50/p99 latency (target >= 0.5x throughput).

Usage: .venv/bin/python bench/commands.py [--database-url postgresql://root@127.0.0.1/test]
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg

from promptrecord.domain.application import PromptRecord
from promptrecord.domain.base import Actor
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


def http_resolve(settings: Settings, total: int, concurrency: int) -> tuple[dict[str, float], ...]:
    app = PromptRecord(env=settings.eventsourcing_env())
    _, token = app.create_workspace("bench-http")
    app.create_prompt("bench-http", ACTOR, name="support-bot", content=content(1))
    app.commit_version("bench-http", "support-bot", content(2), ACTOR)
    app.promote("bench-http", "support-bot", "production", 1, ACTOR)
    app.start_rollout("bench-http", "support-bot", "production", 2, 0.2, ACTOR)
    app.close()
    port = free_port()
    env = {**os.environ, **_settings_env(settings)}
    server = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("_server.py")), str(port)], env=env
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the bench server did not start")
            time.sleep(0.1)
        headers = {"Authorization": f"Bearer {token}"}
        resolve_url = f"{base}/v1/prompts/support-bot/resolve?environment=production&tenant=acme"
        constant = load(f"{base}/bench/constant", headers, total, concurrency)
        resolved = load(resolve_url, headers, total, concurrency)
        constant_again = load(f"{base}/bench/constant", headers, total, concurrency)
    finally:
        server.terminate()
        server.wait(10)
    # the two constant runs bracket the resolve run, so drift in the machine shows up
    best_constant = max(constant, constant_again, key=lambda r: r["rps"])
    return best_constant, resolved, constant, constant_again


def _settings_env(settings: Settings) -> dict[str, str]:
    env = {"PROMPTRECORD_DATABASE_URL": settings.database_url}
    if settings.database_schema:
        env["PROMPTRECORD_DATABASE_SCHEMA"] = settings.database_schema
    return env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default="postgresql://root@127.0.0.1:5432/test")
    parser.add_argument("-n", type=int, default=300, help="commands of each kind per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=4000, help="HTTP requests per run")
    parser.add_argument("--concurrency", type=int, default=2, help="client processes")
    args = parser.parse_args()
    schema = "bench_" + uuid.uuid4().hex[:10]
    with psycopg.connect(args.database_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        settings = Settings(database_url=args.database_url, database_schema=schema)
        print(
            f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}, PostgreSQL at {args.database_url}"
        )
        # Rounds interleave the baseline with the commands, so a change in the disk's
        # fsync speed during the run moves both sides of each ratio.
        run = CommandRun(settings)
        rows = []
        with psycopg.connect(args.database_url, autocommit=False) as conn:
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
        best, resolved, c1, c2 = http_resolve(settings, args.requests, args.concurrency)
        print(
            f"constant route (HTTP)  {best['rps']:9.0f} /s   p50 {best['p50_ms']:.2f} ms"
            f"  p99 {best['p99_ms']:.2f} ms   (runs: {c1['rps']:.0f}, {c2['rps']:.0f})"
        )
        print(
            f"resolve (HTTP)         {resolved['rps']:9.0f} /s   p50 {resolved['p50_ms']:.2f} ms"
            f"  p99 {resolved['p99_ms']:.2f} ms"
        )
        print(f"resolve / constant     {resolved['rps'] / best['rps']:.3f}  (target >= 0.5)")
    finally:
        with psycopg.connect(args.database_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
    return 0


if __name__ == "__main__":
    sys.exit(main())
