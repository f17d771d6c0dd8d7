"""Templates: variable extraction, syntax errors with positions, rendering in the sandbox."""

from __future__ import annotations

from typing import Any

import pytest

from promptrecord.domain.errors import InvalidInput
from promptrecord.domain.templates import (
    Rendered,
    check_templates,
    extract_variables,
    render,
    template_fields,
)

MODEL = {"provider": "anthropic", "name": "claude-sonnet-4-6", "temperature": 0.2}


def chat(*contents: str) -> dict[str, Any]:
    roles = ["system", "user", "assistant"]
    return {
        "type": "chat",
        "messages": [
            {"role": roles[min(index, 2)], "content": content}
            for index, content in enumerate(contents)
        ],
        "model": MODEL,
        "output_schema": None,
        "metadata": {},
    }


def text(source: str) -> dict[str, Any]:
    return {"type": "text", "text": source, "model": MODEL, "output_schema": None, "metadata": {}}


def syntax_error(content: dict[str, Any]) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        check_templates(content)
    assert caught.value.code == "template_syntax"
    return caught.value


def test_template_fields_name_each_message_or_the_text() -> None:
    assert template_fields(chat("a", "b")) == [
        ("messages[0].content", "a"),
        ("messages[1].content", "b"),
    ]
    assert template_fields(text("t")) == [("text", "t")]


def test_unknown_content_type_is_refused() -> None:
    with pytest.raises(InvalidInput) as caught:
        template_fields({"type": "image"})
    assert caught.value.field == "type"


def test_variables_are_sorted_and_deduplicated_across_messages() -> None:
    content = chat("You help {{ customer }}.", "{{ question }} for {{ customer | upper }}")
    assert extract_variables(content) == ["customer", "question"]


def test_loop_set_and_filter_names_are_not_variables() -> None:
    source = (
        "{% set greeting = 'Hi' %}{{ greeting }}\n"
        "{% for item in items %}{{ loop.index }}. {{ item.name | title }}{% endfor %}\n"
        "{% for n in range(3) %}{{ n }}{% endfor %}{{ missing | default('x') }}"
    )
    assert extract_variables(text(source)) == ["items", "missing"]


def test_text_without_placeholders_has_no_variables() -> None:
    assert extract_variables(text("Just plain text, {not a var}.")) == []


def test_valid_templates_pass_the_check() -> None:
    check_templates(chat("You help {{ customer }}.", "{% if x %}{{ x }}{% endif %}"))


def test_syntax_error_names_field_line_and_column() -> None:
    error = syntax_error(chat("fine {{ a }}", "Hello\n    {{ name } }}"))
    assert error.field == "messages[1].content"
    assert error.extra == {"line": 2, "column": 13}
    assert error.detail.startswith("messages[1].content line 2, column 13: unexpected '}'")
    assert "fix the template syntax" in error.detail


@pytest.mark.parametrize(
    ("source", "line", "column"),
    [
        ("a\n  {{ x + }}", 2, 10),  # parser error at the closing '}}'
        ("x\n {{ foo(] }}", 2, 9),  # lexer error at the unbalanced ']'
        ("first\nsecond\n{% if x %}open", 3, 15),  # unclosed block: end of the template
        ("a\n  {{ x | nosuchfilter }}", 2, 10),  # compile-time: unknown filter
        ("ok {{ a }}\r\n{% endfor %}", 2, 4),  # CRLF line ends count as one
    ],
)
def test_syntax_error_positions(source: str, line: int, column: int) -> None:
    error = syntax_error(text(source))
    assert error.field == "text"
    assert (error.extra["line"], error.extra["column"]) == (line, column)
    assert f"line {line}" in error.detail


def test_extract_variables_refuses_broken_templates() -> None:
    with pytest.raises(InvalidInput):
        extract_variables(text("{{ oops"))


def test_render_chat_fills_every_message() -> None:
    rendered = render(
        chat("You help {{ customer }}.", "{{ question }}"),
        {"customer": "Acme", "question": "Where is my order?"},
    )
    assert rendered == Rendered(
        messages=[
            {"role": "system", "content": "You help Acme."},
            {"role": "user", "content": "Where is my order?"},
        ],
        text=None,
        unused=[],
    )


def test_render_text_type() -> None:
    rendered = render(text("Summarise {{ doc }}\n"), {"doc": "the report"})
    assert rendered.text == "Summarise the report\n"  # trailing newline kept
    assert rendered.messages is None


def test_unused_variables_are_listed_sorted() -> None:
    rendered = render(text("{{ a }}"), {"zeta": 1, "a": 2, "beta": 3})
    assert rendered.unused == ["beta", "zeta"]


def test_missing_variable_names_it_and_where_it_is_used() -> None:
    with pytest.raises(InvalidInput) as caught:
        render(chat("You help {{ customer }}.", "{{ question }}"), {"customer": "Acme"})
    error = caught.value
    assert error.code == "missing_variable"
    assert error.field == "variables.question"
    assert error.extra == {"variable": "question"}
    assert "'question'" in error.detail
    assert "messages[1].content" in error.detail
    assert "pass it" in error.detail


def test_optional_variable_guarded_by_is_defined_may_be_left_out() -> None:
    rendered = render(text("Hi{% if name is defined %} {{ name }}{% endif %}"), {})
    assert rendered.text == "Hi"


def test_missing_attribute_of_a_passed_value_is_a_render_error() -> None:
    with pytest.raises(InvalidInput) as caught:
        render(text("{{ customer.name }}"), {"customer": {}})
    assert caught.value.code == "render_error"
    assert caught.value.field == "text"


def test_sandbox_refuses_dunder_attribute_access() -> None:
    with pytest.raises(InvalidInput) as caught:
        render(text("{{ ''.__class__.__mro__ }}"), {})
    assert caught.value.code == "render_error"
    assert "unsafe" in caught.value.detail


def test_immutable_sandbox_refuses_mutating_a_passed_list() -> None:
    items = [1, 2]
    with pytest.raises(InvalidInput) as caught:
        render(text("{{ items.append(3) }}"), {"items": items})
    assert caught.value.code == "render_error"
    assert items == [1, 2]


def test_runtime_error_in_a_template_is_a_render_error() -> None:
    with pytest.raises(InvalidInput) as caught:
        render(chat("ok", "{{ 1 / n }}"), {"n": 0})
    assert caught.value.code == "render_error"
    assert caught.value.field == "messages[1].content"


def test_values_are_not_html_escaped() -> None:
    assert render(text("{{ q }}"), {"q": "<b>&</b>"}).text == "<b>&</b>"
