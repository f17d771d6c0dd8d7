"""`promptrecord worker` against PostgreSQL and Redis: a worker killed mid-run with SIGKILL,
another worker finishes the run, and every example is counted exactly once."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from support.eval_runs import WS, request, results_recorded, seed, wait_until
from support.processes import Processes, cli_env

from promptrecord.domain.application import PromptRecord
from promptrecord.settings import Settings

if TYPE_CHECKING:
    from tests.fakes.model_servers import FakeModelServer

EXAMPLES = 60
BATCH = 5
LEASE_SECONDS = 3


def test_a_run_survives_its_worker_being_killed(
    postgres_settings: Settings,
    redis_url: str,
    namespace: str,
    openai_server: FakeModelServer,
    tmp_path: Path,
) -> None:
    openai_server.latency = 0.1  # 120 calls, 2 at a time: several seconds of batches
    env = cli_env(
        postgres_settings,
        redis_url,
        namespace,
        PROMPTRECORD_EVAL_LEASE_SECONDS=str(LEASE_SECONDS),
        PROMPTRECORD_RECONCILE_INTERVAL="0.5",
        PROMPTRECORD_DISPATCH_POLL_INTERVAL="0.2",
        OPENAI_BASE_URL=openai_server.base_url + "/v1",
        OPENAI_API_KEY="sk-test",
    )
    app = PromptRecord(env=postgres_settings.eventsourcing_env())
    processes = Processes(env, tmp_path)
    try:
        ids = seed(app, EXAMPLES, provider="openai")
        run_id = request(app, batch_size=BATCH, concurrency=2)
        processes.start("projector", "projector", "--poll-interval", "0.2")
        first = processes.start("worker", "worker", "--threads", "2")

        def recorded() -> int:
            return len(app.eval_run(WS, run_id).results)

        try:
            wait_until(lambda: recorded() >= BATCH, 60, "the first recorded batch")
        except AssertionError:
            pytest.fail(f"no batch recorded\n{processes.output()}")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        run = app.eval_run(WS, run_id)
        assert run.status == "running" and len(run.results) < EXAMPLES, (
            "the run ended before the kill; make the model slower"
        )

        processes.start("worker", "worker", "--threads", "2")
        try:
            wait_until(lambda: app.eval_run(WS, run_id).status == "completed", 60, "run completion")
        except AssertionError:
            pytest.fail(f"the run did not complete\n{processes.output()}")

        run = app.eval_run(WS, run_id)
        assert run.attempts >= 2
        batches = results_recorded(app, WS, run_id)
        counted = [result["example_id"] for batch in batches for result in batch.results]
        assert len(counted) == len(set(counted)) == EXAMPLES
        assert set(counted) == set(ids)
        assert batches[-1].recorded == EXAMPLES
        assert [batch.recorded for batch in batches] == sorted(b.recorded for b in batches)
    finally:
        processes.stop_all()
        app.close()
    # SIGTERM stops the surviving worker and the projector cleanly.
    assert processes.exit_codes(but=first) == [("projector", 0), ("worker", 0)], processes.output()
