"""`promptrecord audit`: which version a tenant got at a time, or every interval of a window."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from promptrecord.api import cli_http
from promptrecord.domain.errors import Conflict, DomainError, Forbidden, InvalidInput
from promptrecord.projections.audit import (
    TIME_EXAMPLE,
    AuditAnswer,
    CausingEvent,
    Interval,
    RolloutSplit,
    check_window,
    parse_instant,
    show_time,
)
from promptrecord.settings import Settings

EXIT_OK, EXIT_REFUSED, EXIT_ERROR = 0, 1, 2

EXAMPLES = f"""\
examples:
  promptrecord audit --tenant acme --prompt support-bot --environment production \\
      --at {TIME_EXAMPLE}
  promptrecord audit --tenant acme --prompt support-bot --from 2026-03-01T00:00Z \\
      --to 2026-04-01T00:00Z --json

  PROMPTRECORD_URL=https://prompts.example.com promptrecord audit --tenant acme \
      --prompt support-bot --at {TIME_EXAMPLE} --api-key "$KEY"

With a server configured (--url, PROMPTRECORD_URL or the config file's url) the answer comes
from its /v1/audit API (the key's workspace); with --database-url, or no server configured,
from a replay of the event log in the database (PROMPTRECORD_DATABASE_URL). Here --key is the
routing key of a rollout; the API key is --api-key.
Exit codes: 0 answered, 1 refused (e.g. nothing deployed then), 2 error.
"""

# How each event that decides a version reads in a sentence.
DECIDED_BY = {
    "Deployment.Promoted": "promoted",
    "Deployment.RolloutCompleted": "rollout completed",
    "Deployment.RolledBack": "rolled back",
    "Deployment.RolloutAborted": "kept when a rollout was aborted",
    "Deployment.RolloutStarted": "rollout started",
    "Deployment.RolloutAdjusted": "share adjusted",
}


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `audit` subcommand to the `promptrecord` command line."""
    audit = commands.add_parser(
        "audit",
        help="which version a tenant got at a time (or in a window), and why",
        description=(
            "Answer an auditor's question from the event log: the version a tenant got of a "
            "prompt in an environment at a time, why (pin, rollout bucket and share, "
            "promotion) and the events that caused it; or, with --from and --to, every "
            "interval of that window with its answer (end-exclusive)."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    audit.add_argument("--tenant", required=True, help="the tenant's id")
    audit.add_argument("--prompt", required=True, help="the prompt's name")
    audit.add_argument("--environment", default="production", help="(default production)")
    audit.add_argument("--at", help=f"the time asked about, e.g. {TIME_EXAMPLE}")
    audit.add_argument("--from", dest="start", help="window start, inclusive (with --to)")
    audit.add_argument("--to", dest="end", help="window end, exclusive (with --from)")
    audit.add_argument("--key", help="user or request id, for rollouts keyed by user or request")
    audit.add_argument(
        "--workspace", help="workspace slug (default PROMPTRECORD_DEFAULT_WORKSPACE)"
    )
    audit.add_argument("--database-url", help="overrides PROMPTRECORD_DATABASE_URL")
    audit.add_argument("--url", help="ask this server (default PROMPTRECORD_URL, config file)")
    audit.add_argument("--api-key", help="with a server: the API key (PROMPTRECORD_API_KEY)")
    audit.add_argument("--profile", help="a table of the config file (PROMPTRECORD_PROFILE)")
    audit.add_argument("--json", action="store_true", help="print JSON")
    audit.set_defaults(handler=cmd_audit)


def cmd_audit(args: argparse.Namespace) -> int:
    try:
        question = _question(args)
        settings = Settings(**({"database_url": args.database_url} if args.database_url else {}))
        env = settings.eventsourcing_env()
    except (InvalidInput, ValueError) as error:
        return _fail(args, error)
    try:
        over_http = not args.database_url and cli_http.server_configured(args)
    except cli_http.CliError as error:
        return _fail(args, ValueError(error.message))
    if over_http:
        return cli_http.run(_connection(args), lambda server, _: _ask(server, args, question))
    sqlite_file = env.get("SQLITE_DBNAME")
    if sqlite_file is not None and not Path(sqlite_file).exists():
        # Opening it would create an empty store and answer "does not exist" for everything.
        return _fail(args, ValueError(f"no database at {sqlite_file}; set --database-url"))
    from promptrecord.domain.application import PromptRecord
    from promptrecord.projections.replay import TenantHistory

    workspace = args.workspace or settings.default_workspace
    try:
        app = PromptRecord(env=env)
    except Exception as error:  # a server that is down or refuses us: say which, not a trace
        return _fail(args, ValueError(f"cannot open the event store: {error}"))
    try:
        history = TenantHistory.read(app, workspace, args.tenant, args.prompt, args.environment)
        if "at" in question:
            answer = history.answer_at(question["at"], args.key)
            print(json.dumps(answer.as_dict()) if args.json else describe(answer))
        else:
            found = history.intervals(question["start"], question["end"], args.key)
            if args.json:
                print(json.dumps([interval.as_dict() for interval in found]))
            else:
                print(_heading(args, question["start"], question["end"]))
                print(table(found))
                print(observed_line(_observed(settings, workspace, args, question)))
    except DomainError as error:
        return _fail(args, error)
    finally:
        app.close()
    return EXIT_OK


def _question(args: argparse.Namespace) -> dict[str, Any]:
    if args.at is not None and (args.start or args.end):
        raise InvalidInput("give --at, or --from and --to, not both", field="--at")
    if args.at is not None:
        return {"at": parse_instant(args.at, "--at")}
    if not (args.start and args.end):
        raise InvalidInput(
            f"say when: --at TIME, or --from TIME --to TIME (e.g. {TIME_EXAMPLE})", field="--at"
        )
    start, end = parse_instant(args.start, "--from"), parse_instant(args.end, "--to")
    check_window(start, end, "--from", "--to")
    return {"start": start, "end": end}


def _fail(args: argparse.Namespace, error: Exception) -> int:
    """Report on stderr; a refusal (the question has no answer then) exits 1, the rest 2."""
    refused = isinstance(error, (Conflict, Forbidden)) or (
        isinstance(error, DomainError) and error.code in cli_http.REFUSAL_CODES
    )
    if isinstance(error, DomainError) and args.json:
        print(json.dumps({"code": error.code, "detail": error.detail}), file=sys.stderr)
    else:
        detail = error.detail if isinstance(error, DomainError) else str(error)
        print(f"promptrecord audit: {'refused: ' if refused else ''}{detail}", file=sys.stderr)
    return EXIT_REFUSED if refused else EXIT_ERROR


# --- over HTTP ------------------------------------------------------------------------------


def _connection(args: argparse.Namespace) -> argparse.Namespace:
    # The API key is --api-key here: --key is the rollout's routing key, as in the HTTP API.
    return argparse.Namespace(**{**vars(args), "key": args.api_key})


def _ask(server: cli_http.Server, args: argparse.Namespace, question: dict[str, Any]) -> int:
    path = f"/v1/audit/tenants/{quote(args.tenant, safe='')}/prompts/{quote(args.prompt)}"
    params = {"environment": args.environment, **({"key": args.key} if args.key else {})}
    if "at" in question:
        at = question["at"].isoformat()
        found = server.send("GET", path, params={**params, "at": at})
        print(json.dumps(found) if args.json else describe(answer_from(found)))
        return EXIT_OK
    window = {"from": question["start"].isoformat(), "to": question["end"].isoformat()}
    found = server.send("GET", f"{path}/intervals", params={**params, **window})
    if args.json:
        print(json.dumps(found["intervals"]))
    else:
        print(_heading(args, question["start"], question["end"]))
        print(table([interval_from(item) for item in found["intervals"]]))
        counts = {o["version"]: o["executions"] for o in found.get("observed", [])}
        print(observed_line(counts))
    return EXIT_OK


def _observed(
    settings: Settings, workspace: str, args: argparse.Namespace, question: dict[str, Any]
) -> dict[int, int]:
    """Executions per version the tenant logged in the window (the audit's `observed`)."""
    from promptrecord.projections.executions import open_execution_store

    store = open_execution_store(settings)
    try:
        start, end = question["start"], question["end"]
        return store.version_counts(
            workspace, args.tenant, args.prompt, args.environment, start, end
        )
    finally:
        store.close()


def observed_line(counts: dict[int, int]) -> str:
    if not counts:
        return "observed: no executions logged for this tenant in the window"
    return "observed: " + ", ".join(f"v{v} ran {n} executions" for v, n in counts.items())


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _split(value: dict[str, Any] | None) -> RolloutSplit | None:
    return RolloutSplit(**value) if value else None


def answer_from(found: dict[str, Any]) -> AuditAnswer:
    """The server's JSON answer as the `AuditAnswer` the database mode prints."""
    events = [
        CausingEvent(**{**event, "timestamp": datetime.fromisoformat(event["timestamp"])})
        for event in found["events"]
    ]
    return AuditAnswer(
        workspace=found["workspace"],
        tenant=found["tenant"],
        prompt=found["prompt"],
        environment=found["environment"],
        key=found["key"],
        at=datetime.fromisoformat(found["at"]),
        version=found["version"],
        content_hash=found["content_hash"],
        reason=found["reason"],
        rollout=_split(found["rollout"]),
        pin_expires_at=_time(found["pin_expires_at"]),
        cause=found["cause_event_id"],
        events=events,
    )


def interval_from(found: dict[str, Any]) -> Interval:
    return Interval(
        valid_from=datetime.fromisoformat(found["valid_from"]),
        valid_to=_time(found["valid_to"]),
        version=found["version"],
        reason=found["reason"],
        rollout=_split(found["rollout"]),
        pin_expires_at=_time(found["pin_expires_at"]),
        cause=found["cause_event_id"],
        refusal=found["refusal"],
    )


# --- readable output ---------------------------------------------------------------------------


def describe(answer: AuditAnswer) -> str:
    """The answer as a sentence, then the events it rests on."""
    where = f"in {answer.environment} at {show_time(answer.at)}"
    split = answer.rollout
    if answer.version is None and split is not None:
        traffic = "users" if split.key_by == "user" else "requests"
        head = (
            f"tenant {answer.tenant} got a split of {answer.prompt} {where}, not one version: "
            f"v{split.candidate} for {split.share:.0%} of {traffic}, v{split.baseline} for the "
            f"rest (rollout keyed by {split.key_by}; pass --key for one {split.key_by}'s version)"
        )
    else:
        who = f"tenant {answer.tenant}"
        if split is not None and split.key_by != "tenant":
            who = f"{split.key_by} {answer.key} of {who}"
        head = f"{who} got {answer.prompt} v{answer.version} {where} — {_why(answer)}"
    lines = [head, "causing events:"]
    lines += [f"  {_event_line(event)}" for event in answer.events]
    return "\n".join(lines)


def _why(answer: AuditAnswer) -> str:
    cause = answer.cause_event()
    by = f" by {_by(cause)} on {show_time(cause.timestamp)}{_quoted(cause)}" if cause else ""
    if answer.reason == "pinned":
        expires = show_time(answer.pin_expires_at) if answer.pin_expires_at else "never"
        return f"pinned{by}, expires {expires}"
    split = answer.rollout
    if answer.reason == "rollout" and split is not None:
        keyed = answer.tenant if split.key_by == "tenant" else f"{split.key_by} {answer.key}"
        side = "below" if split.arm == "candidate" else "at or above"
        bucket = f"{split.bucket:.4f}" if split.bucket is not None else "?"
        return (
            f"rollout of v{split.candidate} over v{split.baseline} at {split.share:.0%}: "
            f"{keyed}'s bucket {bucket} is {side} the share {split.share:g}, so the "
            f"{split.arm}; {_how(cause)}{by}"
        )
    return f"{_how(cause)}{by}"


def _how(cause: CausingEvent | None) -> str:
    return DECIDED_BY.get(cause.type, "served") if cause is not None else "served"


def _by(event: CausingEvent) -> str:
    actor = event.actor
    name = f"{actor.get('key_name')} (key {actor.get('key_id')})"
    on_behalf_of = actor.get("on_behalf_of")
    return f"{name} for {on_behalf_of}" if on_behalf_of else name


def _quoted(event: CausingEvent) -> str:
    return f" {event.reason!r}" if event.reason else ""


def _event_line(event: CausingEvent) -> str:
    return (
        f"#{event.position}  {show_time(event.timestamp)}  {event.type}  by {_by(event)}"
        f"{_quoted(event)}  id {event.id}"
    )


def _heading(args: argparse.Namespace, start: datetime, end: datetime) -> str:
    return (
        f"what tenant {args.tenant} got of {args.prompt} in {args.environment} from "
        f"{show_time(start)} to {show_time(end)} (end exclusive):"
    )


def table(found: Sequence[Interval]) -> str:
    """Intervals as aligned columns: from, to, version, reason, detail, cause."""
    rows = [("FROM", "TO", "VERSION", "REASON", "DETAIL", "CAUSE")]
    for interval in found:
        rows.append(
            (
                show_time(interval.valid_from),
                show_time(interval.valid_to) if interval.valid_to else "(still at end)",
                _version_cell(interval),
                interval.reason,
                _detail_cell(interval),
                interval.cause or "",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _version_cell(interval: Interval) -> str:
    split = interval.rollout
    if interval.version is not None:
        return f"v{interval.version}"
    if split is not None:
        return f"v{split.candidate} {split.share:.0%} / v{split.baseline}"
    return "-"


def _detail_cell(interval: Interval) -> str:
    split = interval.rollout
    if interval.refusal is not None:
        return interval.refusal
    if interval.pin_expires_at is not None:
        return f"pin until {show_time(interval.pin_expires_at)}"
    if split is not None and split.bucket is not None:
        return f"bucket {split.bucket:.4f} vs share {split.share:g} -> {split.arm}"
    if split is not None:
        return f"split by {split.key_by}"
    return ""


def main(argv: Sequence[str] | None = None) -> int:
    """`promptrecord audit …` on its own, for scripts and tests."""
    parser = argparse.ArgumentParser(prog="promptrecord")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
