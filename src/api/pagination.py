"""Pages of list results: `?limit=&cursor=` in, `{items, next_cursor}` out."""

from __future__ import annotations

import base64
import binascii
import json
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Generic, TypeVar

from fastapi import Depends, Query
from pydantic import BaseModel, Field

from promptrecord.domain.errors import InvalidInput

T = TypeVar("T")
Key = int | str

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


class Page(BaseModel, Generic[T]):
    """One page of a list; pass `next_cursor` back as `cursor` for the next one."""

    items: list[T]
    next_cursor: str | None = Field(
        default=None, description="Opaque; null on the last page", examples=["WyJiIl0"]
    )


@dataclass(frozen=True)
class PageRequest:
    limit: int
    cursor: str | None

    def slice(self, items: Sequence[T], key: Callable[[T], Key]) -> tuple[list[T], str | None]:
        """The page of `items` (sorted ascending by `key`) after the cursor, and the next cursor.

        The cursor holds the last key seen rather than an offset, so items added while
        someone pages through do not shift what they see.
        """
        keys = [key(item) for item in items]
        start = 0
        if self.cursor is not None:
            after = _decode(self.cursor)
            if keys and type(after) is not type(keys[0]):
                raise _invalid_cursor()
            start = bisect_right(keys, after)
        chosen = list(items[start : start + self.limit])
        more = start + self.limit < len(items)
        return chosen, _encode(keys[start + self.limit - 1]) if more else None

    def after_number(self) -> int:
        """The last number of the previous page (0 before the first), for paging in SQL."""
        value = self._after()
        if value is None:
            return 0
        if not isinstance(value, int) or not 0 <= value < 2**62:
            raise _invalid_cursor()
        return value

    def after_name(self) -> str | None:
        """The last name of the previous page (None before the first), for paging in SQL."""
        value = self._after()
        if value is not None and not isinstance(value, str):
            raise _invalid_cursor()
        return value

    def _after(self) -> Key | None:
        return None if self.cursor is None else _decode(self.cursor)

    def page(self, fetched: Sequence[T], key: Callable[[T], Key]) -> tuple[list[T], str | None]:
        """The page from up to `limit + 1` items fetched after the cursor, and the next cursor."""
        chosen = list(fetched[: self.limit])
        more = len(fetched) > self.limit
        return chosen, _encode(key(chosen[-1])) if more and chosen else None


def _encode(value: Key) -> str:
    return base64.urlsafe_b64encode(json.dumps([value]).encode()).decode().rstrip("=")


def _decode(cursor: str) -> Key:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        decoded = json.loads(raw)
    except (binascii.Error, ValueError):
        raise _invalid_cursor() from None
    if not isinstance(decoded, list) or len(decoded) != 1:
        raise _invalid_cursor()
    value = decoded[0]
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise _invalid_cursor()
    return value


def _invalid_cursor() -> InvalidInput:
    return InvalidInput(
        "cursor is not one this API gave out; pass next_cursor from the previous page, "
        "or leave it out to start from the beginning",
        field="query.cursor",
        code="invalid_cursor",
    )


async def page_request(
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description="Items per page (1..200)")
    ] = DEFAULT_LIMIT,
    cursor: Annotated[
        str | None, Query(max_length=512, description="next_cursor of the previous page")
    ] = None,
) -> PageRequest:
    return PageRequest(limit, cursor)


Paging = Annotated[PageRequest, Depends(page_request)]
