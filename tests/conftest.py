"""The shared test harness: service probes, per-test isolated Settings, environment hygiene.

Fixtures
--------
``backend``            parametrised ``sqlite`` / ``postgres``: a ``Settings`` isolated to the test
                       (own SQLite file, or a fresh PostgreSQL schema dropped afterwards).
``sqlite_settings``    the ``sqlite`` branch alone.
``postgres_settings``  the ``postgres`` branch alone.
``postgres_url``       the shared PostgreSQL test database URL (create nothing there).
``redis_url``          the Redis test URL.

Services come from ``PROMPTRECORD_TEST_DATABASE_URL`` and ``PROMPTRECORD_TEST_REDIS_URL``.
Each is probed once. With ``CI=true`` (or ``1``) an unreachable service ends the session
with exit status 1 before any test runs; elsewhere the tests that need it are skipped with
the reason, and the header and the summary say so loudly.

Tests that need a service directly can mark themselves ``@pytest.mark.postgres`` /
``@pytest.mark.redis``; tests using the fixtures above get the marker automatically, so
``pytest -m "not postgres and not redis"`` runs what needs no server.
"""

from __future__ import annotations

import functools
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import redis
from psycopg import sql

from promptrecord.settings import Settings

DEFAULT_TEST_DATABASE_URL = "postgresql://root@127.0.0.1:5432/test"
DEFAULT_TEST_REDIS_URL = "redis://127.0.0.1:6379/0"

TEST_DATABASE_URL = os.environ.get("PROMPTRECORD_TEST_DATABASE_URL") or DEFAULT_TEST_DATABASE_URL
TEST_REDIS_URL = os.environ.get("PROMPTRECORD_TEST_REDIS_URL") or DEFAULT_TEST_REDIS_URL

PROBE_TIMEOUT_SECONDS = 2
# A test that leaks a connection holding locks in its schema must not hang teardown forever.
DROP_SCHEMA_LOCK_TIMEOUT = "30s"

# Variables of the eventsourcing library that would otherwise leak from a developer's shell
# into every Application the tests build (eventsourcing merges os.environ into its env).
_EVENTSOURCING_ENV_NAMES = frozenset(
    {
        "PERSISTENCE_MODULE",
        "INFRASTRUCTURE_FACTORY",
        "CREATE_TABLE",
        "IS_SNAPSHOTTING_ENABLED",
        "COMPRESSOR_TOPIC",
        "CIPHER_TOPIC",
        "CIPHER_KEY",
        "AGGREGATE_CACHE_MAXSIZE",
        "AGGREGATE_CACHE_FASTFORWARD",
        "DEEPCOPY_FROM_AGGREGATE_CACHE",
    }
)
_EVENTSOURCING_ENV_PREFIXES = ("POSTGRES_", "SQLITE_")


def in_ci() -> bool:
    """True when the ``CI`` environment variable is ``true`` or ``1``."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1"}


def _redact(url: str) -> str:
    """The URL with any password replaced by ``***``, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _one_line(exc: BaseException) -> str:
    text = re.sub(r"\s+", " ", str(exc)).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    marker: str
    url: str
    error: str | None

    @property
    def reachable(self) -> bool:
        return self.error is None

    @property
    def problem(self) -> str:
        return f"{self.name} unreachable at {_redact(self.url)}: {self.error}"


@functools.cache
def postgres_status() -> ServiceStatus:
    error: str | None = None
    try:
        with psycopg.connect(TEST_DATABASE_URL, connect_timeout=PROBE_TIMEOUT_SECONDS) as conn:
            row = conn.execute("select 1").fetchone()
            if row is None or row[0] != 1:
                error = f"select 1 returned {row!r}"
    except Exception as exc:
        error = _one_line(exc)
    return ServiceStatus("PostgreSQL", "postgres", TEST_DATABASE_URL, error)


@functools.cache
def redis_status() -> ServiceStatus:
    error: str | None = None
    try:
        client = redis.Redis.from_url(
            TEST_REDIS_URL,
            socket_connect_timeout=PROBE_TIMEOUT_SECONDS,
            socket_timeout=PROBE_TIMEOUT_SECONDS,
        )
        try:
            if client.ping() is not True:
                error = "PING got no PONG"
        finally:
            client.close()
    except Exception as exc:
        error = _one_line(exc)
    return ServiceStatus("Redis", "redis", TEST_REDIS_URL, error)


