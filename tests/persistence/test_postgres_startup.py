"""Replicas opening one fresh PostgreSQL schema at the same moment all start."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from promptrecord.domain.application import PromptRecord
from promptrecord.settings import Settings

REPLICA = """
import pathlib, sys, time
from promptrecord.domain.application import PromptRecord
from promptrecord.settings import Settings
url, schema, go = sys.argv[1:4]
env = Settings(database_url=url, database_schema=schema).eventsourcing_env()
env["POSTGRES_POOL_SIZE"] = "2"
while not pathlib.Path(go).exists():  # released together, so they create the tables at once
    time.sleep(0.005)
PromptRecord(env=env).close()
"""


def test_eight_replicas_create_the_event_store_together(
    postgres_settings: Settings, tmp_path: Path
) -> None:
    assert postgres_settings.database_schema is not None
    go = tmp_path / "go"
    replicas = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                REPLICA,
                postgres_settings.database_url,
                postgres_settings.database_schema,
                str(go),
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    go.touch()
    errors = [replica.communicate(timeout=60)[1] for replica in replicas]
    assert [replica.returncode for replica in replicas] == [0] * 8, errors
    app = PromptRecord(env=postgres_settings.eventsourcing_env())
    _, token = app.create_workspace("acme")
    assert token.startswith("pr_")
    app.close()
