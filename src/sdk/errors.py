"""What the SDK raises: the server's refusals, an unreachable server, and rendering faults."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "AuthError",
    "MissingVariable",
    "PromptArchived",
    "PromptNotFound",
    "PromptRecordError",
    "PromptUnavailable",
    "RenderError",
    "RequestRefused",
    "ServerProblem",
    "problem_error",
]


class PromptRecordError(Exception):
    """Base of every error the SDK raises."""


class ServerProblem(PromptRecordError):
    """The server answered with an RFC 9457 problem (a 4xx): retrying will not help.

    `status`, `code`, `field` and `detail` come from the problem; `problem` is all of it.
    """

    def __init__(self, status: int, problem: Mapping[str, Any]) -> None:
        self.status = status
        self.problem = dict(problem)
        self.code: str = str(problem.get("code") or f"http_{status}")
        self.field: str | None = problem.get("field")
        self.detail: str = str(problem.get("detail") or problem.get("title") or f"HTTP {status}")
        where = f" (field {self.field})" if self.field else ""
        super().__init__(f"{status} {self.code}: {self.detail}{where}")


class AuthError(ServerProblem):
    """401 or 403: the API key is unknown, revoked, or not allowed this prompt or environment."""


class PromptNotFound(ServerProblem):
    """404: no such prompt, version or environment, or nothing is deployed (see `code`)."""


class PromptArchived(ServerProblem):
    """409 `prompt_archived`: the prompt exists but cannot be served."""


class RequestRefused(ServerProblem):
    """Any other 4xx, such as 422 for a malformed tenant or routing key."""


class PromptUnavailable(PromptRecordError):
    """The server could not be reached and neither a snapshot nor a fallback could stand in.

    `attempts` lists what was tried, in order, each with why it did not answer.
    """

    def __init__(self, name: str, attempts: Sequence[str]) -> None:
        self.name = name
        self.attempts = list(attempts)
        tried = "; ".join(self.attempts)
        super().__init__(
            f"prompt {name!r} is unavailable: {tried} — check that the server is reachable, "
            "or pass fallback= to get()"
        )


class MissingVariable(PromptRecordError):
    """A template uses a variable that was not passed to `compile`; `variable` names it."""

    def __init__(self, variable: str, path: str) -> None:
        self.variable = variable
        self.path = path
        self.field = f"variables.{variable}"
        super().__init__(
            f"variable {variable!r} is used in {path} but was not passed — pass it to compile()"
        )


class RenderError(PromptRecordError):
    """A template could not be rendered with these variables (not a missing variable)."""

    def __init__(self, message: str, field: str) -> None:
        self.field = field
        super().__init__(message)


_BY_STATUS: dict[int, type[ServerProblem]] = {401: AuthError, 403: AuthError, 404: PromptNotFound}


def problem_error(status: int, problem: Mapping[str, Any]) -> ServerProblem:
    """The exception for a 4xx answer carrying `problem`."""
    if status == 409 and problem.get("code") == "prompt_archived":
        return PromptArchived(status, problem)
    return _BY_STATUS.get(status, RequestRefused)(status, problem)
