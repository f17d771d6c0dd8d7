"""The `projector` and `rebuild` commands: keep the views current, or refold them from the log."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

from eventsourcing.persistence import PersistenceError

from promptrecord.projections.views import VIEW_NAMES
from promptrecord.settings import Settings

if TYPE_CHECKING:
    from promptrecord.domain.application import PromptRecord
    from promptrecord.workers.dispatcher import Dispatching
    from promptrecord.workers.webhook_dispatch import WebhookDispatching

EXIT_OK, EXIT_ERROR = 0, 2
BAR_WIDTH = 30


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `projector` and `rebuild` to the `promptrecord` command line."""
    projector = commands.add_parser(
        "projector",
        help="keep the views current: follow the event log until stopped",
        description=(
            "Apply every new event to the views (catalog, versions, deployments, pins, "
            "deployment and pin intervals, audit log) exactly once, until SIGTERM or Ctrl-C. "
            "On PostgreSQL it wakes on LISTEN/NOTIFY and polls; on SQLite it polls. "
            "With PROMPTRECORD_REDIS_URL set it also dispatches: enqueues each requested "
            "eval run and each webhook delivery for `promptrecord worker`, and re-enqueues "
            "what a dead worker left. "
            "Run one per database."
        ),
    )
    projector.add_argument("--database-url", help="overrides PROMPTRECORD_DATABASE_URL")
    projector.add_argument(
        "--poll-interval", type=float, default=1.0, help="seconds between polls (default 1)"
    )
    projector.add_argument(
        "--batch-size", type=int, default=500, help="events per transaction (default 500)"
    )
    projector.add_argument(
        "--no-dispatch",
        action="store_true",
        help="keep the views only; do not enqueue eval runs (another process dispatches)",
    )
    projector.set_defaults(handler=cmd_projector)

    rebuild = commands.add_parser(
        "rebuild",
        help="drop views and refold them from the event log",
        description=(
            "Drop and recreate one view (or all) and refold it from the event log, in one "
            "transaction: a failed rebuild leaves the old views. A running projector waits "
            "meanwhile; on SQLite, commands wait too, so rebuild when the service is quiet."
        ),
    )
    rebuild.add_argument(
        "view",
        nargs="?",
        choices=VIEW_NAMES,
        metavar="VIEW",
        help="one of: " + ", ".join(VIEW_NAMES),
    )
    rebuild.add_argument("--database-url", help="overrides PROMPTRECORD_DATABASE_URL")
    rebuild.add_argument("--json", action="store_true", help="print the result as JSON")
    rebuild.set_defaults(handler=cmd_rebuild)


def _settings(args: argparse.Namespace) -> Settings:
    if getattr(args, "database_url", None):
        return Settings(database_url=args.database_url)
    return Settings()


def _where(settings: Settings) -> str:
    if settings.is_postgres:
        schema = f" (schema {settings.database_schema})" if settings.database_schema else ""
        return "PostgreSQL " + settings.database_url.split("@")[-1] + schema
    return "SQLite " + settings.eventsourcing_env().get("SQLITE_DBNAME", "?")


def _fail(message: str) -> int:
    print(f"promptrecord: {message}", file=sys.stderr)
    return EXIT_ERROR


def cmd_projector(args: argparse.Namespace) -> int:
    from promptrecord.domain.application import PromptRecord
    from promptrecord.projections.runner import ProjectorError, run_projector
    from promptrecord.projections.views import ViewError, ViewsOutdated, open_view_store

    if args.poll_interval <= 0 or args.batch_size <= 0:
        return _fail("--poll-interval and --batch-size must be positive")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s promptrecord projector: %(message)s"
    )
    try:
        settings = _settings(args)
        app = PromptRecord(env=settings.eventsourcing_env())
    except (ValueError, PersistenceError) as error:
        return _fail(f"cannot open the event store: {error}; check PROMPTRECORD_DATABASE_URL")
    dispatching = None
    try:
        store = open_view_store(app)
        logging.getLogger(__name__).info("views in %s", _where(settings))
        if not args.no_dispatch:
            dispatching = _start_dispatching(settings, app)
        run_projector(app, store, poll_interval=args.poll_interval, batch_size=args.batch_size)
    except (ViewError, ViewsOutdated, ProjectorError) as error:
        return _fail(str(error))
    except PersistenceError as error:
        return _fail(
            f"the database at {_where(settings)} failed: {error}; check that it is reachable, "
            "then restart the projector"
        )
    finally:
        if dispatching is not None:
            dispatching.stop()
        app.close()
    return EXIT_OK


