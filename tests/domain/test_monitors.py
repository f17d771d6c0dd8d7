"""A prompt's monitoring, on both backends: configuring the judge and the drift schedule, the
refusals naming their field, and drift checks with and without an alert."""

from __future__ import annotations

from typing import Any

import pytest
from support.refusals import refused

from promptrecord.domain.errors import Conflict, InvalidInput, NotFound
from promptrecord.domain.monitors import Monitor

WS = "acme"
JUDGE = {"sample_rate": 0.25, "provider": "openai", "model": "gpt-4o-mini", "criteria": "polite"}
DRIFT = {"dataset": "golden", "environments": ["staging", "production"]}


def setup(record: Any) -> None:
    record.new_prompt("bot", "one", "two")
    examples = [{"id": "1", "inputs": {}, "reference": "a"}]
    record.app.create_dataset(WS, "golden", record.alice, examples=examples)


def monitor_events(record: Any) -> list[Any]:
    return list(record.app.events.get(Monitor.create_id(WS, "bot")))


def test_configuring_creates_the_monitor_with_defaults_and_a_reconfiguration_replaces_it(
    record: Any,
) -> None:
    setup(record)
    first = record.app.configure_monitor(WS, "bot", JUDGE, DRIFT, record.bob)
    monitor = record.app.monitor(WS, "bot")
    assert monitor.judge == {**JUDGE, "criteria": "polite", "repeats": 1}
    assert monitor.drift == {**DRIFT, "every_hours": 168.0, "threshold": 0.1}
    assert monitor.judge_since == record.clock.now
    assert [type(e).__qualname__ for e in monitor_events(record)] == [
        "Monitor.Created",
        "Monitor.Configured",
    ]
    configured = monitor_events(record)[-1]
    assert configured.actor == record.bob.as_dict()

    started = record.clock.now
    record.clock.advance(60)
    record.app.configure_monitor(
        WS, "bot", {**JUDGE, "sample_rate": 1}, None, record.carol, first.revision
    )
    monitor = record.app.monitor(WS, "bot")
    assert monitor.judge is not None and monitor.judge["sample_rate"] == 1.0
    assert monitor.judge_since == started  # still on: its sampling window is not reset
    assert monitor.drift is None
    record.app.configure_monitor(WS, "bot", None, None, record.carol)
    record.clock.advance(60)
    record.app.configure_monitor(WS, "bot", JUDGE, None, record.carol)
    assert record.app.monitor(WS, "bot").judge_since == record.clock.now  # switched on again


@pytest.mark.parametrize(
    ("judge", "drift", "field"),
    [
        ({**JUDGE, "sample_rate": 1.5}, None, "judge.sample_rate"),
        ({**JUDGE, "sample_rate": True}, None, "judge.sample_rate"),
        ({**JUDGE, "model": " "}, None, "judge.model"),
        ({**JUDGE, "criteria": None}, None, "judge.criteria"),
        ({**JUDGE, "repeats": 0}, None, "judge.repeats"),
        ({**JUDGE, "rubric": "x"}, None, "judge.rubric"),
        ("always", None, "judge"),
        (None, {**DRIFT, "threshold": 0}, "drift.threshold"),
        (None, {**DRIFT, "threshold": 1.5}, "drift.threshold"),
        (None, {**DRIFT, "every_hours": 0.5}, "drift.every_hours"),
        (None, {**DRIFT, "environments": []}, "drift.environments"),
        (None, {**DRIFT, "environments": ["production", "production"]}, "drift.environments"),
        (None, {**DRIFT, "dataset": "Not A Name"}, "drift.dataset"),
        (None, {"environments": ["production"]}, "drift.dataset"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(
    record: Any, judge: Any, drift: Any, field: str
) -> None:
    setup(record)
    error = refused(
        record, InvalidInput, "invalid_input", record.app.configure_monitor, WS, "bot", judge,
        drift, record.bob,
    )  # fmt: skip
    assert error.field == field


def test_what_does_not_exist_is_refused_naming_it(record: Any) -> None:
    setup(record)
    configure = record.app.configure_monitor
    missing = refused(
        record, NotFound, "dataset_not_found", configure, WS, "bot", None,
        {**DRIFT, "dataset": "nope"}, record.bob,
    )  # fmt: skip
    assert missing.field == "drift.dataset"
    env = refused(
        record, NotFound, "environment_not_found", configure, WS, "bot", None,
        {**DRIFT, "environments": ["staging", "prod"]}, record.bob,
    )  # fmt: skip
    assert env.field == "drift.environments[1]"
    refused(record, NotFound, "prompt_not_found", configure, WS, "ghost", JUDGE, None, record.bob)
    refused(record, NotFound, "monitor_not_found", record.app.monitor, WS, "bot")
    done = configure(WS, "bot", JUDGE, None, record.bob)
    refused(
        record, Conflict, "stale_revision", configure, WS, "bot", None, None, record.bob,
        done.revision - 1,
    )  # fmt: skip


def check(record: Any, run_id: str, win_rate: float, reference: float = 0.9) -> Any:
    return record.app.record_drift_check(
        WS, "bot", "production", 2, run_id, "ref" + "0" * 29, win_rate, reference
    )


def test_a_move_within_the_threshold_is_a_check_and_beyond_it_an_alert_too(record: Any) -> None:
    setup(record)
    record.app.configure_monitor(WS, "bot", None, {**DRIFT, "threshold": 0.15}, record.bob)
    assert check(record, "a" * 32, 0.8).value is False  # moved 0.1: within 0.15
    record.clock.advance(3600)
    assert check(record, "b" * 32, 0.7).value is True  # moved 0.2
    names = [type(e).__qualname__ for e in monitor_events(record)]
    assert names[-3:] == ["Monitor.DriftChecked", "Monitor.DriftChecked", "Monitor.DriftAlerted"]
    alert = monitor_events(record)[-1]
    assert (alert.run_id, alert.threshold, alert.environment, alert.version) == (
        "b" * 32,
        0.15,
        "production",
        2,
    )
    assert alert.delta == pytest.approx(-0.2)
    assert (alert.win_rate, alert.reference_win_rate) == (0.7, 0.9)
    monitor = record.app.monitor(WS, "bot")
    assert [c["alerted"] for c in monitor.checks] == [False, True]
    last = monitor.last_check("production", 2)
    assert last is not None and last["run_id"] == "b" * 32
    assert last["checked_at"] == record.clock.now
    assert monitor.last_check("staging", 2) is None


def test_a_run_is_recorded_once(record: Any) -> None:
    setup(record)
    record.app.configure_monitor(WS, "bot", None, DRIFT, record.bob)
    check(record, "a" * 32, 0.5)
    refused(record, Conflict, "drift_already_checked", check, record, "a" * 32, 0.5)
    # from a second application on the same store too
    other = record.second_app()
    with pytest.raises(Conflict) as caught:
        other.record_drift_check(WS, "bot", "production", 2, "a" * 32, "r" * 32, 0.5, 0.9)
    assert caught.value.code == "drift_already_checked"
