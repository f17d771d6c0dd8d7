"""Execution ingestion through the HTTP API against a raw COPY of the same rows (PostgreSQL).

`POST /v1/executions` in batches of 1,000 to a running uvicorn server (bench/_server.py, the
app as `promptrecord serve` runs it, in its own process), against psycopg COPYing the same
rows in batches of 1,000 into a plain table with the same columns (no key, no index, no
rollup), one transaction per batch, in the same run. Rounds interleave the sides, so a change
in the machine's load moves all of them. Target: API / COPY >= 0.3, against psycopg's default
(text) COPY; the API itself COPYs in binary, so the ratio against a binary COPY of the same
rows, pre-built the same way, is printed too.

    .venv/bin/python bench/executions.py [--batches 20] [--rounds 5] [--clients 1]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import statistics
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from commands import ACTOR, Server, content

from promptrecord.domain.application import PromptRecord
from promptrecord.projections.executions import EXECUTION_COLUMNS, Execution, column_values
from promptrecord.projections.executions_postgres import configure
from promptrecord.projections.executions_postgres import row_of as binary_row
from promptrecord.projections.executions_postgres_sql import COLUMNS_DDL, COPY_TYPES
from promptrecord.settings import Settings

WS = "bench-executions"
BATCH = 1000


def items(batch: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    """One batch as an SDK sends it: ids, times, two versions, a few tenants and models."""
    now = datetime.now(UTC)
    latencies = rng.lognormal(6.5, 0.6, BATCH)
    return [
        {
            "id": str(uuid.uuid4()),
            "prompt": "support-bot",
            "version": 1 + i % 2,
            "environment": "production",
            "tenant": f"tenant-{i % 50}",
            "request_id": f"req-{batch}-{i}",
            "resolve_reason": "rollout",
            "model": "claude-sonnet-4-5",
            "provider": "anthropic",
            "latency_ms": float(latencies[i]),
            "tokens_in": 400 + i % 100,
            "tokens_out": 80 + i % 40,
            "cost_usd": None,
            "status": "ok" if i % 50 else "error",
            "started_at": (now - timedelta(seconds=i)).isoformat(),
            "input": {"question": f"where is order {i}?"},
            "output": "It left our warehouse this morning.",
        }
        for i in range(BATCH)
    ]


def copy_rows(batch: list[dict[str, Any]], binary: bool = False) -> list[tuple[Any, ...]]:
    """The same items as table rows, priced, ready for COPY (built before timing)."""
    received = datetime.now(UTC)
    rows = []
    for item in batch:
        fields = {**item, "started_at": datetime.fromisoformat(item["started_at"])}
        fields["cost_usd"] = (item["tokens_in"] * 3.0 + item["tokens_out"] * 15.0) / 1e6
        execution = Execution(workspace=WS, **fields)
        rows.append(
            binary_row(execution, received)
            if binary
            else column_values(execution, execution.started_at, received)
        )
    return rows


def raw_copy(
    conn: psycopg.Connection[Any],
    table: str,
    batches: list[list[tuple[Any, ...]]],
    binary: bool = False,
) -> float:
    statement = f"COPY {table} ({', '.join(EXECUTION_COLUMNS)}) FROM STDIN"
    started = time.perf_counter()
    for rows in batches:
        with (
            conn.transaction(),
            conn.cursor() as cursor,
            cursor.copy(statement + (" (FORMAT BINARY)" if binary else "")) as copy,
        ):
            if binary:
                copy.set_types(COPY_TYPES)
            for row in rows:
                copy.write_row(row)
    return len(batches) * BATCH / (time.perf_counter() - started)


def _post_all(base: str, token: str, bodies: list[bytes]) -> None:
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    for body in bodies:
        conn.request("POST", "/v1/executions", body=body, headers=headers)
        response = conn.getresponse()
        answer = response.read()
        if response.status != 200 or json.loads(answer)["accepted"] != BATCH:
            raise RuntimeError(f"the API answered {response.status}: {answer[:300]!r}")
    conn.close()


def api_ingest(base: str, token: str, bodies: list[bytes], clients: int) -> float:
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(
            pool.map(
                lambda part: _post_all(base, token, part),
                [bodies[c::clients] for c in range(clients)],
            )
        )
    return len(bodies) * BATCH / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default="postgresql://root@127.0.0.1:5432/test")
    parser.add_argument("--batches", type=int, default=20, help="batches of 1,000 per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=1, help="concurrent HTTP connections")
    args = parser.parse_args()
    schema = "bench_" + uuid.uuid4().hex[:10]
    with psycopg.connect(args.database_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    settings = Settings(database_url=args.database_url, database_schema=schema)
    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, PostgreSQL at {args.database_url}; "
        f"{args.rounds} rounds of {args.batches} batches of {BATCH}, {args.clients} client(s)"
    )
    server = None
    try:
        app = PromptRecord(env=settings.eventsourcing_env())
        _, token = app.create_workspace(WS)
        app.create_prompt(WS, ACTOR, name="support-bot", content=content(1))
        app.commit_version(WS, "support-bot", content(2), ACTOR)
        app.close()
        server = Server(settings)
        rng = np.random.default_rng(1)
        warm = [json.dumps({"items": items(-1, rng)}).encode()]
        api_ingest(server.base, token, warm, 1)  # opens the store, creates today's partition
        results = []
        with psycopg.connect(args.database_url, autocommit=True) as conn:
            configure(conn)  # the API's dumpers for the binary rows (text rows do not use them)
            table = f"{schema}.raw_executions"
            conn.execute(f"CREATE TABLE {table} ({COLUMNS_DDL})")
            for round_ in range(args.rounds):
                batches = [items(round_ * args.batches + b, rng) for b in range(args.batches)]
                rows = [copy_rows(batch) for batch in batches]
                binary_rows = [copy_rows(batch, binary=True) for batch in batches]
                bodies = [json.dumps({"items": batch}).encode() for batch in batches]
                raw = raw_copy(conn, table, rows)
                api = api_ingest(server.base, token, bodies, args.clients)
                binary = raw_copy(conn, table, binary_rows, binary=True)
                results.append((raw, binary, api))
                print(
                    f"round {round_ + 1}: raw COPY {raw:8.0f}/s   binary COPY {binary:8.0f}/s   "
                    f"API {api:8.0f}/s   ({api / raw:.3f}; {api / binary:.3f} of binary)"
                )
        ratio = statistics.median(api / raw for raw, _, api in results)
        binary_ratio = statistics.median(api / binary for _, binary, api in results)
        print(
            f"API / raw COPY, median ratio {ratio:.3f}  (target >= 0.3); "
            f"API / binary COPY {binary_ratio:.3f}"
        )
    finally:
        if server is not None:
            server.close()
        with psycopg.connect(args.database_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
    return 0


if __name__ == "__main__":
    sys.exit(main())
