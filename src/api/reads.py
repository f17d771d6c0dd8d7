"""What the read endpoints share: lookups in the views that refuse as the commands do."""

from __future__ import annotations

from dataclasses import asdict

from promptrecord.api.schemas import PromotionRequestOut, VersionDetail, VersionSummary
from promptrecord.domain.errors import NotFound
from promptrecord.projections.views import (
    CatalogEntry,
    DatasetEntry,
    PromotionRequestEntry,
    VersionEntry,
    ViewStore,
    WorkspaceEntry,
)


def require_prompt(views: ViewStore, workspace: str, name: str) -> CatalogEntry:
    entry = views.catalog_entry(workspace, name)
    if entry is None:
        raise NotFound(
            f"prompt {name!r} does not exist in this workspace",
            field="name",
            code="prompt_not_found",
        )
    return entry


def require_version(views: ViewStore, workspace: str, name: str, number: int) -> VersionEntry:
    entry = views.version(workspace, name, number)
    if entry is None:
        head = require_prompt(views, workspace, name).head_version
        latest = f"versions are 1..{head}" if head else "it has none"
        raise NotFound(
            f"prompt {name!r} has no version {number}; {latest}",
            field="version",
            code="version_not_found",
        )
    return entry


def require_environment(views: ViewStore, workspace: str, environment: str) -> WorkspaceEntry:
    ws = views.workspace(workspace)
    if ws is None or environment not in ws.environments:
        known = ", ".join(ws.environments) if ws is not None else "none yet"
        raise NotFound(
            f"environment {environment!r} does not exist in workspace {workspace!r}; "
            f"it has {known}",
            field="environment",
            code="environment_not_found",
        )
    return ws


def version_summary(entry: VersionEntry) -> VersionSummary:
    return VersionSummary.of(asdict(entry))


def version_detail(entry: VersionEntry) -> VersionDetail:
    return VersionDetail.of(asdict(entry))


def promotion_request_out(entry: PromotionRequestEntry) -> PromotionRequestOut:
    return PromotionRequestOut.of(asdict(entry))


def require_dataset(views: ViewStore, workspace: str, name: str) -> DatasetEntry:
    entry = views.dataset(workspace, name)
    if entry is None:
        raise NotFound(
            f"dataset {name!r} does not exist in this workspace; create it with POST /v1/datasets",
            field="dataset",
            code="dataset_not_found",
        )
    return entry
