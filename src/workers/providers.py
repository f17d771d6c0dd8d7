"""Model providers: Anthropic and OpenAI through their official async SDKs, and an offline one.

Every provider turns a `ModelCall` into a `ModelReply` with the text, token usage, latency,
cost (from a `PriceTable`) and the number of attempts it took. The remote providers retry
429, 408, 409, 5xx, connection errors and timeouts themselves (the SDKs' own retries are
off, so attempts are ours and counted), with exponential backoff and jitter, honouring
``retry-after``. Any other 4xx fails at once. They keep one SDK client (a connection pool)
per event loop: ``async with provider:`` or ``await provider.aclose()`` closes it.
`OfflineProvider` needs no network: its reply is a pure function of the call, which makes
demos and tests deterministic.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import math
import os
import random
import re
import time
import tomllib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from promptrecord.workers.models import (
    ModelCall,
    ModelReply,
    Provider,
    ProviderError,
    ProviderTimeout,
    Usage,
)

# The SDKs load in about a second together: imported where a call needs them, so the
# offline provider, the demo and the CLI start without them.
if TYPE_CHECKING:
    import anthropic
    import openai

Sleep = Callable[[float], Awaitable[None]]

# --------------------------------------------------------------------------- prices


@dataclass(frozen=True)
class Price:
    """US dollars per million tokens."""

    input: float
    output: float


class PriceTable:
    """Model → price per million input and output tokens; configurable, never authoritative.

    A model matches its exact name first, then the longest entry it extends with ``-…``
    (``claude-sonnet-4-5`` prices ``claude-sonnet-4-5-20250929``). Unknown model: cost None.
    """

    def __init__(self, prices: Mapping[str, Price | tuple[float, float]]) -> None:
        self._prices = {
            model: price if isinstance(price, Price) else Price(*map(float, price))
            for model, price in prices.items()
        }

    @classmethod
    def default(cls) -> PriceTable:
        """List prices as published in 2025 (USD per million tokens); override per deployment."""
        return cls(
            {
                "claude-opus-4-5": (5.0, 25.0),
                "claude-opus-4-1": (15.0, 75.0),
                "claude-opus-4": (15.0, 75.0),
                "claude-sonnet-4-5": (3.0, 15.0),
                "claude-sonnet-4": (3.0, 15.0),
                "claude-haiku-4-5": (1.0, 5.0),
                "claude-3-5-haiku": (0.8, 4.0),
                "gpt-5": (1.25, 10.0),
                "gpt-5-mini": (0.25, 2.0),
                "gpt-5-nano": (0.05, 0.4),
                "gpt-4.1": (2.0, 8.0),
                "gpt-4.1-mini": (0.4, 1.6),
                "gpt-4.1-nano": (0.1, 0.4),
                "gpt-4o": (2.5, 10.0),
                "gpt-4o-mini": (0.15, 0.6),
                "o3": (2.0, 8.0),
                "o4-mini": (1.1, 4.4),
            }
        )

    @classmethod
    def from_file(cls, path: str | Path) -> PriceTable:
        """Read a ``.toml`` or ``.json`` file of ``model = {input = 3.0, output = 15.0}``
        entries (or ``[input, output]`` pairs), at the top level or under ``models``."""
        path = Path(path)
        text = path.read_text(encoding="utf-8")
        data: Any = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        if isinstance(data, dict) and isinstance(data.get("models"), dict):
            data = data["models"]
        if not isinstance(data, dict):
            raise ValueError(f"price file {path}: expected a table of models, got {data!r}")
        prices: dict[str, Price] = {}
        for model, entry in data.items():
            try:
                if isinstance(entry, dict):
                    prices[model] = Price(float(entry["input"]), float(entry["output"]))
                else:
                    inp, out = entry
                    prices[model] = Price(float(inp), float(out))
            except (KeyError, TypeError, ValueError) as exc:
                msg = (
                    f"price file {path}: model {model!r} needs input and output USD per "
                    f"million tokens, as {{input = 3.0, output = 15.0}} or [3.0, 15.0]"
                )
                raise ValueError(msg) from exc
        return cls(prices)

    def price(self, model: str) -> Price | None:
        if model in self._prices:
            return self._prices[model]
        extended = [name for name in self._prices if model.startswith(name + "-")]
        return self._prices[max(extended, key=len)] if extended else None

    def cost(self, model: str, usage: Usage) -> float | None:
        price = self.price(model)
        if price is None:
            return None
        return (usage.input_tokens * price.input + usage.output_tokens * price.output) / 1e6


# --------------------------------------------------------------------------- retries


@dataclass(frozen=True)
class _Failure:
    """What one failed attempt means for the retry loop."""

    message: str
    status: int | None = None
    retryable: bool = False
    timeout: bool = False
    retry_after: float | None = None


RETRYABLE_STATUSES = frozenset({408, 409, 429})


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / scale
        except ValueError:
            parsed = email.utils.parsedate_tz(value)
            if parsed is None:
                continue
            seconds = email.utils.mktime_tz(parsed) - time.time()
        if math.isfinite(seconds):
            return max(0.0, seconds)
    return None


def _status_failure(status: int, headers: Mapping[str, str], message: str) -> _Failure:
    retryable = status in RETRYABLE_STATUSES or status >= 500
    return _Failure(message, status, retryable, retry_after=_retry_after(headers))


class _RetryingProvider:
    """The retry loop, latency, usage and cost shared by the SDK-backed providers."""

    name = "remote"

    def __init__(
        self,
        api_key: str,
        base_url: str | None = None,
        *,
        timeout: float = 60.0,
        max_retries: int = 3,
        backoff: tuple[float, float] = (0.5, 30.0),
        max_retry_after: float = 60.0,
        prices: PriceTable | None = None,
        sleep: Sleep = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.api_key = api_key
        self.base_url = base_url
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_retry_after = max_retry_after
        self.prices = prices if prices is not None else PriceTable.default()
        self._sleep = sleep
        self._jitter = jitter
        self._loop: asyncio.AbstractEventLoop | None = None

    async def complete(self, call: ModelCall) -> ModelReply:
        attempts = 0
        while True:
            attempts += 1
            started = time.perf_counter()
            try:
                text, model, usage = await self._attempt(call)
            except Exception as exc:
                failure = self._classify(exc)
                if failure is None:
                    raise
                if not failure.retryable or attempts > self.max_retries:
                    raise self._give_up(call, failure, attempts) from exc
                await self._sleep(self._delay(attempts, failure.retry_after))
                continue
            latency_ms = (time.perf_counter() - started) * 1000
            cost = self.prices.cost(call.model, usage)
            return ModelReply(text, model, usage, latency_ms, cost, attempts)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        base, cap = self.backoff
        # equal jitter: at least half the exponential step, so a retry storm still spreads out
        step = min(cap, base * 2.0 ** (attempt - 1))
        return step / 2 + step / 2 * self._jitter()

    def _give_up(self, call: ModelCall, failure: _Failure, attempts: int) -> ProviderError:
        where = f"{self.name} model {call.model!r}"
        tries = f"after {attempts} attempt{'s' if attempts > 1 else ''}"
        error = ProviderTimeout if failure.timeout else ProviderError
        return error(
            f"{where} failed {tries}: {failure.message}",
            status=failure.status,
            retryable=failure.retryable,
            attempts=attempts,
        )

    async def aclose(self) -> None:
        """Close the SDK client's connections; call before the event loop that used it ends."""
        client = getattr(self, "_client", None)
        if client is not None and self._loop is asyncio.get_running_loop():
            await client.close()
        self._loop = None

    async def __aenter__(self) -> _RetryingProvider:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _fresh_loop(self) -> bool:
        """True when the SDK client must be (re)made: none yet, or made on another loop
        (each `asyncio.run` of a worker has its own, and clients are bound to theirs)."""
        loop = asyncio.get_running_loop()
        if loop is self._loop:
            return False
        self._loop = loop
        return True

    async def _attempt(self, call: ModelCall) -> tuple[str, str, Usage]:
        raise NotImplementedError

    def _classify(self, exc: Exception) -> _Failure | None:
        raise NotImplementedError


