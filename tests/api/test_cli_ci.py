"""The CLI a CI pipeline runs — push, gate, promote, rollout, rollback, pin, diff, audit — against
a real server over HTTP, with its exit codes and its configuration file."""

from __future__ import annotations

import json
import shutil
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from promptrecord.api.cli import main

if TYPE_CHECKING:
    from tests.api.conftest import Api

EXAMPLES = Path(__file__).parents[2] / "examples" / "prompts"


@pytest.fixture(autouse=True)
def clean_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No config file, server or key from the machine running the tests."""
    for name in ("PROMPTRECORD_URL", "PROMPTRECORD_API_KEY", "PROMPTRECORD_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.chdir(tmp_path)  # no ./promptrecord-admin.key
    return tmp_path / "config" / "promptrecord" / "config.toml"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of examples/prompts to change."""
    target = tmp_path / "repo" / "prompts"
    shutil.copytree(EXAMPLES, target)
    return target


class Cli:
    def __init__(self, api: Api, capsys: pytest.CaptureFixture[str]) -> None:
        self.api, self.capsys = api, capsys

    def __call__(self, *args: str) -> tuple[int, str, str]:
        code = main([*args, "--url", self.api.base_url, "--key", self.api.admin_token])
        out, err = self.capsys.readouterr()
        return code, out, err

    def json(self, *args: str) -> Any:
        code, out, err = self(*args, "--json")
        assert code == 0, err
        return json.loads(out)


