"""The views of what was when: deployment and pin intervals, and the audit log."""

from __future__ import annotations

from typing import Any

from promptrecord.projections.folding import (
    INT,
    REAL,
    TEXT,
    TIME,
    Column,
    FoldContext,
    LoggedEvent,
    Row,
    Table,
    View,
    cols,
    require,
    rollout_of,
    without_nul,
)

DEPLOYMENT_INTERVALS = Table(
    "deployment_intervals",
    (
        *cols("workspace prompt environment", TEXT),
        Column("position", INT, False),
        Column("valid_from", TIME, False),
        Column("valid_to", TIME),
        Column("serving_version", INT, False),
        Column("rollout_id", TEXT),
        *cols("baseline candidate", INT, True),
        Column("share", REAL),
        Column("key_by", TEXT),
        *cols("cause_event_id cause_type", TEXT),
    ),
    key=("workspace", "prompt", "environment", "position"),
    indexes=(("workspace", "prompt", "environment", "valid_from"),),
    latest_by=("workspace", "prompt", "environment"),
)

_NO_ROLLOUT: Row = dict.fromkeys(("rollout_id", "baseline", "candidate", "share", "key_by"))
# The events that open a deployment interval (the match in the fold below names each).
_OPENS_INTERVAL = frozenset(
    (
        "Deployment.Promoted",
        "Deployment.RolloutCompleted",
        "Deployment.RolledBack",
        "Deployment.RolloutStarted",
        "Deployment.RolloutAdjusted",
        "Deployment.RolloutAborted",
    )
)


class DeploymentIntervalsView(View):
    """What each deployment served over time: a row per change, the previous row closed.

    Rows open on promote, rollout start / adjust / complete / abort and rollback; an open
    row has `valid_to` NULL. Rows may be empty ([t, t)) when two changes share a time.
    """

    name = "deployment_intervals"
    tables = (DEPLOYMENT_INTERVALS,)

    def fold(self, logged: LoggedEvent, ctx: FoldContext) -> None:
        if logged.type not in _OPENS_INTERVAL:
            return
        e, s = logged.event, logged.subject
        prefix = (s.workspace, s.prompt, s.environment)
        previous = ctx.latest(DEPLOYMENT_INTERVALS, prefix)
        current = previous if previous is not None and previous["valid_to"] is None else None
        what = "open deployment interval of %s"
        serving: int
        match logged.type:
            case "Deployment.Promoted" | "Deployment.RolloutCompleted":
                serving, rollout = e.version, _NO_ROLLOUT
            case "Deployment.RolledBack":
                serving, rollout = e.to_version, _NO_ROLLOUT
            case "Deployment.RolloutStarted":
                serving, rollout = e.baseline, rollout_of(e)
            case "Deployment.RolloutAdjusted":
                current = require(current, what, prefix)
                require(current if current["rollout_id"] else None, "rollout in " + what, prefix)
                serving = current["serving_version"]
                rollout = {name: current[name] for name in _NO_ROLLOUT} | {"share": e.share}
            case "Deployment.RolloutAborted":
                serving, rollout = require(current, what, prefix)["serving_version"], _NO_ROLLOUT
            case _:
                return
        if current is not None:
            ctx.put(DEPLOYMENT_INTERVALS, {**current, "valid_to": logged.timestamp})
        ctx.put(
            DEPLOYMENT_INTERVALS,
            {
                **dict(zip(DEPLOYMENT_INTERVALS.latest_by, prefix, strict=True)),
                "position": logged.position,
                "valid_from": logged.timestamp,
                "valid_to": None,
                "serving_version": serving,
                **rollout,
                "cause_event_id": logged.event_id,
                "cause_type": logged.type,
            },
        )


PIN_INTERVALS = Table(
    "pin_intervals",
    (
        *cols("workspace tenant prompt environment", TEXT),
        Column("position", INT, False),
        Column("version", INT, False),
        *cols("valid_from valid_to expires_at", TIME),
        Column("cause_event_id", TEXT, False),
        Column("end_event_id", TEXT),
    ),
    key=("workspace", "tenant", "prompt", "environment", "position"),
    indexes=(
        ("workspace", "tenant", "prompt", "environment", "valid_from"),
        ("workspace", "prompt", "environment", "valid_from"),
    ),
    latest_by=("workspace", "tenant", "prompt", "environment"),
)


