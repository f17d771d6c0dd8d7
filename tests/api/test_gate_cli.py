"""`promptrecord gate` and `promptrecord dataset` against a real server, as a CI job runs them."""

from __future__ import annotations

import io
import json
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from promptrecord.api.cli import main
from promptrecord.api.demo import run_demo

if TYPE_CHECKING:
    from tests.api.conftest import Api

N = 12
RIGHT = {"offline_accuracy": 1.0}  # the offline provider answers with the reference
WRONG = {"offline_accuracy": 0.0}  # … never


def examples(n: int = N) -> list[dict[str, Any]]:
    return [
        {
            "id": f"q{i}",
            "inputs": {"question": f"{i}+{i} [[answer: {2 * i}]]"},
            "reference": str(2 * i),
            "tags": [],
        }
        for i in range(1, n + 1)
    ]


def setup(api: Api, baseline: dict[str, Any], candidate: dict[str, Any]) -> None:
    """Prompt `bot`: v1 serving production, v2 the candidate; dataset `golden`."""
    admin = api.admin
    first = api.content("You answer sums (v1).", **baseline)
    assert admin.post("/v1/prompts", json={"name": "bot", "content": first}).status_code == 201
    second = api.content("You answer sums (v2).", **candidate)
    assert admin.post("/v1/prompts/bot/versions", json={"content": second}).status_code == 201
    promote = admin.post("/v1/prompts/bot/environments/production/promote", json={"version": 1})
    assert promote.status_code == 200
    created = admin.post("/v1/datasets", json={"name": "golden", "examples": examples()})
    assert created.status_code == 201


def gate(api: Api, *extra: str) -> int:
    args = ["gate", "bot", "--candidate", "2", "--against", "production", "--dataset", "golden"]
    return main(
        [*args, "--provider", "offline", "--url", api.base_url, "--key", api.admin_token, *extra]
    )


def test_a_passing_gate_exits_0_and_prints_the_table(
    api: Api, capsys: pytest.CaptureFixture[str]
) -> None:
    setup(api, WRONG, RIGHT)
    assert gate(api, "--reason", "PR 7") == 0
    out, err = capsys.readouterr()
    assert "gate bot: v2 against v1 (production) on golden v1, 12 examples" in out
    assert "baseline right" in out and "candidate wrong" in out
    table = [line.split() for line in out.splitlines() if line.strip().startswith("baseline")]
    assert table == [["baseline", "right", "0", "0"], ["baseline", "wrong", "12", "0"]]
    assert "McNemar (exact)" in out and "p = 0.0004883" in out
    assert "win rate: candidate 100.0%, baseline 0.0%; difference +100.0% (95% CI" in out
    assert "p95 latency: candidate" in out and "usage: 24 calls" in out
    assert out.rstrip().endswith("PASSED") and "regressed examples" not in out
    assert "12/12 examples" in err  # the progress on stderr

    assert gate(api, "--json") == 0
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["passed"] is True and verdict["table"]["candidate_only"] == N
    assert verdict["regressed_examples"] == [] and len(verdict["improved_ids"]) == N


def test_a_blocked_gate_exits_1_and_lists_the_regressions(
    api: Api, capsys: pytest.CaptureFixture[str]
) -> None:
    setup(api, RIGHT, WRONG)
    assert gate(api) == 1
    out, _ = capsys.readouterr()
    assert "BLOCKED:" in out and "significant_regression" in out
    assert "regressed examples (12):" in out
    lines = out.splitlines()
    at = lines.index("  q1")
    assert lines[at + 1] == "    baseline:  2" and lines[at + 2].startswith(
        "    candidate: I am not"
    )

    assert gate(api, "--json") == 1
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["passed"] is False
    assert [r["code"] for r in verdict["reasons"]] == ["significant_regression"]
    regressed = {r["example_id"]: r for r in verdict["regressed_examples"]}
    assert len(regressed) == N and regressed["q3"]["baseline"] == "6"


