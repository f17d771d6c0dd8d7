"""annotate_span: GenAI attributes on the current span with OpenTelemetry; nothing without it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from promptrecord.sdk import Prompt
from promptrecord.sdk.telemetry import annotate_span

CONTENT = {
    "type": "chat",
    "messages": [{"role": "user", "content": "{{ q }}"}],
    "model": {"provider": "anthropic", "name": "claude-x", "temperature": 0.2, "max_tokens": 300},
}


def _prompt() -> Prompt:
    return Prompt(
        name="bot",
        version=4,
        content_hash="sha256:abc",
        content=CONTENT,
        variables=["q"],
        environment="production",
        reason="rollout",
        tenant="acme",
        rollout={"arm": "candidate", "bucket": 0.1},
    )


def test_attributes_land_on_the_current_span() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("llm call"):
        annotate_span(_prompt())
    with tracer.start_as_current_span("explicit") as span:
        pass
    annotate_span(_prompt(), span)  # ended: not recording, left alone
    current, explicit = exporter.get_finished_spans()
    assert dict(current.attributes or {}) == {
        "prompt.name": "bot",
        "prompt.version": 4,
        "prompt.content_hash": "sha256:abc",
        "prompt.environment": "production",
        "prompt.resolve_reason": "rollout",
        "prompt.rollout_arm": "candidate",
        "gen_ai.request.model": "claude-x",
        "gen_ai.system": "anthropic",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.temperature": 0.2,
        "gen_ai.request.max_tokens": 300,
    }
    assert not explicit.attributes
    annotate_span(_prompt())  # no current span: nothing to do, no error
    assert trace.get_current_span().is_recording() is False


def test_without_opentelemetry_it_does_nothing() -> None:
    script = textwrap.dedent(
        """
        import sys

        class Refuse:
            def find_spec(self, name, path=None, target=None):
                if name == "opentelemetry" or name.startswith("opentelemetry."):
                    raise ImportError(f"{name} is blocked in this test")
                return None

        sys.meta_path.insert(0, Refuse())
        from promptrecord.sdk import Prompt
        from promptrecord.sdk.telemetry import annotate_span
        prompt = Prompt.from_content("bot", "production", {"text": "x", "model": {"name": "m"}})
        annotate_span(prompt)
        annotate_span(prompt, span=object())
        assert not any(m.startswith("opentelemetry") for m in sys.modules)
        print("no-op")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "no-op"
