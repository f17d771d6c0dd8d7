"""The CLI's HTTP client: where the server is and which key to use, problems as exit codes.

Each setting is taken from the first place that has it: the command-line flag, the
environment (`PROMPTRECORD_URL`, `PROMPTRECORD_API_KEY`, `PROMPTRECORD_WORKSPACE`,
`PROMPTRECORD_PROFILE`), the config file (`$XDG_CONFIG_HOME/promptrecord/config.toml`, else
`~/.config/promptrecord/config.toml`: the `[default]` table, overlaid by the table named by
`--profile`), and last the admin key `promptrecord serve` wrote (PROMPTRECORD_ADMIN_KEY_FILE).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from promptrecord import __version__
from promptrecord.settings import Settings

EXIT_OK, EXIT_REFUSED, EXIT_ERROR = 0, 1, 2
CONFIG_KEYS = ("url", "api_key", "workspace")
CONFIG_EXAMPLE = """\
[default]
url = "https://prompts.example.com"
api_key = "pr_…"

[staging]
url = "https://prompts-staging.example.com"
"""


class CliError(Exception):
    """Something to say on stderr, and the exit code that goes with it."""

    def __init__(self, message: str, code: int = EXIT_ERROR, problem: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.problem = problem


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "promptrecord" / "config.toml"


def read_config(path: Path, profile: str | None) -> dict[str, str]:
    """The `[default]` table overlaid by `[profile]`; a missing file is an empty config."""
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        if profile:
            raise CliError(f"profile {profile!r} asked for, but there is no {path}") from None
        return {}
    except tomllib.TOMLDecodeError as error:
        raise CliError(f"{path} is not valid TOML: {error}") from None
    except OSError as error:
        raise CliError(f"cannot read {path}: {error.strerror}") from None
    if profile and profile not in data:
        known = ", ".join(sorted(data)) or "none"
        raise CliError(f"{path} has no [{profile}] table for --profile (tables: {known})")
    merged: dict[str, str] = {}
    for table in ("default", profile) if profile else ("default",):
        values = data.get(table, {})
        if not isinstance(values, dict):
            raise CliError(f"{path}: {table} must be a table, e.g.\n{CONFIG_EXAMPLE}")
        for key, value in values.items():
            if key not in CONFIG_KEYS:
                raise CliError(
                    f"{path}: unknown key {table}.{key}; the keys are {', '.join(CONFIG_KEYS)}"
                )
            if not isinstance(value, str) or not value.strip():
                raise CliError(f"{path}: {table}.{key} must be a non-empty string")
            merged[key] = value.strip()
    return merged


@dataclass(frozen=True)
class Connection:
    """Where the server is and how to sign in, and where each came from (for messages)."""

    url: str
    key: str | None
    workspace: str | None
    url_source: str
    key_source: str | None


def resolve_connection(args: argparse.Namespace) -> Connection:
    """Flags, then the environment, then the config file, then the admin key file."""
    env = os.environ
    profile = getattr(args, "profile", None) or env.get("PROMPTRECORD_PROFILE")
    path = config_path()
    config = read_config(path, profile)
    url, url_source = _first(
        (getattr(args, "url", None), "--url"),
        (env.get("PROMPTRECORD_URL"), "PROMPTRECORD_URL"),
        (config.get("url"), str(path)),
    )
    key, key_source = _first(
        (getattr(args, "key", None), "--key"),
        (env.get("PROMPTRECORD_API_KEY"), "PROMPTRECORD_API_KEY"),
        (config.get("api_key"), str(path)),
    )
    workspace, _ = _first(
        (getattr(args, "workspace", None), "--workspace"),
        (env.get("PROMPTRECORD_WORKSPACE"), "PROMPTRECORD_WORKSPACE"),
        (config.get("workspace"), str(path)),
    )
    if url is None or key is None:
        settings = Settings()
        if url is None:
            url, url_source = f"http://{settings.host}:{settings.port}", "default"
        if key is None and settings.admin_key_file.is_file():
            key = settings.admin_key_file.read_text().strip() or None
            key_source = str(settings.admin_key_file)
    assert url is not None
    return Connection(url, key, workspace, url_source or "default", key_source)


def server_configured(args: argparse.Namespace) -> bool:
    """Whether a server URL was given anywhere (flag, environment or config file)."""
    if getattr(args, "url", None) or os.environ.get("PROMPTRECORD_URL"):
        return True
    profile = getattr(args, "profile", None) or os.environ.get("PROMPTRECORD_PROFILE")
    return "url" in read_config(config_path(), profile)


def _first(*candidates: tuple[str | None, str]) -> tuple[str | None, str | None]:
    for value, source in candidates:
        if value:
            return value, source
    return None, None


class Server:
    """An httpx client for the API, turning transport failures and problems into CliErrors."""

    def __init__(self, url: str, key: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.client = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {key}", "User-Agent": f"promptrecord/{__version__}"},
            timeout=timeout,
        )

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.client.close()

    def send(self, method: str, path: str, expect: tuple[int, ...] = (200,), **kw: Any) -> Any:
        response = self.raw(method, path, **kw)
        if response.status_code not in expect:
            raise problem_error(response)
        return response.json()

    def raw(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            return self.client.request(method, path, **kw)
        except httpx.TransportError as error:
            raise CliError(
                f"cannot reach the promptrecord server at {self.url} ({error or type(error)}); "
                "start it with `promptrecord serve`, or point --url / PROMPTRECORD_URL at it"
            ) from None

    def pages(self, path: str, **params: Any) -> Iterator[dict[str, Any]]:
        query = {**params, "limit": 200}
        while True:
            page = self.send("GET", path, params=query)
            yield from page["items"]
            if not page.get("next_cursor"):
                return
            query["cursor"] = page["next_cursor"]


# Answers meaning "a rule says no": forbidden by a role or policy, a conflict (gate, stale
# revision, nothing to roll back). A pipeline treats these as a decision (exit 1); a bad
# option, an unknown name, a wrong key or a server fault means the pipeline itself is
# broken (exit 2), so the two must not share an exit code.
REFUSAL_STATUSES = frozenset({403, 409, 412})
# Answers that say "the state does not allow it" though their status is 404: nothing
# serves there (so nothing to roll back, gate against or audit), or the prompt is archived.
REFUSAL_CODES = frozenset({"not_deployed", "prompt_archived"})


def is_refusal(status: int, code: str | None) -> bool:
    """Whether a problem is a decision (exit 1) rather than a broken call (exit 2)."""
    return status in REFUSAL_STATUSES or code in REFUSAL_CODES


def problem_error(response: httpx.Response) -> CliError:
    """A refusal by a rule exits 1; bad input, unknown names, bad keys and faults exit 2."""
    try:
        body = response.json()
    except ValueError:
        body = None
    problem_code = body.get("code") if isinstance(body, dict) else None
    code = EXIT_REFUSED if is_refusal(response.status_code, problem_code) else EXIT_ERROR
    if isinstance(body, dict) and "detail" in body:
        marks = [f"field {body['field']}" if body.get("field") else "", body.get("code") or ""]
        shown = ", ".join(mark for mark in marks if mark)
        return CliError(f"{body['detail']}" + (f" ({shown})" if shown else ""), code, body)
    return CliError(f"the server answered {response.status_code}: {response.text[:200]}", code)


def is_problem(response: httpx.Response, code: str) -> bool:
    try:
        return bool(response.json().get("code") == code)
    except (ValueError, AttributeError):
        return False


def connect(args: argparse.Namespace) -> Server:
    found = resolve_connection(args)
    if not found.key:
        raise CliError(
            "no API key: pass --key, set PROMPTRECORD_API_KEY, put api_key in "
            f"{config_path()}, or run where `promptrecord serve` wrote "
            f"{Settings().admin_key_file}"
        )
    return Server(found.url, found.key)


Command = Callable[[Server, argparse.Namespace], int]


def run(args: argparse.Namespace, command: Command) -> int:
    """Connect, run `command`, and report a CliError on stderr with its exit code."""
    try:
        with connect(args) as server:
            return command(server, args)
    except CliError as error:
        report(args, error)
        return error.code


def report(args: argparse.Namespace, error: CliError) -> None:
    """The whole problem as JSON with --json, else one line naming detail, field and code."""
    if getattr(args, "json", False) and error.problem is not None:
        print(json.dumps(error.problem), file=sys.stderr)
    else:
        refused = "refused: " if error.code == EXIT_REFUSED else ""
        print(f"promptrecord {args.command}: {refused}{error.message}", file=sys.stderr)


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def connection_args(parser: argparse.ArgumentParser, json_flag: bool = True) -> None:
    """--url, --key, --profile (and --json) on a command that talks to the server."""
    parser.add_argument(
        "--url", help="the server (default PROMPTRECORD_URL, the config file, 127.0.0.1:8000)"
    )
    parser.add_argument(
        "--key", help="API key (default PROMPTRECORD_API_KEY, the config file, the admin key)"
    )
    parser.add_argument(
        "--profile", help="a table of the config file to use over [default] (PROMPTRECORD_PROFILE)"
    )
    if json_flag:
        parser.add_argument("--json", action="store_true", help="print JSON")
