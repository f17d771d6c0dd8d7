"""The workers an API process runs itself: the dispatcher and the reconciler, the webhook
follower and its reconciler, the drift scheduler and the online judge, and, with no Redis
configured, the eval and webhook actors on an in-process Dramatiq `Worker`.

The in-process `Worker` starts the first time something is enqueued, not at open: most
services never evaluate anything, and test suites open and close services by the hundred.
"""

from __future__ import annotations

import logging
import threading

from promptrecord.domain.application import PromptRecord
from promptrecord.settings import Settings
from promptrecord.workers.broker import configure_broker
from promptrecord.workers.dispatcher import Dispatching
from promptrecord.workers.online_judge import Monitoring, start_monitoring
from promptrecord.workers.runtime import (
    EvalQueue,
    InProcessWorker,
    WorkerRuntime,
    database_key,
    open_leases,
    register,
    unregister,
)
from promptrecord.workers.webhook_dispatch import WebhookDispatching
from promptrecord.workers.webhook_runtime import WebhookQueue, WebhookRuntime
from promptrecord.workers.webhook_runtime import register as register_webhooks
from promptrecord.workers.webhook_runtime import unregister as unregister_webhooks
from promptrecord.workers.webhook_store import open_webhook_store

log = logging.getLogger(__name__)


class EmbeddedWorkers:
    """Started by `Services.open` (see `Settings.runs_embedded_dispatcher`), stopped by
    `Services.close`."""

    def __init__(self, settings: Settings, app: PromptRecord) -> None:
        self.settings = settings
        broker = configure_broker(settings)
        leases = open_leases(settings)
        self.queue = EvalQueue(broker, leases, database_key(settings), settings.eval_requeue_after)
        self.webhook_queue = WebhookQueue(
            broker, leases, self.queue.database, settings.webhook_requeue_after
        )
        self.runtime: WorkerRuntime | None = None
        self.webhook_runtime: WebhookRuntime | None = None
        self.dispatching: Dispatching | None = None
        self.webhooks: WebhookDispatching | None = None
        self.monitoring: Monitoring | None = None
        self._worker_held = False
        self._worker_lock = threading.Lock()
        if settings.runs_embedded_workers:
            self.runtime = WorkerRuntime(
                database=self.queue.database,
                app=app,
                settings=settings,
                queue=self.queue,
                requeue_on_stop=settings.redis_url is not None,
            )
            register(self.runtime)
            self.webhook_runtime = WebhookRuntime(
                database=self.queue.database,
                app=app,
                settings=settings,
                store=open_webhook_store(settings),
                queue=self.webhook_queue,
            )
            register_webhooks(self.webhook_runtime)
            if settings.redis_url:
                self._hold_worker()  # other processes enqueue too: consume from the start
            else:
                self.queue.before_send = self._hold_worker
                self.webhook_queue.before_send = self._hold_worker

    @classmethod
    def start(cls, settings: Settings, app: PromptRecord) -> EmbeddedWorkers:
        workers = cls(settings, app)
        try:
            workers.dispatching = Dispatching.start(app, workers.queue, settings)
            workers.webhooks = WebhookDispatching.start(app, workers.webhook_queue, settings)
            if settings.monitoring_enabled:
                workers.monitoring = start_monitoring(app, settings)
        except BaseException:
            workers.stop()
            raise
        return workers

    def _hold_worker(self) -> None:
        with self._worker_lock:
            if not self._worker_held:
                InProcessWorker.acquire(self.queue.broker, self.settings.worker_threads)
                self._worker_held = True

    def nudge(self) -> None:
        """Read the log now: a command of this process may have requested a run."""
        if self.dispatching is not None:
            self.dispatching.nudge()
        if self.webhooks is not None:
            self.webhooks.nudge()

    def stop(self) -> None:
        if self.monitoring is not None:
            self.monitoring.stop()
        if self.dispatching is not None:
            self.dispatching.stop()
        if self.webhooks is not None:
            self.webhooks.stop()
        if self.runtime is not None and not self.runtime.drain():
            log.warning("eval runs still running after the drain timeout; leaving them")
        with self._worker_lock:
            if self._worker_held:
                InProcessWorker.release()
                self._worker_held = False
        if self.runtime is not None:
            unregister(self.runtime)
        if self.webhook_runtime is not None:
            unregister_webhooks(self.webhook_runtime)
            self.webhook_runtime.store.close()
        self.queue.leases.close()


__all__ = ["EmbeddedWorkers"]
