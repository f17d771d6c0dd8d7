"""The `worker` command: carry out eval runs and post webhooks from the Redis queues until
stopped."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

from eventsourcing.persistence import PersistenceError

from promptrecord.settings import Settings

if TYPE_CHECKING:
    from promptrecord.domain.application import PromptRecord
    from promptrecord.workers.webhook_runtime import WebhookRuntime

EXIT_OK, EXIT_ERROR = 0, 2
STOP_TIMEOUT = 60.0  # seconds SIGTERM waits for running evals to reach a batch boundary

log = logging.getLogger("promptrecord.worker")

NEEDS_REDIS = (
    "`promptrecord worker` takes eval runs from Redis, and PROMPTRECORD_REDIS_URL is not set. "
    "Set it (e.g. PROMPTRECORD_REDIS_URL=redis://localhost:6379/0) for this command and for "
    "`promptrecord projector`, which enqueues the runs; without Redis, `promptrecord serve` "
    "runs the workers in its own process and this command is not needed."
)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `worker` to the `promptrecord` command line."""
    worker = commands.add_parser(
        "worker",
        help="carry out eval runs from the Redis queue until stopped",
        description=(
            "Take eval runs from the Redis queue (PROMPTRECORD_REDIS_URL) and carry them "
            "out: call the models, grade, record results in batches, judge the gate. Run as "
            "many as you like; a lease keeps each run on one worker at a time, and a run "
            "whose worker dies resumes on another from its last recorded batch. SIGTERM or "
            "Ctrl-C stops after the current batch of each run and hands the runs back to "
            "the queue. It also posts webhook deliveries (queue `webhooks`). "
            "`promptrecord projector` enqueues both."
        ),
    )
    worker.add_argument("--database-url", help="overrides PROMPTRECORD_DATABASE_URL")
    worker.add_argument(
        "--threads",
        type=int,
        help="eval runs carried at once (default PROMPTRECORD_WORKER_THREADS, 4)",
    )
    worker.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    worker.set_defaults(handler=cmd_worker)


def _fail(message: str) -> int:
    print(f"promptrecord: {message}", file=sys.stderr)
    return EXIT_ERROR


def cmd_worker(args: argparse.Namespace) -> int:
    try:
        settings = Settings(database_url=args.database_url) if args.database_url else Settings()
    except ValueError as error:
        return _fail(f"invalid settings: {error}")
    if not settings.redis_url:
        return _fail(NEEDS_REDIS)
    threads = args.threads if args.threads is not None else settings.worker_threads
    if threads < 1:
        return _fail("--threads must be at least 1")
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s promptrecord worker: %(message)s"
    )
    # One line per model request is the SDKs' business, not the worker's log.
    for noisy in ("httpx", "httpcore", "openai", "anthropic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    from promptrecord.domain.application import PromptRecord

    try:
        app = PromptRecord(
            env=settings.eventsourcing_env(), snapshot_interval=settings.snapshot_interval
        )
    except (ValueError, PersistenceError) as error:
        return _fail(f"cannot open the event store: {error}; check PROMPTRECORD_DATABASE_URL")
    try:
        return _serve(settings, app, threads)
    finally:
        app.close()


def _serve(settings: Settings, app: PromptRecord, threads: int) -> int:
    import dramatiq
    import redis

    from promptrecord.workers.broker import configure_broker
    from promptrecord.workers.runtime import (
        EvalQueue,
        WorkerRuntime,
        database_key,
        open_leases,
        register,
        unregister,
    )
    from promptrecord.workers.webhook_runtime import unregister as unregister_webhooks

    broker = configure_broker(settings)
    leases = open_leases(settings)
    try:
        broker.client.ping()  # type: ignore[attr-defined]
    except redis.RedisError as error:
        leases.close()
        return _fail(
            f"Redis at PROMPTRECORD_REDIS_URL is unreachable ({error}); start it or fix the URL"
        )
    queue = EvalQueue(broker, leases, database_key(settings), settings.eval_requeue_after)
    runtime = WorkerRuntime(
        database=queue.database, app=app, settings=settings, queue=queue, requeue_on_stop=True
    )
    register(runtime, sole=True)
    webhooks = _webhook_runtime(settings, app, broker, leases, queue.database)
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("received %s; stopping after the current batch", signal.Signals(signum).name)
        stop.set()

    saved = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    # An idle consumer sleeps up to `worker_timeout` between looks at Redis (Dramatiq's 1 s
    # default would be most of a webhook's latency budget).
    worker = dramatiq.Worker(
        broker, worker_threads=threads, worker_timeout=int(settings.worker_idle_poll * 1000)
    )
    try:
        worker.start()
        log.info(
            "%s carrying up to %d eval run(s) at once from %s (namespace %s)",
            runtime.worker,
            threads,
            settings.redis_url.split("@")[-1] if settings.redis_url else "?",
            settings.redis_namespace,
        )
        stop.wait()
        if not runtime.drain(STOP_TIMEOUT):
            log.warning("runs still running after %ss; stopping anyway", STOP_TIMEOUT)
        worker.stop(timeout=int(STOP_TIMEOUT * 1000))
    finally:
        for sig, previous in saved.items():
            signal.signal(sig, previous)
        unregister(runtime)
        unregister_webhooks(webhooks)
        webhooks.store.close()
        leases.close()
    log.info("stopped")
    return EXIT_OK


def _webhook_runtime(
    settings: Settings, app: PromptRecord, broker: Any, leases: Any, database: str
) -> WebhookRuntime:
    """Serve the `webhooks` queue too: this worker posts webhook deliveries."""
    from promptrecord.workers.webhook_runtime import WebhookQueue, WebhookRuntime, register
    from promptrecord.workers.webhook_store import open_webhook_store

    queue = WebhookQueue(broker, leases, database, settings.webhook_requeue_after)
    runtime = WebhookRuntime(
        database=database,
        app=app,
        settings=settings,
        store=open_webhook_store(settings),
        queue=queue,
    )
    register(runtime, sole=True)
    return runtime


def main(argv: Sequence[str] | None = None) -> int:
    """Run `worker` alone (`python -m promptrecord.api.cli_worker worker ...`)."""
    parser = argparse.ArgumentParser(prog="promptrecord")
    register(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = parser.parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
