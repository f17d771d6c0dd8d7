"""The `promptrecord` command line: serve the API, bootstrap workspaces, run the demo."""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from promptrecord import __version__
from promptrecord.domain.errors import Conflict, DomainError
from promptrecord.settings import Settings

if TYPE_CHECKING:
    pass

EXIT_OK, EXIT_REFUSED, EXIT_ERROR = 0, 1, 2
EPILOG = """\
a CI job:
  promptrecord push prompts                      # commit what changed, append eval examples
  promptrecord gate support-bot --against production --allow-first
  promptrecord promote support-bot production

Commands that talk to a server take it from --url / --key / --profile, else
PROMPTRECORD_URL / PROMPTRECORD_API_KEY / PROMPTRECORD_PROFILE, else the [default] (or
--profile) table of $XDG_CONFIG_HOME/promptrecord/config.toml (~/.config/…), else
http://127.0.0.1:8000 and the admin key `promptrecord serve` wrote. Server settings come
from PROMPTRECORD_* variables, e.g. PROMPTRECORD_DATABASE_URL=postgresql://user@host/db
(default sqlite:///./promptrecord.db). Every command takes --json where it prints results.

exit codes (the same for every command):
  0  ok (a gate passed; already in the wanted state counts as ok)
  1  refused by a rule: a gate blocked, a policy or role said no (403), a conflict such as
     a stale revision or an approval still needed (409), verify found problems
  2  error: bad input (bad options or files, or the server's 400/404/422 naming the
     field), a wrong or missing API key (401), server unreachable, a 5xx, a failed run
  Every refusal and error prints the server's detail, field and code (the whole RFC 9457
  problem with --json).
"""


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {}
    if getattr(args, "database_url", None):
        overrides["database_url"] = args.database_url
    return Settings(**overrides)


def _describe_database(settings: Settings) -> str:
    if settings.is_postgres:
        return "PostgreSQL " + settings.database_url.split("@")[-1]
    return "SQLite " + settings.eventsourcing_env()["SQLITE_DBNAME"]


def write_admin_key(path: Path, token: str) -> None:
    """Write a key readable by its owner only (a key left from an older database is replaced)."""
    scratch = path.with_name(path.name + ".new")
    scratch.unlink(missing_ok=True)
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    scratch.replace(path)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from promptrecord.api.app import create_app
    from promptrecord.api.services import Services

    settings = _settings(args)
    host = args.host or settings.host
    port = args.port or settings.port
    services = Services.open(settings)
    slug = settings.default_workspace
    if not services.live.state.workspaces:
        try:
            created, token = services.app.create_workspace(slug, "Default workspace")
        except Conflict:
            pass  # another replica bootstrapped the same empty database a moment ago
        else:
            services.read_own_write(created.position)
            write_admin_key(settings.admin_key_file, token)
            print(
                f"created workspace {slug!r}; its admin key is in {settings.admin_key_file} "
                "(shown nowhere else — keep it safe)"
            )
    if args.json:
        started = {"version": __version__, "url": f"http://{host}:{port}"}
        started["database"] = _describe_database(settings)
        print(json.dumps(started), flush=True)
    else:
        print(f"promptrecord {__version__} listening on http://{host}:{port}")
        print(f"database: {_describe_database(settings)}; docs at http://{host}:{port}/docs")
    if services.projector is None:
        print(
            "read views: kept by `promptrecord projector` (run it too); "
            f"now at log position {services.view_store.position()}"
        )
    try:
        app = create_app(services=services)
        # What start-up loaded lives as long as the process: keep it out of the collector's
        # full passes, which otherwise pause a busy server for ~0.1 s every few dozen batches.
        gc.freeze()
        uvicorn.run(app, host=host, port=port, log_level=args.log_level)
    finally:
        services.close()
    return EXIT_OK


def cmd_workspace_create(args: argparse.Namespace) -> int:
    from promptrecord.domain.application import PromptRecord

    settings = _settings(args)
    app = PromptRecord(env=settings.eventsourcing_env())
    environments = args.environments.split(",") if args.environments else None
    try:
        result, token = app.create_workspace(args.slug, args.name or args.slug, environments)
    finally:
        app.close()
    if args.json:
        print(json.dumps({"workspace": args.slug, "admin_key": token, "position": result.position}))
    else:
        print(f"created workspace {args.slug!r} in {_describe_database(settings)}")
        print(f"admin key (shown once, store it now): {token}")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from promptrecord.api.demo import run_demo

    return run_demo(as_json=args.json)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="promptrecord",
        description=(
            "promptrecord: the system of record for LLM prompts. Every commit, promotion, "
            "rollout, rollback and tenant pin is an immutable event."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"promptrecord {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = commands.add_parser(
        "serve",
        help="run the HTTP API (embedded SQLite by default)",
        description=(
            "Run the HTTP API. On first start with an empty database it creates the "
            "workspace 'default' and writes its admin key to ./promptrecord-admin.key "
            "(PROMPTRECORD_ADMIN_KEY_FILE)."
        ),
    )
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8000)")
    serve.add_argument("--database-url", help="overrides PROMPTRECORD_DATABASE_URL")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    serve.add_argument("--json", action="store_true", help="print the start-up line as JSON")
    serve.set_defaults(handler=cmd_serve)

    workspace = commands.add_parser("workspace", help="create workspaces")
    workspace_commands = workspace.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = workspace_commands.add_parser(
        "create",
        help="create a workspace and print its first admin key",
        description="Create a workspace and print its first admin key (shown once).",
    )
    create.add_argument("slug", help="workspace slug: lowercase letters, digits and '-'")
    create.add_argument("--name", help="display name (default: the slug)")
    create.add_argument(
        "--environments",
        help="comma-separated, in promotion order (default development,staging,production)",
    )
    create.add_argument("--database-url", help="overrides PROMPTRECORD_DATABASE_URL")
    create.add_argument("--json", action="store_true", help="print JSON")
    create.set_defaults(handler=cmd_workspace_create)

    demo = commands.add_parser(
        "demo",
        help="a scripted tour on a fresh embedded database",
        description=(
            "Commit two versions, promote, start a 10%% canary, pin a tenant and roll back, "
            "printing what five tenants get after each step. Uses a temporary database."
        ),
    )
    demo.add_argument("--json", action="store_true", help="print JSON")
    demo.set_defaults(handler=cmd_demo)

    from promptrecord.api import (
        cli_audit,
        cli_deploy,
        cli_evals,
        cli_projector,
        cli_push,
        cli_verify,
        cli_worker,
    )

    cli_push.register(commands)
    cli_evals.register(commands)
    cli_deploy.register(commands)
    cli_audit.register(commands)
    cli_verify.register(commands)
    cli_projector.register(commands)
    cli_worker.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except DomainError as error:
        if getattr(args, "json", False):
            problem = {"code": error.code, "detail": error.detail, "field": error.field}
            print(json.dumps(problem), file=sys.stderr)
        else:
            print(f"promptrecord: {error.detail}", file=sys.stderr)
        return EXIT_REFUSED
    except ValueError as error:
        print(f"promptrecord: {error}", file=sys.stderr)
        return EXIT_ERROR
    return code


if __name__ == "__main__":
    sys.exit(main())
