"""The dispatcher and the reconciler on SQLite and PostgreSQL, and eval runs carried out by
`Services` with no Redis, end to end."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import dramatiq
import pytest
from support.eval_runs import TESTER, WS, request, results_recorded, seed, wait_until

from promptrecord.api.services import Services
from promptrecord.domain.application import PromptRecord
from promptrecord.settings import Settings
from promptrecord.workers.broker import EVAL_QUEUE, RUN_EVAL, configure_broker
from promptrecord.workers.dispatch_table import DispatchTable, open_dispatch_table
from promptrecord.workers.dispatcher import Dispatcher, Reconciler
from promptrecord.workers.leases import LocalLeases, lease_key
from promptrecord.workers.runtime import EvalQueue, InProcessWorker, database_key


def requested_event_id(workspace: str, run_id: str) -> str:
    from promptrecord.workers.actors import requested_event_id as event_id

    return event_id(workspace, run_id)


@dataclass
class Bench:
    """A backend's application, the dispatcher's table, and a queue on the in-process broker
    that no worker consumes, so the test reads what was enqueued."""

    settings: Settings
    app: PromptRecord
    table: DispatchTable
    queue: EvalQueue
    broker: dramatiq.Broker

    def dispatcher(self) -> Dispatcher:
        """A dispatcher as a freshly started process has it: position read from its table."""
        return Dispatcher(self.app, self.table, self.queue, poll_interval=1.0)

    def drain(self, dispatcher: Dispatcher) -> None:
        while dispatcher.step():
            pass

    def messages(self) -> list[dramatiq.Message[None]]:
        queue = self.broker.queues[EVAL_QUEUE]  # type: ignore[attr-defined]
        found = []
        while not queue.empty():
            found.append(dramatiq.Message.decode(queue.get_nowait()))
        return found


@pytest.fixture
def bench(backend: Settings) -> Iterator[Bench]:
    assert not InProcessWorker.running(), "an in-process worker would consume the messages"
    broker = configure_broker(Settings())  # the in-process broker, as Services uses it
    broker.flush(EVAL_QUEUE)
    app = PromptRecord(env=backend.eventsourcing_env())
    table = open_dispatch_table(backend)
    leases = LocalLeases(f"test-{uuid.uuid4().hex}")
    queue = EvalQueue(broker, leases, database_key(backend), requeue_after=600)
    try:
        yield Bench(backend, app, table, queue, broker)
    finally:
        broker.flush(EVAL_QUEUE)
        table.close()
        app.close()


def test_a_requested_run_is_enqueued_once_with_ids_only(bench: Bench) -> None:
    seed(bench.app, 3)
    run_id = request(bench.app, provider="offline")
    dispatcher = bench.dispatcher()
    bench.drain(dispatcher)
    messages = bench.messages()
    assert [(m.queue_name, m.actor_name) for m in messages] == [(EVAL_QUEUE, RUN_EVAL)]
    event_id = requested_event_id(WS, run_id)
    assert messages[0].args == (WS, run_id, event_id, database_key(bench.settings))
    last = bench.app.recorder.max_notification_id()
    assert bench.table.position() == dispatcher.position == last
    assert [(r.run_id, r.event_id) for r in bench.table.open_runs()] == [(run_id, event_id)]
    # A second pass over a log that did not move enqueues nothing.
    assert dispatcher.step() is False
    assert bench.messages() == []


def test_events_of_other_aggregates_are_skipped_and_passed(bench: Bench) -> None:
    seed(bench.app, 2)
    bench.app.append_examples(WS, "faq", [{"id": "q9", "inputs": {}}], TESTER)
    bench.drain(bench.dispatcher())
    assert bench.messages() == []
    assert bench.table.open_runs() == []
    assert bench.table.position() == bench.app.recorder.max_notification_id()


def test_the_position_survives_a_restart(bench: Bench) -> None:
    seed(bench.app, 2)
    first = request(bench.app, provider="offline")
    bench.drain(bench.dispatcher())
    assert [m.args[1] for m in bench.messages()] == [first]
    # A new process: nothing it had passed is enqueued again, what is new is.
    restarted = bench.dispatcher()
    assert restarted.position == bench.table.position()
    bench.drain(restarted)
    assert bench.messages() == []
    second = request(bench.app, provider="offline")
    bench.drain(bench.dispatcher())
    assert [m.args[1] for m in bench.messages()] == [second]
    assert {r.run_id for r in bench.table.open_runs()} == {first, second}


def test_finished_runs_leave_the_open_runs(bench: Bench) -> None:
    seed(bench.app, 2)
    failed = request(bench.app, provider="offline")
    kept = request(bench.app, provider="offline")
    bench.drain(bench.dispatcher())
    bench.app.fail_eval(WS, failed, "cancelled", "the test cancelled it")
    bench.drain(bench.dispatcher())
    assert [r.run_id for r in bench.table.open_runs()] == [kept]


def test_the_reconciler_re_enqueues_only_runs_nobody_holds_or_awaits(bench: Bench) -> None:
    seed(bench.app, 2)
    held, waiting, dropped = (request(bench.app, provider="offline") for _ in range(3))
    bench.drain(bench.dispatcher())
    assert len(bench.messages()) == 3  # all three marked queued, then the messages are lost
    leases = bench.queue.leases
    lease = leases.acquire(lease_key(requested_event_id(WS, held)))
    assert lease is not None
    leases.clear_queued(lease_key(requested_event_id(WS, dropped)))  # its mark expired
    reconciler = Reconciler(bench.table, bench.queue, interval=1.0)
    reconciler.step()
    assert [m.args[1] for m in bench.messages()] == [dropped]
    # Re-enqueued, it is marked queued again: the next pass leaves it alone.
    reconciler.step()
    assert bench.messages() == []
    lease.release()
    leases.clear_queued(lease_key(requested_event_id(WS, held)))
    reconciler.step()
    assert [m.args[1] for m in bench.messages()] == [held]
    assert waiting  # still marked queued throughout


# --------------------------------------------------------------------------- end to end


def test_services_without_redis_carry_out_a_requested_run(sqlite_settings: Settings) -> None:
    services = Services.open(sqlite_settings)
    try:
        assert services.workers is not None
        ids = seed(services.app, 12)
        run_id = request(services.app, provider="offline", batch_size=5)
        wait_until(lambda: services.app.eval_run(WS, run_id).status == "completed", 30, "the run")
        batches = results_recorded(services.app, WS, run_id)
        recorded = [r["example_id"] for batch in batches for r in batch.results]
        assert sorted(recorded) == sorted(ids) and len(recorded) == len(set(recorded))
        assert [len(batch.results) for batch in batches] == [5, 5, 2]
        assert batches[-1].recorded == 12
    finally:
        services.close()
    assert not InProcessWorker.running()


def test_a_run_requested_while_no_service_ran_is_carried_out_at_the_next_start(
    backend: Settings,
) -> None:
    app = PromptRecord(env=backend.eventsourcing_env())
    try:
        seed(app, 4)
        run_id = request(app, provider="offline")
    finally:
        app.close()
    services = Services.open(backend)
    try:
        wait_until(lambda: services.app.eval_run(WS, run_id).status == "completed", 30, "the run")
        assert services.app.eval_run(WS, run_id).attempts == 1
    finally:
        services.close()


def test_services_with_redis_leave_dispatching_to_the_projector(
    sqlite_settings: Settings,
) -> None:
    settings = sqlite_settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    assert not settings.runs_embedded_workers and not settings.runs_embedded_dispatcher
    services = Services.open(settings)
    try:
        assert services.workers is None
    finally:
        services.close()
