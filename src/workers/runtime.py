"""What a worker holds to carry out eval runs, found by the database a message names.

A `WorkerRuntime` is the application, the executor's configuration, the leases and the
queue of one database. Actors receive ids only, plus the database key of the
`WorkerRuntime` that enqueued them: a test process may hold in-process services of several
databases at once on the one in-process broker, and a message must reach the right one.

`EvalQueue` is how the dispatcher, the reconciler and a stopping actor enqueue a run;
`InProcessWorker` is the Dramatiq `Worker` an API process without Redis runs, shared by all
the services of the process and started the first time one of them enqueues something.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Generic, Protocol, TypeVar
from urllib.parse import urlparse

import dramatiq

from promptrecord.workers.broker import EVAL_QUEUE, RUN_EVAL
from promptrecord.workers.leases import Leases, LocalLeases, RedisLeases, lease_key

if TYPE_CHECKING:
    from promptrecord.domain.application import PromptRecord
    from promptrecord.settings import Settings
    from promptrecord.workers.executor import ExecutorConfig

log = logging.getLogger(__name__)

# How long closing services waits for the runs its in-process workers are carrying to stop
# at their next batch boundary.
DRAIN_TIMEOUT = 30.0


def database_key(settings: Settings) -> str:
    """Names the database of the events, with no secret in it."""
    if settings.is_postgres:
        url = urlparse(settings.database_url)
        schema = settings.database_schema or "public"
        return f"postgresql://{url.hostname}:{url.port or 5432}{url.path}#{schema}"
    path = settings.eventsourcing_env()["SQLITE_DBNAME"]
    return "sqlite:" + (path if path.startswith(("file:", ":memory:")) else os.path.abspath(path))


def worker_name() -> str:
    """What `EvalRun.Started` records as the worker: host and process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def open_leases(settings: Settings) -> Leases:
    if settings.redis_url:
        return RedisLeases(
            settings.redis_url, settings.redis_namespace, settings.eval_lease_seconds
        )
    return LocalLeases(database_key(settings))


class MarkedQueue:
    """Enqueues one actor's messages for one database, marking each job queued first so the
    reconciler leaves a waiting one alone; a subclass names the queue, actor and job key."""

    queue_name: ClassVar[str]
    actor_name: ClassVar[str]

    def __init__(
        self,
        broker: dramatiq.Broker,
        leases: Leases,
        database: str,
        requeue_after: float,
        before_send: Callable[[], None] | None = None,
    ) -> None:
        self.broker = broker
        self.leases = leases
        self.database = database
        self.requeue_after = requeue_after
        self.before_send = before_send
        if self.queue_name not in broker.get_declared_queues():
            broker.declare_queue(self.queue_name)

    def job_key(self, job_id: str) -> str:
        """The lease and queued-mark key of a job."""
        raise NotImplementedError

    def _send(
        self, job_id: str, args: tuple[str, ...], delay: float = 0.0
    ) -> dramatiq.Message[None]:
        """Send the actor `args` and the database key, due in `delay` seconds."""
        if self.before_send is not None:
            self.before_send()
        # Marked before it is sent: a worker taking it at once clears the mark, and a mark
        # left by a send that failed only delays the reconciler.
        self.leases.mark_queued(self.job_key(job_id), delay + self.requeue_after)
        message: dramatiq.Message[None] = dramatiq.Message(
            queue_name=self.queue_name,
            actor_name=self.actor_name,
            args=(*args, self.database),
            kwargs={},
            options={},
        )
        return self.broker.enqueue(message, delay=int(delay * 1000) if delay > 0 else None)

    def settled(self, job_id: str) -> bool:
        """True when a worker holds the job or a message for it waits in the queue."""
        key = self.job_key(job_id)
        return self.leases.held(key) or self.leases.queued(key)


class EvalQueue(MarkedQueue):
    """Enqueues `run_eval` messages for one database; a run's job id is its event id."""

    queue_name = EVAL_QUEUE
    actor_name = RUN_EVAL

    def job_key(self, job_id: str) -> str:
        return lease_key(job_id)

    def enqueue(self, workspace: str, run_id: str, event_id: str) -> dramatiq.Message[None]:
        return self._send(event_id, (workspace, run_id, event_id))


