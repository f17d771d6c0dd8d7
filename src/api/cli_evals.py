"""`promptrecord gate` and `promptrecord dataset`: eval gates and datasets over the HTTP API.

They talk to a running server as a CI job would; `cli_http` says where it is and which key.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from promptrecord.api.cli_http import (
    EXIT_OK,
    EXIT_REFUSED,
    CliError,
    Server,
    connection_args,
    is_problem,
    problem_error,
    run,
)

POLL_FIRST, POLL_MAX = 0.2, 2.0  # seconds between progress polls, growing to the max
REGRESSED_SHOWN = 20
BAR_WIDTH = 30

GATE_EXAMPLES = """\
examples:
  promptrecord gate support-bot --against production --allow-first   # after `push`
  promptrecord gate support-bot --candidate 8 --against production --dataset support-golden
  promptrecord gate support-bot --candidate 8 --baseline 7 --dataset support-golden \\
      --grader '{"type": "contains"}' --threshold min_examples=50 --threshold alpha=0.01 --json

Without --candidate and --dataset the head is gated on the dataset `push` made from the
prompt's eval.jsonl, with the graders, thresholds and provider of its metadata.yaml (eval:).
When the candidate already serves the --against environment there is nothing to gate (0).

Exit codes: 0 the gate passed, 1 it blocked the candidate or the server refused (4xx),
2 error (bad option, server unreachable or failing, the run failed, timeout).
"""


# --- promptrecord dataset ------------------------------------------------------------------


def cmd_dataset(args: argparse.Namespace) -> int:
    commands = {"push": _push, "list": _list, "show": _show, "download": _download}
    return run(args, commands[args.action])


def _push(server: Server, args: argparse.Namespace) -> int:
    try:
        data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as error:
        raise CliError(f"cannot read {args.file}: {error.strerror}") from None
    if args.create:
        body = {"name": args.name, "description": args.description or ""}
        created = server.raw("POST", "/v1/datasets", json=body)
        if created.status_code != 201 and not is_problem(created, "dataset_exists"):
            raise problem_error(created)
    response = server.raw(
        "POST",
        f"/v1/datasets/{args.name}/examples",
        content=data,
        params={"message": args.message or ""},
        headers={"Content-Type": "application/x-ndjson", "Idempotency-Key": uuid.uuid4().hex},
    )
    if response.status_code != 201:
        refused = problem_error(response)
        if is_problem(response, "dataset_not_found"):
            refused.message += "; pass --create to create it"
        raise refused
    written = response.json()
    if args.json:
        print(json.dumps(written))
    else:
        print(
            f"pushed {written['added']} examples to {written['name']}: version "
            f"{written['version']} ({written['count']} examples)"
        )
    return EXIT_OK


def _list(server: Server, args: argparse.Namespace) -> int:
    found = list(server.pages("/v1/datasets"))
    if args.json:
        print(json.dumps(found))
        return EXIT_OK
    rows: list[tuple[str, ...]] = [("NAME", "VERSION", "EXAMPLES", "UPDATED", "DESCRIPTION")]
    for d in found:
        rows.append(
            (
                d["name"],
                str(d["latest_version"]),
                str(d["example_count"]),
                d["updated_at"][:19],
                d["description"][:60],
            )
        )
    print(columns(rows) if found else "no datasets yet; push one with `promptrecord dataset push`")
    return EXIT_OK


def _show(server: Server, args: argparse.Namespace) -> int:
    dataset = server.send("GET", f"/v1/datasets/{args.name}")
    if args.json:
        print(json.dumps(dataset))
        return EXIT_OK
    print(f"{dataset['name']}: {dataset['description'] or '(no description)'}")
    print(f"latest version {dataset['latest_version']}, {dataset['example_count']} examples")
    rows: list[tuple[str, ...]] = [("VERSION", "EXAMPLES", "ADDED", "BY", "AT", "MESSAGE")]
    for v in dataset["versions"]:
        rows.append(
            (
                str(v["version"]),
                str(v["count"]),
                f"+{v['added']}",
                v["actor"]["key_name"],
                v["created_at"][:19],
                v["message"],
            )
        )
    print(columns(rows))
    return EXIT_OK


def _download(server: Server, args: argparse.Namespace) -> int:
    version = args.version
    if version is None:
        version = server.send("GET", f"/v1/datasets/{args.name}")["latest_version"]
    path = f"/v1/datasets/{args.name}/versions/{version}/download"
    try:
        with server.client.stream("GET", path) as response:
            if response.status_code != 200:
                response.read()
                raise problem_error(response)
            target = open(args.output, "wb") if args.output else sys.stdout.buffer  # noqa: SIM115
            try:
                for chunk in response.iter_bytes():
                    target.write(chunk)
            finally:
                if args.output:
                    target.close()
    except httpx.TransportError as error:
        raise CliError(f"cannot reach the promptrecord server at {server.url}: {error}") from None
    except OSError as error:
        raise CliError(f"cannot write {args.output}: {error.strerror}") from None
    if args.output:
        print(f"wrote {args.name} version {version} to {args.output}", file=sys.stderr)
    return EXIT_OK


def columns(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


# --- promptrecord gate ---------------------------------------------------------------------


def cmd_gate(args: argparse.Namespace) -> int:
    return run(args, _gate)


def gate_request(args: argparse.Namespace) -> dict[str, Any]:
    """The POST /v1/evals body from the command line; a malformed option is a CliError."""
    body: dict[str, Any] = {
        "prompt": args.prompt,
        "candidate": args.candidate,
        "dataset": args.dataset,
        "concurrency": args.concurrency,
        "batch_size": args.batch_size,
        "reason": args.reason or "",
    }
    if args.baseline is not None:
        body["baseline"] = args.baseline
    else:
        body["against"] = args.against or "production"
    if args.dataset_version is not None:
        body["dataset_version"] = args.dataset_version
    if args.provider:
        body["provider"] = args.provider
    if args.grader:
        graders = []
        for index, text in enumerate(args.grader):
            try:
                graders.append(json.loads(text))
            except ValueError as error:
                raise CliError(f"--grader #{index + 1} is not JSON ({error}): {text}") from None
        body["graders"] = graders
    if args.threshold:
        thresholds: dict[str, Any] = {}
        for item in args.threshold:
            name, sep, value = item.partition("=")
            if not sep or not name.strip():
                raise CliError(f"--threshold takes NAME=VALUE (e.g. alpha=0.01), not {item!r}")
            try:
                thresholds[name.strip()] = json.loads(value)
            except ValueError:
                thresholds[name.strip()] = value  # left for the server to refuse with its field
        body["thresholds"] = thresholds
    return body


def _gate(server: Server, args: argparse.Namespace) -> int:
    body = gate_request(args)
    skipped = fill_from_prompt(server, args, body)
    if skipped is not None:
        if args.json:
            print(json.dumps(skipped))
        else:
            print(f"gate {args.prompt}: nothing to gate: {skipped['detail']}")
        return EXIT_OK
    requested = server.send("POST", "/v1/evals", expect=(202,), json=body)
    run_id = requested["run_id"]
    run = wait_for(server, run_id, requested["position"], args.timeout)
    if run["status"] == "failed":
        error = run.get("error") or {}
        raise CliError(
            f"eval run {run_id} failed ({error.get('code')}): {error.get('detail')}",
            problem={"code": "run_failed", "run_id": run_id, **error},
        )
    verdict = server.send("GET", f"/v1/evals/{run_id}/verdict")
    regressed = list(_regressed(server, run_id))
    if args.json:
        print(json.dumps({**verdict, "regressed_examples": regressed}))
    else:
        print(report(verdict, run, regressed))
    return EXIT_OK if verdict["passed"] else EXIT_REFUSED


def fill_from_prompt(
    server: Server, args: argparse.Namespace, body: dict[str, Any]
) -> dict[str, Any] | None:
    """Defaults from the prompt: the head as candidate, and the dataset, graders and
    thresholds its `metadata.eval` names (as `promptrecord push` stores metadata.yaml).

    Returns why there is nothing to gate, when the candidate already serves the `--against`
    environment, or (with --allow-first) when nothing serves there yet."""
    name = args.prompt
    if body["candidate"] is None:
        head = server.send("GET", f"/v1/prompts/{name}")["head"]
        if head is None:
            raise CliError(f"prompt {name!r} has no version yet; push one first", EXIT_REFUSED)
        body["candidate"] = head["number"]
    version = server.send("GET", f"/v1/prompts/{name}/versions/{body['candidate']}")
    settings = (version["content"].get("metadata") or {}).get("eval") or {}
    if body["dataset"] is None:
        body["dataset"] = settings.get("dataset") or name
    for key in ("graders", "thresholds", "provider"):
        if key not in body and settings.get(key):
            body[key] = settings[key]
    against = body.get("against")
    if against is None:
        return None
    serving = server.send("GET", f"/v1/prompts/{name}/environments/{against}")["serving"]
    outcome = {"prompt": name, "candidate": body["candidate"], "against": against}
    if serving == body["candidate"]:
        detail = f"v{serving} already serves {against}"
        return {**outcome, "passed": True, "skipped": "already_serving", "detail": detail}
    if serving is None and args.allow_first:
        detail = f"nothing serves {name} in {against} yet (first release, --allow-first)"
        return {**outcome, "passed": True, "skipped": "first_release", "detail": detail}
    return None


def wait_for(server: Server, run_id: str, position: int, timeout: float) -> dict[str, Any]:
    """Poll the run until it completes or fails, drawing progress on stderr."""
    deadline = time.monotonic() + timeout
    delay = POLL_FIRST
    shown: tuple[str, int] | None = None
    bar = Progress(sys.stderr)
    while True:
        response = server.raw("GET", f"/v1/evals/{run_id}", params={"after": position})
        if response.status_code == 200:
            run: dict[str, Any] = response.json()
            progress = run["progress"]
            if shown != (run["status"], progress["recorded"]):
                shown = (run["status"], progress["recorded"])
                bar.draw(run["status"], progress["recorded"], progress["total"])
            if run["status"] in ("completed", "failed"):
                bar.done()
                return run
        elif response.status_code != 503:  # 503: the views are catching up; ask again
            bar.done()
            raise problem_error(response)
        if time.monotonic() + delay > deadline:
            bar.done()
            raise CliError(
                f"gave up waiting after {timeout:g} s; eval run {run_id} goes on: follow it at "
                f"{server.url}/v1/evals/{run_id}",
                problem={"code": "timeout", "run_id": run_id},
            )
        time.sleep(delay)
        delay = min(POLL_MAX, delay * 1.5)


class Progress:
    """A bar redrawn in place on a terminal; one line per change otherwise (CI logs)."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.drawn = False

    def draw(self, status: str, recorded: int, total: int) -> None:
        filled = BAR_WIDTH * recorded // total if total else 0
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        line = f"[{bar}] {recorded}/{total} examples  {status}"
        if self.tty:
            self.stream.write("\r" + line)
            self.drawn = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False


