"""The SDK imports and works where the server's dependencies are not installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.sdk.conftest import SdkServer

ROOT = Path(__file__).resolve().parents[2]
SERVER_ONLY = [
    "promptrecord.api",
    "promptrecord.domain",
    "promptrecord.projections",
    "promptrecord.workers",
    "promptrecord.persistence",
    "promptrecord.settings",
    "fastapi",
    "starlette",
    "pydantic",
    "eventsourcing",
    "dramatiq",
    "psycopg",
    "scipy",
    "uvicorn",
    "redis",
]

# Fetches, compiles and logs against the live server given as argv; prints what it saw.
USE_THE_SDK = textwrap.dedent(
    """
    import json, sys
    from promptrecord.sdk import PromptClient

    base_url, token, snapshots = sys.argv[1:4]
    with PromptClient(base_url, token, fallback_dir=snapshots) as client:
        prompt = client.get("bot", tenant="acme")
        messages = prompt.compile(company="Acme", question="?")
        client.log_execution(prompt, latency_ms=12.5, tokens_in=3, tokens_out=4)
        flushed = client.flush(timeout=30)
        print(json.dumps({
            "version": prompt.version,
            "messages": messages,
            "flushed": flushed,
            "sent": client.stats.sent,
            "loaded": sorted(m for m in sys.modules if m.split(".")[0] in
                             ("fastapi", "eventsourcing", "dramatiq", "psycopg", "scipy",
                              "pydantic", "starlette", "uvicorn")
                             or m.startswith(("promptrecord.api", "promptrecord.domain",
                                              "promptrecord.projections", "promptrecord.workers"))),
        }))
    """
)

REFUSE_SERVER_IMPORTS = textwrap.dedent(
    """
    import sys

    BLOCKED = {blocked!r}

    class RefuseServerImports:
        def find_spec(self, name, path=None, target=None):
            if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                raise ImportError(f"the SDK imported {{name}}, a server dependency")
            return None

    sys.meta_path.insert(0, RefuseServerImports())
    """
)


def _check(output: str) -> None:
    seen = json.loads(output.strip().splitlines()[-1])
    assert seen["version"] == 1 and seen["messages"][0]["content"] == "v1 Acme"
    assert seen["flushed"] and seen["sent"] == 1
    assert seen["loaded"] == []


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_the_sdk_runs_with_server_imports_refused(server: SdkServer) -> None:
    server.deploy()
    script = REFUSE_SERVER_IMPORTS.format(blocked=SERVER_ONLY) + USE_THE_SDK
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            server.base_url,
            server.runtime_token,
            str(server.snapshots),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    _check(result.stdout)


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1"}


def _pip(venv: Path, *args: str) -> None:
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode == 0:
        return
    unreachable = any(
        sign in result.stderr
        for sign in (
            "No matching distribution",
            "Could not find a version",
            "NewConnectionError",
            "Temporary failure in name resolution",
            "Network is unreachable",
        )
    )
    if unreachable and not _in_ci():
        pytest.skip(
            "!!! SKIPPED: pip could not reach a package registry to build the SDK-only "
            f"virtual environment (pip install {' '.join(args)}): {result.stderr[-400:]}"
        )
    raise AssertionError(f"pip install {' '.join(args)} failed:\n{result.stderr}")


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_the_sdk_works_in_a_virtualenv_with_only_its_own_needs(
    server: SdkServer, tmp_path: Path
) -> None:
    server.deploy()
    venv = tmp_path / "sdk-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    _pip(venv, "--no-deps", "-e", str(ROOT))
    _pip(venv, "httpx>=0.27", "jinja2>=3.1")
    python = str(venv / "bin" / "python")
    absent = subprocess.run(
        [
            python,
            "-c",
            "import importlib.util as u; print([m for m in ('fastapi', 'eventsourcing',"
            " 'dramatiq', 'psycopg', 'scipy', 'pydantic') if u.find_spec(m)])",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert absent.stdout.strip() == "[]", "the SDK-only environment has server packages"
    result = subprocess.run(
        [python, "-c", USE_THE_SDK, server.base_url, server.runtime_token, str(server.snapshots)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    _check(result.stdout)
