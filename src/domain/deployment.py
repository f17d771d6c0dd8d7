"""The Deployment aggregate: what one environment serves for one prompt, and how it changed."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import event

from promptrecord.domain.base import ChainedAggregate, business_id
from promptrecord.domain.errors import Conflict, Forbidden, InvalidInput, NotFound

KEY_BY = ("tenant", "user", "request")


def check_share(share: float, field: str = "share") -> float:
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share < 1:
        raise InvalidInput(
            f"share must be a fraction strictly between 0 and 1 (got {share!r}); "
            "to send everyone to the candidate, complete the rollout",
            field=field,
            code="share_out_of_range",
        )
    return float(share)


def check_key_by(key_by: str) -> str:
    if key_by not in KEY_BY:
        raise InvalidInput(f"key_by {key_by!r} is not one of {', '.join(KEY_BY)}", field="key_by")
    return key_by


def identity(actor: dict[str, Any]) -> str:
    """The person behind an actor: who a CI key acts for, else the key itself."""
    return str(actor.get("on_behalf_of") or actor["key_id"])


def _same_party(one: dict[str, Any], other: dict[str, Any]) -> bool:
    """Whether two actors may be one person, for four-eyes and for counting approvals.

    The same key is always one party: `on_behalf_of` is asserted by the caller, so a key
    cannot become several approvers by naming several people.
    """
    return bool(one["key_id"] == other["key_id"] or identity(one) == identity(other))


class Deployment(ChainedAggregate):
    """Promotions, approvals, rollouts and rollbacks of one prompt in one environment.

    `stack` holds the versions served in turn; a rollback without a named target pops it,
    so repeated kill-switch presses walk back through what served before.
    """

    @staticmethod
    def create_id(workspace: str, prompt: str, environment: str) -> UUID:
        return business_id("deployment", workspace, prompt, environment)

    @event("Created")
    def __init__(
        self,
        workspace: str,
        prompt: str,
        environment: str,
        actor: dict[str, Any],
        timestamp: datetime,
    ) -> None:
        self.workspace = workspace
        self.prompt = prompt
        self.environment = environment
        self.stack: list[int] = []
        self.ever_served: list[int] = []
        self.rollout: dict[str, Any] | None = None
        self.requests: dict[str, dict[str, Any]] = {}

    @property
    def serving(self) -> int | None:
        return self.stack[-1] if self.stack else None

    def _require_no_rollout(self, doing: str) -> None:
        if self.rollout is not None:
            raise Conflict(
                f"a rollout of version {self.rollout['candidate']} is active in "
                f"{self.environment}; complete or abort it before you {doing}",
                code="rollout_active",
            )

    # --- promotion requests ----------------------------------------------------------------

    def request_promotion(
        self,
        request_id: str,
        version: int,
        mode: str,
        rollout: dict[str, Any] | None,
        required_approvals: int,
        reason: str,
        actor: dict[str, Any],
        timestamp: datetime,
        gate: dict[str, Any] | None = None,
    ) -> None:
        """`gate` is the eval verdict a `require_gate` policy found, for approvers to see."""
        if mode == "promote":
            self._require_no_rollout("promote")
        for other in self.requests.values():
            if other["status"] == "pending" and other["version"] == version:
                raise Conflict(
                    f"request {other['request_id']} for version {version} is already pending",
                    code="request_pending",
                    request_id=other["request_id"],
                )
        self._promotion_requested(
            request_id, version, mode, rollout, required_approvals, reason, actor, timestamp, gate
        )

    @event("PromotionRequested")
    def _promotion_requested(
        self,
        request_id: str,
        version: int,
        mode: str,
        rollout: dict[str, Any] | None,
        required_approvals: int,
        reason: str,
        actor: dict[str, Any],
        timestamp: datetime,
        gate: dict[str, Any] | None = None,
    ) -> None:
        self.requests[request_id] = {
            "request_id": request_id,
            "version": version,
            "mode": mode,
            "rollout": rollout,
            "required_approvals": required_approvals,
            "reason": reason,
            "requester": actor,
            "approvals": [],
            "status": "pending",
            "requested_at": timestamp,
            "gate": gate,
        }

    def pending_request(self, request_id: str) -> dict[str, Any]:
        request = self.requests.get(request_id)
        if request is None:
            raise NotFound(
                f"no promotion request {request_id!r} for {self.prompt!r} in {self.environment}",
                field="request_id",
                code="request_not_found",
            )
        if request["status"] != "pending":
            raise Conflict(
                f"request {request_id} is already {request['status']}", code="request_closed"
            )
        return request

    def approve(
        self,
        request_id: str,
        author: dict[str, Any],
        four_eyes: bool,
        reason: str,
        actor: dict[str, Any],
        timestamp: datetime,
    ) -> bool:
        """Record an approval; returns True when the request now has enough approvals."""
        request = self.pending_request(request_id)
        if four_eyes and _same_party(actor, request["requester"]):
            raise Forbidden(
                "four-eyes policy: the requester cannot approve their own request; "
                "ask another deployer",
                code="four_eyes",
            )
        if four_eyes and _same_party(actor, author):
            raise Forbidden(
                f"four-eyes policy: the author of version {request['version']} cannot approve "
                "its promotion; ask another deployer",
                code="four_eyes",
            )
        if any(_same_party(actor, earlier) for earlier in request["approvals"]):
            raise Conflict("you have already approved this request", code="already_approved")
        self._promotion_approved(request_id, reason, actor, timestamp)
        return bool(len(self.requests[request_id]["approvals"]) >= request["required_approvals"])

    @event("PromotionApproved")
    def _promotion_approved(
        self, request_id: str, reason: str, actor: dict[str, Any], timestamp: datetime
    ) -> None:
        request = self.requests[request_id]
        request["approvals"] = [*request["approvals"], actor]

    def reject(
        self, request_id: str, reason: str, actor: dict[str, Any], timestamp: datetime
    ) -> None:
        self.pending_request(request_id)
        self._promotion_rejected(request_id, reason, actor, timestamp)

    @event("PromotionRejected")
    def _promotion_rejected(
        self, request_id: str, reason: str, actor: dict[str, Any], timestamp: datetime
    ) -> None:
        self.requests[request_id]["status"] = "rejected"

    # --- promotion ---------------------------------------------------------------------------

    def promote(
        self,
        version: int,
        request_id: str | None,
        reason: str,
        actor: dict[str, Any],
        timestamp: datetime,
        gate: dict[str, Any] | None = None,
    ) -> None:
        self._require_no_rollout("promote")
        if version == self.serving:
            raise Conflict(
                f"version {version} already serves {self.prompt!r} in {self.environment}",
                code="already_serving",
            )
        self._promoted(version, self.serving, request_id, reason, actor, timestamp, gate)

    @event("Promoted")
    def _promoted(
        self,
        version: int,
        previous: int | None,
        request_id: str | None,
        reason: str,
        actor: dict[str, Any],
        timestamp: datetime,
        gate: dict[str, Any] | None = None,
    ) -> None:
        self.stack = [*self.stack, version]
        if version not in self.ever_served:
            self.ever_served = [*self.ever_served, version]
        if request_id is not None:
            self.requests[request_id]["status"] = "executed"

    # --- rollouts ----------------------------------------------------------------------------

    def start_rollout(
        self,
        rollout_id: str,
        candidate: int,
        share: float,
        key_by: str,
        request_id: str | None,
        reason: str,
        actor: dict[str, Any],
        timestamp: datetime,
    ) -> None:
        self._require_no_rollout("start another")
        if self.serving is None:
            raise Conflict(
                f"nothing serves {self.prompt!r} in {self.environment} yet: promote a baseline "
                "version before starting a rollout",
                code="no_baseline",
            )
        if candidate == self.serving:
            raise Conflict(
                f"version {candidate} already serves {self.environment}; a rollout needs "
                "a different candidate",
                code="already_serving",
            )
        self._rollout_started(
            rollout_id,
            self.serving,
            candidate,
            check_share(share),
            check_key_by(key_by),
            request_id,
            reason,
            actor,
            timestamp,
        )

    @event("RolloutStarted")
    def _rollout_started(
        self,
        rollout_id: str,
        baseline: int,
        candidate: int,
        share: float,
        key_by: str,
        request_id: str | None,
        reason: str,
        actor: dict[str, Any],
        timestamp: datetime,
    ) -> None:
        self.rollout = {
            "rollout_id": rollout_id,
            "baseline": baseline,
            "candidate": candidate,
            "share": share,
            "key_by": key_by,
            "started_at": timestamp,
        }
        if request_id is not None:
            self.requests[request_id]["status"] = "executed"

    def _active_rollout(self) -> dict[str, Any]:
        if self.rollout is None:
            raise Conflict(
                f"no rollout is active for {self.prompt!r} in {self.environment}",
                code="no_rollout",
            )
        return self.rollout

    def adjust_rollout(
        self, share: float, reason: str, actor: dict[str, Any], timestamp: datetime
    ) -> None:
        rollout = self._active_rollout()
        self._rollout_adjusted(rollout["rollout_id"], check_share(share), reason, actor, timestamp)

    @event("RolloutAdjusted")
    def _rollout_adjusted(
        self,
        rollout_id: str,
        share: float,
        reason: str,
        actor: dict[str, Any],
        timestamp: datetime,
    ) -> None:
        assert self.rollout is not None
        self.rollout = {**self.rollout, "share": share}

    def complete_rollout(
        self,
        reason: str,
        actor: dict[str, Any],
        timestamp: datetime,
        gate: dict[str, Any] | None = None,
    ) -> int:
        rollout = self._active_rollout()
        self._rollout_completed(
            rollout["rollout_id"], rollout["candidate"], reason, actor, timestamp, gate
        )
        return int(rollout["candidate"])

    @event("RolloutCompleted")
    def _rollout_completed(
        self,
        rollout_id: str,
        version: int,
        reason: str,
        actor: dict[str, Any],
        timestamp: datetime,
        gate: dict[str, Any] | None = None,
    ) -> None:
        self.rollout = None
        self.stack = [*self.stack, version]
        if version not in self.ever_served:
            self.ever_served = [*self.ever_served, version]

    def abort_rollout(self, reason: str, actor: dict[str, Any], timestamp: datetime) -> None:
        rollout = self._active_rollout()
        self._rollout_aborted(rollout["rollout_id"], reason, actor, timestamp)

    @event("RolloutAborted")
    def _rollout_aborted(
        self, rollout_id: str, reason: str, actor: dict[str, Any], timestamp: datetime
    ) -> None:
        self.rollout = None

    # --- rollback ----------------------------------------------------------------------------

    def rollback(
        self, to_version: int | None, reason: str, actor: dict[str, Any], timestamp: datetime
    ) -> int:
        """The kill switch: serve the previous version (or a named one) now. Returns it."""
        if not reason.strip():
            raise InvalidInput("a rollback needs a reason", field="reason")
        if self.serving is None:
            raise Conflict(
                f"nothing serves {self.prompt!r} in {self.environment}; nothing to roll back",
                code="not_deployed",
            )
        if to_version is None:
            if self.rollout is not None:
                to_version = int(self.rollout["baseline"])
            elif len(self.stack) >= 2:
                to_version = self.stack[-2]
            else:
                raise Conflict(
                    f"version {self.serving} is the first that served {self.environment}; "
                    "name a version to roll back to",
                    code="nothing_to_roll_back_to",
                )
            pop = self.rollout is None
        else:
            if to_version == self.serving and self.rollout is None:
                raise Conflict(
                    f"version {to_version} already serves {self.environment}",
                    code="already_serving",
                )
            pop = False
        self._rolled_back(self.serving, to_version, pop, reason, actor, timestamp)
        return to_version

    @event("RolledBack")
    def _rolled_back(
        self,
        from_version: int,
        to_version: int,
        pop: bool,
        reason: str,
        actor: dict[str, Any],
        timestamp: datetime,
    ) -> None:
        self.rollout = None
        if pop:
            self.stack = self.stack[:-1]
        elif to_version != self.serving:
            self.stack = [*self.stack, to_version]
        if to_version not in self.ever_served:
            self.ever_served = [*self.ever_served, to_version]
