"""The Workspace aggregate: environments, policies and API keys of one isolated team."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import event

from promptrecord.domain.base import ChainedAggregate, business_id
from promptrecord.domain.errors import Conflict, InvalidInput, NotFound
from promptrecord.domain.policy import DEFAULT_ENVIRONMENTS, ROLES, EnvironmentPolicy

SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
ENV_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


def check_slug(slug: str) -> str:
    if not SLUG.match(slug):
        raise InvalidInput(
            f"workspace slug {slug!r} must match {SLUG.pattern} (lowercase letters, digits, '-')",
            field="slug",
        )
    return slug


def check_environments(environments: list[str]) -> list[str]:
    if not environments:
        raise InvalidInput("at least one environment is needed", field="environments")
    for env in environments:
        if not ENV_NAME.match(env):
            raise InvalidInput(
                f"environment name {env!r} must match {ENV_NAME.pattern}", field="environments"
            )
    if len(set(environments)) != len(environments):
        raise InvalidInput("environment names must be distinct", field="environments")
    return list(environments)


class Workspace(ChainedAggregate):
    """The isolation boundary. API keys, environments and their policies live here."""

    @staticmethod
    def create_id(slug: str) -> UUID:
        return business_id("workspace", slug)

    @event("Created")
    def __init__(
        self,
        slug: str,
        name: str,
        environments: list[str],
        actor: dict[str, Any],
        timestamp: datetime,
    ) -> None:
        self.slug = slug
        self.name = name
        self.environments = list(environments)
        self.policies: dict[str, dict[str, Any]] = {}
        self.keys: dict[str, dict[str, Any]] = {}

    # --- environments and policies -------------------------------------------------------

    def set_environments(
        self, environments: list[str], actor: dict[str, Any], timestamp: datetime
    ) -> None:
        self._environments_set(check_environments(environments), actor, timestamp)

    @event("EnvironmentsSet")
    def _environments_set(
        self, environments: list[str], actor: dict[str, Any], timestamp: datetime
    ) -> None:
        self.environments = list(environments)

    def require_environment(self, environment: str) -> None:
        if environment not in self.environments:
            raise NotFound(
                f"environment {environment!r} does not exist in workspace {self.slug!r}; "
                f"it has {', '.join(self.environments)}",
                field="environment",
                code="environment_not_found",
            )

    def previous_environment(self, environment: str) -> str | None:
        index = self.environments.index(environment)
        return self.environments[index - 1] if index > 0 else None

    def policy(self, environment: str) -> EnvironmentPolicy:
        return EnvironmentPolicy(**self.policies.get(environment, {}))

    def set_policy(
        self,
        environment: str,
        policy: EnvironmentPolicy,
        actor: dict[str, Any],
        timestamp: datetime,
    ) -> None:
        self.require_environment(environment)
        policy.validate()
        self._policy_set(environment, policy.as_dict(), actor, timestamp)

    @event("PolicySet")
    def _policy_set(
        self,
        environment: str,
        policy: dict[str, Any],
        actor: dict[str, Any],
        timestamp: datetime,
    ) -> None:
        # Replaced, never changed in place: readers may hold the cached aggregate unlocked.
        self.policies = {**self.policies, environment: dict(policy)}

    # --- API keys --------------------------------------------------------------------------

    def issue_key(
        self,
        key_id: str,
        name: str,
        role: str,
        secret_hash: str,
        environments: list[str] | None,
        prompt_patterns: list[str] | None,
        actor: dict[str, Any],
        timestamp: datetime,
    ) -> None:
        if role not in ROLES:
            raise InvalidInput(f"role {role!r} is not one of {', '.join(ROLES)}", field="role")
        if not name.strip():
            raise InvalidInput("a key needs a name saying who or what uses it", field="name")
        for env in environments or []:
            self.require_environment(env)
        if key_id in self.keys:
            raise Conflict(f"key id {key_id!r} already exists", field="key_id")
        self._key_issued(
            key_id, name, role, secret_hash, environments, prompt_patterns, actor, timestamp
        )

    @event("ApiKeyIssued")
    def _key_issued(
        self,
        key_id: str,
        name: str,
        role: str,
        secret_hash: str,
        environments: list[str] | None,
        prompt_patterns: list[str] | None,
        actor: dict[str, Any],
        timestamp: datetime,
    ) -> None:
        self.keys = {
            **self.keys,
            key_id: {
                "key_id": key_id,
                "name": name,
                "role": role,
                "secret_hash": secret_hash,
                "environments": environments,
                "prompt_patterns": prompt_patterns,
                "revoked": False,
            },
        }

    def revoke_key(
        self, key_id: str, reason: str, actor: dict[str, Any], timestamp: datetime
    ) -> None:
        key = self.keys.get(key_id)
        if key is None:
            raise NotFound(f"API key {key_id!r} not found in this workspace", field="key_id")
        if key["revoked"]:
            raise Conflict(f"API key {key_id!r} is already revoked", code="already_revoked")
        self._key_revoked(key_id, reason, actor, timestamp)

    @event("ApiKeyRevoked")
    def _key_revoked(
        self, key_id: str, reason: str, actor: dict[str, Any], timestamp: datetime
    ) -> None:
        self.keys = {**self.keys, key_id: {**self.keys[key_id], "revoked": True}}


__all__ = ["DEFAULT_ENVIRONMENTS", "Workspace", "check_environments", "check_slug"]