def _malformed(what: str, exc: Exception) -> _Failure:
    return _Failure(f"malformed {what} reply ({type(exc).__name__}: {exc})")


class AnthropicProvider(_RetryingProvider):
    """Claude through the Messages API (`anthropic.AsyncAnthropic`)."""

    name = "anthropic"
    _client: anthropic.AsyncAnthropic

    async def _attempt(self, call: ModelCall) -> tuple[str, str, Usage]:
        if self._fresh_loop():
            import anthropic

            self._client = anthropic.AsyncAnthropic(
                api_key=self.api_key, base_url=self.base_url, timeout=self.timeout, max_retries=0
            )
        # temperature and other parameters travel in the body: newer SDKs type fewer of them
        extra: dict[str, Any] = dict(call.params)
        if call.temperature is not None:
            extra["temperature"] = call.temperature
        kwargs: dict[str, Any] = {}
        if call.system is not None:
            kwargs["system"] = call.system
        message = await self._client.messages.create(
            model=call.model,
            max_tokens=call.max_tokens,
            messages=call.messages,  # type: ignore[arg-type]
            extra_body=extra or None,
            **kwargs,
        )
        try:
            text = "".join(block.text for block in message.content if block.type == "text")
            usage = Usage(int(message.usage.input_tokens), int(message.usage.output_tokens))
            return text, str(message.model), usage
        except (AttributeError, TypeError, ValueError) as exc:
            raise _MalformedReply(exc) from exc

    def _classify(self, exc: Exception) -> _Failure | None:
        import anthropic

        if isinstance(exc, _MalformedReply | anthropic.APIResponseValidationError | ValueError):
            return _malformed("anthropic", exc)
        if isinstance(exc, anthropic.APITimeoutError):
            return _Failure("timed out", retryable=True, timeout=True)
        if isinstance(exc, anthropic.APIConnectionError):
            return _Failure(f"connection error: {exc}", retryable=True)
        if isinstance(exc, anthropic.APIStatusError):
            return _status_failure(exc.status_code, exc.response.headers, exc.message)
        return None