def _regressed(server: Server, run_id: str) -> Iterator[dict[str, Any]]:
    path = f"/v1/evals/{run_id}/results"
    for result in server.pages(path, only="regressed"):
        yield {
            "example_id": result["example_id"],
            "baseline": result["baseline"]["output"],
            "candidate": result["candidate"]["output"],
            "candidate_error": result["candidate"].get("error"),
        }


def verdict_lines(verdict: dict[str, Any]) -> list[str]:
    """The contingency table, McNemar, win rates with the CI, latencies and usage."""
    t = verdict["table"]
    cells = [
        ("", "candidate right", "candidate wrong"),
        ("baseline right", str(t["both_correct"]), str(t["baseline_only"])),
        ("baseline wrong", str(t["candidate_only"]), str(t["both_wrong"])),
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(3)]
    lines = [
        "  "
        + "  ".join(
            cell.rjust(w) if i else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in cells
    ]
    m, w, lat = verdict["mcnemar"], verdict["win_rate"], verdict["latency"]
    ci = w["ci"]
    lines += [
        f"McNemar ({m['test']}): statistic {m['statistic']:.4g}, p = {m['p_value']:.4g}"
        f" (regressions {t['baseline_only']}, improvements {t['candidate_only']})",
        f"win rate: candidate {w['candidate']:.1%}, baseline {w['baseline']:.1%}; difference "
        f"{w['difference']:+.1%} (95% CI {ci['low']:+.1%} to {ci['high']:+.1%}, paired bootstrap)",
        f"p95 latency: candidate {lat['candidate_p95_ms']:.0f} ms, baseline "
        f"{lat['baseline_p95_ms']:.0f} ms",
    ]
    usage = verdict.get("usage")
    if usage:
        cost = usage.get("cost_usd")
        lines.append(
            f"usage: {usage.get('calls', 0)} calls, {usage.get('input_tokens', 0):,} input + "
            f"{usage.get('output_tokens', 0):,} output tokens, "
            + (f"${cost:.4f}" if cost is not None else "cost unknown (model not priced)")
        )
    return lines


def report(verdict: dict[str, Any], run: dict[str, Any], regressed: list[dict[str, Any]]) -> str:
    against = f" ({run['against']})" if run.get("against") else ""
    lines = [
        f"gate {verdict['prompt']}: v{verdict['candidate']} against v{verdict['baseline']}"
        f"{against} on {verdict['dataset']} v{verdict['dataset_version']}, "
        f"{verdict['n_examples']} examples (run {verdict['run_id']})",
        *verdict_lines(verdict),
    ]
    if verdict["passed"]:
        lines.append("PASSED")
    else:
        lines.append("BLOCKED:")
        lines += [f"  {r['code']}: {r['detail']}" for r in verdict["reasons"]]
    if regressed:
        lines.append(f"regressed examples ({len(regressed)}):")
        for example in regressed[:REGRESSED_SHOWN]:
            candidate = example["candidate"]
            if candidate is None:
                candidate = f"(error: {example['candidate_error']})"
            lines += [
                f"  {example['example_id']}",
                f"    baseline:  {_one_line(example['baseline'])}",
                f"    candidate: {_one_line(candidate)}",
            ]
        if len(regressed) > REGRESSED_SHOWN:
            lines.append(f"  … and {len(regressed) - REGRESSED_SHOWN} more (--json lists all)")
    return "\n".join(lines)


def _one_line(text: str | None, limit: int = 160) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


# --- the parsers ---------------------------------------------------------------------------


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `dataset` and `gate` to the `promptrecord` command line."""
    dataset = commands.add_parser(
        "dataset",
        help="push, list, show and download eval datasets (via the HTTP API)",
        description="Datasets are append-only: every push is a new version.",
    )
    actions = dataset.add_subparsers(dest="action", metavar="ACTION", required=True)
    push = actions.add_parser("push", help="append a JSONL file's examples as a new version")
    push.add_argument("name", help="the dataset's name")
    push.add_argument("file", help="JSONL: one {id, inputs, reference, tags} per line; - = stdin")
    push.add_argument("--create", action="store_true", help="create the dataset if missing")
    push.add_argument("--description", help="with --create: what the dataset is for")
    push.add_argument("--message", help="what this version adds")
    listing = actions.add_parser("list", help="the workspace's datasets")
    show = actions.add_parser("show", help="a dataset and its versions")
    show.add_argument("name")
    download = actions.add_parser("download", help="a version as JSONL")
    download.add_argument("name")
    download.add_argument("--version", type=int, help="default: the latest")
    download.add_argument("-o", "--output", help="file to write (default: stdout)")
    for parser in (push, listing, show, download):
        connection_args(parser)
    dataset.set_defaults(handler=cmd_dataset)

    gate = commands.add_parser(
        "gate",
        help="evaluate a candidate version against a baseline and apply the gate",
        description=(
            "Request an eval run, wait for it (progress on stderr), then print the "
            "contingency table, McNemar's test, win rates with the 95%% CI of their "
            "difference, p95 latencies, usage and the regressed examples."
        ),
        epilog=GATE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    gate.add_argument("prompt", help="the prompt's name")
    gate.add_argument(
        "--candidate", type=int, help="the version under test (default: the prompt's head)"
    )
    baseline = gate.add_mutually_exclusive_group()
    baseline.add_argument("--against", help="compare with what this environment serves")
    baseline.add_argument("--baseline", type=int, help="compare with this version")
    gate.add_argument(
        "--dataset",
        help="the dataset's name (default: metadata.eval.dataset of the candidate, else the "
        "dataset named after the prompt, as `promptrecord push` makes it)",
    )
    gate.add_argument(
        "--allow-first",
        action="store_true",
        help="pass without a run when nothing serves the --against environment yet",
    )
    gate.add_argument("--dataset-version", type=int, help="default: the latest")
    gate.add_argument(
        "--grader", action="append", metavar="JSON", help='repeatable; default {"type": "exact"}'
    )
    gate.add_argument(
        "--threshold", action="append", metavar="NAME=VALUE", help="repeatable, e.g. alpha=0.01"
    )
    gate.add_argument("--provider", choices=["offline", "anthropic", "openai"])
    gate.add_argument("--concurrency", type=int, default=8, help="model calls in flight")
    gate.add_argument("--batch-size", type=int, default=20, help="results recorded at once")
    gate.add_argument("--reason", help="why (recorded on the run)")
    gate.add_argument(
        "--timeout", type=float, default=1800.0, help="seconds to wait (default 1800)"
    )
    connection_args(gate)
    gate.set_defaults(handler=cmd_gate)
