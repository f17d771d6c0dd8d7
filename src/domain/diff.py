"""Word-level differences between two versions' contents, field by field."""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

__all__ = [
    "Change",
    "ContentDiff",
    "DiffToken",
    "FieldDiff",
    "Op",
    "diff_contents",
    "diff_text",
    "tokenize",
]

Op = Literal["equal", "insert", "delete"]
Change = Literal["modified", "added", "removed", "unchanged"]

# Whitespace runs are tokens of their own so that joining tokens rebuilds the text exactly.
_TOKEN = re.compile(r"\s+|\w+|[^\w\s]")


class DiffToken(TypedDict):
    """A run of text that is the same in both versions, or only in the old or the new one."""

    op: Op
    text: str


@dataclass(frozen=True)
class FieldDiff:
    """How one field of the content (`messages[0].content`, `model.temperature`, …) changed."""

    path: str
    change: Change
    tokens: list[DiffToken]

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "change": self.change,
            "tokens": [dict(token) for token in self.tokens],
        }

    def marked_text(self) -> str:
        """The field as wdiff writes it: `[-deleted-]` and `{+inserted+}` inline."""
        parts: list[str] = []
        for token in self.tokens:
            if token["op"] == "delete":
                parts.append(f"[-{token['text']}-]")
            elif token["op"] == "insert":
                parts.append(f"{{+{token['text']}+}}")
            else:
                parts.append(token["text"])
        return "".join(parts)


@dataclass(frozen=True)
class ContentDiff:
    """Every field of two contents compared; unchanged template fields kept for context."""

    fields: list[FieldDiff]

    @property
    def changed(self) -> bool:
        return any(field.change != "unchanged" for field in self.fields)

    def to_dict(self) -> dict[str, Any]:
        return {"fields": [field.to_dict() for field in self.fields], "changed": self.changed}

    def unified(self, from_label: str, to_label: str) -> str:
        """A readable rendering of the changed fields, for terminals and review comments."""
        lines = [f"--- {from_label}", f"+++ {to_label}"]
        for field in self.fields:
            if field.change == "unchanged":
                continue
            lines.append(f"@@ {field.path} @@")
            lines.append(field.marked_text().removesuffix("\n"))
        return "\n".join(lines) + "\n"


def tokenize(text: str) -> list[str]:
    """Split text into words, single punctuation marks and whitespace runs."""
    return _TOKEN.findall(text)


def diff_text(old: str, new: str) -> list[DiffToken]:
    """Word-level diff of two texts as merged equal/delete/insert runs."""
    old_tokens, new_tokens = tokenize(old), tokenize(new)
    # autojunk would treat frequent tokens (spaces, "the") as junk in long prompts and give
    # diffs that jump around.
    matcher = difflib.SequenceMatcher(None, old_tokens, new_tokens, autojunk=False)
    runs: list[tuple[Op, str]] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag in ("delete", "replace"):
            runs.append(("delete", "".join(old_tokens[i1:i2])))
        if tag in ("insert", "replace"):
            runs.append(("insert", "".join(new_tokens[j1:j2])))
        if tag == "equal":
            runs.append(("equal", "".join(old_tokens[i1:i2])))
    return _merged(runs)


def diff_contents(old: Mapping[str, Any], new: Mapping[str, Any]) -> ContentDiff:
    """Compare two version contents field by field, messages by index, the model key by key."""
    fields: list[FieldDiff] = []
    fields.extend(_skip_unchanged([_field("type", old.get("type"), new.get("type"))]))
    fields.extend(_message_fields(old.get("messages") or [], new.get("messages") or []))
    if old.get("text") is not None or new.get("text") is not None:
        fields.append(_field("text", old.get("text"), new.get("text")))
    fields.extend(_skip_unchanged(_model_fields(old.get("model") or {}, new.get("model") or {})))
    for key in ("output_schema", "metadata"):
        old_json, new_json = _canonical_json(old.get(key)), _canonical_json(new.get(key))
        fields.extend(_skip_unchanged([_field(key, old_json, new_json)]))
    return ContentDiff(fields=fields)


def _message_fields(
    old: list[Mapping[str, Any]], new: list[Mapping[str, Any]]
) -> Iterator[FieldDiff]:
    for index in range(max(len(old), len(new))):
        old_message = old[index] if index < len(old) else None
        new_message = new[index] if index < len(new) else None
        for key in ("role", "content"):
            yield _field(
                f"messages[{index}].{key}",
                None if old_message is None else str(old_message.get(key) or ""),
                None if new_message is None else str(new_message.get(key) or ""),
            )


def _model_fields(old: Mapping[str, Any], new: Mapping[str, Any]) -> Iterator[FieldDiff]:
    keys = list(old) + [key for key in new if key not in old]
    for key in keys:
        old_value = _json_value(old[key]) if key in old else None
        new_value = _json_value(new[key]) if key in new else None
        field = _field(f"model.{key}", old_value, new_value)
        if field.change == "modified" and old_value is not None and new_value is not None:
            # A setting is one value: "0.[-2-]{+7+}" reads worse than "[-0.2-]{+0.7+}".
            field = FieldDiff(
                field.path, "modified", _merged([("delete", old_value), ("insert", new_value)])
            )
        yield field


def _field(path: str, old: str | None, new: str | None) -> FieldDiff:
    """Diff one field; None means the field is absent from that version."""
    if old is None and new is None:
        return FieldDiff(path, "unchanged", [])
    if old is None:
        return FieldDiff(path, "added", _merged([("insert", str(new))]))
    if new is None:
        return FieldDiff(path, "removed", _merged([("delete", old)]))
    if old == new:
        return FieldDiff(path, "unchanged", _merged([("equal", old)]))
    return FieldDiff(path, "modified", diff_text(old, new))


def _skip_unchanged(fields: Iterable[FieldDiff]) -> Iterator[FieldDiff]:
    # Unchanged settings are noise to a reviewer; unchanged prompt text is kept as context.
    return (field for field in fields if field.change != "unchanged")


def _json_value(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _canonical_json(value: Any) -> str | None:
    if value is None:
        return None
    return json.dumps(value, sort_keys=True, indent=2, ensure_ascii=False)


def _merged(runs: list[tuple[Op, str]]) -> list[DiffToken]:
    tokens: list[DiffToken] = []
    for op, text in runs:
        if not text:
            continue
        if tokens and tokens[-1]["op"] == op:
            tokens[-1]["text"] += text
        else:
            tokens.append({"op": op, "text": text})
    return tokens
