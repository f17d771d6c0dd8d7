"""Word-level diffs between two versions' contents."""

from __future__ import annotations

import copy
import itertools
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from promptrecord.domain.diff import DiffToken, FieldDiff, diff_contents, diff_text, tokenize

MODEL = {
    "provider": "anthropic",
    "name": "claude-sonnet-4-6",
    "temperature": 0.2,
    "max_tokens": 512,
}


def chat(*contents: str, model: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "type": "chat",
        "messages": [
            {"role": "system" if index == 0 else "user", "content": content}
            for index, content in enumerate(contents)
        ],
        "model": dict(model or MODEL),
        "output_schema": None,
        "metadata": {},
    }


def field(diff_fields: list[FieldDiff], path: str) -> FieldDiff:
    return next(f for f in diff_fields if f.path == path)


def rebuild(tokens: list[DiffToken], keep: str) -> str:
    return "".join(token["text"] for token in tokens if token["op"] in ("equal", keep))


def test_tokenize_keeps_every_character() -> None:
    assert tokenize("Hi,  you\n") == ["Hi", ",", "  ", "you", "\n"]


def test_four_word_edit_gives_the_expected_tokens() -> None:
    diff = diff_contents(
        chat("Answer briefly and politely"), chat("Answer briefly, politely and accurately")
    )
    content = field(diff.fields, "messages[0].content")
    assert content.change == "modified"
    assert content.tokens == [
        {"op": "equal", "text": "Answer briefly"},
        {"op": "insert", "text": ", politely"},
        {"op": "equal", "text": " and "},
        {"op": "delete", "text": "politely"},
        {"op": "insert", "text": "accurately"},
    ]


def test_replace_becomes_delete_then_insert() -> None:
    assert diff_text("say hello", "say goodbye") == [
        {"op": "equal", "text": "say "},
        {"op": "delete", "text": "hello"},
        {"op": "insert", "text": "goodbye"},
    ]


def test_unchanged_message_fields_are_kept_for_context() -> None:
    diff = diff_contents(chat("same", "old"), chat("same", "new"))
    assert [(f.path, f.change) for f in diff.fields] == [
        ("messages[0].role", "unchanged"),
        ("messages[0].content", "unchanged"),
        ("messages[1].role", "unchanged"),
        ("messages[1].content", "modified"),
    ]
    assert field(diff.fields, "messages[0].content").tokens == [{"op": "equal", "text": "same"}]


def test_added_message_is_all_insert() -> None:
    diff = diff_contents(chat("system"), chat("system", "{{ question }}"))
    role = field(diff.fields, "messages[1].role")
    content = field(diff.fields, "messages[1].content")
    assert (role.change, role.tokens) == ("added", [{"op": "insert", "text": "user"}])
    assert (content.change, content.tokens) == (
        "added",
        [{"op": "insert", "text": "{{ question }}"}],
    )


def test_removed_message_is_all_delete() -> None:
    diff = diff_contents(chat("system", "gone now"), chat("system"))
    content = field(diff.fields, "messages[1].content")
    assert (content.change, content.tokens) == ("removed", [{"op": "delete", "text": "gone now"}])
    assert field(diff.fields, "messages[1].role").change == "removed"


def test_changed_role_is_reported() -> None:
    new = chat("a", "b")
    new["messages"][1]["role"] = "assistant"
    assert field(diff_contents(chat("a", "b"), new).fields, "messages[1].role").change == (
        "modified"
    )


def test_model_temperature_change_only_lists_changed_keys() -> None:
    diff = diff_contents(chat("x"), chat("x", model={**MODEL, "temperature": 0.7}))
    model_fields = [f for f in diff.fields if f.path.startswith("model.")]
    assert model_fields == [
        FieldDiff(
            "model.temperature",
            "modified",
            [{"op": "delete", "text": "0.2"}, {"op": "insert", "text": "0.7"}],
        )
    ]


def test_model_keys_added_and_removed() -> None:
    old_model = {k: v for k, v in MODEL.items() if k != "max_tokens"}
    diff = diff_contents(chat("x", model=old_model), chat("x", model={**MODEL, "top_p": 0.9}))
    assert field(diff.fields, "model.max_tokens").tokens == [{"op": "insert", "text": "512"}]
    assert field(diff.fields, "model.top_p").change == "added"
    name_change = diff_contents(chat("x"), chat("x", model={**MODEL, "name": "gpt-4o"}))
    assert field(name_change.fields, "model.name").tokens == [
        {"op": "delete", "text": '"claude-sonnet-4-6"'},
        {"op": "insert", "text": '"gpt-4o"'},
    ]


