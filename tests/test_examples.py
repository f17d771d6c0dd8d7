"""The `examples/` CI flow end to end: a live `promptrecord serve`, the workflow's own steps run by
bash with the installed `promptrecord` command, then `examples/app.py` sees the new version."""

from __future__ import annotations

import importlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

EXAMPLES = Path(__file__).parents[1] / "examples"
BIN = Path(sys.executable).parent
INSTALL_STEP = "Install promptrecord"  # the runner has it installed already


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTRECORD_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return {**env, **extra}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """`promptrecord serve` on a fresh embedded database; yields its URL and admin key."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    home = tmp_path / "server"
    home.mkdir()
    process = subprocess.Popen(
        [str(BIN / "promptrecord"), "serve", "--port", str(port), "--log-level", "warning"],
        cwd=home,
        env=_env(XDG_CONFIG_HOME=str(tmp_path)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, "serve exited early"
            assert time.monotonic() < deadline, "serve did not start"
            time.sleep(0.1)
        yield url, (home / "promptrecord-admin.key").read_text().strip()
    finally:
        process.terminate()
        process.communicate(timeout=15)


def workflow_steps(job: str) -> list[dict[str, Any]]:
    workflow = yaml.safe_load((EXAMPLES / ".github" / "workflows" / "prompts.yml").read_text())
    steps: list[dict[str, Any]] = workflow["jobs"][job]["steps"]
    return [step for step in steps if "run" in step and step.get("name") != INSTALL_STEP]


def run_job(job: str, repo: Path, url: str, key: str, commit: str) -> str:
    """The job's shell steps, in order, as the runner would run them; their output."""
    env = _env(
        PROMPTRECORD_URL=url,
        PROMPTRECORD_API_KEY=key,
        GIT_COMMIT=commit,
        REASON=f"merged {commit}",
        XDG_CONFIG_HOME=str(repo.parent),
    )
    output = []
    for step in workflow_steps(job):
        done = subprocess.run(
            ["bash", "-e", "-c", step["run"]],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, f"{step['name']}: {done.stdout}\n{done.stderr}"
        output.append(done.stdout)
    return "".join(output)


def app_says(repo: Path, url: str, key: str) -> str:
    done = subprocess.run(
        [sys.executable, str(repo / "app.py"), "acme"],
        # The SDK's disk snapshot goes to the test's directory, not the user's cache.
        env=_env(PROMPTRECORD_URL=url, PROMPTRECORD_API_KEY=key, XDG_CACHE_HOME=str(repo.parent)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_ci_flow_pushes_gates_promotes_and_the_app_sees_it(
    tmp_path: Path, server: tuple[str, str]
) -> None:
    url, key = server
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLES, repo)
    sdk = importlib.import_module("promptrecord.sdk")

    out = run_job("production", repo, url, key, "1111111")
    assert "support-bot: created v1" in out and "release-notes: created v1" in out
    assert "nothing to gate: nothing serves support-bot in production yet" in out
    assert "promoted support-bot v1 to production" in out
    if hasattr(sdk, "PromptClient"):
        assert app_says(repo, url, key).startswith("support-bot v1 for tenant acme")

    system = repo / "prompts" / "support-bot" / "system.md"
    system.write_text(system.read_text().replace("politely", "kindly"))
    out = run_job("production", repo, url, key, "2222222")
    assert "support-bot: committed v2" in out and "release-notes: unchanged" in out
    assert "gate support-bot: v2 against v1 (production) on support-bot v1, 10 examples" in out
    assert "PASSED" in out and "promoted support-bot v2 to production" in out
    version = httpx.get(
        f"{url}/v1/prompts/support-bot/versions/2", headers={"Authorization": f"Bearer {key}"}
    ).json()
    assert version["git_sha"] == "2222222" and version["git_path"] == "prompts/support-bot"
    if not hasattr(sdk, "PromptClient"):
        pytest.skip("promptrecord.sdk.PromptClient has not landed yet: app.py not run")
    said = app_says(repo, url, key)
    assert said.startswith("support-bot v2 for tenant acme")
    assert "kindly" in said and "Where is my order?" in said

    out = run_job("production", repo, url, key, "3333333")  # the same tree again
    assert "nothing changed: 2 prompt(s) already in sync" in out
    assert "nothing to gate: v2 already serves production" in out
    assert "v2 already serves production: unchanged" in out
