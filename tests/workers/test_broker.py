"""Broker configuration (in fresh interpreters: Dramatiq's broker is global to a process) and
the `promptrecord worker` command's refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from promptrecord.api.cli import main

PROBE = """
import json, sys
import dramatiq
from promptrecord.settings import Settings
from promptrecord.workers import broker as setup
before = "promptrecord.workers.actors" in sys.modules
configured = setup.configure_broker(Settings())
from promptrecord.workers.actors import run_eval
again = setup.configure_broker(Settings())
try:
    setup.configure_broker(Settings(redis_url="redis://elsewhere:6379/0"))
    mismatch = None
except setup.BrokerMismatch as error:
    mismatch = str(error)
print(json.dumps({
    "kind": type(configured).__name__,
    "global": dramatiq.get_broker() is configured,
    "actor_bound": run_eval.broker is configured,
    "imported_before": before,
    "same_again": again is configured,
    "middleware": [type(m).__name__ for m in configured.middleware],
    "queues": sorted(configured.get_declared_queues()),
    "namespace": getattr(configured, "namespace", None),
    "mismatch": mismatch,
}))
"""


def probe(**env: str) -> dict[str, object]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTRECORD_")}
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_redis_url_set_means_a_redis_broker_set_before_the_actors(redis_url: str) -> None:
    found = probe(PROMPTRECORD_REDIS_URL=redis_url, PROMPTRECORD_REDIS_NAMESPACE="pr-test")
    assert found["kind"] == "RedisBroker"
    assert found["namespace"] == "pr-test"
    assert found["global"] and found["actor_bound"] and found["same_again"]
    assert found["imported_before"] is False
    assert found["middleware"] == ["TimeLimit", "Retries"]
    assert found["queues"] == ["evals", "webhooks"]


def test_no_redis_url_means_the_in_process_broker() -> None:
    found = probe()
    assert found["kind"] == "StubBroker"
    assert found["global"] and found["actor_bound"] and found["same_again"]
    assert found["imported_before"] is False
    # The actors are bound: a process cannot switch brokers, and says so.
    assert "cannot switch to Redis redis://elsewhere:6379/0" in str(found["mismatch"])


def test_worker_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["worker", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "Redis queue" in out and "--threads" in out and "SIGTERM" in out


def test_worker_without_redis_refuses_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["worker"]) == 2
    err = capsys.readouterr().err
    assert "PROMPTRECORD_REDIS_URL is not set" in err
    assert "`promptrecord serve` runs the workers in its own process" in err


def test_worker_with_redis_down_refuses_with_exit_2(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    """Run in a fresh interpreter: the command configures the process's broker."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTRECORD_")}
    done = subprocess.run(
        [sys.executable, "-m", "promptrecord.api.cli", "worker"],
        env={
            **clean,
            "PROMPTRECORD_REDIS_URL": "redis://127.0.0.1:1/0",
            "PROMPTRECORD_DATABASE_URL": f"sqlite:///{tmp_path}/w.db",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "Redis at PROMPTRECORD_REDIS_URL is unreachable" in done.stderr


def test_worker_rejects_zero_threads(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PROMPTRECORD_REDIS_URL", "redis://127.0.0.1:1/0")
    assert main(["worker", "--threads", "0"]) == 2
    assert "--threads must be at least 1" in capsys.readouterr().err