def test_output_schema_and_metadata_compared_as_canonical_json() -> None:
    old = chat("x")
    new = chat("x")
    new["output_schema"] = {"type": "object", "properties": {"a": {"type": "string"}}}
    new["metadata"] = {"owners": ["ana"]}
    diff = diff_contents(old, new)
    schema = field(diff.fields, "output_schema")
    assert schema.change == "added"
    assert rebuild(schema.tokens, "insert") == json.dumps(
        new["output_schema"], sort_keys=True, indent=2
    )
    metadata = field(diff.fields, "metadata")
    assert metadata.change == "modified"
    assert rebuild(metadata.tokens, "delete") == "{}"


def test_key_order_in_json_fields_is_not_a_change() -> None:
    old, new = chat("x"), chat("x")
    old["output_schema"] = {"a": 1, "b": 2}
    new["output_schema"] = {"b": 2, "a": 1}
    assert not diff_contents(old, new).changed


def test_type_change_from_text_to_chat() -> None:
    old = {"type": "text", "text": "Summarise {{ doc }}", "model": MODEL, "metadata": {}}
    diff = diff_contents(old, chat("Summarise {{ doc }}"))
    assert field(diff.fields, "type").change == "modified"
    assert field(diff.fields, "text").change == "removed"
    assert field(diff.fields, "messages[0].content").change == "added"


def test_identical_contents_are_not_changed() -> None:
    content = chat("You help {{ customer }}.", "{{ question }}")
    diff = diff_contents(content, copy.deepcopy(content))
    assert diff.changed is False
    assert diff.to_dict()["changed"] is False
    assert all(f.change == "unchanged" for f in diff.fields)
    assert diff.unified("v1", "v2") == "--- v1\n+++ v2\n"


def test_to_dict_is_json_ready() -> None:
    diff = diff_contents(chat("a b"), chat("a c"))
    data = diff.to_dict()
    assert data["changed"] is True
    assert json.loads(json.dumps(data)) == data
    assert data["fields"][1] == {
        "path": "messages[0].content",
        "change": "modified",
        "tokens": [
            {"op": "equal", "text": "a "},
            {"op": "delete", "text": "b"},
            {"op": "insert", "text": "c"},
        ],
    }


def test_unified_rendering_marks_changes_inline_and_omits_unchanged_fields() -> None:
    diff = diff_contents(
        chat("Stay calm", "Answer briefly and politely"),
        chat(
            "Stay calm",
            "Answer briefly, politely and accurately",
            model={**MODEL, "temperature": 0.7},
        ),
    )
    assert diff.unified("support-bot v3", "support-bot v4") == (
        "--- support-bot v3\n"
        "+++ support-bot v4\n"
        "@@ messages[1].content @@\n"
        "Answer briefly{+, politely+} and [-politely-]{+accurately+}\n"
        "@@ model.temperature @@\n"
        "[-0.2-]{+0.7+}\n"
    )


# Prompt-like text: a small vocabulary so that two draws share words and the diff has
# equal runs to find, not just one delete and one insert.
_PROMPT_TEXT = st.lists(
    st.sampled_from(
        ["Answer", "briefly", "and", "the", "é", "日本", "{{ q }}", " ", "  ", "\n", ",", "."]
    ),
    max_size=40,
).map("".join)


@given(old=_PROMPT_TEXT, new=_PROMPT_TEXT)
def test_tokens_rebuild_both_texts(old: str, new: str) -> None:
    tokens = diff_text(old, new)
    assert rebuild(tokens, "delete") == old
    assert rebuild(tokens, "insert") == new
    assert all(token["text"] for token in tokens)
    assert all(a["op"] != b["op"] for a, b in itertools.pairwise(tokens))


@given(old=st.text(max_size=80), new=st.text(max_size=80))
def test_tokens_rebuild_any_unicode_text(old: str, new: str) -> None:
    diff = diff_contents({"type": "text", "text": old}, {"type": "text", "text": new})
    tokens = field(diff.fields, "text").tokens
    assert rebuild(tokens, "delete") == old
    assert rebuild(tokens, "insert") == new
