"""`LiveState` follows the log written by another `PromptRecord` instance on the same store.

The writer is ``record.app``; the live state reads through a second instance, as an API
replica follows commands another replica carried out. Both backends.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import psycopg
import pytest

from promptrecord.domain.errors import NotFound
from promptrecord.domain.resolution import ResolutionState, resolve
from promptrecord.projections.live import LiveState

WS = "acme"


def answer(live: LiveState, record: Any, tenant: str | None = "t1", env: str = "production"):
    return live.read(lambda state: resolve(state, WS, "bot", env, tenant, None, record.clock.now))


def served(live: LiveState, record: Any, tenant: str | None = "t1") -> tuple[int, str]:
    found = answer(live, record, tenant)
    return found.version.number, found.reason


@pytest.fixture
def live(record: Any) -> Any:
    follower = LiveState(record.second_app(), poll_interval=0.02, batch=3)
    try:
        yield follower
    finally:
        follower.stop()


def log_end(record: Any) -> int:
    return int(record.app.recorder.max_notification_id() or 0)


def test_catch_up_folds_everything_written_so_far(record: Any, live: LiveState) -> None:
    assert live.position == 0
    record.new_prompt("bot", "one", "two", "three")
    record.app.promote(WS, "bot", "production", 1, record.bob)
    end = log_end(record)
    assert end > 2 * live.batch  # several batches
    assert live.catch_up() == end
    assert live.position == end
    assert served(live, record) == (1, "promoted")
    assert live.catch_up() == end  # nothing new: stays put


def test_wait_for_a_position_written_by_the_other_instance(record: Any, live: LiveState) -> None:
    record.new_prompt("bot", "one", "two")
    first = record.app.promote(WS, "bot", "production", 1, record.bob)
    assert live.wait_for(first.position, timeout=5)
    assert live.position >= first.position
    assert served(live, record) == (1, "promoted")

    rollout = record.app.start_rollout(WS, "bot", "production", 2, 0.5, record.bob)
    pinned = record.app.pin(WS, "t1", "bot", "production", 2, record.bob)
    assert live.wait_for(pinned.position, timeout=5)
    assert live.position >= rollout.position
    assert served(live, record, "t1") == (2, "pinned")
    assert served(live, record, None) == (1, "rollout")

    back = record.app.rollback(WS, "bot", "production", "incident", record.carol)
    record.app.unpin(WS, "t1", "bot", "production", record.carol)
    assert live.wait_for(back.position, timeout=5)
    assert live.catch_up() == log_end(record)
    assert served(live, record, "t1") == (1, "promoted")


def test_wait_for_a_position_not_yet_written_times_out(record: Any, live: LiveState) -> None:
    record.new_prompt("bot", "one")
    end = log_end(record)
    started = time.monotonic()
    assert live.wait_for(end + 50, timeout=0.3) is False
    waited = time.monotonic() - started
    assert 0.25 <= waited < 3
    assert live.position == end  # it still caught up with what exists


def test_wait_for_wakes_when_the_position_arrives(record: Any, live: LiveState) -> None:
    record.new_prompt("bot", "one")
    live.catch_up()
    target = log_end(record) + 2  # Deployment.Created + Promoted
    writer = threading.Timer(
        0.2, lambda: record.app.promote(WS, "bot", "production", 1, record.bob)
    )
    writer.start()
    try:
        assert live.wait_for(target, timeout=5)
    finally:
        writer.join()
    assert served(live, record) == (1, "promoted")


def test_background_follower_picks_up_commands(record: Any, live: LiveState) -> None:
    record.new_prompt("bot", "one", "two")
    live.start()
    live.start()  # a second start is harmless
    result = record.app.promote(WS, "bot", "production", 2, record.bob)
    deadline = time.monotonic() + 5
    while live.position < result.position and time.monotonic() < deadline:
        time.sleep(0.01)  # no catch_up here: the follower thread does the reading
    assert live.position >= result.position
    assert served(live, record) == (2, "promoted")
    live.stop()
    after_stop = record.app.rollback(WS, "bot", "production", "x", record.bob, to_version=1)
    time.sleep(0.15)
    assert live.position < after_stop.position  # stopped means stopped
    assert live.wait_for(after_stop.position, timeout=5)  # wait_for still reads on demand
    assert served(live, record) == (1, "promoted")


def test_live_state_equals_a_fresh_fold(record: Any, live: LiveState) -> None:
    record.new_prompt("bot", "one", "two", "three")
    app = record.app
    app.promote(WS, "bot", "staging", 1, record.bob)
    app.promote(WS, "bot", "production", 1, record.bob)
    live.catch_up()  # fold part of the history first, the rest later
    app.start_rollout(WS, "bot", "production", 3, 0.4, record.bob, key_by="tenant")
    app.pin(WS, "t7", "bot", "production", 2, record.bob)
    app.adjust_rollout(WS, "bot", "production", 0.6, record.bob)
    app.archive(WS, "bot", "x", record.bob, None)
    app.unarchive(WS, "bot", "y", record.bob, None)
    assert live.wait_for(log_end(record))
    fresh = ResolutionState()
    for position, event in record.events():
        fresh.apply(event, position)
    assert fresh.position == live.position
    for env in ("staging", "production"):
        for i in range(200):
            tenant = f"t{i}"
            theirs = resolve(fresh, WS, "bot", env, tenant, None, record.clock.now)
            ours = answer(live, record, tenant, env)
            assert (ours.version.number, ours.reason, ours.cause) == (
                theirs.version.number,
                theirs.reason,
                theirs.cause,
            )
    with pytest.raises(NotFound):
        answer(live, record, "t1", "development")


def _until(condition: Any, within: float = 10.0) -> bool:
    """Poll `condition` until true or `within` seconds pass (a bound for failures, not a
    timing check)."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_start_continues_from_an_assigned_state(record: Any) -> None:
    # An API process may seed the state (from the read views) before start(): following
    # goes on from that state's position, not from the start of the log.
    record.new_prompt("bot", "one")
    seeded = ResolutionState(position=log_end(record))  # claims to hold all of it
    live = LiveState(record.second_app(), poll_interval=0.02)
    live.state = seeded
    try:
        live.start()
        assert live.state is seeded and live.position == log_end(record)
        record.new_prompt("later", "x")
        assert live.wait_for(log_end(record), timeout=5)
        assert live.state is seeded
        assert set(seeded.prompts) == {(WS, "later")}  # nothing before the seed was re-read
    finally:
        live.stop()


