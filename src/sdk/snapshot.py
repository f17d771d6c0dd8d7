"""The disk snapshot of the last good answer per request, served when the server is down."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from promptrecord.sdk.prompt import Prompt

__all__ = ["SnapshotStore", "default_directory"]

log = logging.getLogger("promptrecord.sdk")


def default_directory() -> Path:
    """`$XDG_CACHE_HOME/promptrecord`, else `~/.cache/promptrecord`."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "promptrecord"


class SnapshotStore:
    """One JSON file per (server, API key id, prompt, environment, tenant, key, version).

    Files are replaced atomically (a temporary file renamed over the old one), so a reader
    sees the old answer or the new one, never half of one; a file that does not parse is
    ignored. Failures to read or write are logged and never reach the caller: the snapshot
    is a safety net, not a dependency.
    """

    def __init__(self, directory: Path, scope: str) -> None:
        self.directory = directory
        self._scope = scope

    def path(self, request: tuple[str, str, str | None, str | None, int | None]) -> Path:
        identity = json.dumps([self._scope, *request], separators=(",", ":"))
        return self.directory / f"{hashlib.sha256(identity.encode()).hexdigest()[:40]}.json"

    def save(
        self, request: tuple[str, str, str | None, str | None, int | None], prompt: Prompt
    ) -> None:
        body = {"scope": self._scope, "request": list(request), "prompt": prompt.to_snapshot()}
        target = self.path(request)
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
            try:
                with os.fdopen(handle, "w", encoding="utf-8") as file:
                    json.dump(body, file, ensure_ascii=False, separators=(",", ":"))
                os.replace(temporary, target)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        except (OSError, TypeError, ValueError) as error:
            log.warning("promptrecord: could not write the snapshot %s: %s", target, error)

    def load(self, request: tuple[str, str, str | None, str | None, int | None]) -> Prompt | None:
        target = self.path(request)
        try:
            body: Any = json.loads(target.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            log.warning("promptrecord: ignoring unreadable snapshot %s: %s", target, error)
            return None
        # The file name is a hash; the body says what it answers, checked so a stray or
        # colliding file is never served for another request.
        if not isinstance(body, dict) or body.get("scope") != self._scope:
            return None
        if body.get("request") != list(request):
            return None
        try:
            return Prompt.from_snapshot(body["prompt"])
        except (KeyError, TypeError, ValueError) as error:
            log.warning("promptrecord: ignoring malformed snapshot %s: %s", target, error)
            return None
