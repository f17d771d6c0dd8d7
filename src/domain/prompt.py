"""The Prompt aggregate: a named template and its immutable, numbered versions."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import event

from promptrecord.domain.base import ChainedAggregate, business_id
from promptrecord.domain.errors import Conflict, InvalidInput, NotFound

NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise InvalidInput(
            f"prompt name {name!r} must match {NAME.pattern}: lowercase letters, digits, "
            "'.', '_' or '-', at most 64 characters, starting with a letter or digit",
            field="name",
        )
    return name


def name_from_title(title: str, suffix: str) -> str:
    """`{title-kebab}-{suffix}`: the name given to a prompt created from a title alone."""
    kebab = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:55].strip("-")
    return f"{kebab}-{suffix}" if kebab else f"prompt-{suffix}"


class Prompt(ChainedAggregate):
    """A named, versioned template inside a workspace. Versions are never changed or removed."""

    @staticmethod
    def create_id(workspace: str, name: str) -> UUID:
        return business_id("prompt", workspace, name)

    @event("Created")
    def __init__(
        self,
        workspace: str,
        name: str,
        title: str,
        description: str,
        actor: dict[str, Any],
        timestamp: datetime,
    ) -> None:
        self.workspace = workspace
        self.name = name
        self.title = title
        self.description = description
        self.archived = False
        self.versions: list[dict[str, Any]] = []

    def __deepcopy__(self, memo: dict[int, Any]) -> Prompt:
        # The repository copies cached aggregates for every command. Committed versions are
        # never changed, so a copy can share them; copying each content would cost more
        # than the rest of a command as a prompt's history grows.
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.versions = list(self.versions)
        clone.__dict__["_pending_events"] = list(self.pending_events)
        return clone

    @property
    def head(self) -> dict[str, Any] | None:
        return self.versions[-1] if self.versions else None

    def get_version(self, number: int) -> dict[str, Any]:
        if not 1 <= number <= len(self.versions):
            latest = f"versions are 1..{len(self.versions)}" if self.versions else "it has none"
            raise NotFound(
                f"prompt {self.name!r} has no version {number}; {latest}",
                field="version",
                code="version_not_found",
            )
        return self.versions[number - 1]

    def find_by_hash(self, digest: str) -> dict[str, Any] | None:
        head = self.head
        return head if head is not None and head["content_hash"] == digest else None

    def commit(
        self,
        *,
        content: dict[str, Any],
        content_hash: str,
        variables: list[str],
        message: str,
        warnings: list[str],
        git_sha: str | None,
        git_path: str | None,
        restored_from: int | None,
        actor: dict[str, Any],
        timestamp: datetime,
    ) -> int:
        """Commit a new version (content already normalised and checked); returns its number."""
        if self.archived:
            raise Conflict(
                f"prompt {self.name!r} is archived; unarchive it before committing",
                code="prompt_archived",
            )
        number = len(self.versions) + 1
        parent = number - 1 if number > 1 else None
        self._version_committed(
            number=number,
            content=content,
            content_hash=content_hash,
            variables=variables,
            message=message,
            warnings=warnings,
            parent=parent,
            git_sha=git_sha,
            git_path=git_path,
            restored_from=restored_from,
            actor=actor,
            timestamp=timestamp,
        )
        return number

    @event("VersionCommitted")
    def _version_committed(
        self,
        number: int,
        content: dict[str, Any],
        content_hash: str,
        variables: list[str],
        message: str,
        warnings: list[str],
        parent: int | None,
        git_sha: str | None,
        git_path: str | None,
        restored_from: int | None,
        actor: dict[str, Any],
        timestamp: datetime,
    ) -> None:
        self.versions.append(
            {
                "number": number,
                "content": content,
                "content_hash": content_hash,
                "variables": variables,
                "message": message,
                "warnings": warnings,
                "parent": parent,
                "git_sha": git_sha,
                "git_path": git_path,
                "restored_from": restored_from,
                "author": actor,
                "committed_at": timestamp,
            }
        )

    def archive(self, reason: str, actor: dict[str, Any], timestamp: datetime) -> None:
        if self.archived:
            raise Conflict(f"prompt {self.name!r} is already archived", code="already_archived")
        self._archived(reason, actor, timestamp)

    @event("Archived")
    def _archived(self, reason: str, actor: dict[str, Any], timestamp: datetime) -> None:
        self.archived = True

    def unarchive(self, reason: str, actor: dict[str, Any], timestamp: datetime) -> None:
        if not self.archived:
            raise Conflict(f"prompt {self.name!r} is not archived", code="not_archived")
        self._unarchived(reason, actor, timestamp)

    @event("Unarchived")
    def _unarchived(self, reason: str, actor: dict[str, Any], timestamp: datetime) -> None:
        self.archived = False
