"""The catalogue of public event types: when each happens and the fields of its `data`.

Names come from the event classes themselves (`routes.events.event_types`), and so do the
fields; only the one-line descriptions are written here, and a test fails when an event type
has none.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

from eventsourcing.utils import resolve_topic

from promptrecord.api.routes.events import event_types
from promptrecord.domain.base import is_data_field

# Parameters of a Created event's __init__ that are not attributes of the event.
_NOT_ATTRIBUTES = frozenset({"self", "originator_topic"})
_NEVER_WRITTEN = "never written: the aggregate is created by its {} event"

DESCRIPTIONS: dict[str, str] = {
    "Workspace.Created": "a workspace was created, with its environments and bootstrap admin key",
    "Workspace.EnvironmentsSet": "the workspace's ordered list of environments changed",
    "Workspace.PolicySet": "an environment's policy changed (approvals, gates, pin limits, …)",
    "Workspace.ApiKeyIssued": "an API key was issued (its secret is never in the log)",
    "Workspace.ApiKeyRevoked": "an API key was revoked and stopped working",
    "Prompt.Created": "a prompt was created",
    "Prompt.VersionCommitted": "a new version of a prompt was committed (or restored)",
    "Prompt.Archived": "a prompt was archived: it is kept but can no longer be served",
    "Prompt.Unarchived": "an archived prompt was brought back",
    "Deployment.Created": "a prompt was first deployed (or requested) in an environment",
    "Deployment.PromotionRequested": "a promotion or rollout needing approvals was requested",
    "Deployment.PromotionApproved": "a deployer approved a pending promotion request",
    "Deployment.PromotionRejected": "a pending promotion request was rejected",
    "Deployment.Promoted": "an environment began serving a version of a prompt",
    "Deployment.RolloutStarted": "a canary / A-B rollout of a candidate version started",
    "Deployment.RolloutAdjusted": "the candidate's share of a running rollout changed",
    "Deployment.RolloutCompleted": "a rollout finished: the candidate now serves everyone",
    "Deployment.RolloutAborted": "a rollout was stopped: the baseline serves everyone again",
    "Deployment.RolledBack": "an environment went back to the previously serving (or named) "
    "version",
    "TenantPin.Created": "a tenant was first pinned for a prompt in an environment",
    "TenantPin.Pinned": "a tenant was held on a version until an expiry",
    "TenantPin.Unpinned": "a tenant's pin was ended before its expiry",
    "Dataset.Created": "a dataset was created",
    "Dataset.ExamplesAppended": "examples were appended to a dataset as a new version",
    "EvalRun.Created": _NEVER_WRITTEN.format("Requested"),
    "EvalRun.Requested": "an evaluation of a candidate against a baseline was requested",
    "EvalRun.Started": "a worker started (or resumed) an evaluation run",
    "EvalRun.ResultsRecorded": "a batch of graded results of an evaluation run was recorded",
    "EvalRun.Completed": "an evaluation run finished with a gate verdict",
    "EvalRun.Failed": "an evaluation run failed and will not finish",
    "GateRecord.Created": "the first verdict comparing a candidate with a baseline on a "
    "dataset was kept",
    "GateRecord.VerdictRecorded": "a gate verdict was kept for the promotion checks",
    "Monitor.Created": "drift monitoring was set up for a prompt in an environment",
    "Monitor.Configured": "the settings of a drift monitor changed",
    "Monitor.DriftChecked": "a scheduled re-evaluation of a serving version finished",
    "Monitor.DriftAlerted": "a serving version's win rate moved beyond the drift threshold",
    "WebhookEndpoint.Created": _NEVER_WRITTEN.format("Registered"),
    "WebhookEndpoint.Registered": "a webhook endpoint was registered",
    "WebhookEndpoint.Updated": "a webhook endpoint's URL, event types or description changed",
    "WebhookEndpoint.SecretRotated": "a webhook endpoint's signing secret was rotated; the "
    "previous one signs too until previous_valid_until",
    "WebhookEndpoint.Disabled": "a webhook endpoint stopped receiving (by an admin, or after "
    "its receiver answered 410 Gone)",
    "WebhookEndpoint.Enabled": "a disabled webhook endpoint receives again",
    "WebhookEndpoint.Removed": "a webhook endpoint was deleted",
}


@dataclass(frozen=True)
class EventTypeInfo:
    type: str
    description: str
    fields: list[str]  # of `data`, as /v1/events and webhook bodies carry it


def data_fields(topic: str) -> list[str]:
    """The fields of an event's `data`: its own attributes but the envelope and secrets."""
    cls = resolve_topic(topic)
    names = inspect.signature(cls.__init__).parameters
    return [name for name in names if name not in _NOT_ATTRIBUTES and is_data_field(name)]


def catalogue() -> list[EventTypeInfo]:
    """Every public event type, by name. KeyError names one that has no description."""
    return [
        EventTypeInfo(name, DESCRIPTIONS[name], data_fields(topic))
        for name, topic in event_types().items()
    ]
