"""Reading a thread's state without replaying its history each time.

The reader keeps the states it has folded (in memory, and as snapshots in Redis) and, on each
read, asks Redis only for the thread's version and the events after the state it holds. A warm
read of a long thread costs what a read of a short one does; a cold one decodes a snapshot
instead of folding every event. Both are caches: without them every answer is the same.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

import msgspec

from events.errors import redis_errors
from events.store import RedisEventStore
from projections.snapshot import dump, load
from projections.state import EMPTY, ThreadState, fold

DEFAULT_CACHE: Final = 1_000
DEFAULT_SNAPSHOT_EVERY: Final = 100


class ReadStats(msgspec.Struct, kw_only=True):
    """What the reads cost: events folded, snapshots loaded and written, cache hits."""

    events_folded: int = 0
    snapshots_loaded: int = 0
    snapshots_written: int = 0
    cache_hits: int = 0


class ThreadReader:
    def __init__(
        self,
        store: RedisEventStore,
        *,
        cache_size: int = DEFAULT_CACHE,
        snapshot_every: int = DEFAULT_SNAPSHOT_EVERY,
    ) -> None:
        self.store = store
        self.stats = ReadStats()
        # thread -> (state, version of its newest snapshot in Redis)
        self._cache: OrderedDict[str, tuple[ThreadState, int]] = OrderedDict()
        self._cache_size = cache_size
        self._snapshot_every = snapshot_every

    async def state(self, thread_id: str, *, at: int | None = None) -> ThreadState:
        """The thread as it stands (or as it stood at version `at`)."""
        target = await self.store.version(thread_id) if at is None else at
        state, snapshotted = await self._base(thread_id, target)
        if state.version < target:
            new = self.store.events(thread_id, after=state.version, until=target)
            events = [e.event async for e in new]
            state = fold(events, state)
            self.stats.events_folded += len(events)
        if at is None:
            if state.version - snapshotted >= self._snapshot_every:
                await self._write_snapshot(thread_id, state)
                snapshotted = state.version
            self._remember(thread_id, state, snapshotted)
        return state

    async def _base(self, thread_id: str, target: int) -> tuple[ThreadState, int]:
        """The newest state held for the thread not past `target`, and its snapshot's version."""
        cached = self._cache.get(thread_id)
        if cached is not None and cached[0].version <= target:
            self._cache.move_to_end(thread_id)
            self.stats.cache_hits += 1
            return cached
        snapshot = await self._read_snapshot(thread_id)
        if snapshot is not None and snapshot.version <= target:
            self.stats.snapshots_loaded += 1
            return snapshot, snapshot.version
        return EMPTY, 0

    def _remember(self, thread_id: str, state: ThreadState, snapshotted: int) -> None:
        self._cache[thread_id] = (state, snapshotted)
        self._cache.move_to_end(thread_id)
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    async def _read_snapshot(self, thread_id: str) -> ThreadState | None:
        with redis_errors():
            data = await self.store.redis.get(self.store.keys.snapshot(thread_id))
        return load(data) if isinstance(data, bytes) else None

    async def _write_snapshot(self, thread_id: str, state: ThreadState) -> None:
        with redis_errors():
            await self.store.redis.set(self.store.keys.snapshot(thread_id), dump(state))
        self.stats.snapshots_written += 1
