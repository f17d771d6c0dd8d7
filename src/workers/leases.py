"""Run leases: at most one worker carries an eval run at a time, and a dead one lets go.

With Redis a lease is a key taken with `SET NX PX` and renewed by a heartbeat thread every
third of its length; a worker that dies stops renewing, the key expires, and the reconciler
may hand the run to another worker. A holder that fails to renew (the key expired under
it, or Redis was unreachable for the whole lease) learns that from `Lease.alive()` and
stops between batches. Without Redis every worker lives in one process, so a lock table in
memory does.

A second mark, "queued", says a message for the run is waiting in the broker: the
reconciler leaves such runs alone until the mark expires, so a long queue does not grow a
copy of every waiting run at each pass. A worker clears it when it takes the lease.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from abc import ABC, abstractmethod

import redis

log = logging.getLogger(__name__)

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


class Lease(ABC):
    """A lease held by this process until `release`."""

    def __init__(self, key: str) -> None:
        self.key = key

    @abstractmethod
    def alive(self) -> bool:
        """False once the lease may have passed to someone else: stop working on its run."""

    @abstractmethod
    def release(self) -> None: ...


class Leases(ABC):
    """Where leases and queued marks live, keyed by `lease_key(...)`."""

    @abstractmethod
    def acquire(self, key: str) -> Lease | None:
        """The lease, or None when someone holds it."""

    @abstractmethod
    def held(self, key: str) -> bool: ...

    @abstractmethod
    def mark_queued(self, key: str, seconds: float) -> None: ...

    @abstractmethod
    def clear_queued(self, key: str) -> None: ...

    @abstractmethod
    def queued(self, key: str) -> bool: ...

    def close(self) -> None:
        return None


def lease_key(event_id: str) -> str:
    """An eval run's key: its `Requested` event id, unique to the run and stable."""
    return f"eval:{event_id}"


# --------------------------------------------------------------------------- Redis


class _RedisLease(Lease):
    def __init__(self, leases: RedisLeases, key: str, token: str) -> None:
        super().__init__(key)
        self._leases = leases
        self._token = token
        self._lost = threading.Event()
        self._released = threading.Event()
        self._renewed_at = time.monotonic()
        self._thread = threading.Thread(
            target=self._heartbeat, name=f"promptrecord-lease-{key}", daemon=True
        )
        self._thread.start()

    def _heartbeat(self) -> None:
        seconds = self._leases.seconds
        while not self._released.wait(seconds / 3):
            try:
                renewed = self._leases.renew(self.key, self._token)
            except redis.RedisError as error:
                if time.monotonic() - self._renewed_at >= seconds:
                    log.warning(
                        "lease %s lost: Redis unreachable for %ss (%s)", self.key, seconds, error
                    )
                    self._lost.set()
                    return
                continue
            if not renewed:
                log.warning(
                    "lease %s expired under its holder; another worker may run it", self.key
                )
                self._lost.set()
                return
            self._renewed_at = time.monotonic()

    def alive(self) -> bool:
        return not self._lost.is_set() and not self._released.is_set()

    def release(self) -> None:
        if self._released.is_set():
            return
        self._released.set()
        self._thread.join(timeout=5)
        try:
            self._leases.drop(self.key, self._token)
        except redis.RedisError as error:
            log.warning("could not release lease %s (%s); it expires by itself", self.key, error)


class RedisLeases(Leases):
    """Leases as Redis keys `<namespace>:lease:<key>` holding the holder's token."""

    def __init__(self, url: str, namespace: str, seconds: float) -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=max(1.0, seconds / 3))
        self.namespace = namespace
        self.seconds = seconds
        self._renew = self.client.register_script(_RENEW)
        self._release = self.client.register_script(_RELEASE)

    def _lease(self, key: str) -> str:
        return f"{self.namespace}:lease:{key}"

    def _queued(self, key: str) -> str:
        return f"{self.namespace}:queued:{key}"

    def acquire(self, key: str) -> Lease | None:
        token = uuid.uuid4().hex
        taken = self.client.set(self._lease(key), token, nx=True, px=int(self.seconds * 1000))
        return _RedisLease(self, key, token) if taken else None

    def renew(self, key: str, token: str) -> bool:
        return bool(self._renew(keys=[self._lease(key)], args=[token, int(self.seconds * 1000)]))

    def drop(self, key: str, token: str) -> None:
        self._release(keys=[self._lease(key)], args=[token])

    def held(self, key: str) -> bool:
        return bool(self.client.exists(self._lease(key)))

    def mark_queued(self, key: str, seconds: float) -> None:
        self.client.set(self._queued(key), "1", px=max(1, int(seconds * 1000)))

    def clear_queued(self, key: str) -> None:
        self.client.delete(self._queued(key))

    def queued(self, key: str) -> bool:
        return bool(self.client.exists(self._queued(key)))

    def close(self) -> None:
        self.client.close()


# --------------------------------------------------------------------------- in-process

# Shared by every `LocalLeases` of the process: in-process workers of one database serve all
# the services of that database this process opened.
_local_lock = threading.Lock()
_local_held: dict[str, str] = {}
_local_queued: dict[str, float] = {}


class _LocalLease(Lease):
    def __init__(self, key: str, token: str) -> None:
        super().__init__(key)
        self._token = token
        self._released = False

    def alive(self) -> bool:
        return not self._released

    def release(self) -> None:
        with _local_lock:
            if not self._released and _local_held.get(self.key) == self._token:
                del _local_held[self.key]
            self._released = True


class LocalLeases(Leases):
    """Leases in this process's memory, scoped by database so that test processes holding
    several databases never share one."""

    def __init__(self, scope: str) -> None:
        self.scope = scope

    def _name(self, key: str) -> str:
        return f"{self.scope}|{key}"

    def acquire(self, key: str) -> Lease | None:
        name, token = self._name(key), uuid.uuid4().hex
        with _local_lock:
            if name in _local_held:
                return None
            _local_held[name] = token
        return _LocalLease(name, token)

    def held(self, key: str) -> bool:
        with _local_lock:
            return self._name(key) in _local_held

    def mark_queued(self, key: str, seconds: float) -> None:
        with _local_lock:
            _local_queued[self._name(key)] = time.monotonic() + seconds

    def clear_queued(self, key: str) -> None:
        with _local_lock:
            _local_queued.pop(self._name(key), None)

    def queued(self, key: str) -> bool:
        with _local_lock:
            until = _local_queued.get(self._name(key))
            if until is not None and until <= time.monotonic():
                del _local_queued[self._name(key)]
                until = None
            return until is not None


__all__ = ["Lease", "Leases", "LocalLeases", "RedisLeases", "lease_key"]
