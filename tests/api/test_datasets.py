"""Datasets over HTTP: create, append JSON and JSONL as new versions, read, page, download."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from promptrecord.api.routes import datasets

if TYPE_CHECKING:
    from tests.api.conftest import Api

JSONL = {"Content-Type": "application/x-ndjson"}


def example(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "id": f"q{i}",
        "inputs": {"question": f"What is {i} + {i}?"},
        "reference": str(2 * i),
        "tags": ["sums"],
        **extra,
    }


def jsonl(*examples: dict[str, Any]) -> bytes:
    return "".join(json.dumps(e) + "\n" for e in examples).encode()


def test_create_append_read_and_download_versions(api: Api) -> None:
    editor = api.as_role("editor")
    created = editor.post(
        "/v1/datasets",
        json={"name": "golden", "description": "sums", "examples": [example(1), example(2)]},
    )
    assert created.status_code == 201, created.text
    assert created.json()["version"] == 1 and created.json()["count"] == 2
    assert created.headers["location"] == "/v1/datasets/golden"

    # JSONL, with a blank line and a CRLF ending: version 2 holds 5 examples
    body = jsonl(example(3)) + b"\n" + json.dumps(example(4)).encode() + b"\r\n" + jsonl(example(5))
    appended = editor.post(
        "/v1/datasets/golden/examples", content=body, headers=JSONL, params={"message": "more"}
    )
    assert appended.status_code == 201, appended.text
    assert {k: appended.json()[k] for k in ("version", "count", "added")} == {
        "version": 2,
        "count": 5,
        "added": 3,
    }
    # JSON, with If-Match on the revision read
    revision = editor.get("/v1/datasets/golden").headers["etag"]
    stale = editor.post(
        "/v1/datasets/golden/examples",
        json={"examples": [example(6)]},
        headers={"If-Match": '"1"'},
    )
    api.assert_problem(stale, 409, "stale_revision")
    third = editor.post(
        "/v1/datasets/golden/examples",
        json={"examples": [example(6)], "message": "one more"},
        headers={"If-Match": revision},
    )
    assert third.status_code == 201 and third.json()["version"] == 3, third.text

    detail = api.admin.get("/v1/datasets/golden")
    assert detail.status_code == 200
    read = detail.json()
    assert read["latest_version"] == 3 and read["example_count"] == 6
    assert [(v["version"], v["count"], v["added"]) for v in read["versions"]] == [
        (1, 2, 2),
        (2, 5, 3),
        (3, 6, 1),
    ]
    assert [v["message"] for v in read["versions"]] == ["first examples", "more", "one more"]
    assert len({v["digest"] for v in read["versions"]}) == 3
    assert read["created_by"]["key_name"] == "editor key"

    listed = api.admin.get("/v1/datasets").json()["items"]
    assert [(d["name"], d["latest_version"]) for d in listed] == [("golden", 3)]

    first = api.admin.get("/v1/datasets/golden/versions/1/examples", params={"limit": 1})
    page = first.json()
    assert [e["id"] for e in page["items"]] == ["q1"] and page["next_cursor"]
    second = api.admin.get(
        "/v1/datasets/golden/versions/1/examples",
        params={"limit": 1, "cursor": page["next_cursor"]},
    ).json()
    assert [e["id"] for e in second["items"]] == ["q2"] and second["next_cursor"] is None
    assert second["items"][0] == {"ordinal": 2, "version": 1, **example(2)}

    one = api.admin.get("/v1/datasets/golden/versions/1/download")
    assert one.status_code == 200
    assert one.headers["content-type"] == "application/x-ndjson"
    assert 'filename="golden-v1.jsonl"' in one.headers["content-disposition"]
    assert [json.loads(line) for line in one.text.splitlines()] == [example(1), example(2)]
    two = api.admin.get("/v1/datasets/golden/versions/2/download")
    assert [json.loads(line)["id"] for line in two.text.splitlines()] == [
        "q1",
        "q2",
        "q3",
        "q4",
        "q5",
    ]

    api.assert_problem(
        api.admin.get("/v1/datasets/golden/versions/4/examples"),
        404,
        "dataset_version_not_found",
        "version",
    )
    api.assert_problem(
        api.admin.get("/v1/datasets/golden/versions/4/download"), 404, "dataset_version_not_found"
    )


def test_a_bad_jsonl_line_is_named_and_nothing_is_written(api: Api) -> None:
    editor = api.as_role("editor")
    assert editor.post("/v1/datasets", json={"name": "golden"}).status_code == 201
    url = "/v1/datasets/golden/examples"

    broken = jsonl(example(1)) + b"\n" + b'{"id": "q2", "inputs": {}\n'
    body = api.assert_problem(
        editor.post(url, content=broken, headers=JSONL), 422, "invalid_jsonl", "line 3"
    )
    assert "line 3" in body["detail"] and "JSON" in body["detail"]

    unknown = jsonl(example(1), {"id": "q2", "answer": "4"})
    api.assert_problem(
        editor.post(url, content=unknown, headers=JSONL), 422, "invalid_input", "line 2.answer"
    )
    no_id = jsonl({"inputs": {"question": "?"}})
    api.assert_problem(
        editor.post(url, content=no_id, headers=JSONL), 422, "invalid_input", "line 1.id"
    )
    not_object = b'{"id": "q1"}\n[1, 2]\n'
    api.assert_problem(
        editor.post(url, content=not_object, headers=JSONL), 422, "invalid_input", "line 2"
    )
    nan = b'{"id": "q1", "inputs": {"x": NaN}}\n'
    api.assert_problem(editor.post(url, content=nan, headers=JSONL), 422, "invalid_jsonl", "line 1")
    twice = jsonl(example(1), example(2), example(1))
    api.assert_problem(
        editor.post(url, content=twice, headers=JSONL), 422, "duplicate_example", "line 3.id"
    )
    api.assert_problem(
        editor.post(url, content=b"\n\n", headers=JSONL), 422, "invalid_input", "body"
    )
    api.assert_problem(
        editor.post(url, content=b"\xff\xfe", headers=JSONL), 422, "invalid_jsonl", "line 1"
    )
    assert api.admin.get("/v1/datasets/golden").json()["latest_version"] == 0

    # an id already in the dataset: 409, on the line that holds it
    assert editor.post(url, content=jsonl(example(1)), headers=JSONL).status_code == 201
    again = jsonl(example(2), example(1))
    body = api.assert_problem(
        editor.post(url, content=again, headers=JSONL), 409, "duplicate_example", "line 2.id"
    )
    assert "'q1'" in body["detail"]
    assert api.admin.get("/v1/datasets/golden").json()["latest_version"] == 1

    api.assert_problem(
        editor.post(url, json={"message": "no examples"}),
        422,
        "validation_failed",
        "body.examples",
    )
    api.assert_problem(
        editor.post(url, content=b"{", headers={"Content-Type": "application/json"}),
        400,
        "malformed_json",
    )
    api.assert_problem(
        editor.post(url, content=b"q1", headers={"Content-Type": "text/csv"}),
        415,
        "unsupported_media_type",
    )


def test_an_upload_over_the_limit_is_refused(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets, "MAX_UPLOAD_BYTES", 1000)
    assert api.admin.post("/v1/datasets", json={"name": "golden"}).status_code == 201
    big = jsonl(*(example(i) for i in range(50)))
    assert len(big) > 1000
    body = api.assert_problem(
        api.admin.post("/v1/datasets/golden/examples", content=big, headers=JSONL),
        413,
        "content_too_large",
    )
    assert "split" in body["detail"]


def test_refusals_unknown_names_roles_and_replays(api: Api) -> None:
    viewer = api.as_role("viewer")
    api.assert_problem(viewer.post("/v1/datasets", json={"name": "golden"}), 403, "role_required")
    api.assert_problem(viewer.get("/v1/datasets/nope"), 404, "dataset_not_found", "dataset")
    api.assert_problem(
        api.admin.post("/v1/datasets/nope/examples", json={"examples": [example(1)]}),
        404,
        "dataset_not_found",
    )
    api.assert_problem(
        api.admin.get("/v1/datasets/nope/versions/1/download"), 404, "dataset_not_found"
    )
    api.assert_problem(
        api.admin.post("/v1/datasets", json={"name": "Not A Name"}), 422, "invalid_input", "name"
    )
    bad = api.admin.post("/v1/datasets", json={"name": "golden", "examples": [{"id": "a b"}]})
    api.assert_problem(bad, 422, "invalid_input", "examples[0].id")
    assert api.admin.post("/v1/datasets", json={"name": "golden"}).status_code == 201
    api.assert_problem(
        api.admin.post("/v1/datasets", json={"name": "golden"}), 409, "dataset_exists", "name"
    )
    # viewers read
    assert viewer.get("/v1/datasets/golden").status_code == 200

    # a retried append with the same Idempotency-Key replays; it does not add a version
    key = {"Idempotency-Key": "push-1", **JSONL}
    url = "/v1/datasets/golden/examples"
    first = api.admin.post(url, content=jsonl(example(1)), headers=key)
    replay = api.admin.post(url, content=jsonl(example(1)), headers=key)
    assert first.status_code == replay.status_code == 201
    assert replay.json() == first.json() and replay.headers["idempotency-replayed"] == "true"
    assert api.admin.get("/v1/datasets/golden").json()["latest_version"] == 1
