"""The eval actor (idempotent, one holder at a time) and the run leases it takes."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from functools import partial

import dramatiq
import pytest
import redis
from support.eval_runs import WS, request, seed, wait_until

from promptrecord.domain.application import PromptRecord
from promptrecord.settings import Settings
from promptrecord.workers.broker import EVAL_QUEUE, configure_broker
from promptrecord.workers.leases import Leases, LocalLeases, RedisLeases, lease_key
from promptrecord.workers.runtime import (
    EvalQueue,
    InProcessWorker,
    WorkerRuntime,
    database_key,
    register,
    unregister,
)


@pytest.fixture
def runtime(backend: Settings) -> Iterator[WorkerRuntime]:
    broker = configure_broker(Settings())
    broker.flush(EVAL_QUEUE)
    app = PromptRecord(env=backend.eventsourcing_env())
    queue = EvalQueue(broker, LocalLeases(f"test-{uuid.uuid4().hex}"), database_key(backend), 600)
    found = WorkerRuntime(database=queue.database, app=app, settings=backend, queue=queue)
    register(found)
    try:
        yield found
    finally:
        unregister(found)
        broker.flush(EVAL_QUEUE)
        app.close()


def event_id(run_id: str) -> str:
    from promptrecord.workers.actors import requested_event_id

    return requested_event_id(WS, run_id)


def test_a_run_is_carried_out_once(runtime: WorkerRuntime) -> None:
    from promptrecord.workers.actors import carry_out

    seed(runtime.app, 6)
    run_id = request(runtime.app, provider="offline", batch_size=4)
    assert carry_out(runtime, WS, run_id, event_id(run_id)) == "completed"
    # Delivered again (at least once): nothing more happens.
    assert carry_out(runtime, WS, run_id, event_id(run_id)) == "finished"
    run = runtime.app.eval_run(WS, run_id)
    assert (run.status, run.attempts, len(run.results)) == ("completed", 1, 6)
    assert not runtime.leases.held(lease_key(event_id(run_id)))


def test_a_run_leased_elsewhere_is_left_to_its_holder(runtime: WorkerRuntime) -> None:
    from promptrecord.workers.actors import carry_out

    seed(runtime.app, 2)
    run_id = request(runtime.app, provider="offline")
    lease = runtime.leases.acquire(lease_key(event_id(run_id)))
    assert lease is not None
    try:
        assert carry_out(runtime, WS, run_id, event_id(run_id)) == "leased"
    finally:
        lease.release()
    run = runtime.app.eval_run(WS, run_id)
    assert (run.status, run.attempts) == ("requested", 0)


def test_a_message_naming_another_event_or_run_is_dropped(runtime: WorkerRuntime) -> None:
    from promptrecord.workers.actors import carry_out

    seed(runtime.app, 2)
    run_id = request(runtime.app, provider="offline")
    assert carry_out(runtime, WS, run_id, str(uuid.uuid4())) == "unknown_run"
    missing = uuid.uuid4().hex
    assert carry_out(runtime, WS, missing, event_id(missing)) == "unknown_run"
    assert runtime.app.eval_run(WS, run_id).attempts == 0


def test_a_stopping_worker_takes_no_new_run(runtime: WorkerRuntime) -> None:
    from promptrecord.workers.actors import carry_out

    seed(runtime.app, 2)
    run_id = request(runtime.app, provider="offline")
    assert runtime.drain(timeout=1)
    assert carry_out(runtime, WS, run_id, event_id(run_id)) == "stopping"
    assert runtime.app.eval_run(WS, run_id).attempts == 0


def test_the_actor_through_the_broker_and_a_worker(runtime: WorkerRuntime) -> None:
    seed(runtime.app, 3)
    run_id = request(runtime.app, provider="offline")
    stray = uuid.uuid4().hex
    runtime.queue.enqueue(WS, stray, event_id(stray))  # no such run: dropped, no retry
    runtime.queue.enqueue(WS, run_id, event_id(run_id))
    broker: dramatiq.Broker = runtime.queue.broker
    InProcessWorker.acquire(broker, threads=2)
    try:
        broker.join(EVAL_QUEUE, timeout=30_000, fail_fast=True)  # type: ignore[call-arg]
        wait_until(lambda: runtime.app.eval_run(WS, run_id).finished, 30, "the run")
    finally:
        InProcessWorker.release()
    assert runtime.app.eval_run(WS, run_id).status == "completed"
    assert not InProcessWorker.running()


# --------------------------------------------------------------------------- leases


@pytest.fixture
def redis_leases(redis_url: str) -> Iterator[RedisLeases]:
    leases = RedisLeases(redis_url, f"t{uuid.uuid4().hex[:12]}", seconds=0.6)
    try:
        yield leases
    finally:
        keys = list(leases.client.scan_iter(match=f"{leases.namespace}*"))
        if keys:
            leases.client.delete(*keys)
        leases.close()


def test_a_redis_lease_has_one_holder_and_is_renewed(redis_leases: RedisLeases) -> None:
    first = redis_leases.acquire("eval:a")
    assert first is not None
    assert redis_leases.acquire("eval:a") is None
    time.sleep(3 * redis_leases.seconds)  # past its length: only the heartbeat keeps it
    assert first.alive() and redis_leases.held("eval:a")
    assert redis_leases.acquire("eval:a") is None
    first.release()
    assert not redis_leases.held("eval:a")
    second = redis_leases.acquire("eval:a")
    assert second is not None
    second.release()


def test_a_redis_lease_taken_over_is_lost_to_its_holder(
    redis_leases: RedisLeases, redis_url: str
) -> None:
    lease = redis_leases.acquire("eval:b")
    assert lease is not None
    other = redis.Redis.from_url(redis_url)
    try:
        # As if it expired while the holder was stalled and another worker took it.
        other.set(f"{redis_leases.namespace}:lease:eval:b", "someone-else")
        wait_until(lambda: not lease.alive(), 10, "the holder to notice")
        lease.release()  # must not delete the new holder's key
        assert other.get(f"{redis_leases.namespace}:lease:eval:b") == b"someone-else"
    finally:
        other.close()


def test_a_redis_lease_of_a_dead_holder_expires(redis_leases: RedisLeases) -> None:
    redis_leases.client.set(
        f"{redis_leases.namespace}:lease:eval:c", "dead", px=int(redis_leases.seconds * 1000)
    )
    assert redis_leases.acquire("eval:c") is None
    wait_until(lambda: not redis_leases.held("eval:c"), 10, "the lease to expire")
    taken = redis_leases.acquire("eval:c")
    assert taken is not None
    taken.release()


def test_queued_marks_expire_and_clear(redis_leases: RedisLeases) -> None:
    local = LocalLeases(f"test-{uuid.uuid4().hex}")
    for leases in (redis_leases, local):
        leases.mark_queued("eval:d", 0.3)
        assert leases.queued("eval:d")
        wait_until(partial(expired, leases), 10, "the mark to expire")
        leases.mark_queued("eval:d", 60)
        leases.clear_queued("eval:d")
        assert not leases.queued("eval:d")


def expired(leases: Leases) -> bool:
    return not leases.queued("eval:d")
