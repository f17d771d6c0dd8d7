"""The services the suite runs against answer, and the harness isolates each test."""

from __future__ import annotations

from pathlib import Path

import psycopg
import redis

from promptrecord.settings import Settings


def test_postgres_answers_select_1(postgres_url: str) -> None:
    with psycopg.connect(postgres_url, connect_timeout=5) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_redis_answers_ping(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=5, socket_timeout=5)
    try:
        assert client.ping() is True
    finally:
        client.close()


def test_postgres_settings_own_a_fresh_schema(postgres_settings: Settings) -> None:
    schema = postgres_settings.database_schema
    assert schema is not None
    assert schema.startswith("t_")
    assert postgres_settings.eventsourcing_env()["POSTGRES_SCHEMA"] == schema
    with psycopg.connect(postgres_settings.database_url, connect_timeout=5) as conn:
        found = conn.execute(
            "select count(*) from information_schema.schemata where schema_name = %s", (schema,)
        ).fetchone()
        assert found == (1,)
        tables = conn.execute(
            "select count(*) from information_schema.tables where table_schema = %s", (schema,)
        ).fetchone()
        assert tables == (0,)


def test_backend_is_isolated_to_the_test(backend: Settings, tmp_path: Path) -> None:
    assert backend.admin_key_file.parent == tmp_path
    assert backend.redis_url is None
    if backend.is_postgres:
        assert backend.database_schema is not None
    else:
        assert backend.database_url == f"sqlite:///{tmp_path}/promptrecord.db"
        assert backend.eventsourcing_env()["SQLITE_DBNAME"] == f"{tmp_path}/promptrecord.db"


def test_developer_environment_does_not_leak(sqlite_settings: Settings) -> None:
    # The autouse fixture removed any PROMPTRECORD_DATABASE_URL etc. of the developer's shell.
    defaults = Settings()
    assert defaults.database_url == Settings.model_fields["database_url"].default
    assert defaults.redis_url is None
    assert sqlite_settings.redis_url is None
