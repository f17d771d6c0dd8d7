"""How the SDK speaks to the server: the request for a prompt, and what an answer means."""

from __future__ import annotations

import hashlib
import re
from typing import Any
from urllib.parse import quote

import httpx

from promptrecord import __version__
from promptrecord.sdk.errors import problem_error
from promptrecord.sdk.prompt import Prompt

__all__ = ["Unreachable", "headers", "key_scope", "prompt_from", "request_for"]

USER_AGENT = f"promptrecord-sdk/{__version__}"
_TOKEN = re.compile(r"^pr_([A-Za-z0-9]+)_")
# Answers that say "not now" rather than "no": the server or a proxy in front of it is
# overloaded, restarting or timing out, so the caller's fallbacks stand in.
_TRANSIENT = frozenset({408, 425, 429})


class Unreachable(Exception):
    """The server did not give a usable answer: connection error, timeout, 5xx, 429."""


def headers(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}", "User-Agent": USER_AGENT}


def key_scope(base_url: str, api_key: str) -> str:
    """What separates one server-and-workspace's snapshots from another's: the server URL and
    the key's public id (never the secret; an unrecognised token is hashed)."""
    match = _TOKEN.match(api_key)
    key_id = match.group(1) if match else hashlib.sha256(api_key.encode()).hexdigest()[:16]
    return f"{base_url}#{key_id}"


def request_for(
    name: str, environment: str, tenant: str | None, key: str | None, version: int | None
) -> tuple[str, dict[str, str]]:
    """The path and query that answer `get(name, tenant, key, version)`."""
    quoted = quote(name, safe="")
    if version is not None:
        return f"/v1/prompts/{quoted}/versions/{int(version)}", {}
    params = {"environment": environment}
    if tenant is not None:
        params["tenant"] = tenant
    if key is not None:
        params["key"] = key
    return f"/v1/prompts/{quoted}/resolve", params


def prompt_from(
    response: httpx.Response, name: str, environment: str, version: int | None
) -> Prompt:
    """The prompt in a 2xx answer; `Unreachable` for a transient failure; the matching
    `ServerProblem` for a 4xx."""
    status = response.status_code
    if status >= 500 or status in _TRANSIENT:
        raise Unreachable(f"HTTP {status} from {response.request.url}")
    body = _json(response)
    if status >= 400:
        problem = body if isinstance(body, dict) else {"detail": response.text[:500]}
        raise problem_error(status, problem)
    if not isinstance(body, dict):
        raise Unreachable(f"HTTP {status} from {response.request.url} is not a JSON object")
    try:
        if version is not None:
            return Prompt.from_version(name, environment, body)
        return Prompt.from_resolved(body)
    except (KeyError, TypeError, ValueError) as error:
        raise Unreachable(f"the answer of {response.request.url} lacks {error}") from error


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
