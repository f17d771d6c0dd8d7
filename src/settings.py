"""Process settings from PROMPTRECORD_* environment variables, mapped onto eventsourcing's."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything a promptrecord process reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="PROMPTRECORD_", extra="ignore")

    database_url: str = Field(
        default="sqlite:///./promptrecord.db",
        description="sqlite:///PATH (embedded default) or postgresql://user@host:port/db",
    )
    database_schema: str | None = Field(
        default=None, description="PostgreSQL schema for the events and tables (default: public)"
    )
    redis_url: str | None = Field(
        default=None, description="redis://host:port/db; none = in-process"
    )
    host: str = "127.0.0.1"
    port: int = 8000
    admin_key_file: Path = Path("./promptrecord-admin.key")
    default_workspace: str = "default"
    live_poll_interval: float = Field(
        default=0.1, description="seconds between polls of the event log by the live state"
    )
    embedded_projector: bool | None = Field(
        default=None,
        description=(
            "keep the read views in the API process itself; default: yes on SQLite, no on "
            "PostgreSQL (run `promptrecord projector` there)"
        ),
    )
    views_wait_timeout: float = Field(
        default=5.0,
        description="seconds a read waits for the views to reach its position before a 503",
    )
    snapshot_interval: int = Field(default=50, description="events between aggregate snapshots")
    aggregate_cache_size: int = Field(
        default=10_000, description="aggregates kept in memory by each process for commands"
    )

    @property
    def is_postgres(self) -> bool:
        return self.database_url.startswith(("postgresql://", "postgres://"))

    @property
    def runs_embedded_projector(self) -> bool:
        if self.embedded_projector is None:
            return not self.is_postgres
        return self.embedded_projector

    def eventsourcing_env(self) -> dict[str, str]:
        """The eventsourcing library's environment for this database URL."""
        env: dict[str, str] = {
            "IS_SNAPSHOTTING_ENABLED": "y",
            # Commands reload aggregates from a cache and read only the events stored since,
            # so several processes stay correct while a command costs one query per aggregate.
            "AGGREGATE_CACHE_MAXSIZE": str(self.aggregate_cache_size),
            "AGGREGATE_CACHE_FASTFORWARD": "y",
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
        }
        url = urlparse(self.database_url)
        if self.is_postgres:
            env.update(
                PERSISTENCE_MODULE="eventsourcing.postgres",
                POSTGRES_DBNAME=url.path.lstrip("/") or "postgres",
                POSTGRES_HOST=url.hostname or "127.0.0.1",
                POSTGRES_PORT=str(url.port or 5432),
                POSTGRES_USER=unquote(url.username or "postgres"),
                POSTGRES_PASSWORD=unquote(url.password or ""),
                POSTGRES_POOL_SIZE="10",
                POSTGRES_MAX_OVERFLOW="20",
                # one round trip per save: lock, notify and insert run in a server function
                POSTGRES_ENABLE_DB_FUNCTIONS="y",
                APPLICATION_RECORDER_TOPIC="promptrecord.persistence.postgres:PromptRecordRecorder",
                CREATE_TABLE="y",
            )
            if self.database_schema:
                env["POSTGRES_SCHEMA"] = self.database_schema
        elif url.scheme == "sqlite":
            path = self.database_url[len("sqlite:///") :] if "///" in self.database_url else ""
            env.update(SQLITE_DBNAME=path or "promptrecord.db", CREATE_TABLE="y")
        else:
            msg = (
                f"PROMPTRECORD_DATABASE_URL {self.database_url!r} is neither sqlite:///PATH "
                "nor postgresql://…; set one of those"
            )
            raise ValueError(msg)
        return env