def test_wait_async_is_released_when_another_instance_writes(record: Any, live: Any) -> None:
    record.new_prompt("bot", "one")
    live.start()
    target = log_end(record) + 2  # Deployment.Created + Promoted

    async def scenario() -> tuple[bool, bool]:
        waiting = asyncio.ensure_future(live.wait_async(target, timeout=10))
        never = asyncio.ensure_future(live.wait_async(target + 1000, timeout=0.3))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        await asyncio.to_thread(record.app.promote, WS, "bot", "production", 1, record.bob)
        return await waiting, await never

    reached, unreached = asyncio.run(scenario())
    assert reached is True and unreached is False
    assert live.position >= target
    assert served(live, record) == (1, "promoted")
    assert live._waiters == []  # the one that timed out was forgotten


def test_wait_async_without_a_follower_reads_the_log_itself(record: Any, live: Any) -> None:
    record.new_prompt("bot", "one")
    end = log_end(record)
    assert asyncio.run(live.wait_async(end, timeout=5)) is True  # not started
    assert live.position == end
    assert asyncio.run(live.wait_async(end + 10, timeout=0.2)) is False


def test_listen_wakes_the_follower_between_polls(record: Any) -> None:
    # A poll interval far longer than the test: only NOTIFY can bring the commands in.
    live = LiveState(record.second_app(), poll_interval=600)
    if not record.settings.is_postgres:
        assert live.listen is False  # SQLite has no LISTEN: it polls
        return
    assert live.listen is True
    record.new_prompt("bot", "one", "two")
    try:
        live.start()
        assert _until(lambda: live.listening)
        first = record.app.promote(WS, "bot", "production", 1, record.bob)
        assert _until(lambda: live.position >= first.position)
        assert served(live, record) == (1, "promoted")
    finally:
        live.stop()
    assert live.listening is False


def test_listen_resubscribes_after_its_connection_is_killed(record: Any) -> None:
    if not record.settings.is_postgres:
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    live = LiveState(record.second_app(), poll_interval=600)
    record.new_prompt("bot", "one", "two")
    try:
        live.start()
        assert _until(lambda: live.listening)
        killed = live.listen_pid
        with psycopg.connect(record.settings.database_url, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(%s)", (killed,))
        assert _until(lambda: live.subscriptions >= 2 and live.listening)
        assert live.listen_pid != killed
        # the new subscription delivers: still no poll would have found this
        result = record.app.promote(WS, "bot", "production", 2, record.bob)
        assert _until(lambda: live.position >= result.position)
        assert served(live, record) == (2, "promoted")
    finally:
        live.stop()
