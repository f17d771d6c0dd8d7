"""Monitoring over real HTTP on both backends: configure, read the state and the checks, and
the refusals naming their field."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.api.conftest import Api

URL = "/v1/prompts/bot/monitoring"
JUDGE = {"sample_rate": 0.1, "provider": "offline", "model": "judge-1", "criteria": "polite"}
DRIFT = {"dataset": "golden", "environments": ["production"], "every_hours": 24}


def setup(api: Api) -> None:
    assert api.admin.post("/v1/prompts", json={"name": "bot", "content": api.content()}).is_success
    examples = [{"id": "1", "inputs": {"company": "Acme"}, "reference": "hi"}]
    created = api.admin.post("/v1/datasets", json={"name": "golden", "examples": examples})
    assert created.status_code == 201, created.text


def test_configure_then_read_the_state_and_the_empty_history(api: Api) -> None:
    setup(api)
    viewer = api.as_role("viewer")
    before = viewer.get(URL)
    assert before.status_code == 200 and before.json()["configured"] is False

    deployer = api.as_role("deployer")
    put = deployer.put(URL, json={"judge": JUDGE, "drift": DRIFT})
    assert put.status_code == 200, put.text
    assert put.headers["etag"] == f'"{put.json()["revision"]}"'

    body = viewer.get(URL).json()
    assert body["configured"] is True
    assert body["judge"] == {**JUDGE, "repeats": 1}
    assert body["drift"] == {**DRIFT, "every_hours": 24.0, "threshold": 0.1}
    [production] = body["environments"]
    assert production["state"] == "nothing_deployed" and production["version"] is None

    promoted = deployer.post(
        "/v1/prompts/bot/environments/production/promote", json={"version": 1, "reason": "go"}
    )
    assert promoted.status_code == 200, promoted.text
    [production] = viewer.get(URL).json()["environments"]
    assert production["state"] == "no_reference" and production["version"] == 1
    assert "promptrecord gate bot" in production["reason"]
    assert viewer.get(f"{URL}/checks").json() == []

    stale = deployer.put(URL, json={"judge": None, "drift": None}, headers={"If-Match": '"1"'})
    api.assert_problem(stale, 409, "stale_revision")
    off = deployer.put(URL, json={"judge": None, "drift": None})
    assert off.status_code == 200
    assert viewer.get(URL).json()["environments"] == []


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({"judge": {**JUDGE, "provider": "acme-llm"}}, 422, "invalid_input", "judge.provider"),
        ({"judge": {**JUDGE, "sample_rate": 2}}, 422, "invalid_input", "judge.sample_rate"),
        ({"judge": {**JUDGE, "model": ""}}, 422, "invalid_input", "judge.model"),
        ({"drift": {**DRIFT, "threshold": -1}}, 422, "invalid_input", "drift.threshold"),
        ({"drift": {**DRIFT, "dataset": "nope"}}, 404, "dataset_not_found", "drift.dataset"),
        (
            {"drift": {**DRIFT, "environments": ["production", "prod"]}},
            404,
            "environment_not_found",
            "drift.environments[1]",
        ),
    ],
)
def test_bad_settings_are_refused_naming_the_field(
    api: Api, body: dict[str, Any], status: int, code: str, field: str
) -> None:
    setup(api)
    deployer = api.as_role("deployer")
    api.assert_problem(deployer.put(URL, json=body), status, code, field)
    assert deployer.get(URL).json()["configured"] is False


def test_who_may_configure_and_read(api: Api) -> None:
    setup(api)
    editor = api.as_role("editor")
    api.assert_problem(editor.put(URL, json={"judge": JUDGE}), 403, "role_required")
    limited = api.as_role("deployer", environments=["staging"])
    api.assert_problem(
        limited.put(URL, json={"drift": DRIFT}),
        403,
        "environment_not_allowed",
        "drift.environments[0]",
    )
    viewer = api.as_role("viewer")
    api.assert_problem(viewer.get("/v1/prompts/ghost/monitoring"), 404, "prompt_not_found")
    api.assert_problem(api.client().get(URL), 401, "unauthenticated")  # no key at all
    malformed = api.as_role("deployer").put(URL, json={"judge": "always"})
    api.assert_problem(malformed, 422, "validation_failed")
