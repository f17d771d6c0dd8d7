"""Per-environment deployment policy: approvals, four-eyes, ordering, model pinning, pin TTLs."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from promptrecord.domain.errors import InvalidInput
from promptrecord.domain.evals import check_dataset_name

DEFAULT_ENVIRONMENTS = ("development", "staging", "production")
ROLES = ("viewer", "runtime", "editor", "deployer", "admin")
MAX_PIN_TTL_SECONDS = 10 * 365 * 24 * 3600


def role_rank(role: str) -> int:
    return ROLES.index(role)


@dataclass(frozen=True)
class EnvironmentPolicy:
    """What an environment demands before it serves a version.

    required_approvals: distinct deployers who must approve a promotion request (0 = direct).
    four_eyes: approvers may be neither the requester nor the version's author.
    require_previous_environment: the version must have served the environment before this one.
    refuse_floating_models: refuse versions whose model name floats (`*-latest`, undated alias).
    pin_default_ttl_seconds / pin_max_ttl_seconds: tenant pin expiry default and ceiling.
    require_gate: a promotion (and a rollout's completion) needs the newest completed eval run
        of the candidate against the version the environment serves, on `gate_dataset`, to
        have passed.
    """

    required_approvals: int = 0
    four_eyes: bool = False
    require_previous_environment: bool = False
    refuse_floating_models: bool = False
    pin_default_ttl_seconds: int = 7 * 24 * 3600
    pin_max_ttl_seconds: int = 90 * 24 * 3600
    require_gate: bool = False
    gate_dataset: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EnvironmentPolicy:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            name = sorted(unknown)[0]
            raise InvalidInput(
                f"unknown policy field {name!r}; known fields: {', '.join(sorted(known))}",
                field=f"policy.{name}",
            )
        policy = cls(**data)
        policy.validate()
        return policy

    def validate(self) -> None:
        if not 0 <= self.required_approvals <= 10:
            raise InvalidInput(
                "required_approvals must be between 0 and 10", field="policy.required_approvals"
            )
        if self.pin_default_ttl_seconds < 60:
            raise InvalidInput(
                "pin_default_ttl_seconds must be at least 60",
                field="policy.pin_default_ttl_seconds",
            )
        if self.pin_max_ttl_seconds > MAX_PIN_TTL_SECONDS:
            raise InvalidInput(
                f"pin_max_ttl_seconds must be at most {MAX_PIN_TTL_SECONDS} (ten years)",
                field="policy.pin_max_ttl_seconds",
            )
        if self.require_gate and not self.gate_dataset:
            raise InvalidInput(
                "require_gate needs gate_dataset: the dataset a passing eval run must use",
                field="policy.gate_dataset",
            )
        if self.gate_dataset is not None:
            check_dataset_name(self.gate_dataset, field="policy.gate_dataset")
        if self.pin_max_ttl_seconds < self.pin_default_ttl_seconds:
            raise InvalidInput(
                "pin_max_ttl_seconds must be at least pin_default_ttl_seconds",
                field="policy.pin_max_ttl_seconds",
            )
