"""Providers through the official SDKs against local stand-ins of the Anthropic and OpenAI APIs."""

from __future__ import annotations

import asyncio
import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from promptrecord.workers.models import ModelCall, ProviderError, ProviderTimeout, Usage
from promptrecord.workers.providers import (
    AnthropicProvider,
    OfflineProvider,
    OpenAIProvider,
    Price,
    PriceTable,
    judge_verdict,
    offline_key,
    provider_for,
)

if TYPE_CHECKING:
    from tests.fakes.model_servers import FakeModelServer

SONNET = "claude-sonnet-4-5-20250929"
HAIKU = "claude-haiku-4-5"  # the SDK warns that SONNET is deprecated
KEY = "sk-test-123"
MESSAGES = [
    {"role": "user", "content": "Where is my order?"},
    {"role": "assistant", "content": "Which order number?"},
    {"role": "user", "content": "Number 42."},
]


class Sleeps(list[float]):
    """An injected `sleep` that records the waits instead of waiting."""

    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


@dataclass
class Fake:
    """One fake server and how to make a provider pointed at it."""

    kind: str
    server: FakeModelServer
    model: str

    def provider(self, **options: Any) -> AnthropicProvider | OpenAIProvider:
        options.setdefault("backoff", (0.001, 0.005))
        if self.kind == "anthropic":
            return AnthropicProvider(KEY, self.server.base_url, **options)
        return OpenAIProvider(KEY, f"{self.server.base_url}/v1", **options)

    def call(self, **fields: Any) -> ModelCall:
        defaults: dict[str, Any] = {
            "provider": self.kind,
            "model": self.model,
            "messages": MESSAGES,
            "system": "You help Acme customers.",
            "temperature": 0.2,
            "max_tokens": 300,
        }
        return ModelCall(**{**defaults, **fields})


@pytest.fixture(params=["anthropic", "openai"])
def fake(request: pytest.FixtureRequest) -> Fake:
    server = request.getfixturevalue(f"{request.param}_server")
    model = HAIKU if request.param == "anthropic" else "gpt-4o-mini"
    return Fake(request.param, server, model)


def run(provider: Any, call: ModelCall) -> Any:
    async def complete() -> Any:
        async with provider:
            return await provider.complete(call)

    return asyncio.run(complete())


# --------------------------------------------------------------------------- requests


def test_anthropic_request_carries_the_version_settings(anthropic_server: FakeModelServer) -> None:
    anthropic_server.enqueue(anthropic_server.text("Order 42 ships today."))
    anthropic_server.api_key = KEY
    fake = Fake("anthropic", anthropic_server, HAIKU)
    reply = run(fake.provider(), fake.call())

    request = anthropic_server.last
    assert request.path == "/v1/messages"
    assert request.body == {
        "model": HAIKU,
        "system": "You help Acme customers.",
        "messages": MESSAGES,
        "temperature": 0.2,
        "max_tokens": 300,
    }
    # SDKs before 2.x send the key as x-api-key, later ones as a bearer token
    assert KEY in (request.headers.get("x-api-key"), request.headers.get("authorization", "")[7:])
    assert request.headers["anthropic-version"]
    assert reply.text == "Order 42 ships today."
    assert reply.model == HAIKU
    assert reply.attempts == 1
    assert reply.latency_ms > 0


def test_openai_request_carries_the_version_settings(openai_server: FakeModelServer) -> None:
    openai_server.enqueue(openai_server.text("Order 42 ships today."))
    openai_server.api_key = KEY
    fake = Fake("openai", openai_server, "gpt-4o")
    reply = run(fake.provider(), fake.call())

    request = openai_server.last
    assert request.path == "/v1/chat/completions"
    assert request.body == {
        "model": "gpt-4o",
        "messages": [{"role": "system", "content": "You help Acme customers."}, *MESSAGES],
        "temperature": 0.2,
        "max_tokens": 300,
    }
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert "x-api-key" not in request.headers
    assert reply.text == "Order 42 ships today."
    assert reply.model == "gpt-4o"
    assert reply.attempts == 1
    assert reply.latency_ms > 0


def test_unset_temperature_and_system_are_left_out(fake: Fake) -> None:
    run(fake.provider(), fake.call(temperature=None, system=None))
    body = fake.server.last.body
    assert "temperature" not in body
    assert "system" not in body
    assert body["messages"] == MESSAGES


