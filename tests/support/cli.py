"""Run a promptrecord command in-process, as `promptrecord ...` would, on test settings."""

from __future__ import annotations

import argparse

import pytest

from promptrecord.api import cli_verify
from promptrecord.settings import Settings


def run_verify(settings: Settings, monkeypatch: pytest.MonkeyPatch, *extra: str) -> int:
    """`promptrecord verify --database-url … [extra]` against `settings`; its exit code."""
    parser = argparse.ArgumentParser(prog="promptrecord")
    cli_verify.register(parser.add_subparsers(dest="command", required=True))
    if settings.database_schema:
        monkeypatch.setenv("PROMPTRECORD_DATABASE_SCHEMA", settings.database_schema)
    args = parser.parse_args(["verify", "--database-url", settings.database_url, *extra])
    code: int = args.handler(args)
    return code