def service_statuses() -> tuple[ServiceStatus, ...]:
    return (postgres_status(), redis_status())


def require(status: ServiceStatus) -> None:
    """Skip the current test (fail it under CI) when the service is unreachable."""
    if status.reachable:
        return
    if in_ci():
        pytest.fail(f"{status.problem} (CI=true: services must be up)", pytrace=False)
    pytest.skip(status.problem)


# --------------------------------------------------------------------------- pytest hooks


def pytest_sessionstart(session: pytest.Session) -> None:
    if not in_ci():
        return
    problems = [status.problem for status in service_statuses() if not status.reachable]
    if problems:
        pytest.exit(
            "; ".join(problems) + " -- CI=true, so this is a failure, not a skip",
            returncode=1,
        )


def pytest_report_header(config: pytest.Config) -> list[str]:
    lines: list[str] = []
    for status in service_statuses():
        if status.reachable:
            lines.append(f"{status.name}: reachable at {_redact(status.url)}")
        else:
            bar = "!" * 78
            lines += [
                bar,
                f"{status.name}: UNREACHABLE -- {status.marker} tests will be skipped",
                f"  {status.problem}",
                bar,
            ]
    return lines


_FIXTURE_MARKERS = {
    "postgres_settings": "postgres",
    "postgres_url": "postgres",
    "redis_url": "redis",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    statuses = {status.marker: status for status in service_statuses()}
    for item in items:
        fixturenames = getattr(item, "fixturenames", ())
        for fixture, marker in _FIXTURE_MARKERS.items():
            if fixture in fixturenames and item.get_closest_marker(marker) is None:
                item.add_marker(getattr(pytest.mark, marker))
        if in_ci():
            continue  # pytest_sessionstart already ended a CI session with a dead service
        for marker, status in statuses.items():
            if not status.reachable and item.get_closest_marker(marker) is not None:
                item.add_marker(pytest.mark.skip(reason=status.problem))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for status in service_statuses():
        if not status.reachable:
            terminalreporter.write_sep(
                "!",
                f"{status.name} UNREACHABLE -- {status.marker} tests were skipped",
                yellow=True,
                bold=True,
            )
            terminalreporter.write_line(f"  {status.problem}")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def _isolate_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No PROMPTRECORD_* (except PROMPTRECORD_TEST_*) or eventsourcing variable of the
    developer's shell reaches the code under test."""
    for name in list(os.environ):
        if _leaks_into_tests(name):
            monkeypatch.delenv(name)


def _leaks_into_tests(name: str) -> bool:
    if name.startswith("PROMPTRECORD_"):
        return not name.startswith("PROMPTRECORD_TEST_")
    return name in _EVENTSOURCING_ENV_NAMES or name.startswith(_EVENTSOURCING_ENV_PREFIXES)


def _sqlite_settings(tmp_path: Path) -> Settings:
    return Settings(
        database_url=f"sqlite:///{tmp_path}/promptrecord.db",
        admin_key_file=tmp_path / "admin.key",
    )


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Settings:
    """Settings for an embedded SQLite store in this test's own temporary folder."""
    return _sqlite_settings(tmp_path)


@pytest.fixture
def postgres_url() -> str:
    """The PostgreSQL test database URL (shared: use ``postgres_settings`` to create things)."""
    require(postgres_status())
    return TEST_DATABASE_URL


@pytest.fixture
def postgres_settings(tmp_path: Path) -> Iterator[Settings]:
    """Settings for PostgreSQL in a fresh schema ``t_<12 hex>``, dropped after the test."""
    require(postgres_status())
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(TEST_DATABASE_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield Settings(
            database_url=TEST_DATABASE_URL,
            database_schema=schema,
            admin_key_file=tmp_path / "admin.key",
        )
    finally:
        with psycopg.connect(TEST_DATABASE_URL, autocommit=True) as conn:
            conn.execute(
                sql.SQL("SET lock_timeout = {}").format(sql.Literal(DROP_SCHEMA_LOCK_TIMEOUT))
            )
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def backend(request: pytest.FixtureRequest) -> Settings:
    """Each test runs once on SQLite and once on PostgreSQL, isolated either way."""
    settings: Settings = request.getfixturevalue(f"{request.param}_settings")
    return settings


@pytest.fixture
def redis_url() -> str:
    """The Redis test URL (a shared server: namespace your keys)."""
    require(redis_status())
    return TEST_REDIS_URL
