"""Fixtures for the worker tests: the fake model servers of ``tests/fakes``.

``anthropic_server``  a `FakeModelServer` answering ``POST /v1/messages``; point
                      ``AsyncAnthropic(base_url=anthropic_server.base_url)`` at it.
``openai_server``     one answering ``POST /v1/chat/completions``; its OpenAI base URL is
                      ``openai_server.base_url + "/v1"``.

Both record every request and are scripted per test (``enqueue``, ``reply``, ``latency``,
``usage``; see ``tests/fakes/model_servers.py``). pytest runs with
``--import-mode=importlib``, so the module is loaded here from its path rather than imported.

``namespace``         a Redis key prefix of the test's own, its keys deleted afterwards.
"""

from __future__ import annotations

import importlib.util
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import pytest
import redis

if TYPE_CHECKING:
    from tests.fakes.model_servers import FakeModelServer

_FAKES = Path(__file__).resolve().parent.parent / "fakes" / "model_servers.py"
_MODULE_NAME = "promptrecord_tests_fakes_model_servers"


def _model_servers() -> ModuleType:
    """tests/fakes/model_servers.py, loaded once (dataclasses need it in sys.modules)."""
    module = sys.modules.get(_MODULE_NAME)
    if module is None:
        spec = importlib.util.spec_from_file_location(_MODULE_NAME, _FAKES)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[_MODULE_NAME] = module
        spec.loader.exec_module(module)
    return module


@pytest.fixture
def anthropic_server() -> Iterator[FakeModelServer]:
    with _model_servers().FakeModelServer("anthropic").serving() as server:
        yield server


@pytest.fixture
def openai_server() -> Iterator[FakeModelServer]:
    with _model_servers().FakeModelServer("openai").serving() as server:
        yield server


@pytest.fixture
def namespace(redis_url: str) -> Iterator[str]:
    """A Redis key prefix of this test's own, its keys deleted afterwards."""
    name = f"t{uuid.uuid4().hex[:12]}"
    yield name
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{name}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
