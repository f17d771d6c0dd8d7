"""The `promptrecord` command as a new user runs it: demo, workspace create, serve."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from promptrecord.api.cli import main


def run(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTRECORD_")}
    return subprocess.run(
        [sys.executable, "-m", "promptrecord.api.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_demo_tours_the_ledger_in_under_ten_seconds(tmp_path: Path) -> None:
    started = time.monotonic()
    done = run("demo", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 10
    tour = json.loads(done.stdout)
    steps = tour["steps"]
    assert len(steps) == 5
    assert all(len(step["tenants"]) == 5 for step in steps)
    # nothing deployed yet, then v1 for everyone
    assert all("not" in row["error"] for row in steps[0]["tenants"])
    assert {row["version"] for row in steps[1]["tenants"]} == {1}
    # the canary: every tenant is bucketed, and the arm follows bucket < share
    for row in steps[2]["tenants"]:
        assert row["reason"] == "rollout"
        assert (row["version"] == 2) == (row["bucket"] < 0.10)
    # acme pinned to v2, then the rollback leaves the pin and sends the rest to v1
    acme = {step["step"]: step["tenants"][0] for step in steps}
    assert list(acme.values())[3] == {"tenant": "acme", "version": 2, "reason": "pinned"}
    final = steps[4]["tenants"]
    assert final[0]["version"] == 2 and final[0]["reason"] == "pinned"
    assert {row["version"] for row in final[1:]} == {1}
    assert not list(tmp_path.iterdir()), "the demo must not leave files behind"


def test_workspace_create_prints_a_key_once_and_refuses_a_second_time(tmp_path: Path) -> None:
    created = run("workspace", "create", "acme", "--json", cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    token = json.loads(created.stdout)["admin_key"]
    assert token.startswith("pr_")
    assert token not in (tmp_path / "promptrecord.db").read_bytes().decode("latin-1")
    again = run("workspace", "create", "acme", cwd=tmp_path)
    assert again.returncode == 1
    assert "already exists" in again.stderr
    bad = run("workspace", "create", "Not A Slug", cwd=tmp_path)
    assert bad.returncode == 1 and "must match" in bad.stderr


def test_bad_database_url_is_an_error_not_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["workspace", "create", "acme", "--database-url", "mysql://nope"])
    assert code == 2
    assert "PROMPTRECORD_DATABASE_URL 'mysql://nope'" in capsys.readouterr().err


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_bootstraps_a_workspace_serves_and_keeps_the_views(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTRECORD_")}
    server = subprocess.Popen(
        [sys.executable, "-m", "promptrecord.api.cli", "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, "serve exited early"
            assert time.monotonic() < deadline, "serve did not start"
            time.sleep(0.1)
        key_file = tmp_path / "promptrecord-admin.key"
        assert oct(key_file.stat().st_mode & 0o777) == "0o600"
        headers = {"Authorization": f"Bearer {key_file.read_text().strip()}"}
        content = {
            "type": "text",
            "text": "Summarise {{ doc }}",
            "model": {"provider": "openai", "name": "gpt-4o-2024-08-06"},
        }
        created = httpx.post(
            f"{base}/v1/prompts", json={"name": "summary", "content": content}, headers=headers
        )
        assert created.status_code == 201, created.text
        # the embedded projector folds the commit into the catalog view
        deadline = time.monotonic() + 10
        rows: list[tuple[str, str, int]] = []
        while not rows and time.monotonic() < deadline:
            with sqlite3.connect(tmp_path / "promptrecord.db") as db:
                rows = db.execute(
                    "SELECT workspace, prompt, head_version FROM promptrecord_view_catalog"
                ).fetchall()
            time.sleep(0.1)
        assert rows == [("default", "summary", 1)]
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=15)
    assert "admin key is in promptrecord-admin.key" in output
    assert f"listening on http://127.0.0.1:{port}" in output
