"""Webhook latency: from a command's commit to the signed POST arriving at a local receiver.

The production layout on one machine: PostgreSQL, Redis, `promptrecord projector` (which
follows the log and creates and enqueues deliveries) and `promptrecord worker` (which posts
them) as separate processes, and a receiver (tests/fakes/webhook_receiver.py, verifying every
request with `standardwebhooks` and plain HMAC) in this process. This process commits prompt
versions at a steady rate; latency is receipt time minus the time `commit_version` returned.

Two passes in the same run: with this project's settings (follower poll 0.1 s, idle worker
poll 0.1 s), and with the eval dispatcher's 1 s follower poll and Dramatiq's 1 s idle poll as
the baseline. Target: p95 <= 1 s; printed as the ratio p95 / 1 s.

    .venv/bin/python bench/webhooks.py [--events 200] [--rate 10] \
        [--database-url postgresql://root@127.0.0.1:5432/test] [--redis-url redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import ModuleType

import psycopg
import redis
from cryptography.fernet import Fernet
from psycopg import sql
from pydantic import SecretStr

from promptrecord.domain.application import PromptRecord
from promptrecord.domain.base import Actor
from promptrecord.sealing import Sealer, new_webhook_secret
from promptrecord.settings import Settings

FAKE = Path(__file__).resolve().parent.parent / "tests" / "fakes" / "webhook_receiver.py"
WS = "bench"
ACTOR = Actor("key-bench", "bench")
TARGET = 1.0


def receiver_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_webhook_receiver", FAKE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


def content(n: int) -> dict[str, object]:
    return {
        "type": "chat",
        "messages": [{"role": "system", "content": f"Answer briefly ({n})."}],
        "model": {"provider": "openai", "name": "gpt-4o-mini"},
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def one_pass(
    args: argparse.Namespace, label: str, follower_poll: float, idle_poll: float
) -> list[float]:
    schema = f"bench_wh_{uuid.uuid4().hex[:10]}"
    namespace = f"benchwh{uuid.uuid4().hex[:8]}"
    key = Fernet.generate_key().decode()
    with psycopg.connect(args.database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    env = {
        **os.environ,
        "PROMPTRECORD_DATABASE_URL": args.database_url,
        "PROMPTRECORD_DATABASE_SCHEMA": schema,
        "PROMPTRECORD_REDIS_URL": args.redis_url,
        "PROMPTRECORD_REDIS_NAMESPACE": namespace,
        "PROMPTRECORD_SECRET_KEY": key,
        "PROMPTRECORD_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
        "PROMPTRECORD_WEBHOOK_POLL_INTERVAL": str(follower_poll),
        "PROMPTRECORD_WORKER_IDLE_POLL": str(idle_poll),
    }
    settings = Settings(
        database_url=args.database_url, database_schema=schema, secret_key=SecretStr(key)
    )
    app = PromptRecord(env=settings.eventsourcing_env())
    receiver = receiver_module().WebhookReceiver(secret=new_webhook_secret()).start()
    processes: list[subprocess.Popen[bytes]] = []
    logs = tempfile.TemporaryDirectory()
    try:
        app.create_workspace(WS, "Bench")
        app.create_prompt(WS, ACTOR, name="support")
        sealed = Sealer.from_settings(settings).seal(receiver.secret)
        app.register_webhook(WS, receiver.url, ["Prompt.VersionCommitted"], None, sealed, ACTOR)
        for name in ("projector", "worker"):
            log = Path(logs.name) / f"{name}.log"
            with log.open("wb") as out:
                processes.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "promptrecord.api.cli", name],
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )
        # Warm up: the first delivery pays for imports and connections in both processes.
        app.commit_version(WS, "support", content(0), ACTOR)
        receiver.wait_for(1, timeout=60)
        committed: dict[int, float] = {}
        gap = 1.0 / args.rate
        start = time.perf_counter()
        for n in range(1, args.events + 1):
            result = app.commit_version(WS, "support", content(n), ACTOR)
            committed[n + 1] = time.time()  # version number n + 1 (the warm-up was 1)
            assert result.position is not None
            time.sleep(max(0.0, start + n * gap - time.perf_counter()))
        received = receiver.wait_for(args.events + 1, timeout=120)
        assert all(r.standard_ok and r.hmac_ok for r in received), "a delivery did not verify"
        arrivals: dict[int, float] = {}
        for request in received:
            number = json.loads(request.body)["data"]["number"]
            arrivals.setdefault(number, request.at)
        latencies = [arrivals[n] - t for n, t in committed.items()]
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        receiver.stop()
        app.close()
        with psycopg.connect(args.database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
        client = redis.Redis.from_url(args.redis_url)
        keys = list(client.scan_iter(match=f"{namespace}*"))
        if keys:
            client.delete(*keys)
        client.close()
        logs.cleanup()
    p50, p95, p99 = (percentile(latencies, q) for q in (0.5, 0.95, 0.99))
    print(
        f"{label:<44} n={len(latencies)}  p50 {p50 * 1000:7.1f} ms  p95 {p95 * 1000:7.1f} ms  "
        f"p99 {p99 * 1000:7.1f} ms  max {max(latencies) * 1000:7.1f} ms  "
        f"mean {statistics.mean(latencies) * 1000:7.1f} ms"
    )
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--rate", type=float, default=10.0, help="commands per second")
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "PROMPTRECORD_TEST_DATABASE_URL", "postgresql://root@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("PROMPTRECORD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the 1 s-poll pass")
    args = parser.parse_args()
    ours = one_pass(args, "this project (follower 0.1 s, worker idle 0.1 s)", 0.1, 0.1)
    if not args.no_baseline:
        base = one_pass(args, "baseline (follower 1 s, worker idle 1 s)", 1.0, 1.0)
        ratio = percentile(base, 0.95) / percentile(ours, 0.95)
        print(f"p95 baseline / p95 ours: {ratio:.2f}x")
    p95 = percentile(ours, 0.95)
    verdict = "met" if p95 <= TARGET else "MISSED"
    print(f"p95 / target (1 s): {p95 / TARGET:.3f}  ({verdict})")


if __name__ == "__main__":
    main()
