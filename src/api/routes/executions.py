"""Placeholder router, filled in by its owner this session."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/v1/executions", tags=["executions"])
