"""Eight writer processes and one following projector: every committed event is applied.

PostgreSQL. `promptrecord projector` runs as its own process, following the log (LISTEN/NOTIFY
and polls) while 8 writer processes each issue about 200 commands (commits, promotions and
pins on their own prompt) at once. When the writers are done, the views' tracked position
reaches the end of the log, and the events the views hold are exactly the log's: the same
notification ids (dense, none missing) and one audit row per event, by event id. A
`LiveState` following in this process saw every event too.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from promptrecord.domain.application import PromptRecord
from promptrecord.domain.base import event_id
from promptrecord.domain.resolution import ResolutionState
from promptrecord.projections.live import LiveState
from promptrecord.projections.views import open_view_store
from promptrecord.settings import Settings

WS = "acme"
WRITERS = 8
ROUNDS = 66  # commit + promote + pin each: 198 commands per writer, plus creating its prompt
TIMEOUT = 120.0

WRITER = """
import sys
import time
from pathlib import Path
from promptrecord.domain.application import PromptRecord
from promptrecord.domain.base import Actor
from promptrecord.settings import Settings

number, rounds = int(sys.argv[1]), int(sys.argv[2])
actor = Actor(f"key-writer-{number}", f"writer {number}")
name = f"bot-{number}"


def content(text):
    model = {"provider": "anthropic", "name": "claude-sonnet-4-5-20250929"}
    return {"type": "text", "text": text, "model": model}


# Two connections each: eight default pools (10 opened at start) and the projector's would
# take most of a default max_connections of 100.
env = {**Settings().eventsourcing_env(), "POSTGRES_POOL_SIZE": "2", "POSTGRES_MAX_OVERFLOW": "2"}
app = PromptRecord(env=env)
app.create_prompt("acme", actor, name=name, content=content("v1"))
print("ready", flush=True)
go, deadline = Path(sys.argv[3]), time.monotonic() + 60
while not go.exists():
    assert time.monotonic() < deadline, "never told to go"
    time.sleep(0.01)
for step in range(rounds):
    app.commit_version("acme", name, content(f"v{step + 2}"), actor)
    app.promote("acme", name, "development", step + 2, actor)
    app.pin("acme", f"tenant-{number}-{step % 7}", name, "development", step + 1, actor)
app.close()
"""


class RecordingState(ResolutionState):
    """The live state's fold, noting every (position, event id) it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[int, str]] = []

    def apply(self, event: Any, position: int | None = None) -> None:
        self.seen.append((position or 0, event_id(event)))
        super().apply(event, position)


def eventually(condition: Callable[[], Any], timeout: float = TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return found


def test_a_following_projector_applies_every_event_of_eight_writers(
    postgres_settings: Settings, tmp_path: Path
) -> None:
    app = PromptRecord(env=postgres_settings.eventsourcing_env())
    live: LiveState | None = None
    processes: list[subprocess.Popen[str]] = []
    try:
        app.create_workspace(WS)
        store = open_view_store(app)
        env = {
            **os.environ,
            "PROMPTRECORD_DATABASE_URL": postgres_settings.database_url,
            "PROMPTRECORD_DATABASE_SCHEMA": postgres_settings.database_schema or "",
        }
        projector = subprocess.Popen(
            [sys.executable, "-m", "promptrecord.api.cli_projector", "projector"],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        processes.append(projector)
        eventually(lambda: store.position() >= 1)  # following before the writers start

        state = RecordingState()
        live = LiveState(app, poll_interval=0.05)
        live.state = state
        live.start()

        script = tmp_path / "writer.py"
        script.write_text(WRITER)
        # The writers open the event store one after another (several processes creating
        # the tables and functions at the same moment can fail with "tuple concurrently
        # updated"), then all issue their commands at once.
        go = tmp_path / "go"
        writers: list[subprocess.Popen[str]] = []
        for number in range(WRITERS):
            writer = subprocess.Popen(
                [sys.executable, str(script), str(number), str(ROUNDS), str(go)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            processes.append(writer)
            writers.append(writer)
            assert writer.stdout is not None
            assert writer.stdout.readline().strip() == "ready", writer.communicate()[1]
        go.touch()
        for writer in writers:
            _, stderr = writer.communicate(timeout=TIMEOUT)
            assert writer.returncode == 0, stderr

        end = app.recorder.max_notification_id() or 0
        assert end >= WRITERS * (1 + 3 * ROUNDS)
        eventually(lambda: store.position() >= end)
        assert projector.poll() is None, "the projector stopped"
        assert store.position() == end
        assert live.wait_for(end, timeout=TIMEOUT)

        logged = [(position, event_id(event)) for position, event in app.read_events(0, end)]
        assert [position for position, _ in logged] == list(range(1, end + 1))  # no gaps

        audit = store.dump("audit_log")
        assert len(audit) == len(logged)
        assert sorted((row["position"], row["event_id"]) for row in audit) == logged

        assert len(state.seen) == len(logged)
        assert state.seen == logged

        projector.terminate()
        _, stderr = projector.communicate(timeout=10)
        assert projector.returncode == 0, stderr
    finally:
        if live is not None:
            live.stop()
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
        app.close()