def _start_dispatching(settings: Settings, app: PromptRecord) -> Dispatching | None:
    """Enqueue eval runs for `promptrecord worker` (and re-enqueue dropped ones) alongside
    the projector; with no Redis there is no worker to enqueue for here."""
    from promptrecord.workers.broker import configure_broker
    from promptrecord.workers.dispatcher import Dispatching
    from promptrecord.workers.runtime import EvalQueue, database_key, open_leases

    logger = logging.getLogger(__name__)
    if not settings.redis_url:
        logger.info(
            "no PROMPTRECORD_REDIS_URL: eval runs are dispatched and run by "
            "`promptrecord serve` in its own process"
        )
        return None
    broker = configure_broker(settings)
    leases = open_leases(settings)
    queue = EvalQueue(broker, leases, database_key(settings), settings.eval_requeue_after)
    try:
        dispatching = Dispatching.start(app, queue, settings)
    except BaseException:
        leases.close()
        raise
    try:
        webhooks = _start_webhooks(settings, app, broker, leases, queue.database)
    except BaseException:
        dispatching.stop()
        leases.close()
        raise
    dispatching.on_stop.insert(0, webhooks.stop)
    if settings.monitoring_enabled:
        from promptrecord.workers.online_judge import start_monitoring

        monitoring = start_monitoring(app, settings)
        dispatching.on_stop.insert(0, monitoring.stop)
    dispatching.on_stop.append(leases.close)
    logger.info(
        "dispatching eval runs to Redis (namespace %s); re-enqueueing every %ss",
        settings.redis_namespace,
        settings.reconcile_interval,
    )
    return dispatching


def _start_webhooks(
    settings: Settings, app: PromptRecord, broker: Any, leases: Any, database: str
) -> WebhookDispatching:
    """Create webhook deliveries from the log and enqueue them for `promptrecord worker`."""
    from promptrecord.workers.webhook_dispatch import WebhookDispatching
    from promptrecord.workers.webhook_runtime import WebhookQueue

    queue = WebhookQueue(broker, leases, database, settings.webhook_requeue_after)
    return WebhookDispatching.start(app, queue, settings)


class ProgressBar:
    """`[#####     ]  52% 5,200 events 12,345/s` on one line of stderr, redrawn with `\\r`."""

    def __init__(self, label: str, last_position: int, stream: TextIO | None = None) -> None:
        self.label = label
        self.last_position = max(last_position, 1)
        self.stream = stream or sys.stderr
        self.started = time.perf_counter()
        self._drawn = 0.0

    def __call__(self, events: int, position: int) -> None:
        now = time.perf_counter()
        if now - self._drawn < 0.1 and position < self.last_position:
            return
        self._drawn = now
        # Positions, not counts: notification ids may skip numbers, the last one does not move.
        done = min(position / self.last_position, 1.0)
        rate = events / max(now - self.started, 1e-9)
        bar = "#" * int(BAR_WIDTH * done)
        self.stream.write(
            f"\r{self.label} [{bar:<{BAR_WIDTH}}] {done:4.0%} {events:,} events {rate:,.0f}/s"
        )
        self.stream.flush()

    def finish(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()


def cmd_rebuild(args: argparse.Namespace) -> int:
    from promptrecord.domain.application import PromptRecord
    from promptrecord.projections.view_rows import ViewWriteError
    from promptrecord.projections.views import ViewError, open_view_store

    names = [args.view] if args.view else None
    label = f"rebuilding {args.view or 'all views'}"
    try:
        settings = _settings(args)
        app = PromptRecord(env=settings.eventsourcing_env())
    except (ValueError, PersistenceError) as error:
        return _fail(f"cannot open the event store: {error}; check PROMPTRECORD_DATABASE_URL")
    try:
        store = open_view_store(app)
        bar = ProgressBar(label, app.recorder.max_notification_id() or 0)
        try:
            report = store.rebuild(app.read_events, names, progress=bar)
        finally:
            bar.finish()
        still = [name for name in store.outdated if name not in report.views]
        # Outside the rebuild's transaction: a server whose autovacuum is off (or behind)
        # would otherwise plan the first audits on default estimates.
        analysed = time.perf_counter()
        store.analyse(report.views)
        analyse_seconds = time.perf_counter() - analysed
    except (ViewError, ViewWriteError) as error:
        return _fail(f"rebuilding stopped: {error} The old views were kept.")
    except PersistenceError as error:
        return _fail(
            f"rebuilding in {_where(settings)} failed: {error}; the old views were kept. "
            "Check the database and run the rebuild again."
        )
    finally:
        app.close()
    if args.json:
        result = {
            "views": list(report.views),
            "events": report.events,
            "position": report.position,
            "seconds": round(report.seconds, 3),
            "events_per_second": round(report.events_per_second, 1),
            "analyse_seconds": round(analyse_seconds, 3),
            "outdated": still,
        }
        print(json.dumps(result))
    else:
        print(
            f"rebuilt {', '.join(report.views)} from {report.events:,} events in "
            f"{report.seconds:.2f} s ({report.events_per_second:,.0f} events/s); "
            f"views at position {report.position}; statistics gathered in "
            f"{analyse_seconds:.2f} s"
        )
        if still:
            print(f"still to rebuild before the projector runs: {', '.join(still)}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run `projector` or `rebuild` alone (`python -m promptrecord.api.cli_projector ...`)."""
    parser = argparse.ArgumentParser(prog="promptrecord")
    register(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = parser.parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
