"""`promote`, `rollout`, `rollback`, `pin`, `unpin` and `diff` over the HTTP API."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any
from urllib.parse import quote

from promptrecord.api.cli_http import (
    EXIT_OK,
    CliError,
    Server,
    connection_args,
    is_problem,
    print_json,
    problem_error,
    run,
)

EXIT_CODES = "Exit codes: 0 done, 1 refused by the server (4xx), 2 error."
RED, GREEN, BOLD, RESET = "\033[31m", "\033[32m", "\033[1m", "\033[0m"


def _parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    help: str,
    examples: str,
) -> argparse.ArgumentParser:
    return commands.add_parser(
        name,
        help=help,
        description=help[0].upper() + help[1:] + ".",
        epilog=f"examples:\n{examples}\n{EXIT_CODES}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the deployment commands and `diff` to the `promptrecord` command line."""
    promote = _parser(
        commands,
        "promote",
        "serve a version of a prompt in an environment (a request when approvals are needed)",
        "  promptrecord promote support-bot staging                 # the head\n"
        "  promptrecord promote support-bot production --from staging --reason 'PR 12'\n"
        "  promptrecord promote support-bot production --version 7 --json\n"
        "Promoting the version that already serves changes nothing and exits 0.",
    )
    _target(promote)
    chosen = promote.add_mutually_exclusive_group()
    chosen.add_argument("--version", type=int, help="the version (default: the head)")
    chosen.add_argument("--from", dest="source", help="the version this environment serves")
    promote.add_argument("--reason", default="", help="why (recorded on the event)")
    connection_args(promote)
    promote.set_defaults(handler=lambda args: run(args, _promote))

    rollout = commands.add_parser(
        "rollout",
        help="start, adjust, complete or abort a canary / A/B rollout",
        description="A rollout gives a candidate a share of traffic by deterministic hashing.",
        epilog="examples:\n"
        "  promptrecord rollout start support-bot production --candidate 8 --share 0.1\n"
        "  promptrecord rollout adjust support-bot production --share 0.5\n"
        "  promptrecord rollout complete support-bot production --reason 'metrics fine'\n"
        f"  promptrecord rollout abort support-bot production\n{EXIT_CODES}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    steps = rollout.add_subparsers(dest="step", metavar="STEP", required=True)
    start = steps.add_parser("start", help="the candidate gets --share of traffic")
    adjust = steps.add_parser("adjust", help="change the candidate's share")
    complete = steps.add_parser("complete", help="the candidate serves everyone")
    abort = steps.add_parser("abort", help="the baseline serves everyone")
    start.add_argument("--candidate", type=int, help="the version (default: the head)")
    for parser in (start, adjust):
        parser.add_argument("--share", type=float, required=True, help="in (0, 1), e.g. 0.1")
    start.add_argument("--key-by", choices=["tenant", "user", "request"], default="tenant")
    for parser in (start, adjust, complete, abort):
        _target(parser)
        parser.add_argument("--reason", default="", help="why (recorded on the event)")
        connection_args(parser)
    rollout.set_defaults(handler=lambda args: run(args, _rollout))

    rollback = _parser(
        commands,
        "rollback",
        "kill switch: serve the previous (or a named) version now, without approval",
        "  promptrecord rollback support-bot production --reason 'answers got rude'\n"
        "  promptrecord rollback support-bot production --to 5 --reason 'back to v5'",
    )
    _target(rollback)
    rollback.add_argument("--reason", required=True, help="why (required; recorded)")
    rollback.add_argument("--to", type=int, help="the version (default: what served before)")
    connection_args(rollback)
    rollback.set_defaults(handler=lambda args: run(args, _rollback))

    pin = _parser(
        commands,
        "pin",
        "pin a tenant to a version, whatever the deployment says, until it expires",
        "  promptrecord pin acme support-bot 7 --ttl 86400 --reason 'acme validated v7'\n"
        "  promptrecord pin acme support-bot 7 --environment staging --expires-at "
        "2026-04-01T00:00Z",
    )
    pin.add_argument("tenant", help="the tenant's id")
    pin.add_argument("prompt", help="the prompt's name")
    pin.add_argument("version", type=int, help="the version the tenant gets")
    pin.add_argument("--environment", default="production", help="(default production)")
    until = pin.add_mutually_exclusive_group()
    until.add_argument("--ttl", type=int, help="seconds (default: the policy's default)")
    until.add_argument("--expires-at", help="ISO 8601 with a timezone")
    pin.add_argument("--reason", default="", help="why (recorded on the event)")
    connection_args(pin)
    pin.set_defaults(handler=lambda args: run(args, _pin))

    unpin = _parser(
        commands,
        "unpin",
        "unpin a tenant: it follows the deployment again",
        "  promptrecord unpin acme support-bot --reason 'v8 validated'",
    )
    unpin.add_argument("tenant", help="the tenant's id")
    unpin.add_argument("prompt", help="the prompt's name")
    unpin.add_argument("--environment", default="production", help="(default production)")
    unpin.add_argument("--reason", default="", help="why (recorded on the event)")
    connection_args(unpin)
    unpin.set_defaults(handler=lambda args: run(args, _unpin))

    diff = _parser(
        commands,
        "diff",
        "word diff of two versions of a prompt",
        "  promptrecord diff support-bot            # the head against the version before\n"
        "  promptrecord diff support-bot 3 5 --json\n"
        "Coloured on a terminal unless NO_COLOR is set; [-deleted-] {+inserted+} otherwise.",
    )
    diff.add_argument("prompt", help="the prompt's name")
    diff.add_argument("old", nargs="?", type=int, metavar="FROM", help="default: TO - 1")
    diff.add_argument("new", nargs="?", type=int, metavar="TO", help="default: the head")
    diff.add_argument("--color", choices=["auto", "always", "never"], default="auto")
    connection_args(diff)
    diff.set_defaults(handler=lambda args: run(args, _diff))


def _target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", help="the prompt's name")
    parser.add_argument("environment", help="the environment, e.g. production")


def _base(args: argparse.Namespace) -> str:
    return f"/v1/prompts/{quote(args.prompt)}/environments/{quote(args.environment)}"


def head_of(server: Server, prompt: str) -> int:
    head = server.send("GET", f"/v1/prompts/{quote(prompt)}")["head"]
    if head is None:
        raise CliError(f"prompt {prompt!r} has no version yet; push one first", 1)
    number: int = head["number"]
    return number


def _serving(server: Server, prompt: str, environment: str) -> int | None:
    found = server.send("GET", f"/v1/prompts/{quote(prompt)}/environments/{quote(environment)}")
    serving: int | None = found["serving"]
    return serving


def _promote(server: Server, args: argparse.Namespace) -> int:
    version = args.version
    if args.source:
        version = _serving(server, args.prompt, args.source)
        if version is None:
            raise CliError(f"nothing serves {args.prompt} in {args.source} to promote from", 1)
    elif version is None:
        version = head_of(server, args.prompt)
    body = {"version": version, "reason": args.reason}
    response = server.raw("POST", f"{_base(args)}/promote", json=body)
    if response.status_code == 409 and is_problem(response, "already_serving"):
        outcome = {"prompt": args.prompt, "environment": args.environment, "version": version}
        outcome.update(status="already_serving", position=None)
        return _done(args, outcome, f"v{version} already serves {args.environment}: unchanged")
    if response.status_code not in (200, 202):
        raise problem_error(response)
    outcome = response.json()
    if outcome["status"] == "pending_approval":
        return _done(
            args,
            outcome,
            f"approval needed to promote {args.prompt} v{version} to {args.environment}: "
            f"request {outcome['request_id']} opened",
        )
    return _done(args, outcome, f"promoted {args.prompt} v{version} to {args.environment}")


def _rollout(server: Server, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"reason": args.reason}
    path = f"{_base(args)}/rollout"
    if args.step == "start":
        candidate = args.candidate or head_of(server, args.prompt)
        body.update(candidate=candidate, share=args.share, key_by=args.key_by)
    else:
        path += f"/{args.step}"
        if args.step == "adjust":
            body["share"] = args.share
    outcome = server.send("POST", path, expect=(200, 202), json=body)
    said = {
        "rollout_started": f"rollout of v{outcome.get('version')} started at {_share(args)}",
        "rollout_adjusted": f"rollout share now {_share(args)}",
        "promoted": f"rollout completed: v{outcome.get('version')} serves everyone",
        "aborted": "rollout aborted: the baseline serves everyone",
        "pending_approval": f"approval needed: request {outcome.get('request_id')} opened",
    }
    where = f"{args.prompt} in {args.environment}: "
    return _done(args, outcome, where + said.get(outcome["status"], outcome["status"]))


def _share(args: argparse.Namespace) -> str:
    share = getattr(args, "share", None)
    return f"{share:.0%}" if share is not None else ""


def _rollback(server: Server, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"reason": args.reason}
    if args.to is not None:
        body["to_version"] = args.to
    outcome = server.send("POST", f"{_base(args)}/rollback", json=body)
    return _done(
        args,
        outcome,
        f"rolled back {args.prompt} in {args.environment}: v{outcome['version']} serves now",
    )


def _pin(server: Server, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {
        "prompt": args.prompt,
        "environment": args.environment,
        "version": args.version,
        "reason": args.reason,
    }
    if args.ttl is not None:
        body["ttl_seconds"] = args.ttl
    if args.expires_at is not None:
        body["expires_at"] = args.expires_at
    path = f"/v1/tenants/{quote(args.tenant, safe='')}/pins"
    outcome = server.send("POST", path, expect=(201,), json=body)
    return _done(
        args,
        outcome,
        f"pinned tenant {args.tenant} to {args.prompt} v{outcome['version']} in "
        f"{args.environment} until {outcome['expires_at']}",
    )


def _unpin(server: Server, args: argparse.Namespace) -> int:
    path = (
        f"/v1/tenants/{quote(args.tenant, safe='')}/pins/{quote(args.prompt)}/"
        f"{quote(args.environment)}"
    )
    outcome = server.send("DELETE", path, params={"reason": args.reason})
    return _done(
        args,
        outcome,
        f"unpinned tenant {args.tenant} from {args.prompt} in {args.environment}",
    )


def _done(args: argparse.Namespace, outcome: dict[str, Any], sentence: str) -> int:
    if args.json:
        print_json(outcome)
    else:
        position = outcome.get("position")
        print(sentence + (f" (log position {position})" if position else ""))
    return EXIT_OK


def _diff(server: Server, args: argparse.Namespace) -> int:
    params = {key: value for key, value in (("from", args.old), ("to", args.new)) if value}
    diff = server.send("GET", f"/v1/prompts/{quote(args.prompt)}/diff", params=params)
    if args.json:
        print_json(diff)
    elif use_colour(args.color, sys.stdout):
        print(coloured(diff), end="")
    else:
        print(diff["unified"], end="" if diff["unified"].endswith("\n") else "\n")
    return EXIT_OK


def use_colour(choice: str, stream: Any) -> bool:
    """`always`, `never`, or (auto) a terminal with NO_COLOR unset (https://no-color.org)."""
    if choice != "auto":
        return choice == "always"
    return bool(getattr(stream, "isatty", lambda: False)()) and not os.environ.get("NO_COLOR")


def coloured(diff: dict[str, Any]) -> str:
    """Changed fields with deletions in red and insertions in green, as `git diff --word-diff
    =color` shows them."""
    name = diff["prompt"]
    lines = [
        f"{BOLD}--- {name}@{diff['from_version']}{RESET}",
        f"{BOLD}+++ {name}@{diff['to_version']}{RESET}",
    ]
    if not diff["changed"]:
        lines.append("(no changes)")
    for field in diff["fields"]:
        if field["change"] == "unchanged":
            continue
        lines.append(f"{BOLD}@@ {field['path']} ({field['change']}) @@{RESET}")
        colours = {"insert": GREEN, "delete": RED}
        text = "".join(
            f"{colours[t['op']]}{t['text']}{RESET}" if t["op"] in colours else t["text"]
            for t in field["tokens"]
        )
        lines.append(text)
    return "\n".join(lines) + "\n"
