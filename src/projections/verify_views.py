"""Proof that the views answer the audit as replay of the log does, or each place they differ."""

# What is compared. For every (workspace, prompt, environment) with a deployment interval,
# every tenant ever pinned there and a deterministic sample of other tenants of the workspace
# (first by hash, so reruns ask the same ones): the views' answer and replay's at the time of
# the views' position, and at every deployment and pin interval boundary. One pass over the
# log per (deployment, tenant) reads that tenant's history once; its questions then cost
# nothing more. A view row altered by hand moves some answer, so it shows here.

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from promptrecord.domain.application import PromptRecord
from promptrecord.domain.errors import DomainError
from promptrecord.projections.audit import AuditAnswer, show_time
from promptrecord.projections.folding_history import AUDIT_LOG
from promptrecord.projections.replay import TenantHistory
from promptrecord.projections.verify import Problem
from promptrecord.projections.view_audit import ViewAudit
from promptrecord.projections.views import ViewStore

DEFAULT_SAMPLE = 200
VIEW_MISMATCH = "view_mismatch"
# Asked about too, so a deployment whose workspace has no pins still has its rollouts checked.
UNPINNED_TENANT = "verify-unpinned-tenant"


@dataclass
class ViewsReport:
    """What `compare_views` asked, or why it did not run (`skipped`)."""

    views_position: int = 0
    log_position: int = 0
    skipped: str | None = None
    deployments: int = 0
    tenants: int = 0
    answers: int = 0
    problems: list[Problem] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "views_position": self.views_position,
            "log_position": self.log_position,
            "skipped": self.skipped,
            "deployments": self.deployments,
            "tenants": self.tenants,
            "answers": self.answers,
            "problems": [problem.as_dict() for problem in self.problems],
        }


def views_behind(store: ViewStore, log_position: int) -> str | None:
    """Why the views cannot be compared (absent, outdated or behind), or None."""
    if store.outdated:
        return (
            f"the views {', '.join(store.outdated)} need a rebuild; run `promptrecord rebuild` "
            "to compare them with replay"
        )
    position = store.position()
    if position < log_position:
        built = "were never built" if position == 0 else f"are at position {position:,}"
        return (
            f"the views {built} and the log is at {log_position:,}; run `promptrecord rebuild` "
            "(or let the projector catch up) to compare them with replay"
        )
    return None


def compare_views(app: PromptRecord, store: ViewStore, sample: int = DEFAULT_SAMPLE) -> ViewsReport:
    """Ask the views and replay the same questions; a `view_mismatch` problem per difference."""
    report = ViewsReport(store.position(), app.recorder.max_notification_id() or 0)
    report.skipped = views_behind(store, report.log_position)
    if report.skipped is not None:
        return report
    views = ViewAudit(store, app)
    now = _time_of(views, report.views_position)
    deployments: dict[tuple[str, str, str], set[datetime]] = defaultdict(set)
    for row in store.dump("deployment_intervals"):
        times = deployments[(row["workspace"], row["prompt"], row["environment"])]
        times.update(t for t in (row["valid_from"], row["valid_to"]) if t is not None)
    pins: dict[tuple[str, str, str, str], set[datetime]] = defaultdict(set)
    for row in store.dump("pin_intervals"):
        subject = (row["workspace"], row["prompt"], row["environment"], row["tenant"])
        pins[subject].update((row["valid_from"], row["valid_to"]))
    tenants = _sampled_tenants(views, {ws for ws, _, _ in deployments}, sample)
    asked: set[str] = set()
    for (ws, prompt, environment), boundaries in sorted(deployments.items()):
        pinned = {tenant for (w, p, e, tenant) in pins if (w, p, e) == (ws, prompt, environment)}
        for tenant in sorted(pinned | set(tenants[ws])):
            asked.add(tenant)
            times = boundaries | pins.get((ws, prompt, environment, tenant), set())
            if now is not None:
                times.add(now)
            history = TenantHistory.read(app, ws, tenant, prompt, environment)
            for at in sorted(times):
                report.answers += 1
                mine = _outcome(views.answer_at, ws, tenant, prompt, environment, at)
                truth = _outcome(history.answer_at, at)
                if mine != truth:
                    report.problems.append(
                        _mismatch((ws, prompt, environment, tenant), at, mine, truth)
                    )
    report.deployments, report.tenants = len(deployments), len(asked)
    return report


def _sampled_tenants(views: ViewAudit, workspaces: set[str], sample: int) -> dict[str, list[str]]:
    """Per workspace, up to `sample` tenants named in its audit log, the same ones each run."""
    found: dict[str, list[str]] = {}
    for ws in workspaces:
        rows = views.store._query(AUDIT_LOG, ['"workspace" = ?', '"tenant" IS NOT NULL'], [ws])
        named = {row["tenant"] for row in rows}
        ranked = sorted(named, key=lambda t: hashlib.sha256(t.encode()).hexdigest())
        found[ws] = [*ranked[:sample], UNPINNED_TENANT]
    return found


def _time_of(views: ViewAudit, position: int) -> datetime | None:
    rows = views.store._query(AUDIT_LOG, ['"position" = ?'], [position])
    return rows[0]["timestamp"] if rows else None


def _outcome(ask: Callable[..., AuditAnswer], *question: Any) -> AuditAnswer | tuple[str, str]:
    try:
        answer = ask(*question)
    except DomainError as refused:
        return (refused.code, str(refused))
    return answer


def _said(outcome: AuditAnswer | tuple[str, str]) -> str:
    if isinstance(outcome, tuple):
        return f"refused ({outcome[0]})"
    served = "a split" if outcome.version is None else f"version {outcome.version}"
    split = outcome.rollout
    rollout = f", rollout share {split.share} bucket {split.bucket}" if split else ""
    cited = ", ".join(str(event.position) for event in outcome.events)
    return f"{served} ({outcome.reason}{rollout}; cause {outcome.cause}; events at {cited})"


def _mismatch(
    subject: tuple[str, str, str, str],
    at: datetime,
    mine: AuditAnswer | tuple[str, str],
    truth: AuditAnswer | tuple[str, str],
) -> Problem:
    ws, prompt, environment, tenant = subject
    views, replay = _said(mine), _said(truth)
    if views == replay:  # the difference is in a detail the summary leaves out
        views, replay = repr(mine), repr(truth)
    return Problem(
        VIEW_MISMATCH,
        f"prompt {prompt!r} in {environment} (workspace {ws!r}) for tenant {tenant!r} at "
        f"{show_time(at)}: the views answer {views}, replay answers {replay}; run "
        "`promptrecord rebuild` to refold the views from the log",
        aggregate_type="Deployment",
        key=(ws, prompt, environment, tenant),
    )
