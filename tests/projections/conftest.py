"""Fixtures of the projection tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.histories import Clock, open_world

from promptrecord.domain.application import PromptRecord
from promptrecord.projections.views import ViewStore
from promptrecord.settings import Settings


@pytest.fixture
def world(backend: Settings) -> Iterator[tuple[PromptRecord, Clock, ViewStore]]:
    """An application on a controlled clock over the backend, and its view store."""
    yield from open_world(backend)