def test_a_rejected_key_fails_at_once(fake: Fake) -> None:
    fake.server.api_key = "another-key"
    with pytest.raises(ProviderError) as raised:
        run(fake.provider(), fake.call())
    assert (raised.value.status, raised.value.retryable) == (401, False)
    assert len(fake.server.requests) == 1


def test_other_parameters_are_passed_on(fake: Fake) -> None:
    run(fake.provider(), fake.call(params={"top_p": 0.9, "stop_sequences": ["END"]}))
    assert fake.server.last.body["top_p"] == 0.9
    assert fake.server.last.body["stop_sequences"] == ["END"]


def test_openai_max_completion_tokens_replaces_max_tokens(openai_server: FakeModelServer) -> None:
    fake = Fake("openai", openai_server, "gpt-5")
    run(fake.provider(), fake.call(params={"max_completion_tokens": 2000}))
    assert openai_server.last.body["max_completion_tokens"] == 2000
    assert "max_tokens" not in openai_server.last.body


def test_a_provider_serves_successive_event_loops(fake: Fake) -> None:
    provider = fake.provider()
    first, second = run(provider, fake.call()), run(provider, fake.call())
    assert first.text == second.text == "echo: Number 42."
    assert len(fake.server.requests) == 2


# --------------------------------------------------------------------------- usage and cost


def test_usage_and_cost_are_recorded(fake: Fake) -> None:
    fake.server.usage = (1000, 500)
    reply = run(fake.provider(), fake.call())
    assert reply.usage == Usage(input_tokens=1000, output_tokens=500)
    price = {"anthropic": (1.0, 5.0), "openai": (0.15, 0.6)}[fake.kind]
    assert reply.cost_usd == pytest.approx((1000 * price[0] + 500 * price[1]) / 1e6)


def test_unknown_model_has_no_cost(fake: Fake) -> None:
    reply = run(fake.provider(), fake.call(model="llama-3.1-8b-instruct"))
    assert reply.usage.input_tokens > 0
    assert reply.cost_usd is None


def test_a_configured_price_table_prices_the_call(fake: Fake) -> None:
    fake.server.usage = (2_000_000, 1_000_000)
    prices = PriceTable({"llama-3.1-8b-instruct": (0.1, 0.2)})
    reply = run(fake.provider(prices=prices), fake.call(model="llama-3.1-8b-instruct"))
    assert reply.cost_usd == pytest.approx(0.4)


