"""Shared blocking reads: all of a process's waits on Redis streams, in one `XREAD`.

A server process may have thousands of clients waiting for a thread's next event or a reply's
next piece of text. If each waited with its own `XREAD BLOCK`, each would hold a connection
of the pool, and a few hundred idle clients would starve every other request. The hub gathers
them: a waiter names a stream and the last entry it has seen; one reader task per group of
keys blocks on all of them at once and hands each waiter the entries after its own.

A group is every key on a single Redis. On a cluster, where one command reaches one hash slot,
it is the keys of one slot (one partition): a connection per partition with waiters, at most
the partition count, whatever the number of clients.

A waiter that comes while its group's read is blocked, on a key that read does not cover (or
from an earlier entry), wakes it with an entry on the group's wake stream, a key of this
process that every read of the group includes.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Final, TypeAlias

from redis.asyncio.cluster import RedisCluster

from events.connect import pool_exhausted
from events.errors import StoreUnavailableError, redis_errors
from events.keys import Keyspace
from events.schema import new_id
from events.store import Redis

DEFAULT_BLOCK_MS: Final = 5_000  # one read's wait: well under the client's socket timeout
DEFAULT_COUNT: Final = 1_000  # entries per stream per read
WAKE_TTL: Final = 60  # seconds a wake stream outlives its last use

Order: TypeAlias = tuple[int, int]
Entry: TypeAlias = tuple[str, dict[bytes, bytes]]


class _Waiter:
    """One read waiting: kept in sets, by identity (thousands come and go at once)."""

    __slots__ = ("after", "future")

    def __init__(self, after: Order, future: asyncio.Future[list[Entry]]) -> None:
        self.after = after
        self.future = future


class StreamHub:
    """Blocking stream reads for one process, over one connection per group of keys."""

    def __init__(
        self,
        client: Redis,
        keys: Keyspace,
        *,
        block_ms: int = DEFAULT_BLOCK_MS,
        count: int = DEFAULT_COUNT,
    ) -> None:
        self.redis = client
        self.keys = keys
        self.block_ms = block_ms
        self.count = count
        self.token = new_id()[-12:]
        self._cluster = isinstance(client, RedisCluster)
        self._groups: dict[str, _Group] = {}

    async def read(self, key: str, after: str, block_ms: int) -> list[Entry]:
        """The entries of stream `key` after entry `after`, or [] if none came in `block_ms`."""
        tag = _slot_tag(key) if self._cluster else ""
        group = self._groups.get(tag)
        if group is None:
            group = self._groups[tag] = _Group(self, self.keys.wake(tag, self.token))
        waiter = _Waiter(_order(after), asyncio.get_running_loop().create_future())
        try:
            await group.add(key, waiter)
            return await asyncio.wait_for(waiter.future, block_ms / 1000)
        except TimeoutError:
            return []
        finally:
            group.remove(key, waiter)

    @property
    def readers(self) -> int:
        """Reads running now: the connections the hub holds."""
        return sum(group.task is not None for group in self._groups.values())

    async def aclose(self) -> None:
        """Stop the readers; a waiter left gets nothing more, at its timeout."""
        running = [(g, g.task) for g in self._groups.values() if g.task is not None]
        for _, task in running:
            task.cancel()
        for group, task in running:
            with contextlib.suppress(asyncio.CancelledError):
                await task
            group.task = None  # a task cancelled before its first step ran no `finally`


class _Group:
    """The waiters of one group of keys, and the task that reads for them."""

    def __init__(self, hub: StreamHub, wake_key: str) -> None:
        self.hub = hub
        self.wake_key = wake_key
        self.waiters: dict[str, set[_Waiter]] = {}
        self.task: asyncio.Task[None] | None = None
        self.reading: dict[str, Order] | None = None  # what the read in flight covers
        self.woken = False
        self.wake_seen = "0-0"

    async def add(self, key: str, waiter: _Waiter) -> None:
        self.waiters.setdefault(key, set()).add(waiter)
        if self.task is None:
            self.task = asyncio.create_task(self._run(), name=f"hub:{self.wake_key}")
            return
        reading = self.reading
        if reading is None or self.woken:
            return  # the next read is built after this waiter, or it was woken already
        if key in reading and reading[key] <= waiter.after:
            return  # the read in flight covers it
        self.woken = True
        try:
            with redis_errors():
                pipe = self.hub.redis.pipeline(transaction=False)
                pipe.xadd(self.wake_key, {b"w": b"1"}, maxlen=1, approximate=False)
                pipe.expire(self.wake_key, WAKE_TTL)
                await pipe.execute()
        except BaseException:
            self.woken = False  # not woken after all: the next waiter tries again
            raise

    def remove(self, key: str, waiter: _Waiter) -> None:
        waiting = self.waiters.get(key)
        if waiting is not None:
            waiting.discard(waiter)
            if not waiting:
                del self.waiters[key]

    async def _run(self) -> None:
        try:
            while self.waiters:
                reading = {key: min(w.after for w in ws) for key, ws in self.waiters.items()}
                streams: dict[Any, Any] = {key: _id(after) for key, after in reading.items()}
                streams[self.wake_key] = self.wake_seen
                self.reading, self.woken = reading, False
                try:
                    with redis_errors():
                        reply: Any = await self.hub.redis.xread(
                            streams, block=self.hub.block_ms, count=self.hub.count
                        )
                except StoreUnavailableError as exc:
                    if not pool_exhausted(exc):
                        raise
                    continue  # the process is busy, Redis is not gone: wait for a connection
                finally:
                    self.reading = None
                for stream, entries in reply or ():
                    key = _text(stream)
                    rows = [(_text(entry_id), fields) for entry_id, fields in entries]
                    if key == self.wake_key:
                        self.wake_seen = rows[-1][0]
                    elif key in reading:
                        self._hand_out(key, rows, reading[key])
        except Exception as exc:  # Redis failed: every waiter of the group hears it
            for waiting in self.waiters.values():
                for waiter in waiting:
                    if not waiter.future.done():
                        waiter.future.set_exception(exc)
            self.waiters.clear()
        finally:
            self.task = None

    def _hand_out(self, key: str, rows: list[Entry], read_from: Order) -> None:
        """Give each waiter of `key` the rows after its own entry. The rows follow `read_from`:
        a waiter that came since, from an earlier entry, would miss those between; it waits
        for the next read, which starts from its entry."""
        kept = set()
        orders = [_order(row[0]) for row in rows]
        for waiter in self.waiters.get(key, ()):
            if waiter.future.done():
                continue
            if waiter.after < read_from:
                kept.add(waiter)
                continue
            # Most waiters stand where the read started: they share one list of rows.
            new = rows if waiter.after == read_from else _after(rows, orders, waiter.after)
            if new:
                waiter.future.set_result(new)
            else:
                kept.add(waiter)
        if kept:
            self.waiters[key] = kept
        else:
            self.waiters.pop(key, None)


def _after(rows: list[Entry], orders: list[Order], after: Order) -> list[Entry]:
    return [row for row, order in zip(rows, orders, strict=True) if order > after]


def _slot_tag(key: str) -> str:
    """The hash tag of `key` (the text between its first braces), as Redis Cluster hashes it."""
    start = key.find("{")
    end = key.find("}", start + 1)
    if start < 0 or end <= start + 1:
        return key
    return key[start + 1 : end]


def _order(entry_id: str) -> Order:
    head, _, tail = entry_id.partition("-")
    return int(head), int(tail or 0)


def _id(order: Order) -> str:
    return f"{order[0]}-{order[1]}"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