class OpenAIProvider(_RetryingProvider):
    """Chat Completions (`openai.AsyncOpenAI`); ``base_url`` reaches any compatible server
    (vLLM, Ollama, LiteLLM). ``max_completion_tokens`` in the call's params replaces
    ``max_tokens``, which the newest OpenAI models refuse."""

    name = "openai"
    _client: openai.AsyncOpenAI

    async def _attempt(self, call: ModelCall) -> tuple[str, str, Usage]:
        if self._fresh_loop():
            import openai

            self._client = openai.AsyncOpenAI(
                api_key=self.api_key, base_url=self.base_url, timeout=self.timeout, max_retries=0
            )
        messages = list(call.messages)
        if call.system is not None:
            messages.insert(0, {"role": "system", "content": call.system})
        body: dict[str, Any] = {"max_tokens": call.max_tokens, **call.params}
        if "max_completion_tokens" in call.params:
            del body["max_tokens"]
        if call.temperature is not None:
            body["temperature"] = call.temperature
        completion = await self._client.chat.completions.create(
            model=call.model,
            messages=messages,  # type: ignore[arg-type]
            extra_body=body,
        )
        try:
            text = completion.choices[0].message.content or ""
            usage = completion.usage
            if usage is None:
                raise ValueError("no usage in the reply")
            counts = Usage(int(usage.prompt_tokens), int(usage.completion_tokens))
            return text, str(completion.model), counts
        except (AttributeError, IndexError, TypeError, ValueError) as exc:
            raise _MalformedReply(exc) from exc

    def _classify(self, exc: Exception) -> _Failure | None:
        import openai

        if isinstance(exc, _MalformedReply | openai.APIResponseValidationError | ValueError):
            return _malformed("openai", exc)
        if isinstance(exc, openai.APITimeoutError):
            return _Failure("timed out", retryable=True, timeout=True)
        if isinstance(exc, openai.APIConnectionError):
            return _Failure(f"connection error: {exc}", retryable=True)
        if isinstance(exc, openai.APIStatusError):
            return _status_failure(exc.status_code, exc.response.headers, exc.message)
        return None


