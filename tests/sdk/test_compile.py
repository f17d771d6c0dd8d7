"""`Prompt.compile` renders exactly as the server's /compile, errors included."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from promptrecord.sdk import MissingVariable, Prompt, PromptClient, RenderError

if TYPE_CHECKING:
    from tests.sdk.conftest import SdkServer

MODEL = {"provider": "anthropic", "name": "claude-sonnet-4-5-20250929"}

CASES: list[tuple[dict[str, Any], dict[str, Any]]] = [
    (
        {
            "type": "chat",
            "messages": [
                {"role": "system", "content": "You help {{ company | upper }}.\r\nBe brief.\n"},
                {"role": "user", "content": "{% for q in questions %}- {{ q }}\n{% endfor %}"},
                {"role": "assistant", "content": "{{ '%.2f' | format(price) }} {{ 'é' * 3 }}"},
            ],
        },
        {"company": "Acme", "questions": ["a", "b"], "price": 3.14159, "extra": 1},
    ),
    (
        {"type": "text", "text": "{% if vip %}Dear {{ name }}{% else %}Hi{% endif %}\n\n"},
        {"vip": True, "name": "Ann"},
    ),
    (
        {"type": "text", "text": "{{ user.name }} / {{ user['tier'] | default('free') }}"},
        {"user": {"name": "Bo"}},
    ),
]
FAILURES: list[tuple[dict[str, Any], dict[str, Any], str, str]] = [
    ({"type": "text", "text": "{{ a }} {{ b }}"}, {"a": 1}, "missing_variable", "variables.b"),
    ({"type": "text", "text": "{{ user.name }}"}, {"user": {}}, "render_error", "text"),
    ({"type": "text", "text": "{{ x.__class__.__mro__ }}"}, {"x": 1}, "render_error", "text"),
    ({"type": "text", "text": "{{ items.append(1) }}"}, {"items": []}, "render_error", "text"),
]


def _commit(server: SdkServer, content: dict[str, Any]) -> int:
    response = server.api.admin.post(
        "/v1/prompts/render/versions", json={"content": {**content, "model": MODEL}}
    )
    assert response.status_code in (200, 201), response.text
    number: int = response.json()["number"]
    return number


def test_compile_matches_the_servers_compile(server: SdkServer) -> None:
    created = server.api.admin.post(
        "/v1/prompts", json={"name": "render", "content": {"text": "x", "model": MODEL}}
    )
    assert created.status_code == 201, created.text
    runtime = server.api.client(server.runtime_token)
    with PromptClient(
        server.base_url, server.runtime_token, fallback_dir=server.snapshots
    ) as client:
        for content, variables in CASES:
            number = _commit(server, content)
            expected = runtime.post(
                "/v1/prompts/render/compile", json={"version": number, "variables": variables}
            ).json()
            prompt = client.get("render", version=number)
            rendered = prompt.render(variables)
            assert rendered.messages == expected["messages"] and rendered.text == expected["text"]
            assert rendered.unused == expected["unused"]
            assert prompt.variables == expected["variables"]
            compiled = prompt.compile(**variables)
            assert compiled == (
                expected["text"] if content["type"] == "text" else expected["messages"]
            )
        for content, variables, code, field in FAILURES:
            number = _commit(server, content)
            problem = runtime.post(
                "/v1/prompts/render/compile", json={"version": number, "variables": variables}
            ).json()
            assert (problem["code"], problem.get("field")) == (code, field), problem
            error = MissingVariable if code == "missing_variable" else RenderError
            with pytest.raises(error) as raised:
                client.get("render", version=number).compile(**variables)
            assert raised.value.field == field
            if code == "missing_variable":
                assert raised.value.variable == problem["variable"]  # type: ignore[attr-defined]
                assert repr(problem["variable"]) in str(raised.value)


def test_a_fallbacks_bad_template_is_refused_when_made() -> None:
    with pytest.raises(RenderError) as raised:
        Prompt.from_content("p", "production", {"text": "ok\n{% if %}", "model": MODEL})
    assert raised.value.field == "text" and "line 2" in str(raised.value)