def test_price_table_matches_dated_model_names() -> None:
    prices = PriceTable.default()
    assert prices.price(SONNET) == Price(3.0, 15.0)
    assert prices.price("claude-haiku-4-5") == Price(1.0, 5.0)
    assert prices.price("gpt-4o-mini-2024-07-18") == Price(0.15, 0.6)
    assert prices.price("gpt-4o-2024-08-06") == Price(2.5, 10.0)
    assert prices.price("mistral-large") is None


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("prices.toml", '[models]\n"my-model" = { input = 1.5, output = 6 }\nother = [2, 4]\n'),
        ("prices.json", '{"my-model": {"input": 1.5, "output": 6}, "other": [2, 4]}'),
    ],
)
def test_price_table_from_file(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    prices = PriceTable.from_file(path)
    assert prices.price("my-model") == Price(1.5, 6.0)
    assert prices.cost("other", Usage(1_000_000, 1_000_000)) == pytest.approx(6.0)


def test_price_file_with_a_bad_entry_names_it(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text('{"my-model": {"input": 1.5}}')
    with pytest.raises(ValueError, match="my-model"):
        PriceTable.from_file(path)


# --------------------------------------------------------------------------- retries


def test_429_is_retried_after_retry_after(fake: Fake) -> None:
    fake.server.enqueue(fake.server.status(429, retry_after="7"), fake.server.text("fine"))
    sleeps = Sleeps()
    reply = run(fake.provider(sleep=sleeps), fake.call())
    assert reply.text == "fine"
    assert reply.attempts == 2
    assert len(fake.server.requests) == 2
    assert sleeps == [7.0]  # the server's retry-after, not our backoff


def test_retry_after_is_capped(fake: Fake) -> None:
    fake.server.enqueue(fake.server.status(429, retry_after="3600"))
    sleeps = Sleeps()
    run(fake.provider(sleep=sleeps, max_retry_after=20.0), fake.call())
    assert sleeps == [20.0]


def test_500s_are_retried_with_exponential_backoff(fake: Fake) -> None:
    fake.server.enqueue(fake.server.status(500), fake.server.status(500), "third time")
    sleeps = Sleeps()
    provider = fake.provider(sleep=sleeps, backoff=(1.0, 1.5), jitter=lambda: 1.0)
    reply = run(provider, fake.call())
    assert reply.text == "third time"
    assert reply.attempts == 3
    assert len(fake.server.requests) == 3
    assert sleeps == [1.0, 1.5]  # base, then 2 x base capped


def test_500s_are_retried_for_real(fake: Fake) -> None:
    fake.server.enqueue(fake.server.status(500), fake.server.status(500), "third time")
    reply = run(fake.provider(), fake.call())
    assert (reply.text, reply.attempts, len(fake.server.requests)) == ("third time", 3, 3)


def test_400_fails_at_once(fake: Fake) -> None:
    fake.server.enqueue(fake.server.status(400))
    with pytest.raises(ProviderError) as raised:
        run(fake.provider(), fake.call())
    assert raised.value.status == 400
    assert raised.value.retryable is False
    assert raised.value.attempts == 1
    assert not isinstance(raised.value, ProviderTimeout)
    assert len(fake.server.requests) == 1


def test_exhausted_retries_fail_retryable(fake: Fake) -> None:
    fake.server.enqueue(*[fake.server.status(503)] * 4)
    with pytest.raises(ProviderError) as raised:
        run(fake.provider(max_retries=2), fake.call())
    assert raised.value.status == 503
    assert raised.value.retryable is True
    assert raised.value.attempts == 3
    assert len(fake.server.requests) == 3
    assert fake.model in str(raised.value)


def test_a_reply_slower_than_the_timeout_is_retried_then_times_out(fake: Fake) -> None:
    fake.server.enqueue(fake.server.slow(5.0), fake.server.slow(5.0))
    with pytest.raises(ProviderTimeout) as raised:
        run(fake.provider(timeout=0.3, max_retries=1), fake.call())
    assert raised.value.retryable is True
    assert raised.value.attempts == 2
    assert len(fake.server.requests) == 2


def test_a_slow_reply_then_a_fast_one_succeeds(fake: Fake) -> None:
    # A timeout a loaded machine's fast reply still meets; the slow one never does.
    fake.server.enqueue(fake.server.slow(8.0), "in time")
    reply = run(fake.provider(timeout=2.0, max_retries=1), fake.call())
    assert (reply.text, reply.attempts) == ("in time", 2)


def test_connection_errors_are_retried(fake: Fake) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base = f"http://127.0.0.1:{port}" + ("/v1" if fake.kind == "openai" else "")
    cls = AnthropicProvider if fake.kind == "anthropic" else OpenAIProvider
    with pytest.raises(ProviderError) as raised:
        run(cls(KEY, base, max_retries=2, backoff=(0.001, 0.001)), fake.call())
    assert raised.value.retryable is True
    assert raised.value.status is None
    assert raised.value.attempts == 3


@pytest.mark.parametrize("body", ["{not json", {"unexpected": True}])
def test_a_malformed_reply_fails_without_retrying(fake: Fake, body: Any) -> None:
    fake.server.enqueue(fake.server.malformed(body))
    with pytest.raises(ProviderError, match="malformed") as raised:
        run(fake.provider(), fake.call())
    assert raised.value.retryable is False
    assert len(fake.server.requests) == 1


# --------------------------------------------------------------------------- offline

JUDGE = (
    'Compare the answer with the expected one. Reply only with JSON {"correct": true|false, '
    '"score": 1-5}.'
)


def offline_call(content: str, system: str | None = None, **fields: Any) -> ModelCall:
    return ModelCall(
        provider="offline",
        model=fields.pop("model", SONNET),
        messages=[{"role": "user", "content": content}],
        system=system,
        **fields,
    )


def test_offline_replies_are_a_pure_function_of_the_call() -> None:
    call = offline_call("Where is my order?", "You help Acme customers.")
    first, again = OfflineProvider().reply(call), OfflineProvider().reply(call)
    assert first == again
    assert first.usage.input_tokens > 0 and first.usage.output_tokens > 0
    assert first.cost_usd is not None and first.latency_ms > 0
    other = OfflineProvider().reply(offline_call("Where is my order?", "You help Globex."))
    assert other.text != first.text
    assert asyncio.run(OfflineProvider().complete(call)) == first


def test_offline_gives_reference_answers() -> None:
    question = "What is the capital of France?"
    by_text = OfflineProvider({question: "Paris"})
    assert by_text.reply(offline_call(question)).text == "Paris"
    by_hash = OfflineProvider({offline_key(question): "Paris"})
    assert by_hash.reply(offline_call(question, "Be brief.")).text == "Paris"
    marked = OfflineProvider().reply(offline_call("Capital of Italy? [[answer: Rome]]"))
    assert marked.text == "Rome"


def test_offline_accuracy_misses_stable_examples() -> None:
    answers = {f"question {n}": f"answer {n}" for n in range(200)}
    provider = OfflineProvider(answers, accuracy=0.7)
    calls = [offline_call(q, "v1") for q in answers]
    right = [provider.reply(c).text == answers[c.messages[0]["content"]] for c in calls]
    assert 100 < sum(right) < 180
    assert right == [provider.reply(c).text == answers[c.messages[0]["content"]] for c in calls]
    perfect = [offline_call(q, "v1", params={"offline_accuracy": 1.0}) for q in answers]
    assert all(provider.reply(c).text == answers[c.messages[0]["content"]] for c in perfect)


@pytest.mark.parametrize(
    ("message", "verdict"),
    [
        ("<expected>Paris</expected>\n<actual>Paris.</actual>", {"correct": True, "score": 5}),
        (
            "Expected answer: Paris\nActual answer: It is Paris, France.",
            {"correct": True, "score": 4},
        ),
        ("Question: capital?\nReference: Paris\nResponse: Lyon", {"correct": False, "score": 1}),
        (
            "Expected: the order ships on monday\nAnswer: the order ships friday",
            {"correct": False, "score": 3},
        ),
    ],
)
def test_offline_judges_with_a_json_verdict(message: str, verdict: dict[str, Any]) -> None:
    reply = OfflineProvider().reply(offline_call(message, JUDGE))
    assert json.loads(reply.text) == verdict


def test_offline_judges_the_graders_judge_call() -> None:
    graders = pytest.importorskip("promptrecord.workers.graders")
    spec = graders.JudgeSpec(provider="offline", model=HAIKU, rubric="Same city as the reference.")
    verdicts = [
        json.loads(
            OfflineProvider().reply(graders.build_judge_call(spec, out, ref, {"q": "?"})).text
        )
        for out, ref in [("Paris", "Paris"), ("Lyon", "Paris"), ("Paris", None)]
    ]
    assert verdicts == [
        {"correct": True, "score": 5},
        {"correct": False, "score": 1},
        {"correct": False, "score": 1},
    ]


def test_offline_judge_reads_instructions_from_the_user_message_without_system() -> None:
    reply = OfflineProvider().reply(offline_call(f"{JUDGE}\nExpected: 4\nActual: 4"))
    assert json.loads(reply.text) == {"correct": True, "score": 5}


def test_judge_verdict_without_answers_is_a_fail() -> None:
    assert judge_verdict(None, "x") == {"correct": False, "score": 1}


# --------------------------------------------------------------------------- factory


def test_provider_for() -> None:
    assert isinstance(provider_for("offline"), OfflineProvider)
    made = provider_for("openai", api_key="k", base_url="http://localhost:11434/v1", max_retries=1)
    assert isinstance(made, OpenAIProvider)
    assert (made.base_url, made.max_retries) == ("http://localhost:11434/v1", 1)
    from_env = provider_for("anthropic", environ={"ANTHROPIC_API_KEY": "env-key"})
    assert isinstance(from_env, AnthropicProvider) and from_env.api_key == "env-key"
    with pytest.raises(ProviderError, match="ANTHROPIC_API_KEY"):
        provider_for("anthropic", environ={})
    with pytest.raises(ValueError, match="unknown model provider 'cohere'"):
        provider_for("cohere")


def test_fakes_record_and_answer_in_order(fake: Fake) -> None:
    def replies(body: dict[str, Any]) -> str:
        return f"{len(body['messages'])} messages"

    fake.server.reply = replies
    fake.server.enqueue("scripted")
    provider = fake.provider()
    assert run(provider, fake.call()).text == "scripted"
    assert run(provider, fake.call()).text.endswith("messages")
    assert len(fake.server.bodies) == 2