class PinIntervalsView(View):
    """When each pin held: from the pin until the earlier of its expiry, unpin and re-pin.

    `end_event_id` names the unpin or re-pin that cut an interval short; NULL means it ran
    to `expires_at`.
    """

    name = "pin_intervals"
    tables = (PIN_INTERVALS,)

    def fold(self, logged: LoggedEvent, ctx: FoldContext) -> None:
        if logged.type not in ("TenantPin.Pinned", "TenantPin.Unpinned"):
            return
        s, at = logged.subject, logged.timestamp
        prefix = (s.workspace, s.tenant, s.prompt, s.environment)
        previous = ctx.latest(PIN_INTERVALS, prefix)
        if previous is not None and previous["valid_to"] > at:
            ctx.put(PIN_INTERVALS, {**previous, "valid_to": at, "end_event_id": logged.event_id})
        if logged.type == "TenantPin.Pinned":
            ctx.put(
                PIN_INTERVALS,
                {
                    **dict(zip(PIN_INTERVALS.latest_by, prefix, strict=True)),
                    "position": logged.position,
                    "version": logged.event.version,
                    "valid_from": at,
                    "valid_to": logged.event.expires_at,
                    "expires_at": logged.event.expires_at,
                    "cause_event_id": logged.event_id,
                    "end_event_id": None,
                },
            )


AUDIT_LOG = Table(
    "audit_log",
    (
        Column("position", INT, False),
        *cols("event_id workspace type", TEXT),
        *cols("prompt environment tenant", TEXT, True),
        Column("version", INT),
        *cols("actor_key_id actor_key_name on_behalf_of reason", TEXT, True),
        Column("timestamp", TIME, False),
        *cols("dataset run_id", TEXT, True),
    ),
    key=("position",),
    indexes=(("workspace", "position"), ("workspace", "prompt", "type", "timestamp")),
    unique=(("event_id",),),
)

# Which attribute of an event names the version it is about.
_VERSION_OF = {
    "Prompt.VersionCommitted": "number",
    "Deployment.PromotionRequested": "version",
    "Deployment.Promoted": "version",
    "Deployment.RolloutStarted": "candidate",
    "Deployment.RolloutCompleted": "version",
    "Deployment.RolledBack": "to_version",
    "TenantPin.Pinned": "version",
    "Monitor.DriftChecked": "version",
    "Monitor.DriftAlerted": "version",
}
# Eval events whose rows would only be noise (a run's progress, the gate index behind a
# completion): the audit log keeps requests, completions and failures.
_NOT_AUDITED = frozenset(
    {
        "EvalRun.Started",
        "EvalRun.ResultsRecorded",
        "GateRecord.Created",
        "GateRecord.VerdictRecorded",
        "Monitor.Created",  # its `Configured` follows in the same command
    }
)


class AuditLogView(View):
    """One flat row per event: who did what to which subject, when, and why."""

    name = "audit_log"
    tables = (AUDIT_LOG,)

    def fold(self, logged: LoggedEvent, ctx: FoldContext) -> None:
        if logged.type in _NOT_AUDITED:
            return
        e, s = logged.event, logged.subject
        actor: dict[str, Any] = getattr(e, "actor", None) or {}
        version_attribute = _VERSION_OF.get(logged.type)
        version = getattr(e, version_attribute) if version_attribute else None
        reason = getattr(e, "reason", None)
        environment = s.environment
        if s.kind == "monitor":  # a drift check is about one environment's serving version
            environment = getattr(e, "environment", None)
        if s.kind == "eval_run":
            version = s.version  # the candidate
            if logged.type == "EvalRun.Requested":
                reason = e.spec.get("reason")
            elif logged.type == "EvalRun.Failed":
                reason = f"{e.code}: {e.detail}"
        ctx.put(
            AUDIT_LOG,
            {
                "position": logged.position,
                "event_id": logged.event_id,
                "workspace": s.workspace,
                "type": logged.type,
                "prompt": s.prompt,
                "environment": environment,
                "tenant": s.tenant,
                "version": version,
                "actor_key_id": actor.get("key_id"),
                "actor_key_name": actor.get("key_name"),
                "on_behalf_of": actor.get("on_behalf_of"),
                "reason": without_nul(reason) or None,
                "timestamp": logged.timestamp,
                "dataset": s.dataset,
                "run_id": s.run_id,
            },
        )
