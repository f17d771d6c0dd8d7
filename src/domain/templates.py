"""Parse, inspect and render a version's Jinja2 templates in an immutable sandbox."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, UndefinedError, meta
from jinja2.lexer import Token, TokenStream
from jinja2.parser import Parser
from jinja2.sandbox import ImmutableSandboxedEnvironment

from promptrecord.domain.errors import InvalidInput

__all__ = [
    "Rendered",
    "check_templates",
    "extract_variables",
    "render",
    "template_fields",
]

# Immutable so a template cannot mutate objects the application passes in (lists, dicts);
# StrictUndefined so a forgotten variable is an error instead of an empty string in a prompt.
_ENV = ImmutableSandboxedEnvironment(
    undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True
)

_NEWLINE = re.compile(r"\r\n|\r")
_QUOTED_NAME = re.compile(r"'([^']+)'")


@dataclass(frozen=True)
class Rendered:
    """A version's content with its variables filled in; `unused` lists names passed in vain."""

    messages: list[dict[str, str]] | None
    text: str | None
    unused: list[str]


def template_fields(content: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The (field path, template source) pairs of a chat or text content."""
    kind = content.get("type")
    if kind == "chat":
        return [
            (f"messages[{index}].content", str(message.get("content") or ""))
            for index, message in enumerate(content.get("messages") or [])
        ]
    if kind == "text":
        return [("text", str(content.get("text") or ""))]
    raise InvalidInput(
        f"content type {kind!r} is not known — use 'chat' or 'text'",
        field="type",
        code="invalid_content_type",
    )


def check_templates(content: Mapping[str, Any]) -> None:
    """Refuse content whose templates do not compile, naming the field, line and column."""
    for path, source in template_fields(content):
        _compiled_at(path, source)


def extract_variables(content: Mapping[str, Any]) -> list[str]:
    """The sorted names a caller must (or may) pass to render this content."""
    names: set[str] = set()
    for path, source in template_fields(content):
        _compiled_at(path, source)
        names |= _variables(source)
    return sorted(names)


def render(content: Mapping[str, Any], variables: Mapping[str, Any]) -> Rendered:
    """Fill the content's templates with `variables`; a missing variable is an error naming it."""
    used: set[str] = set()
    outputs: list[str] = []
    for path, source in template_fields(content):
        template = _compiled_at(path, source)
        used |= _variables(source)
        outputs.append(_render_field(path, source, template, variables))
    unused = sorted(set(variables) - used)
    if content.get("type") == "text":
        return Rendered(messages=None, text=outputs[0], unused=unused)
    messages = [
        {"role": str(message.get("role", "")), "content": output}
        for message, output in zip(content.get("messages") or [], outputs, strict=True)
    ]
    return Rendered(messages=messages, text=None, unused=unused)


@functools.lru_cache(maxsize=2048)
def _parsed(source: str) -> tuple[Template, frozenset[str]]:
    # Keyed on the source alone: the same system prompt is shared by many versions and prompts.
    # One parse serves both the compiled template and its variable list.
    tree = _ENV.parse(source)
    return _ENV.from_string(tree), frozenset(meta.find_undeclared_variables(tree))


def _compiled(source: str) -> Template:
    return _parsed(source)[0]


def _variables(source: str) -> frozenset[str]:
    return _parsed(source)[1]


def _compiled_at(path: str, source: str) -> Template:
    try:
        return _compiled(source)
    except TemplateSyntaxError as error:
        line, column = _error_position(source, error)
        message = error.message or "invalid template"
        raise InvalidInput(
            f"{path} line {line}, column {column}: {message} — fix the template syntax",
            field=path,
            code="template_syntax",
            line=line,
            column=column,
        ) from error


def _render_field(path: str, source: str, template: Template, variables: Mapping[str, Any]) -> str:
    try:
        return template.render(variables)
    except UndefinedError as error:
        missing = _missing_variable(source, variables, str(error))
        if missing is None:
            # An attribute or key of a passed value is missing, not a variable.
            raise _render_error(path, error) from error
        raise InvalidInput(
            f"variable {missing!r} is used in {path} but was not passed — pass it in variables",
            field=f"variables.{missing}",
            code="missing_variable",
            variable=missing,
        ) from error
    except Exception as error:
        # Templates are user input: whatever a filter, test or sandbox check raises is a fault in
        # the template or the variables, so it is reported as such rather than as a server error.
        raise _render_error(path, error) from error


def _missing_variable(source: str, variables: Mapping[str, Any], message: str) -> str | None:
    # StrictUndefined words a missing name exactly so; a missing attribute or key reads differently.
    for name in sorted(_variables(source) - set(variables)):
        if message == f"{name!r} is undefined":
            return name
    return None


def _render_error(path: str, error: Exception) -> InvalidInput:
    return InvalidInput(
        f"{path} could not be rendered: {error} — change the template or the variables",
        field=path,
        code="render_error",
    )


def _error_position(source: str, error: TemplateSyntaxError) -> tuple[int, int]:
    """The 1-based (line, column) of a syntax error; column 1 when it cannot be located."""
    text = _NEWLINE.sub("\n", source)
    lineno = error.lineno or 1
    try:
        offset = _failing_offset(text)
    except Exception:
        # Locating the column re-runs Jinja's lexer and parser; never let that hide the error.
        offset = None
    if offset is None:
        return lineno, _column_of_quoted_name(text, lineno, error.message or "")
    line_start = text.rfind("\n", 0, offset) + 1
    return text.count("\n", 0, offset) + 1, offset - line_start + 1


def _failing_offset(text: str) -> int | None:
    """Re-parse `text` and return the source offset where parsing failed, if it does.

    Jinja reports only a line number, so the parser is fed a token stream whose tokens
    can be traced back to where they start in the source.
    """
    trace = _TokenTrace(text)
    parser = Parser(_ENV, "")
    try:
        parser.stream = TokenStream(trace.tokens(), None, None)
        parser.parse()
    except TemplateSyntaxError:
        start = trace.starts.get(id(parser.stream.current))
        if start is not None and not trace.lexer_failed:
            return start
        # The lexer stopped, or the parser ran out of tokens: the fault is the next
        # thing after the last token read.
        rest = text[trace.end :]
        return trace.end + len(rest) - len(rest.lstrip())
    return None


class _TokenTrace:
    """Jinja's lexer, recording the source offset of every token it yields."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.starts: dict[int, int] = {}
        self.end = 0
        self.lexer_failed = False
        self._start = 0
        self._tokens: list[Token] = []  # holds tokens alive so their ids stay unique

    def tokens(self) -> Iterator[Token]:
        for token in _ENV.lexer.wrap(self._raw(), None, None):
            self.starts[id(token)] = self._start
            self._tokens.append(token)
            yield token

    def _raw(self) -> Iterator[tuple[int, str, str]]:
        try:
            for lineno, kind, value in _ENV.lexer.tokeniter(self.text, None):
                # Raw token values are verbatim slices of the source, in order.
                found = self.text.find(value, self.end)
                if found >= 0:
                    self._start, self.end = found, found + len(value)
                yield lineno, kind, value
        except TemplateSyntaxError:
            self.lexer_failed = True
            raise


def _column_of_quoted_name(text: str, lineno: int, message: str) -> int:
    # Compile-time errors such as an unknown filter quote the name; find it on its line.
    lines = text.split("\n")
    if not 1 <= lineno <= len(lines):
        return 1
    for name in _QUOTED_NAME.findall(message):
        found = re.search(rf"\b{re.escape(name)}\b", lines[lineno - 1])
        if found:
            return found.start() + 1
    return 1