@pytest.fixture
def cli(api: Api, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(api, capsys)


def closed_url() -> str:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_push_commits_only_what_changed_and_records_the_commit(
    cli: Cli, api: Api, tree: Path
) -> None:
    first = cli.json("push", str(tree), "--git-commit", "9fceb02aa")
    assert first["changed"] is True and first["git_commit"] == "9fceb02aa"
    pushed = {p["name"]: p for p in first["prompts"]}
    assert pushed["support-bot"]["action"] == "created" and pushed["support-bot"]["version"] == 1
    assert pushed["support-bot"]["dataset"]["added"] == 10
    assert pushed["release-notes"]["dataset"] is None
    version = api.admin.get("/v1/prompts/support-bot/versions/1").json()
    assert version["git_sha"] == "9fceb02aa" and version["git_path"] == "prompts/support-bot"
    assert version["content_hash"] == pushed["support-bot"]["content_hash"]
    assert version["content"]["metadata"]["eval"]["thresholds"]["min_examples"] == 10
    assert version["content"]["model"]["temperature"] == 0.2  # params merged into the model

    # Nothing changed: nothing written, and it says so.
    position = api.services.app.written
    code, out, _ = cli("push", str(tree), "--git-commit", "b0b0b0")
    assert code == 0 and "nothing changed: 2 prompt(s) already in sync" in out
    assert api.services.app.written == position
    again = cli.json("push", str(tree))
    assert again["changed"] is False
    assert {p["action"] for p in again["prompts"]} == {"unchanged"}

    # A changed template and one new example; a dry run first writes nothing.
    system = tree / "support-bot" / "system.md"
    system.write_text(system.read_text().replace("politely", "kindly"))
    with (tree / "support-bot" / "eval.jsonl").open("a") as handle:
        handle.write(json.dumps({"id": "faq-11", "inputs": {}, "reference": "x"}) + "\n")
    code, out, _ = cli("push", str(tree), "--dry-run")
    assert code == 0 and "support-bot: would be committed v2" in out
    assert "would be appended, +1 examples" in out and "dry run: nothing was written" in out
    assert api.services.app.written == position
    third = cli.json("push", str(tree), "--message", "kinder")
    bot = next(p for p in third["prompts"] if p["name"] == "support-bot")
    assert (bot["action"], bot["version"]) == ("committed", 2)
    assert (bot["dataset"]["action"], bot["dataset"]["added"]) == ("appended", 1)
    assert bot["dataset"]["version"] == 2 and bot["dataset"]["count"] == 11
    assert api.admin.get("/v1/prompts/support-bot/versions/2").json()["message"] == "kinder"


def test_push_refuses_bad_files_naming_them(cli: Cli, tree: Path) -> None:
    meta = tree / "release-notes" / "metadata.yaml"
    meta.write_text(meta.read_text() + "colour: blue\n")
    code, _, err = cli("push", str(tree))
    assert code == 2 and "metadata.yaml: unknown key 'colour'" in err
    meta.write_text(meta.read_text().replace("colour: blue\n", "").replace("0.3", "7"))
    code, _, err = cli("push", str(tree))
    assert code == 2 and "model.temperature must be between 0 and 2" in err
    meta.write_text(meta.read_text().replace("temperature: 7", "temperature: 0.3"))
    (tree / "support-bot" / "system.md").write_text("Hello {{ company ")  # does not parse
    code, _, err = cli("push", str(tree))
    assert code == 2 and "refused:" not in err, err
    assert "(field messages[0].content, template_syntax)" in err and "column 18" in err, err


def test_promote_rollout_rollback_pin_unpin_and_diff(cli: Cli, api: Api, tree: Path) -> None:
    cli.json("push", str(tree))
    promoted = cli.json("promote", "support-bot", "production", "--reason", "launch")
    assert (promoted["status"], promoted["version"]) == ("promoted", 1)
    code, out, _ = cli("promote", "support-bot", "production")
    assert code == 0 and "v1 already serves production: unchanged" in out

    system = tree / "support-bot" / "system.md"
    system.write_text(system.read_text().replace("politely", "kindly"))
    cli.json("push", str(tree))
    started = cli.json("rollout", "start", "support-bot", "production", "--share", "0.1")
    assert (started["status"], started["version"]) == ("rollout_started", 2)
    code, out, _ = cli("rollout", "adjust", "support-bot", "production", "--share", "0.5")
    assert code == 0 and "rollout share now 50%" in out
    aborted = cli.json("rollout", "abort", "support-bot", "production")
    assert aborted["status"] == "aborted"
    cli.json("rollout", "start", "support-bot", "production", "--candidate", "2", "--share", "0.2")
    done = cli.json("rollout", "complete", "support-bot", "production")
    assert (done["status"], done["version"]) == ("promoted", 2)

    code, out, _ = cli("rollback", "support-bot", "production", "--reason", "too kind")
    assert code == 0 and "v1 serves now" in out
    pinned = cli.json("pin", "acme", "support-bot", "2", "--ttl", "3600", "--reason", "trial")
    assert pinned["version"] == 2
    resolved = api.admin.get("/v1/prompts/support-bot/resolve", params={"tenant": "acme"})
    assert resolved.json()["version"] == 2 and resolved.json()["reason"] == "pinned"
    code, out, _ = cli("unpin", "acme", "support-bot")
    assert code == 0 and "unpinned tenant acme from support-bot in production" in out
    resolved = api.admin.get("/v1/prompts/support-bot/resolve", params={"tenant": "acme"})
    assert resolved.json()["version"] == 1

    code, out, _ = cli("diff", "support-bot")  # not a terminal: plain marks
    assert code == 0 and "[-politely-]{+kindly+}" in out and "\033[" not in out
    code, out, _ = cli("diff", "support-bot", "1", "2", "--color", "always")
    assert "\033[32mkindly" in out and "\033[31mpolitely" in out
    diff = cli.json("diff", "support-bot", "1", "2")
    assert diff["changed"] is True and diff["from_version"] == 1


def test_refusals_exit_1_with_the_problem_and_errors_exit_2(cli: Cli, tree: Path) -> None:
    cli.json("push", str(tree))
    code, _, err = cli("promote", "support-bot", "production", "--version", "9")
    assert code == 2  # bad input: a pipeline bug, not a decision
    assert "prompt 'support-bot' has no version 9" in err
    assert "field version" in err and "version_not_found" in err
    code, _, err = cli("promote", "support-bot", "nowhere", "--json")
    assert code == 2 and json.loads(err)["code"] == "environment_not_found"
    code, _, err = cli("rollout", "start", "support-bot", "production", "--share", "1.5")
    assert code == 2 and "share" in err
    code, _, err = cli("rollback", "support-bot", "production", "--reason", "nothing to undo")
    assert code == 1 and "refused:" in err
    code = main(["diff", "support-bot", "--url", closed_url(), "--key", "pr_x_y"])
    assert code == 2
    code = main(["promote", "support-bot", "production", "--url", cli.api.base_url])
    assert code == 2  # no key anywhere
    code = main(["promote", "support-bot", "production", "--url", cli.api.base_url, "--key", "x"])
    assert code == 2  # the server refuses the key (401): the pipeline is misconfigured


def test_gate_takes_its_settings_from_the_pushed_metadata(cli: Cli, tree: Path) -> None:
    cli.json("push", str(tree))
    first = cli.json("gate", "support-bot", "--against", "production", "--allow-first")
    assert first["skipped"] == "first_release" and first["passed"] is True
    code, _, err = cli("gate", "support-bot", "--against", "production")
    assert code == 1 and "not_deployed" in err
    cli.json("promote", "support-bot", "production")
    same = cli.json("gate", "support-bot", "--against", "production")
    assert same["skipped"] == "already_serving"

    system = tree / "support-bot" / "system.md"
    system.write_text(system.read_text().replace("politely", "kindly"))
    cli.json("push", str(tree))
    verdict = cli.json("gate", "support-bot", "--against", "production")
    assert verdict["passed"] is True and verdict["candidate"] == 2 and verdict["baseline"] == 1
    assert verdict["dataset"] == "support-bot" and verdict["n_examples"] == 10


def test_audit_over_http(
    cli: Cli, api: Api, tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cli.json("push", str(tree))
    cli.json("promote", "support-bot", "production", "--reason", "launch")
    now = datetime.now(UTC).isoformat()
    hour_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    base = ["audit", "--tenant", "acme", "--prompt", "support-bot", "--url", api.base_url]
    base += ["--api-key", api.admin_token]
    assert main([*base, "--at", now]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert out.startswith("tenant acme got support-bot v1 in production at") and "launch" in out
    assert main([*base, "--at", now, "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["version"] == 1 and answer["method"] in ("views", "replay")
    assert main([*base, "--from", hour_ago, "--to", now, "--json"]) == 0
    intervals = json.loads(capsys.readouterr().out)
    assert intervals[0]["reason"] == "refused" and intervals[-1]["reason"] == "promoted"
    assert intervals[-1]["version"] == 1 and intervals[-1]["valid_to"] is None
    assert main([*base, "--at", hour_ago]) == 2  # before the prompt existed: a wrong question
    assert "did not exist yet" in capsys.readouterr().err
    assert main([*base, "--at", "09:00"]) == 2  # bad input to the CLI, never sent


def test_config_file_profiles_and_precedence(
    api: Api,
    clean_config: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    closed = closed_url()
    clean_config.parent.mkdir(parents=True)
    clean_config.write_text(
        f'[default]\nurl = "{closed}"\napi_key = "{api.admin_token}"\n\n'
        f'[ci]\nurl = "{api.base_url}"\n'
    )
    listing = ["dataset", "list", "--json"]
    assert main(listing) == 2  # [default] names a server that is down
    assert closed in capsys.readouterr().err
    assert main([*listing, "--profile", "ci"]) == 0  # [ci] over [default]; the key from [default]
    assert json.loads(capsys.readouterr().out) == []
    monkeypatch.setenv("PROMPTRECORD_PROFILE", "ci")
    assert main(listing) == 0
    capsys.readouterr()
    monkeypatch.setenv("PROMPTRECORD_URL", closed)  # the environment beats the file
    assert main(listing) == 2
    capsys.readouterr()
    assert main([*listing, "--url", api.base_url]) == 0  # and a flag beats the environment
    capsys.readouterr()
    monkeypatch.setenv("PROMPTRECORD_API_KEY", "pr_nope_nope")
    assert main([*listing, "--url", api.base_url]) == 2  # the environment's key, refused (401)
    capsys.readouterr()

    monkeypatch.delenv("PROMPTRECORD_PROFILE")
    assert main([*listing, "--profile", "nope"]) == 2
    assert "has no [nope] table" in capsys.readouterr().err
    clean_config.write_text('[default]\nurl = "x"\ntoken = "y"\n')
    assert main(listing) == 2
    assert f"{clean_config}: unknown key default.token" in capsys.readouterr().err
    clean_config.write_text("[default\n")
    assert main(listing) == 2
    assert f"{clean_config} is not valid TOML" in capsys.readouterr().err
