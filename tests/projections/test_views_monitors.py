"""Monitoring in the audit log, on SQLite and PostgreSQL: who configured it, and each drift
check and alert with the environment and version it was about."""

from __future__ import annotations

from support.histories import Clock

from promptrecord.domain.application import PromptRecord
from promptrecord.domain.base import Actor
from promptrecord.projections.views import ViewStore

World = tuple[PromptRecord, Clock, ViewStore]
ADMIN = Actor("key-admin", "admin", on_behalf_of="ops")
WS = "acme"
DRIFT = {"dataset": "golden", "environments": ["production"], "threshold": 0.1}


def test_monitor_commands_and_drift_checks_are_audited(world: World) -> None:
    app, _, store = world
    app.create_workspace(WS)
    app.create_prompt(
        WS, ADMIN, name="bot", content={"text": "hi", "model": {"provider": "offline", "name": "m"}}
    )
    app.create_dataset(WS, "golden", ADMIN, examples=[{"id": "1", "inputs": {}}])
    app.configure_monitor(WS, "bot", None, DRIFT, ADMIN)
    run, reference = "a" * 32, "b" * 32
    assert app.record_drift_check(WS, "bot", "production", 1, run, reference, 0.5, 0.9).value
    store.apply(0, list(app.read_events(0, 1000)))

    rows = [row for row in store.audit_log(WS, limit=100) if row.type.startswith("Monitor.")]
    assert [row.type for row in rows] == [
        "Monitor.Configured",
        "Monitor.DriftChecked",
        "Monitor.DriftAlerted",
    ]  # Monitor.Created is left out: its Configured follows in the same command
    configured, checked, alerted = rows
    assert (configured.prompt, configured.environment, configured.version) == ("bot", None, None)
    assert (configured.actor_key_id, configured.on_behalf_of) == ("key-admin", "ops")
    for row in (checked, alerted):
        assert (row.prompt, row.environment, row.version) == ("bot", "production", 1)