@dataclass
class WorkerRuntime:
    """One database's application and executor configuration, as the actors use them."""

    database: str
    app: PromptRecord
    settings: Settings
    queue: EvalQueue
    worker: str = field(default_factory=worker_name)
    # Re-enqueue a run stopped by shutdown at once (another worker of a shared broker takes
    # it); in-process, the queue dies with the process and the reconciler takes over.
    requeue_on_stop: bool = False
    stopping: threading.Event = field(default_factory=threading.Event)
    _busy: int = 0
    _idle: threading.Condition = field(default_factory=threading.Condition)
    _config: ExecutorConfig | None = None

    @property
    def config(self) -> ExecutorConfig:
        """The executor's configuration, made on first use: the executor imports the model
        SDKs and scipy, seconds that a service which never evaluates should not spend."""
        if self._config is None:
            from promptrecord.workers.executor import ExecutorConfig

            self._config = ExecutorConfig.from_settings(self.settings)
        return self._config

    @property
    def leases(self) -> Leases:
        return self.queue.leases

    @contextlib.contextmanager
    def carrying(self) -> Iterator[None]:
        """Count a run in progress, so `drain` can wait for it."""
        with self._idle:
            self._busy += 1
        try:
            yield
        finally:
            with self._idle:
                self._busy -= 1
                self._idle.notify_all()

    def drain(self, timeout: float = DRAIN_TIMEOUT) -> bool:
        """Ask running actors to stop at their next batch and wait for them; False on
        timeout."""
        self.stopping.set()
        with self._idle:
            return self._idle.wait_for(lambda: self._busy == 0, timeout)


class _HasDatabase(Protocol):
    database: str


Runtime = TypeVar("Runtime", bound=_HasDatabase)


class RuntimeRegistry(Generic[Runtime]):
    """The runtimes of this process by database key, for actors to find by the key their
    message names. A `sole` runtime (that of a `promptrecord worker` process) also serves
    messages naming another key: processes sharing a Redis namespace share one database,
    though they may reach it by other host names, and a job of another database is refused
    by its id anyway."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_database: dict[str, list[Runtime]] = {}
        self._sole: list[Runtime] = []

    def register(self, runtime: Runtime, sole: bool = False) -> None:
        with self._lock:
            self._by_database.setdefault(runtime.database, []).append(runtime)
            if sole:
                self._sole.append(runtime)

    def unregister(self, runtime: Runtime) -> None:
        with self._lock:
            runtimes = self._by_database.get(runtime.database, [])
            if runtime in runtimes:
                runtimes.remove(runtime)
            if not runtimes:
                self._by_database.pop(runtime.database, None)
            if runtime in self._sole:
                self._sole.remove(runtime)

    def find(self, database: str | None) -> Runtime | None:
        """The newest runtime of that database in this process, else the sole one; None
        when this process serves it no longer."""
        with self._lock:
            runtimes = self._by_database.get(database) if database is not None else None
            if runtimes:
                return runtimes[-1]
            return self._sole[-1] if self._sole else None


_runtimes: RuntimeRegistry[WorkerRuntime] = RuntimeRegistry()


# The functions the worker's services and actors call.
register = _runtimes.register
unregister = _runtimes.unregister
runtime_for = _runtimes.find


class InProcessWorker:
    """One Dramatiq `Worker` per process, shared by every service using it, stopped when
    the last lets go."""

    _lock = threading.Lock()
    _worker: dramatiq.Worker | None = None
    _users = 0

    @classmethod
    def acquire(cls, broker: dramatiq.Broker, threads: int) -> None:
        with cls._lock:
            cls._users += 1
            if cls._worker is None:
                # A short consumer timeout: services close (and stop this) often in tests.
                worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=100)
                worker.start()
                cls._worker = worker

    @classmethod
    def release(cls) -> None:
        with cls._lock:
            cls._users = max(0, cls._users - 1)
            if cls._users or cls._worker is None:
                return
            worker, cls._worker = cls._worker, None
            worker.stop(timeout=int(DRAIN_TIMEOUT * 1000))
            # `Worker.start` adds a middleware to the broker that `stop` leaves behind; a
            # stopped worker's would keep adding consumers to it for queues declared later.
            worker.broker.middleware[:] = [
                m for m in worker.broker.middleware if getattr(m, "worker", None) is not worker
            ]

    @classmethod
    def running(cls) -> bool:
        with cls._lock:
            return cls._worker is not None


__all__ = [
    "EvalQueue",
    "InProcessWorker",
    "MarkedQueue",
    "RuntimeRegistry",
    "WorkerRuntime",
    "database_key",
    "open_leases",
    "register",
    "runtime_for",
    "unregister",
    "worker_name",
]
