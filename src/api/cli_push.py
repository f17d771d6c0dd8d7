"""`promptrecord push DIR`: sync a Git layout of prompts and eval examples to the server.

The layout, one folder per prompt (DIR may be the repository, its `prompts/` folder, or one
prompt's folder):

    prompts/<name>/system.md          the system message (a Jinja2 template)
    prompts/<name>/user.template.md   the user message
    prompts/<name>/metadata.yaml      model, params, eval (dataset, graders, thresholds), owners
    prompts/<name>/eval.jsonl         examples {id, inputs, reference, tags}, one per line

A version is committed only when the content differs from the head's (compared by content
hash, computed here exactly as the server computes it; the server checks again); eval examples
go to the dataset named after the prompt, only those whose id is new. Running it twice on the
same tree writes nothing the second time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from promptrecord.api.cli_http import (
    EXIT_OK,
    CliError,
    Server,
    connection_args,
    is_problem,
    print_json,
    problem_error,
    report,
    run,
)
from promptrecord.api.schemas import Content
from promptrecord.domain.content import content_hash, normalise_content
from promptrecord.domain.errors import InvalidInput
from promptrecord.domain.evals import normalise_example

SYSTEM, USER, METADATA, EVAL = "system.md", "user.template.md", "metadata.yaml", "eval.jsonl"
METADATA_KEYS: tuple[str, ...] = ("title", "description", "model", "params", "eval", "owners")
METADATA_KEYS += ("tags", "output_schema", "metadata")

EXAMPLES = """\
examples:
  promptrecord push .                       # the repository root (it has prompts/)
  promptrecord push prompts --dry-run       # what would change, writing nothing
  promptrecord push prompts --git-commit "$GITHUB_SHA" --json

metadata.yaml:
  title: Support bot
  model: {provider: anthropic, name: claude-sonnet-4-5-20250929}
  params: {temperature: 0.2, max_tokens: 512}
  owners: [support-team]
  eval:
    graders: [{type: exact}]
    thresholds: {min_examples: 10, alpha: 0.05}