class _MalformedReply(Exception):
    """The API answered 200 with a body that is not a usable reply."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")


# --------------------------------------------------------------------------- offline

_LABEL = re.compile(
    r"^[ \t#*>-]*(expected(?: answer| output)?|reference(?: answer)?|ideal answer|gold answer"
    r"|actual(?: answer| output)?|candidate(?: answer)?|model answer|answer|response|output"
    r"|question|input|criteria|rubric)[ \t*]*:",
    re.IGNORECASE | re.MULTILINE,
)
_EXPECTED = ("expected", "reference", "ideal", "gold")
_ACTUAL = ("actual", "candidate", "model answer", "answer", "response", "output")
_BLOCK = re.compile(
    r"^BEGIN (?P<name>[A-Z][A-Z ]*?) \[(?P<mark>\w+)\]\n(?P<body>.*?)\nEND (?P=name) \[(?P=mark)\]",
    re.MULTILINE | re.DOTALL,
)
_MARKER = re.compile(r"\[\[answer:\s*(.*?)\s*\]\]", re.DOTALL)


def offline_key(text: str) -> str:
    """The hash under which `OfflineProvider.answers` may list the reply to a user message."""
    return hashlib.sha256(text.strip().encode()).hexdigest()


def _normal(text: str) -> str:
    return " ".join(re.sub(r"[^\w]+", " ", text.casefold()).split())


def _sections(text: str) -> dict[str, str]:
    """``expected`` and ``actual`` from ``BEGIN REFERENCE ANSWER [x]`` … ``END …`` blocks,
    ``<expected>…</expected>`` tags or ``Label: …`` sections (Expected/Reference answer,
    Actual/Candidate answer/Response/Output), in that order of precedence."""
    found: dict[str, str] = {}
    for block in _BLOCK.finditer(text):  # the graders' judge call: BEGIN/END-marked sections
        name = block.group("name").lower()
        if name.startswith(_EXPECTED) and block.group("body") != "(no reference answer)":
            found.setdefault("expected", block.group("body").strip())
        elif name.startswith(("candidate", "output", "actual")):
            found.setdefault("actual", block.group("body").strip())
    for role, names in (("expected", _EXPECTED), ("actual", _ACTUAL)):
        for name in names:
            tag = re.search(rf"<{name}>(.*?)</{name}>", text, re.IGNORECASE | re.DOTALL)
            if tag:
                found.setdefault(role, tag.group(1).strip())
    labels = list(_LABEL.finditer(text))
    for label, following in zip(labels, [*labels[1:], None], strict=False):
        end = following.start() if following else len(text)
        name = label.group(1).lower()
        role = (
            "expected"
            if name.startswith(_EXPECTED)
            else "actual"
            if name.startswith(_ACTUAL)
            else ""
        )
        if role:
            found.setdefault(role, text[label.end() : end].strip())
    return found


def judge_verdict(expected: str | None, actual: str | None) -> dict[str, Any]:
    """The offline judge: same answer 5, expected contained 4, else word overlap 3..1."""
    if not expected or not actual:
        return {"correct": False, "score": 1}
    want, got = _normal(expected), _normal(actual)
    if want == got:
        return {"correct": True, "score": 5}
    if want and f" {want} " in f" {got} ":
        return {"correct": True, "score": 4}
    words_w, words_g = set(want.split()), set(got.split())
    overlap = len(words_w & words_g) / max(1, len(words_w | words_g))
    return {"correct": False, "score": 3 if overlap >= 0.5 else 2 if overlap >= 0.2 else 1}


class OfflineProvider:
    """Deterministic answers without network: the reply is a pure function of the call.

    - **Judge.** When the system prompt (or, with none, the first user message) asks for a
      JSON verdict with ``"correct"`` and ``"score"``, the reply is ``{"correct": bool,
      "score": 1-5}`` from `judge_verdict` on the expected and actual answers found in the
      user messages as the graders' ``BEGIN REFERENCE ANSWER [x]`` / ``BEGIN CANDIDATE
      OUTPUT [x]`` blocks, ``<expected>…</expected>`` / ``<actual>…</actual>`` tags or as
      ``Expected answer: …`` / ``Actual answer: …`` sections (also Reference, Candidate,
      Response, Output).
    - **Reference answers.** The last user message's text, or its `offline_key`, looked
      up in ``answers``; else a ``[[answer: …]]`` marker in it. The reference is given
      unless the call's hash falls above ``accuracy`` (or ``params["offline_accuracy"]``),
      so prompt versions miss different, stable examples.
    - **Otherwise** an echo of the last user message tagged with the call's hash.

    Usage counts about four characters a token; latency is derived from the hash and the
    output length (reported, never slept).
    """

    name = "offline"

    def __init__(
        self,
        answers: Mapping[str, str] | None = None,
        *,
        accuracy: float = 1.0,
        prices: PriceTable | None = None,
    ) -> None:
        self.answers = dict(answers or {})
        self.accuracy = accuracy
        self.prices = prices if prices is not None else PriceTable.default()

    async def complete(self, call: ModelCall) -> ModelReply:
        return self.reply(call)

    async def aclose(self) -> None:
        """Nothing to close; here so that every provider can be closed alike."""

    async def __aenter__(self) -> OfflineProvider:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def reply(self, call: ModelCall) -> ModelReply:
        """The same as `complete`, synchronously."""
        identity = json.dumps([call.model, call.system, call.messages], sort_keys=True)
        digest = hashlib.sha256(identity.encode()).hexdigest()
        text = self._text(call, digest)
        prompt_chars = len(call.system or "") + sum(
            len(m.get("content", "")) for m in call.messages
        )
        usage = Usage(max(1, math.ceil(prompt_chars / 4)), max(1, math.ceil(len(text) / 4)))
        latency_ms = 150.0 + int(digest[:6], 16) % 600 + 8.0 * usage.output_tokens
        return ModelReply(text, call.model, usage, latency_ms, self.prices.cost(call.model, usage))

    def _text(self, call: ModelCall, digest: str) -> str:
        users = [m.get("content", "") for m in call.messages if m.get("role") == "user"]
        last = users[-1] if users else ""
        instructions = call.system if call.system is not None else (users[0] if users else "")
        if '"correct"' in instructions and '"score"' in instructions:
            found = _sections("\n".join(users))
            return json.dumps(judge_verdict(found.get("expected"), found.get("actual")))
        reference = self.answers.get(last.strip(), self.answers.get(offline_key(last)))
        if reference is None and (marker := _MARKER.search(last)):
            reference = marker.group(1)
        if reference is not None:
            accuracy = float(call.params.get("offline_accuracy", self.accuracy))
            if int(digest[-8:], 16) / 0xFFFFFFFF < accuracy:
                return reference
            return f"I am not sure ({digest[:6]})."
        return f"Offline reply {digest[:8]} to: {last[:200]}"


# --------------------------------------------------------------------------- factory


def provider_for(
    name: str,
    *,
    api_key: str | None = None,
    base_url: str | None = None,
    timeout: float = 60.0,
    max_retries: int = 3,
    backoff: tuple[float, float] = (0.5, 30.0),
    prices: PriceTable | None = None,
    answers: Mapping[str, str] | None = None,
    environ: Mapping[str, str] = os.environ,
) -> Provider:
    """The provider called `name`; the API key (and base URL) default to the SDKs' own
    environment variables (``ANTHROPIC_API_KEY``, ``OPENAI_API_KEY``, ``…_BASE_URL``)."""
    if name == "offline":
        return OfflineProvider(answers, prices=prices)
    remote: dict[str, type[_RetryingProvider]] = {
        "anthropic": AnthropicProvider,
        "openai": OpenAIProvider,
    }
    if name not in remote:
        msg = f"unknown model provider {name!r}: use one of anthropic, openai, offline"
        raise ValueError(msg)
    prefix = name.upper()
    key = api_key or environ.get(f"{prefix}_API_KEY")
    if not key:
        msg = f"no API key for {name}: set {prefix}_API_KEY (or pass api_key)"
        raise ProviderError(msg)
    return remote[name](
        key,
        base_url or environ.get(f"{prefix}_BASE_URL"),
        timeout=timeout,
        max_retries=max_retries,
        backoff=backoff,
        prices=prices,
    )
