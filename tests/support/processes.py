"""`promptrecord` subprocesses for the kill tests: started on a shared env, logged, stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from promptrecord.settings import Settings


def cli_env(settings: Settings, redis_url: str, namespace: str, **extra: str) -> dict[str, str]:
    """This process's environment pointed at the test's database schema and Redis namespace,
    with `extra` ``PROMPTRECORD_…`` (or other) variables on top."""
    return {
        **os.environ,
        "PROMPTRECORD_DATABASE_URL": settings.database_url,
        "PROMPTRECORD_DATABASE_SCHEMA": settings.database_schema or "",
        "PROMPTRECORD_REDIS_URL": redis_url,
        "PROMPTRECORD_REDIS_NAMESPACE": namespace,
        **extra,
    }


class Processes:
    """promptrecord subprocesses of one test, their output kept in files for failures."""

    def __init__(self, env: dict[str, str], folder: Path) -> None:
        self.env = env
        self.folder = folder
        self.started: list[tuple[str, subprocess.Popen[bytes], Path]] = []

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = self.folder / f"{name}-{len(self.started)}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "promptrecord.api.cli", *args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.started.append((name, process, log))
        return process

    def output(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for _, _, log in self.started)

    def stop_all(self) -> None:
        for _, process, _ in self.started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for _, process, _ in self.started:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def exit_codes(self, *, but: subprocess.Popen[bytes]) -> list[tuple[str, int | None]]:
        """(name, exit code) of every process started, `but` the one the test killed."""
        return [
            (name, process.returncode) for name, process, _ in self.started if process is not but
        ]
