"""Render a version's templates exactly as the server's /compile does, without the server.

The same Jinja2 configuration as the server (an immutable sandbox, StrictUndefined, no
autoescape, trailing newline kept), the same fields in the same order, and the same rule
for telling a missing variable from a missing attribute. Tests hold the two equal.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, UndefinedError, meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from promptrecord.sdk.errors import MissingVariable, RenderError

__all__ = ["Rendered", "render", "template_variables"]

_ENV = ImmutableSandboxedEnvironment(
    undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True
)


@dataclass(frozen=True)
class Rendered:
    """Content with its variables filled in; `unused` lists names passed that no template uses."""

    messages: list[dict[str, str]] | None
    text: str | None
    unused: list[str]


def _fields(content: Mapping[str, Any]) -> list[tuple[str, str]]:
    kind = content.get("type")
    if kind == "chat":
        return [
            (f"messages[{index}].content", str(message.get("content") or ""))
            for index, message in enumerate(content.get("messages") or [])
        ]
    if kind == "text":
        return [("text", str(content.get("text") or ""))]
    raise RenderError(f"content type {kind!r} is not known — use 'chat' or 'text'", "type")


def render(content: Mapping[str, Any], variables: Mapping[str, Any]) -> Rendered:
    """Fill the content's templates; a missing variable raises `MissingVariable` naming it."""
    used: set[str] = set()
    outputs: list[str] = []
    for path, source in _fields(content):
        template, names = _parsed_at(path, source)
        used |= names
        outputs.append(_render_field(path, template, names, variables))
    unused = sorted(set(variables) - used)
    if content.get("type") == "text":
        return Rendered(messages=None, text=outputs[0], unused=unused)
    messages = [
        {"role": str(message.get("role", "")), "content": output}
        for message, output in zip(content.get("messages") or [], outputs, strict=True)
    ]
    return Rendered(messages=messages, text=None, unused=unused)


def template_variables(content: Mapping[str, Any]) -> list[str]:
    """The sorted names the content's templates use."""
    names: set[str] = set()
    for path, source in _fields(content):
        names |= _parsed_at(path, source)[1]
    return sorted(names)


@functools.lru_cache(maxsize=1024)
def _parsed(source: str) -> tuple[Template, frozenset[str]]:
    tree = _ENV.parse(source)
    return _ENV.from_string(tree), frozenset(meta.find_undeclared_variables(tree))


def _parsed_at(path: str, source: str) -> tuple[Template, frozenset[str]]:
    try:
        return _parsed(source)
    except TemplateSyntaxError as error:
        # Versions were checked at commit; this is reached by a fallback's own content.
        raise RenderError(
            f"{path} line {error.lineno}: {error.message or 'invalid template'} "
            "— fix the template syntax",
            path,
        ) from error


def _render_field(
    path: str, template: Template, names: frozenset[str], variables: Mapping[str, Any]
) -> str:
    try:
        return template.render(variables)
    except UndefinedError as error:
        # StrictUndefined words a missing name exactly so; a missing attribute reads differently.
        for name in sorted(names - set(variables)):
            if str(error) == f"{name!r} is undefined":
                raise MissingVariable(name, path) from error
        raise _render_error(path, error) from error
    except Exception as error:
        # Whatever a filter, test or sandbox check raises is a fault of the template or the
        # variables, reported as the server reports it.
        raise _render_error(path, error) from error


def _render_error(path: str, error: Exception) -> RenderError:
    return RenderError(
        f"{path} could not be rendered: {error} — change the template or the variables", path
    )
