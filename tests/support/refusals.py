"""Assert that a command is refused with a given error and code, and wrote nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from promptrecord.domain.errors import DomainError


def log_end(record: Any) -> int:
    return int(record.app.recorder.max_notification_id() or 0)


def refused(
    record: Any,
    error: type[DomainError],
    code: str,
    call: Callable[..., Any],
    *args: Any,
    **kwargs: Any,
) -> DomainError:
    """Run a command that must be refused with `error` / `code` and must write nothing."""
    before = log_end(record)
    with pytest.raises(error) as caught:
        call(*args, **kwargs)
    assert caught.value.code == code, f"{caught.value.code}: {caught.value.detail}"
    assert caught.value.detail  # a refusal always says what is wrong
    assert log_end(record) == before, "a refused command wrote events"
    return caught.value