def test_refusals_exit_1_and_bad_input_a_failed_run_and_no_server_exit_2(
    api: Api,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    setup(api, WRONG, RIGHT)
    assert gate(api, "--grader", '{"type": "fuzzy"}') == 2  # the server's 422: bad input
    assert "graders[0].type" in capsys.readouterr().err
    assert gate(api, "--grader", "{not json") == 2
    assert "--grader #1 is not JSON" in capsys.readouterr().err
    assert gate(api, "--threshold", "alpha") == 2
    assert "NAME=VALUE" in capsys.readouterr().err
    assert gate(api, "--threshold", "alpha=2") == 2
    assert "thresholds.alpha" in capsys.readouterr().err
    assert gate(api, "--json", "--dataset", "nope") == 2
    assert json.loads(capsys.readouterr().err)["code"] == "dataset_not_found"

    # a run that fails (no API key for the provider) is an error, not a verdict
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    assert gate(api, "--provider", "anthropic") == 2
    assert "failed" in capsys.readouterr().err

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    assert gate(api, "--url", closed) == 2
    assert f"cannot reach the promptrecord server at {closed}" in capsys.readouterr().err

    monkeypatch.chdir(tmp_path)  # no ./promptrecord-admin.key here
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))  # and no config file
    args = ["gate", "bot", "--candidate", "2", "--dataset", "golden", "--url", api.base_url]
    assert main(args) == 2
    assert "no API key" in capsys.readouterr().err
    monkeypatch.setenv("PROMPTRECORD_API_KEY", "pr_nope_nope")
    assert main(args) == 2  # the server refuses the key (401): misconfigured, not a verdict
    assert "API key" in capsys.readouterr().err


def test_dataset_push_list_show_download(
    api: Api, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    def dataset(*args: str) -> int:
        return main(["dataset", *args, "--url", api.base_url, "--key", api.admin_token])

    first = tmp_path / "first.jsonl"
    first.write_text("".join(json.dumps(e) + "\n" for e in examples(3)))
    assert dataset("push", "golden", str(first)) == 2
    assert "pass --create" in capsys.readouterr().err
    assert dataset("push", "golden", str(first), "--create", "--message", "three sums") == 0
    assert "pushed 3 examples to golden: version 1 (3 examples)" in capsys.readouterr().out

    more = tmp_path / "more.jsonl"
    more.write_text(json.dumps(examples(5)[4]) + "\n" + '{"id": "q9", "inputs": 3}\n')
    assert dataset("push", "golden", str(more)) == 2
    assert "line 2" in capsys.readouterr().err
    more.write_text(json.dumps(examples(5)[4]) + "\n")
    assert dataset("push", "golden", str(more), "--create", "--json") == 0
    assert json.loads(capsys.readouterr().out)["version"] == 2
    assert dataset("push", "golden", str(more)) == 1  # q5 is already in: refused
    assert "already in dataset" in capsys.readouterr().err

    assert dataset("list") == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[0].split()[:3] == ["NAME", "VERSION", "EXAMPLES"]
    assert listed[1].split()[:3] == ["golden", "2", "4"]
    assert dataset("show", "golden", "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert [v["count"] for v in shown["versions"]] == [3, 4]
    assert dataset("show", "nope") == 2
    assert "dataset 'nope' does not exist" in capsys.readouterr().err

    target = tmp_path / "v1.jsonl"
    assert dataset("download", "golden", "--version", "1", "-o", str(target)) == 0
    assert [json.loads(line) for line in target.read_text().splitlines()] == examples(3)
    assert dataset("download", "golden") == 0
    latest = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["id"] for line in latest] == ["q1", "q2", "q3", "q5"]
    assert dataset("download", "golden", "--version", "7") == 2
    assert "versions 1 to 2" in capsys.readouterr().err


def test_the_demo_ends_with_an_offline_eval_of_v2_against_production(tmp_path: Path) -> None:
    out = io.StringIO()
    assert run_demo(out, as_json=True, directory=tmp_path) == 0
    evaluation = json.loads(out.getvalue())["eval"]
    assert evaluation["baseline"] == 1 and evaluation["n_examples"] == 12
    assert evaluation["passed"] is True and evaluation["regressed_ids"] == []
    assert evaluation["usage"]["calls"] == 24
    text = io.StringIO()
    assert run_demo(text, directory=tmp_path) == 0
    assert "eval gate: v2 against v1, what production serves: PASSED" in text.getvalue()
    assert "McNemar (exact)" in text.getvalue()
