"""The PromptRecord application: carries out every command against the event store."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from promptrecord.domain.app_base import CommandResult, utcnow
from promptrecord.domain.base import SYSTEM, Actor
from promptrecord.domain.content import (
    content_hash,
    content_warnings,
    is_floating_model,
    normalise_content,
)
from promptrecord.domain.deployment import Deployment, check_key_by, check_share
from promptrecord.domain.errors import Conflict, InvalidInput, NotFound
from promptrecord.domain.eval_commands import EvalCommands
from promptrecord.domain.keys import KeyToken, hash_secret, new_token
from promptrecord.domain.monitor_commands import MonitorCommands
from promptrecord.domain.pin import TenantPin, check_tenant
from promptrecord.domain.policy import DEFAULT_ENVIRONMENTS, EnvironmentPolicy
from promptrecord.domain.prompt import Prompt, check_name, name_from_title
from promptrecord.domain.templates import check_templates, extract_variables
from promptrecord.domain.webhook_commands import WebhookCommands
from promptrecord.domain.workspace import Workspace, check_environments, check_slug

__all__ = ["CommandResult", "PromptRecord", "utcnow"]


class PromptRecord(EvalCommands, WebhookCommands, MonitorCommands):
    """Commands on workspaces, prompts, deployments, pins, datasets, eval runs, webhooks and
    monitoring."""

    # --- workspaces and keys -----------------------------------------------------------------

    def create_workspace(
        self, slug: str, name: str = "", environments: list[str] | None = None
    ) -> tuple[CommandResult, str]:
        """Create a workspace and its first admin key; returns the key token (shown once)."""
        check_slug(slug)
        envs = check_environments(environments or list(DEFAULT_ENVIRONMENTS))
        if self._find(Workspace.create_id(slug)) is not None:
            raise Conflict(f"workspace {slug!r} already exists", code="workspace_exists")
        now = self.clock()
        ws = Workspace(
            slug=slug,
            name=name or slug,
            environments=envs,
            actor=SYSTEM.as_dict(),
            timestamp=now,
        )
        token = new_token()
        ws.issue_key(
            token.key_id,
            "bootstrap admin",
            "admin",
            hash_secret(token.secret),
            None,
            None,
            SYSTEM.as_dict(),
            now,
        )
        return self._commit(ws, value=token.key_id), token.token

    def issue_key(
        self,
        workspace: str,
        name: str,
        role: str,
        actor: Actor,
        environments: list[str] | None = None,
        prompt_patterns: list[str] | None = None,
    ) -> tuple[CommandResult, KeyToken]:
        ws = self.workspace(workspace)
        token = new_token()
        ws.issue_key(
            token.key_id,
            name,
            role,
            hash_secret(token.secret),
            environments,
            prompt_patterns,
            actor.as_dict(),
            self.clock(),
        )
        return self._commit(ws, value=token.key_id), token

    def revoke_key(
        self,
        workspace: str,
        key_id: str,
        reason: str,
        actor: Actor,
        expected_revision: int | None = None,
    ) -> CommandResult:
        ws = self.workspace(workspace)
        self._expect(ws, expected_revision, f"workspace {workspace!r}")
        ws.revoke_key(key_id, reason, actor.as_dict(), self.clock())
        return self._commit(ws)

    def set_environments(
        self, workspace: str, environments: list[str], actor: Actor, expected_revision: int | None
    ) -> CommandResult:
        ws = self.workspace(workspace)
        self._expect(ws, expected_revision, f"workspace {workspace!r}")
        removed = [env for env in ws.environments if env not in environments]
        if removed:
            raise Conflict(
                f"environments cannot be removed once created (their history stays auditable): "
                f"{', '.join(removed)}; list them all, in the order you want",
                field="environments",
                code="environment_removed",
            )
        ws.set_environments(environments, actor.as_dict(), self.clock())
        return self._commit(ws)

    def set_policy(
        self,
        workspace: str,
        environment: str,
        policy: EnvironmentPolicy,
        actor: Actor,
        expected_revision: int | None = None,
    ) -> CommandResult:
        ws = self.workspace(workspace)
        self._expect(ws, expected_revision, f"workspace {workspace!r}")
        ws.set_policy(environment, policy, actor.as_dict(), self.clock())
        return self._commit(ws)

    # --- prompts and versions ----------------------------------------------------------------

    def _prepare(self, raw: Any) -> tuple[dict[str, Any], str, list[str], list[str]]:
        content = normalise_content(raw)
        check_templates(content)
        return content, content_hash(content), extract_variables(content), content_warnings(content)

    def create_prompt(
        self,
        workspace: str,
        actor: Actor,
        name: str | None = None,
        title: str = "",
        description: str = "",
        content: Any = None,
        message: str = "",
        git_sha: str | None = None,
        git_path: str | None = None,
    ) -> CommandResult:
        """Create a prompt, optionally with its first version. The value is the prompt's name."""
        self.workspace(workspace)
        if name is None:
            if not title.strip():
                raise InvalidInput("give a prompt a name or a title", field="name")
            name = name_from_title(title, uuid.uuid4().hex[:8])
        check_name(name)
        if self._find(Prompt.create_id(workspace, name)) is not None:
            raise Conflict(
                f"prompt {name!r} already exists; commit a new version to it instead",
                field="name",
                code="prompt_exists",
            )
        prompt = Prompt(
            workspace=workspace,
            name=name,
            title=title or name,
            description=description,
            actor=actor.as_dict(),
            timestamp=self.clock(),
        )
        if content is not None:
            normalised, digest, variables, warnings = self._prepare(content)
            prompt.commit(
                content=normalised,
                content_hash=digest,
                variables=variables,
                message=message or "first version",
                warnings=warnings,
                git_sha=git_sha,
                git_path=git_path,
                restored_from=None,
                actor=actor.as_dict(),
                timestamp=self.clock(),
            )
        return self._commit(prompt, value=name)

    def commit_version(
        self,
        workspace: str,
        name: str,
        content: Any,
        actor: Actor,
        message: str = "",
        expected_revision: int | None = None,
        git_sha: str | None = None,
        git_path: str | None = None,
    ) -> CommandResult:
        """Commit content as a new version; identical content returns the head instead.

        The value is `(number, created)`.
        """
        normalised, digest, variables, warnings = self._prepare(content)
        prompt = self.prompt(workspace, name)
        self._expect(prompt, expected_revision, f"prompt {name!r}")
        head = prompt.find_by_hash(digest)
        if head is not None:
            return CommandResult(None, prompt.version, (head["number"], False))
        number = prompt.commit(
            content=normalised,
            content_hash=digest,
            variables=variables,
            message=message,
            warnings=warnings,
            git_sha=git_sha,
            git_path=git_path,
            restored_from=None,
            actor=actor.as_dict(),
            timestamp=self.clock(),
        )
        return self._commit(prompt, value=(number, True))

    def restore_version(
        self,
        workspace: str,
        name: str,
        number: int,
        actor: Actor,
        message: str = "",
        expected_revision: int | None = None,
    ) -> CommandResult:
        """Content rollback: commit version `number`'s content anew, with `restored_from`."""
        prompt = self.prompt(workspace, name)
        self._expect(prompt, expected_revision, f"prompt {name!r}")
        old = prompt.get_version(number)
        head = prompt.find_by_hash(old["content_hash"])
        if head is not None:
            return CommandResult(None, prompt.version, (head["number"], False))
        created = prompt.commit(
            content=old["content"],
            content_hash=old["content_hash"],
            variables=old["variables"],
            message=message or f"restore version {number}",
            warnings=old["warnings"],
            git_sha=None,
            git_path=None,
            restored_from=number,
            actor=actor.as_dict(),
            timestamp=self.clock(),
        )
        return self._commit(prompt, value=(created, True))

    def archive(
        self, workspace: str, name: str, reason: str, actor: Actor, expected_revision: int | None
    ) -> CommandResult:
        prompt = self.prompt(workspace, name)
        self._expect(prompt, expected_revision, f"prompt {name!r}")
        prompt.archive(reason, actor.as_dict(), self.clock())
        return self._commit(prompt)

    def unarchive(
        self, workspace: str, name: str, reason: str, actor: Actor, expected_revision: int | None
    ) -> CommandResult:
        prompt = self.prompt(workspace, name)
        self._expect(prompt, expected_revision, f"prompt {name!r}")
        prompt.unarchive(reason, actor.as_dict(), self.clock())
        return self._commit(prompt)

    # --- deployments -------------------------------------------------------------------------

    def _deployment_for(
        self, ws: Workspace, prompt: Prompt, environment: str, actor: Actor
    ) -> Deployment:
        ws.require_environment(environment)
        deployment = self.deployment(ws.slug, prompt.name, environment)
        if deployment is None:
            deployment = Deployment(
                workspace=ws.slug,
                prompt=prompt.name,
                environment=environment,
                actor=actor.as_dict(),
                timestamp=self.clock(),
            )
        return deployment

    def _servable(
        self,
        ws: Workspace,
        prompt: Prompt,
        environment: str,
        number: int,
        check_order: bool = True,
    ) -> None:
        """Refuse a version the environment's policy will not serve.

        Pins skip the ordering rule (`check_order=False`): holding one tenant on a version
        is an override, but still never to an archived prompt or a floating model.
        """
        if prompt.archived:
            raise Conflict(
                f"prompt {prompt.name!r} is archived; unarchive it before deploying",
                code="prompt_archived",
            )
        version = prompt.get_version(number)
        policy = ws.policy(environment)
        model = version["content"]["model"]
        if policy.refuse_floating_models and is_floating_model(model["provider"], model["name"]):
            raise Conflict(
                f"{environment} refuses floating model names and version {number} uses "
                f"{model['name']!r}; commit a version with a dated model snapshot",
                code="floating_model",
            )
        previous = ws.previous_environment(environment)
        if check_order and policy.require_previous_environment and previous is not None:
            before = self.deployment(ws.slug, prompt.name, previous)
            if before is None or number not in before.ever_served:
                raise Conflict(
                    f"{environment} requires a version to have served {previous} first, and "
                    f"version {number} has not; promote it to {previous} first",
                    code="previous_environment_required",
                )

    def promote(
        self,
        workspace: str,
        name: str,
        environment: str,
        version: int,
        actor: Actor,
        reason: str = "",
        expected_revision: int | None = None,
    ) -> CommandResult:
        """Promote directly, or open a request when the policy wants approvals.

        The value is `{"status": "promoted"}` or `{"status": "pending_approval", "request_id"}`.
        """
        return self._deploy(
            workspace, name, environment, version, "promote", None, actor, reason, expected_revision
        )

    def start_rollout(
        self,
        workspace: str,
        name: str,
        environment: str,
        candidate: int,
        share: float,
        actor: Actor,
        key_by: str = "tenant",
        reason: str = "",
        expected_revision: int | None = None,
    ) -> CommandResult:
        rollout = {"share": check_share(share), "key_by": check_key_by(key_by)}
        return self._deploy(
            workspace,
            name,
            environment,
            candidate,
            "rollout",
            rollout,
            actor,
            reason,
            expected_revision,
        )

    def _deploy(
        self,
        workspace: str,
        name: str,
        environment: str,
        version: int,
        mode: str,
        rollout: dict[str, Any] | None,
        actor: Actor,
        reason: str,
        expected_revision: int | None,
    ) -> CommandResult:
        ws = self.workspace(workspace, copy=False)
        prompt = self.prompt(workspace, name, copy=False)
        deployment = self._deployment_for(ws, prompt, environment, actor)
        self._expect(deployment, expected_revision, f"deployment of {name!r} in {environment}")
        self._servable(ws, prompt, environment, version)
        policy = ws.policy(environment)
        # A rollout may start without a gate (the canary is itself the test); promoting, or
        # completing the rollout, needs one.
        gate = None
        if mode == "promote":
            gate = self.gate_for(ws, name, environment, version, deployment.serving)
        now = self.clock()
        if policy.required_approvals > 0:
            request_id = uuid.uuid4().hex[:12]
            deployment.request_promotion(
                request_id,
                version,
                mode,
                rollout,
                policy.required_approvals,
                reason,
                actor.as_dict(),
                now,
                gate,
            )
            value = {"status": "pending_approval", "request_id": request_id}
            return self._commit(deployment, value=value)
        self._execute(deployment, version, mode, rollout, None, reason, actor, now, gate)
        return self._commit(deployment, value={"status": _done(mode)})

    @staticmethod
    def _execute(
        deployment: Deployment,
        version: int,
        mode: str,
        rollout: dict[str, Any] | None,
        request_id: str | None,
        reason: str,
        actor: Actor,
        now: datetime,
        gate: dict[str, Any] | None = None,
    ) -> None:
        if mode == "rollout":
            assert rollout is not None
            deployment.start_rollout(
                uuid.uuid4().hex,
                version,
                rollout["share"],
                rollout["key_by"],
                request_id,
                reason,
                actor.as_dict(),
                now,
            )
        else:
            deployment.promote(version, request_id, reason, actor.as_dict(), now, gate)

    def _existing_deployment(self, workspace: str, name: str, environment: str) -> Deployment:
        self.workspace(workspace, copy=False).require_environment(environment)
        self.prompt(workspace, name, copy=False)
        deployment = self.deployment(workspace, name, environment)
        if deployment is None:
            raise NotFound(
                f"nothing has been deployed for prompt {name!r} in {environment}",
                code="not_deployed",
            )
        return deployment

    def approve(
        self,
        workspace: str,
        name: str,
        environment: str,
        request_id: str,
        actor: Actor,
        reason: str = "",
        expected_revision: int | None = None,
    ) -> CommandResult:
        """Approve a request; the last approval needed carries it out in the same commit."""
        ws = self.workspace(workspace, copy=False)
        prompt = self.prompt(workspace, name, copy=False)
        deployment = self._existing_deployment(workspace, name, environment)
        self._expect(deployment, expected_revision, f"deployment of {name!r} in {environment}")
        request = deployment.pending_request(request_id)
        author = prompt.get_version(request["version"])["author"]
        policy = ws.policy(environment)
        now = self.clock()
        ready = deployment.approve(
            request_id, author, policy.four_eyes, reason, actor.as_dict(), now
        )
        status = "pending_approval"
        if ready:
            self._servable(ws, prompt, environment, request["version"])
            gate = None
            if request["mode"] == "promote":  # checked again: what serves may have changed
                gate = self.gate_for(ws, name, environment, request["version"], deployment.serving)
            self._execute(
                deployment,
                request["version"],
                request["mode"],
                request["rollout"],
                request_id,
                request["reason"],
                actor,
                now,
                gate,
            )
            status = _done(request["mode"])
        approvals = len(deployment.requests[request_id]["approvals"])
        value = {"status": status, "request_id": request_id, "approvals": approvals}
        return self._commit(deployment, value=value)

    def reject(
        self,
        workspace: str,
        name: str,
        environment: str,
        request_id: str,
        actor: Actor,
        reason: str = "",
        expected_revision: int | None = None,
    ) -> CommandResult:
        deployment = self._existing_deployment(workspace, name, environment)
        self._expect(deployment, expected_revision, f"deployment of {name!r} in {environment}")
        deployment.reject(request_id, reason, actor.as_dict(), self.clock())
        return self._commit(deployment, value={"status": "rejected", "request_id": request_id})

    def adjust_rollout(
        self,
        workspace: str,
        name: str,
        environment: str,
        share: float,
        actor: Actor,
        reason: str = "",
        expected_revision: int | None = None,
    ) -> CommandResult:
        deployment = self._existing_deployment(workspace, name, environment)
        self._expect(deployment, expected_revision, f"deployment of {name!r} in {environment}")
        deployment.adjust_rollout(share, reason, actor.as_dict(), self.clock())
        return self._commit(deployment)

    def complete_rollout(
        self,
        workspace: str,
        name: str,
        environment: str,
        actor: Actor,
        reason: str = "",
        expected_revision: int | None = None,
    ) -> CommandResult:
        ws = self.workspace(workspace, copy=False)
        prompt = self.prompt(workspace, name, copy=False)
        deployment = self._existing_deployment(workspace, name, environment)
        self._expect(deployment, expected_revision, f"deployment of {name!r} in {environment}")
        gate = None
        if deployment.rollout is not None:
            candidate = int(deployment.rollout["candidate"])
            self._servable(ws, prompt, environment, candidate)
            baseline = int(deployment.rollout["baseline"])
            gate = self.gate_for(ws, name, environment, candidate, baseline)
        version = deployment.complete_rollout(reason, actor.as_dict(), self.clock(), gate)
        return self._commit(deployment, value={"status": "promoted", "version": version})

    def abort_rollout(
        self,
        workspace: str,
        name: str,
        environment: str,
        actor: Actor,
        reason: str = "",
        expected_revision: int | None = None,
    ) -> CommandResult:
        deployment = self._existing_deployment(workspace, name, environment)
        self._expect(deployment, expected_revision, f"deployment of {name!r} in {environment}")
        deployment.abort_rollout(reason, actor.as_dict(), self.clock())
        return self._commit(deployment, value={"status": "aborted"})

    def rollback(
        self,
        workspace: str,
        name: str,
        environment: str,
        reason: str,
        actor: Actor,
        to_version: int | None = None,
        expected_revision: int | None = None,
    ) -> CommandResult:
        """The kill switch: no approval, always a reason. The value is the version now served."""
        prompt = self.prompt(workspace, name, copy=False)
        if to_version is not None:
            prompt.get_version(to_version)
        deployment = self._existing_deployment(workspace, name, environment)
        self._expect(deployment, expected_revision, f"deployment of {name!r} in {environment}")
        version = deployment.rollback(to_version, reason, actor.as_dict(), self.clock())
        return self._commit(deployment, value={"status": "rolled_back", "version": version})

    # --- tenant pins -------------------------------------------------------------------------

    def pin_of(self, workspace: str, tenant: str, name: str, environment: str) -> TenantPin | None:
        found = self._find(TenantPin.create_id(workspace, tenant, name, environment))
        assert found is None or isinstance(found, TenantPin)
        return found

    def pin(
        self,
        workspace: str,
        tenant: str,
        name: str,
        environment: str,
        version: int,
        actor: Actor,
        reason: str = "",
        expires_at: datetime | None = None,
        ttl_seconds: int | None = None,
        expected_revision: int | None = None,
    ) -> CommandResult:
        """Hold a tenant on a version until an expiry bounded by the environment's policy."""
        check_tenant(tenant)
        ws = self.workspace(workspace, copy=False)
        ws.require_environment(environment)
        prompt = self.prompt(workspace, name, copy=False)
        self._servable(ws, prompt, environment, version, check_order=False)
        policy = ws.policy(environment)
        now = self.clock()
        if expires_at is not None and ttl_seconds is not None:
            raise InvalidInput("give expires_at or ttl_seconds, not both", field="expires_at")
        if ttl_seconds is not None and ttl_seconds <= 0:
            raise InvalidInput(
                f"ttl_seconds must be positive (got {ttl_seconds}); to end a pin, unpin it",
                field="ttl_seconds",
            )
        if expires_at is None:
            ttl = policy.pin_default_ttl_seconds if ttl_seconds is None else ttl_seconds
            expires_at = now + timedelta(seconds=ttl)
        if expires_at.tzinfo is None:
            raise InvalidInput(
                "expires_at needs a timezone, e.g. 2026-03-14T09:00:00Z", field="expires_at"
            )
        ceiling = now + timedelta(seconds=policy.pin_max_ttl_seconds)
        if expires_at > ceiling:
            raise InvalidInput(
                f"{environment} allows pins of at most {policy.pin_max_ttl_seconds} seconds "
                f"(until {ceiling.isoformat()}); choose an earlier expiry",
                field="expires_at",
                code="pin_too_long",
            )
        pin = self.pin_of(workspace, tenant, name, environment)
        if pin is None:
            pin = TenantPin(
                workspace=workspace,
                tenant=tenant,
                prompt=name,
                environment=environment,
                actor=actor.as_dict(),
                timestamp=now,
            )
        self._expect(pin, expected_revision, f"pin of {tenant!r}")
        pin.pin(version, expires_at, reason, actor.as_dict(), now)
        return self._commit(pin, value={"version": version, "expires_at": expires_at})

    def unpin(
        self,
        workspace: str,
        tenant: str,
        name: str,
        environment: str,
        actor: Actor,
        reason: str = "",
        expected_revision: int | None = None,
    ) -> CommandResult:
        pin = self.pin_of(workspace, tenant, name, environment)
        if pin is None:
            raise NotFound(
                f"tenant {tenant!r} has never been pinned for {name!r} in {environment}",
                code="not_pinned",
            )
        self._expect(pin, expected_revision, f"pin of {tenant!r}")
        pin.unpin(reason, actor.as_dict(), self.clock())
        return self._commit(pin)


def _done(mode: str) -> str:
    return "rollout_started" if mode == "rollout" else "promoted"