Exit codes: 0 in sync (whether or not anything was written), 1 the server refused (4xx, e.g.
a template that does not parse, an example id already used for other content), 2 error
(unreadable or malformed files, server unreachable).
"""


@dataclass
class LocalPrompt:
    """One prompt folder, read and normalised as the server would store it."""

    name: str
    path: str  # relative to the repository root when there is one
    title: str
    description: str
    content: dict[str, Any]
    content_hash: str
    examples: list[dict[str, Any]] | None  # None: no eval.jsonl


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `push` to the `promptrecord` command line."""
    push = commands.add_parser(
        "push",
        help="sync prompts/<name>/ folders (and their eval.jsonl) to the server",
        description=(
            "Create each prompt that is new, commit a version when its content differs from "
            "the head, recording the git commit and path, and append eval.jsonl examples "
            "whose id is new to the dataset named after the prompt."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    push.add_argument("dir", metavar="DIR", help="the repository, its prompts/ or one prompt")
    push.add_argument(
        "--git-commit", help="the commit to record (default: `git rev-parse HEAD` in DIR)"
    )
    push.add_argument("--message", help="the version message (default: names commit and path)")
    push.add_argument("--dry-run", action="store_true", help="say what would change; write nothing")
    connection_args(push)
    push.set_defaults(handler=cmd_push)


def cmd_push(args: argparse.Namespace) -> int:
    try:
        local = read_tree(Path(args.dir))
    except CliError as error:
        report(args, error)
        return error.code
    git_commit = args.git_commit or _git(Path(args.dir), "rev-parse", "HEAD")
    return run(args, lambda server, _: _push(server, args, local, git_commit))


def _push(
    server: Server, args: argparse.Namespace, local: list[LocalPrompt], git_commit: str | None
) -> int:
    outcomes = [sync_prompt(server, args, prompt, git_commit) for prompt in local]
    changed = any(o["action"] != "unchanged" or _dataset_changed(o) for o in outcomes)
    if args.json:
        print_json(
            {
                "dry_run": args.dry_run,
                "git_commit": git_commit,
                "changed": changed,
                "prompts": outcomes,
            }
        )
        return EXIT_OK
    for outcome in outcomes:
        for line in describe(outcome, args.dry_run):
            print(line)
    if not changed:
        print(f"nothing changed: {len(outcomes)} prompt(s) already in sync")
    elif args.dry_run:
        print("dry run: nothing was written")
    return EXIT_OK


def _dataset_changed(outcome: dict[str, Any]) -> bool:
    dataset = outcome.get("dataset")
    return dataset is not None and dataset["action"] != "unchanged"


# --- reading the tree ----------------------------------------------------------------------


def read_tree(root: Path) -> list[LocalPrompt]:
    """Every prompt folder under `root`, by name; a malformed file is a CliError naming it."""
    if not root.is_dir():
        raise CliError(f"{root} is not a directory")
    if (root / METADATA).is_file():
        folders = [root]
    else:
        base = root / "prompts" if (root / "prompts").is_dir() else root
        folders = sorted(p for p in base.iterdir() if p.is_dir() and (p / METADATA).is_file())
    if not folders:
        raise CliError(
            f"no prompt folders in {root}: expected prompts/<name>/{METADATA} with {SYSTEM} "
            f"and/or {USER}"
        )
    top = _git(root, "rev-parse", "--show-toplevel")
    return [read_prompt(folder, Path(top) if top else None) for folder in folders]


def read_prompt(folder: Path, repository: Path | None) -> LocalPrompt:
    name = folder.resolve().name
    meta = _metadata(folder / METADATA)
    messages = [
        {"role": role, "content": _read(folder / file).rstrip("\n")}
        for role, file in (("system", SYSTEM), ("user", USER))
        if (folder / file).is_file()
    ]
    if not messages:
        raise CliError(f"{folder}: neither {SYSTEM} nor {USER} is there; write at least one")
    raw: dict[str, Any] = {
        "type": "chat",
        "messages": messages,
        "model": {**_table(meta, "model", folder), **_table(meta, "params", folder)},
    }
    if meta.get("output_schema") is not None:
        raw["output_schema"] = meta["output_schema"]
    extra = {key: meta[key] for key in ("owners", "tags", "eval") if meta.get(key)}
    metadata = {**_table(meta, "metadata", folder), **extra}
    if metadata:
        raw["metadata"] = metadata
    content = canonical(raw, folder / METADATA)
    examples = _examples(folder / EVAL) if (folder / EVAL).is_file() else None
    path = folder.resolve()
    shown = str(path.relative_to(repository.resolve())) if repository else f"prompts/{name}"
    return LocalPrompt(
        name=name,
        path=shown,
        title=str(meta.get("title") or name),
        description=str(meta.get("description") or ""),
        content=content,
        content_hash=content_hash(content),
        examples=examples,
    )


def canonical(raw: dict[str, Any], where: Path) -> dict[str, Any]:
    """The content as the server stores and hashes it: its request model, then the domain's
    normalisation (so equal content here means an equal hash there)."""
    try:
        return normalise_content(Content.model_validate(raw).as_domain())
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        raise CliError(f"{where}: content.{field}: {first['msg']}") from None
    except InvalidInput as error:
        raise CliError(f"{where}: {error.detail} ({error.field})") from None


def _metadata(path: Path) -> dict[str, Any]:
    try:
        meta = yaml.safe_load(_read(path)) or {}
    except yaml.YAMLError as error:
        raise CliError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(meta, dict):
        raise CliError(f"{path} must be a mapping (model:, params:, eval:, owners:)")
    unknown = sorted(set(meta) - set(METADATA_KEYS))
    if unknown:
        raise CliError(
            f"{path}: unknown key {unknown[0]!r}; the keys are {', '.join(METADATA_KEYS)} "
            "(free-form data goes under metadata:)"
        )
    if not isinstance(meta.get("model"), dict):
        raise CliError(f"{path}: model: is required, with provider and name")
    return meta


def _table(meta: dict[str, Any], key: str, folder: Path) -> dict[str, Any]:
    value = meta.get(key) or {}
    if not isinstance(value, dict):
        raise CliError(f"{folder / METADATA}: {key} must be a mapping")
    return dict(value)


def _examples(path: Path) -> list[dict[str, Any]]:
    examples = []
    for number, line in enumerate(_read(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            examples.append(normalise_example(json.loads(line), f"line {number}"))
        except ValueError as error:
            raise CliError(f"{path}: line {number} is not JSON ({error})") from None
        except InvalidInput as error:
            raise CliError(f"{path}: {error.detail}") from None
    return examples


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise CliError(f"cannot read {path}: {error}") from None


def _git(where: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(where), *args], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


# --- syncing -------------------------------------------------------------------------------


def sync_prompt(
    server: Server, args: argparse.Namespace, local: LocalPrompt, git_commit: str | None
) -> dict[str, Any]:
    """Create or commit as needed; then the dataset. The outcome as printed with --json."""
    source = f"{local.path} @ {git_commit[:12]}" if git_commit else local.path
    message = args.message or f"push from {source}"
    outcome: dict[str, Any] = {"name": local.name, "path": local.path}
    found = server.raw("GET", f"/v1/prompts/{local.name}")
    write = {
        "content": local.content,
        "message": message,
        "git_sha": git_commit,
        "git_path": local.path,
    }
    if found.status_code == 404 and is_problem(found, "prompt_not_found"):
        outcome.update(action="created", version=1, content_hash=local.content_hash)
        if not args.dry_run:
            body = {"name": local.name, "title": local.title, **write}
            body["description"] = local.description
            created = server.send("POST", "/v1/prompts", expect=(201,), json=body)
            outcome.update(_committed(created["version"]), position=created["position"])
    elif found.status_code != 200:
        raise problem_error(found)
    else:
        head = found.json()["head"]
        if head is not None and head["content_hash"] == local.content_hash:
            outcome.update(action="unchanged", version=head["number"])
            outcome["content_hash"] = head["content_hash"]
        else:
            number = (head["number"] + 1) if head else 1
            outcome.update(action="committed", version=number, content_hash=local.content_hash)
            if not args.dry_run:
                path = f"/v1/prompts/{local.name}/versions"
                committed = server.send("POST", path, expect=(200, 201), json=write)
                outcome.update(_committed(committed), position=committed["position"])
                if not committed["created"]:  # equal to the head after all: nothing written
                    outcome["action"] = "unchanged"
    outcome["dataset"] = None
    if local.examples is not None:
        outcome["dataset"] = sync_dataset(server, args, local)
    return outcome


def _committed(version: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": version["number"],
        "content_hash": version["content_hash"],
        "warnings": version["warnings"],
    }


def sync_dataset(server: Server, args: argparse.Namespace, local: LocalPrompt) -> dict[str, Any]:
    """Append the examples whose id the dataset lacks; name those stored with other content."""
    name, examples = local.name, local.examples or []
    found = server.raw("GET", f"/v1/datasets/{name}")
    if found.status_code == 404 and is_problem(found, "dataset_not_found"):
        outcome = {"name": name, "action": "created", "added": len(examples), "changed_ids": []}
        if not args.dry_run:
            body = {
                "name": name,
                "description": f"eval examples of {local.path}",
                "examples": examples,
                "message": f"push from {local.path}",
            }
            written = server.send("POST", "/v1/datasets", expect=(201,), json=body)
            outcome.update(version=written["version"], count=written["count"])
        return outcome
    if found.status_code != 200:
        raise problem_error(found)
    stored = _stored_examples(server, name, found.json()["latest_version"])
    new = [example for example in examples if example["id"] not in stored]
    changed = [e["id"] for e in examples if e["id"] in stored and stored[e["id"]] != e]
    outcome = {"name": name, "added": len(new), "changed_ids": changed}
    outcome["action"] = "appended" if new else "unchanged"
    dataset = found.json()
    outcome.update(version=dataset["latest_version"], count=dataset["example_count"])
    if new and not args.dry_run:
        written = server.send(
            "POST",
            f"/v1/datasets/{name}/examples",
            expect=(201,),
            json={"examples": new, "message": f"push from {local.path}"},
        )
        outcome.update(version=written["version"], count=written["count"])
    return outcome


def _stored_examples(server: Server, name: str, version: int | None) -> dict[str, Any]:
    if not version:
        return {}
    response = server.raw("GET", f"/v1/datasets/{name}/versions/{version}/download")
    if response.status_code != 200:
        raise problem_error(response)
    stored = (json.loads(line) for line in response.text.splitlines() if line.strip())
    return {example["id"]: example for example in stored}


def describe(outcome: dict[str, Any], dry_run: bool) -> list[str]:
    """One line per prompt, one per dataset, and the warnings."""
    would = "would be " if dry_run else ""
    name, action, version = outcome["name"], outcome["action"], outcome["version"]
    digest = outcome["content_hash"].removeprefix("sha256:")[:12]
    if action == "unchanged":
        lines = [f"{name}: unchanged (v{version}, {digest})"]
    else:
        lines = [f"{name}: {would}{action} v{version} ({digest}) from {outcome['path']}"]
    lines += [f"  warning: {warning}" for warning in outcome.get("warnings", [])]
    dataset = outcome.get("dataset")
    if dataset is not None:
        if dataset["action"] == "unchanged":
            lines.append(f"  dataset {dataset['name']}: unchanged (v{dataset['version']})")
        else:
            where = f" -> v{dataset['version']}" if "version" in dataset and not dry_run else ""
            lines.append(
                f"  dataset {dataset['name']}: {would}{dataset['action']}, "
                f"+{dataset['added']} examples{where}"
            )
        if dataset["changed_ids"]:
            lines.append(
                f"  warning: examples {', '.join(dataset['changed_ids'])} differ from the stored "
                "ones and were not sent: examples are immutable; give a changed example a new id"
            )
    return lines
