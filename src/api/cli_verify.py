"""`promptrecord verify`: prove the stored event log intact, or name each event that was changed."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from promptrecord.settings import Settings

if TYPE_CHECKING:
    from promptrecord.projections.verify_views import ViewsReport

EXIT_INTACT, EXIT_PROBLEMS, EXIT_ERROR = 0, 1, 2
PROGRESS_EVERY = 10_000
CONNECT_TIMEOUT = 5


def register(commands: Any) -> None:
    """Add `verify` to the `promptrecord` sub-commands (an argparse `_SubParsersAction`)."""
    verify = commands.add_parser(
        "verify",
        help="check that the stored event log is intact",
        description=(
            "Read every stored event straight from the database and check each aggregate's "
            "hash chain, its versions and the log's positions. Names every edited, deleted, "
            "reordered or unreadable event. Then compare the audit's answers from the views "
            "with replay of the log for every deployment and a sample of tenants, naming "
            "each difference (view_mismatch). Exit codes: 0 intact, 1 problems found, 2 the "
            "check could not run."
        ),
    )
    verify.add_argument("--database-url", help="overrides PROMPTRECORD_DATABASE_URL")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.add_argument(
        "--batch-size", type=int, default=2000, help="events read per query (default 2000)"
    )
    verify.add_argument(
        "--sample",
        type=int,
        default=200,
        help="tenants besides the pinned ones whose audit answers from the views are "
        "compared with replay, per workspace (default 200)",
    )
    verify.add_argument(
        "--require-views",
        action="store_true",
        help="exit 2 when the views are absent or behind the log instead of skipping them",
    )
    verify.set_defaults(handler=cmd_verify)


def cmd_verify(args: argparse.Namespace) -> int:
    from promptrecord.domain.application import PromptRecord
    from promptrecord.projections.verify import verify_log
    from promptrecord.projections.verify_views import compare_views
    from promptrecord.projections.views import open_view_store

    try:
        settings = Settings(**({"database_url": args.database_url} if args.database_url else {}))
        database = _describe(settings)
        env = settings.eventsourcing_env()
    except ValueError as error:
        return _fail(f"{error}")
    if args.sample < 0:
        return _fail(f"--sample must be 0 or more, not {args.sample}")
    if args.batch_size < 1:
        return _fail(f"--batch-size must be at least 1, not {args.batch_size}")
    if not settings.is_postgres and not Path(env["SQLITE_DBNAME"]).is_file():
        return _fail(
            f"no database at {env['SQLITE_DBNAME']}; point PROMPTRECORD_DATABASE_URL "
            "(or --database-url) at the one to verify"
        )
    # Never create tables: verifying an empty new database would prove nothing.
    env["CREATE_TABLE"] = "n"
    # A person is waiting: say the database is away in seconds, not the pool's default 30.
    env["POSTGRES_CONNECT_TIMEOUT"] = str(CONNECT_TIMEOUT)
    progress = _Progress(sys.stderr) if sys.stderr.isatty() else None
    try:
        app = PromptRecord(env=env)
        try:
            report = verify_log(app, batch_size=args.batch_size, progress=progress)
            views = compare_views(app, open_view_store(app), args.sample)
        finally:
            app.close()
    except Exception as error:
        return _fail(
            f"cannot read the event log in {database}: {_reason(error)}; check that the "
            "database is reachable and PROMPTRECORD_DATABASE_URL names the right one"
        )
    finally:
        if progress is not None:
            progress.done()
    if args.json:
        body = {"database": database, **report.as_dict(), "views": views.as_dict()}
        print(json.dumps(body, indent=2))
    else:
        state = "intact" if report.intact else f"{len(report.problems)} problem(s) found"
        print(
            f"verified {report.events_checked:,} events of {report.aggregates_checked:,} "
            f"aggregates in {database} (up to position {report.last_position}): {state}"
        )
        width = max((len(problem.kind) for problem in report.problems), default=0)
        for problem in report.problems:
            print(f"  {problem.kind:<{width}}  {problem.message}")
        _print_views(views)
    if views.skipped is not None and args.require_views:
        return _fail(f"views not compared: {views.skipped}")
    return EXIT_INTACT if report.intact and not views.problems else EXIT_PROBLEMS


def _print_views(views: ViewsReport) -> None:
    if views.skipped is not None:
        # On stderr: a notice about what was not checked, apart from the log's report.
        print(f"views not compared with replay: {views.skipped}", file=sys.stderr)
        return
    state = f"{len(views.problems)} difference(s)" if views.problems else "no differences"
    print(
        f"compared {views.answers:,} audit answers from the views with replay "
        f"({views.deployments:,} deployments, {views.tenants:,} tenants, views at position "
        f"{views.views_position:,}): {state}"
    )
    for problem in views.problems:
        print(f"  {problem.kind}  {problem.message}")


class _Progress:
    """`verified 120,000 events…` on a terminal, rewritten in place every 10,000 events."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.shown = 0

    def __call__(self, events_checked: int) -> None:
        if events_checked // PROGRESS_EVERY > self.shown // PROGRESS_EVERY:
            self.shown = events_checked
            self.stream.write(f"\rverified {events_checked:,} events…")
            self.stream.flush()

    def done(self) -> None:
        if self.shown:
            self.stream.write("\r\033[K")
            self.stream.flush()


def _describe(settings: Settings) -> str:
    if settings.is_postgres:
        where = "PostgreSQL " + settings.database_url.split("@")[-1]
        return where + (f" (schema {settings.database_schema})" if settings.database_schema else "")
    return "SQLite " + settings.eventsourcing_env()["SQLITE_DBNAME"]


def _reason(error: BaseException) -> str:
    # The library wraps driver errors; the driver's own first line says what happened.
    cause = error.__cause__ or error
    text = str(cause).strip().splitlines()
    return text[0] if text else type(cause).__name__


def _fail(message: str) -> int:
    print(f"promptrecord verify: {message}", file=sys.stderr)
    return EXIT_ERROR
