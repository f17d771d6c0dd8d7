"""Liveness and readiness probes for orchestrators and load balancers."""

from __future__ import annotations

import logging

import anyio.to_thread
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from promptrecord.api.deps import ServicesDep
from promptrecord.api.problems import problem, problem_responses

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


class Liveness(BaseModel):
    status: str = Field(examples=["ok"])


class Readiness(BaseModel):
    status: str = Field(examples=["ready"])
    database: str = Field(description="Backend of the event store", examples=["postgresql"])
    position: int = Field(description="Log position the live state has applied", examples=[42])


@router.get("/healthz", response_model=Liveness, summary="Liveness: the process answers")
async def healthz() -> Liveness:
    return Liveness(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Readiness: the database answers and the live state follows the log",
    responses=problem_responses(503),
)
async def readyz(services: ServicesDep) -> Readiness | JSONResponse:
    try:
        await anyio.to_thread.run_sync(services.idempotency.ping)
    except Exception as error:
        log.warning("readiness check failed: %s", error)
        return problem(
            503,
            "database_unavailable",
            "the database does not answer; the process is not ready to serve",
            "/readyz",
            headers={"Retry-After": "5"},
        )
    database = "postgresql" if services.settings.is_postgres else "sqlite"
    return Readiness(status="ready", database=database, position=services.live.position)
