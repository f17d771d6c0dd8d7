"""The eval actor: carry out one requested eval run, once, under a lease.

Import this module only through `promptrecord.workers.broker.configure_broker`: Dramatiq
binds the actor to the broker set when the module is imported.

The message carries ids only: the workspace, the run id, the id of the run's `Requested`
event and the key of the database (`promptrecord.workers.runtime`). Delivery is at least
once, so the actor is idempotent: a finished run is left alone, a lease keyed by the event
id keeps two workers from carrying one run at the same moment, and the executor never
records an example twice however its callers race.
"""

from __future__ import annotations

import logging

import dramatiq

from promptrecord.domain.base import event_id_at
from promptrecord.domain.errors import DomainError, NotFound
from promptrecord.domain.evals import EvalRun
from promptrecord.workers.broker import EVAL_QUEUE, RUN_EVAL
from promptrecord.workers.leases import lease_key
from promptrecord.workers.runtime import WorkerRuntime, runtime_for

log = logging.getLogger(__name__)

# A backstop only: a run stops cooperatively between batches when its lease is lost or its
# worker stops. Past this, Dramatiq interrupts it, and the reconciler lets another worker
# resume it from its recorded batches.
EVAL_TIME_LIMIT_MS = 6 * 60 * 60 * 1000


def requested_event_id(workspace: str, run_id: str) -> str:
    """The id of a run's `EvalRun.Requested` (its first event, version 1)."""
    return event_id_at(EvalRun.create_id(workspace, run_id), 1)


@dramatiq.actor(
    actor_name=RUN_EVAL,
    queue_name=EVAL_QUEUE,
    # Retries cover what a while may cure (the database or a model API away); the run's
    # recorded batches survive, so a retry resumes rather than restarts.
    max_retries=5,
    min_backoff=5_000,
    max_backoff=300_000,
    time_limit=EVAL_TIME_LIMIT_MS,
    # Refusals of the domain (the run does not exist, is finished, is invalid) are final.
    throws=(DomainError,),
)
def run_eval(workspace: str, run_id: str, event_id: str, database: str | None = None) -> None:
    runtime = runtime_for(database)
    if runtime is None:
        log.info(
            "eval run %s: no worker here serves database %s; dropped (its reconciler "
            "re-enqueues it)",
            run_id,
            database,
        )
        return
    carry_out(runtime, workspace, run_id, event_id)


def carry_out(runtime: WorkerRuntime, workspace: str, run_id: str, event_id: str) -> str:
    """Run the eval unless it is finished, another worker holds it, or this one stops.

    Returns what happened: the executor's outcome status, or `finished`, `leased`,
    `stopping`, `unknown_run`.
    """
    if runtime.stopping.is_set():
        return "stopping"
    if event_id != requested_event_id(workspace, run_id):
        # A message for a run of the same id in another database: not ours to run.
        log.warning("eval run %s: message names event %s, not this run's", run_id, event_id)
        return "unknown_run"
    try:
        run = runtime.app.eval_run(workspace, run_id, copy=False)
    except NotFound:
        log.warning("eval run %s of workspace %s does not exist here", run_id, workspace)
        return "unknown_run"
    if run.finished:
        return "finished"
    key = lease_key(event_id)
    lease = runtime.leases.acquire(key)
    if lease is None:
        return "leased"  # held elsewhere; if that holder dies, the reconciler re-enqueues
    from promptrecord.workers.executor import execute_run

    try:
        runtime.leases.clear_queued(key)
        with runtime.carrying():
            outcome = execute_run(
                runtime.app,
                workspace,
                run_id,
                runtime.config,
                worker=runtime.worker,
                keep_going=lambda: lease.alive() and not runtime.stopping.is_set(),
            )
    finally:
        lease.release()
    status = str(outcome.status)
    if status == "stopped" and runtime.stopping.is_set() and runtime.requeue_on_stop:
        runtime.queue.enqueue(workspace, run_id, event_id)
        log.info("eval run %s: worker stopping; handed back to the queue", run_id)
    return status


__all__ = ["EVAL_TIME_LIMIT_MS", "carry_out", "requested_event_id", "run_eval"]
