"""The event store's exceptions.

EventStoreError
├── InvalidNameError       a thread id, key prefix or partition count that cannot name keys
├── InvalidBatchError      a malformed batch: size, an id twice, a misplaced thread.started, ...
├── IdempotencyError       some ids of a batch are stored and some not, or an id was reused
├── ThreadEndedError       an event continues an ended branch, or follows a thread-wide end
├── ConcurrencyError       the expected version is not the stored version
├── ChainError             the batch does not continue the stored head hash
├── StoreConfigError       a Redis that must not hold coda's data (eviction, old version, ...)
└── StoreUnavailableError  Redis cannot be reached or did not answer in time
    (any other Redis failure is an EventStoreError itself)

Redis errors become these in one place: `redis_errors()`.
"""

from __future__ import annotations

from types import TracebackType

import redis.exceptions


class EventStoreError(Exception):
    """Base of every error the event store raises."""


class InvalidNameError(EventStoreError, ValueError):
    pass


class InvalidBatchError(EventStoreError, ValueError):
    pass


class IdempotencyError(EventStoreError):
    def __init__(self, message: str, event_id: str | None = None) -> None:
        super().__init__(message)
        self.event_id = event_id


class ThreadEndedError(EventStoreError):
    """Carries the version of the end that blocks the append and the ended leaf (None: thread)."""

    def __init__(self, thread_id: str, end_version: int, leaf_id: str | None) -> None:
        where = f"branch ending at {leaf_id!r}" if leaf_id else "whole thread"
        super().__init__(f"thread {thread_id!r}: the {where} was ended at version {end_version}")
        self.thread_id = thread_id
        self.end_version = end_version
        self.leaf_id = leaf_id


class ConcurrencyError(EventStoreError):
    def __init__(self, thread_id: str, expected: int, actual: int) -> None:
        super().__init__(f"thread {thread_id!r}: expected version {expected}, stored {actual}")
        self.thread_id = thread_id
        self.expected = expected
        self.actual = actual


class ChainError(EventStoreError):
    """The stored thread and the batch, or the stream and its meta, disagree at `version`."""

    def __init__(self, thread_id: str, version: int, detail: str) -> None:
        super().__init__(f"thread {thread_id!r} at version {version}: {detail}")
        self.thread_id = thread_id
        self.version = version
        self.detail = detail


class StoreConfigError(EventStoreError):
    pass


class StoreUnavailableError(EventStoreError):
    pass


class _RedisErrors:
    """Translate redis-py's exceptions into the store's, keeping the cause.

    A class rather than a generator-based context manager: it wraps every store call, and this
    costs a fraction of what `contextlib.contextmanager` does.
    """

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            return
        if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
            raise StoreUnavailableError(f"Redis unavailable: {exc}") from exc
        if isinstance(exc, redis.exceptions.RedisError | redis.exceptions.RedisClusterException):
            raise EventStoreError(f"Redis error: {exc}") from exc


_redis_errors = _RedisErrors()


def redis_errors() -> _RedisErrors:
    """The one place where Redis errors become the store's: `with redis_errors(): ...`."""
    return _redis_errors
