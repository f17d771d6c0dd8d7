"""Process settings from PROMPTRECORD_* environment variables, mapped onto eventsourcing's."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from pydantic import Field, SecretStr
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
    # workers
    embedded_workers: bool | None = Field(
        default=None,
        description=(
            "run the eval workers, the dispatcher and the reconciler inside `promptrecord "
            "serve`; default: yes when no Redis is configured"
        ),
    )
    embedded_dispatcher: bool = Field(
        default=False,
        description=(
            "with Redis configured, let the API process dispatch (enqueue eval runs) too; by "
            "default `promptrecord projector` dispatches"
        ),
    )
    worker_threads: int = Field(default=4, ge=1, description="eval runs one worker carries at once")
    eval_lease_seconds: float = Field(
        default=30.0,
        gt=0,
        description="seconds a silent worker keeps its run before another worker may take it",
    )
    reconcile_interval: float = Field(
        default=30.0, gt=0, description="seconds between re-enqueues of requested, unfinished runs"
    )
    eval_requeue_after: float = Field(
        default=600.0,
        gt=0,
        description="seconds an enqueued run may wait for a worker before it is enqueued again",
    )
    dispatch_poll_interval: float = Field(
        default=1.0, gt=0, description="seconds between the dispatcher's reads of the log"
    )
    redis_namespace: str = Field(
        default="promptrecord", description="prefix of every Redis key (queues, leases)"
    )
    redis_heartbeat_timeout: float = Field(
        default=60.0,
        gt=0,
        description="seconds without a heartbeat before Dramatiq hands a worker's messages on",
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
    # eval executor
    anthropic_api_key: str | None = Field(
        default=None, description="API key for Anthropic model calls (else ANTHROPIC_API_KEY)"
    )
    anthropic_base_url: str | None = Field(
        default=None, description="Anthropic API base URL (else ANTHROPIC_BASE_URL, else theirs)"
    )
    openai_api_key: str | None = Field(
        default=None, description="API key for OpenAI model calls (else OPENAI_API_KEY)"
    )
    openai_base_url: str | None = Field(
        default=None,
        description="OpenAI-compatible base URL, e.g. a vLLM server (else OPENAI_BASE_URL)",
    )
    model_timeout: float = Field(default=60.0, description="seconds one model request may take")
    model_max_retries: int = Field(
        default=3, description="retries of a model call on 429, 5xx, timeouts, connection errors"
    )
    model_backoff_base: float = Field(default=0.5, description="first retry's backoff, seconds")
    model_backoff_cap: float = Field(default=30.0, description="longest retry backoff, seconds")
    model_price_file: Path | None = Field(
        default=None,
        description="TOML or JSON table of USD per million tokens per model (else list prices)",
    )
    # monitoring
    monitoring_enabled: bool = Field(
        default=True,
        description=(
            "run the drift scheduler and the online judge where eval runs are dispatched "
            "(the projector with Redis, else `promptrecord serve`)"
        ),
    )
    monitoring_interval: float = Field(
        default=60.0,
        gt=0,
        description="seconds between passes of the drift scheduler and of the online judge",
    )
    judge_batch_size: int = Field(
        default=50, ge=1, le=1000, description="executions the online judge scores a prompt a pass"
    )
    judge_concurrency: int = Field(
        default=4, ge=1, le=64, description="online judge model calls in flight at once"
    )
    judge_lookback_hours: float = Field(
        default=24.0, gt=0, description="how far back the online judge looks for executions"
    )
    # webhooks
    secret_key: SecretStr | None = Field(
        default=None,
        description=(
            "Fernet key(s) sealing webhook secrets, comma-separated, newest first (older ones "
            "only unseal); else the key file. Set it when several machines share a database"
        ),
    )
    secret_key_file: Path = Field(
        default=Path("./promptrecord-secret.key"),
        description="where the sealing key is kept when PROMPTRECORD_SECRET_KEY is unset "
        "(created, mode 0600, on first use)",
    )
    webhook_allow_hosts: str = Field(
        default="",
        description="comma-separated host names, IPs or CIDRs webhooks may reach although "
        "private, loopback or link-local (e.g. 10.0.0.0/8,hooks.internal)",
    )
    # webhooks delivery
    webhook_timeout: float = Field(
        default=15.0, gt=0, description="seconds one webhook POST may take before it fails"
    )
    webhook_retry_schedule: list[float] = Field(
        default=[5, 300, 1800, 7200, 18000, 36000, 36000, 50400, 72000],
        description=(
            "seconds before each retry of a failed delivery, as a JSON list (default about "
            "three days in 9 retries); past the last the delivery is failed"
        ),
    )
    webhook_poll_interval: float = Field(
        default=0.1,
        gt=0,
        description="seconds between the webhook follower's reads of the log (its latency)",
    )
    webhook_requeue_after: float = Field(
        default=600.0,
        gt=0,
        description="seconds an enqueued delivery may wait for a worker before it is sent again",
    )
    worker_idle_poll: float = Field(
        default=0.1,
        gt=0,
        description=(
            "longest sleep of an idle `promptrecord worker` between looks at its Redis queues: "
            "the most a webhook (or eval run) waits to be picked up"
        ),
    )

    @property
    def is_postgres(self) -> bool:
        return self.database_url.startswith(("postgresql://", "postgres://"))

    @property
    def runs_embedded_projector(self) -> bool:
        if self.embedded_projector is None:
            return not self.is_postgres
        return self.embedded_projector

    @property
    def runs_embedded_workers(self) -> bool:
        if self.embedded_workers is None:
            return self.redis_url is None
        return self.embedded_workers

    @property
    def runs_embedded_dispatcher(self) -> bool:
        """Whether an API process follows the log to enqueue eval runs."""
        return self.runs_embedded_workers or (
            self.redis_url is not None and self.embedded_dispatcher
        )

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
                PERSISTENCE_MODULE="promptrecord.persistence.postgres:PromptRecordFactory",
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
