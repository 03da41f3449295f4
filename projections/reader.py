"""Reading a thread's state without replaying its history each time.

The reader keeps the states it has folded (in memory, and as snapshots in Redis) and, on each
read, asks Redis for the thread's version and head and for the events after the state it holds.
A kept state is used only if the stored history still has the same hash at its version: after a
failover that lost writes, or a thread deleted and written anew, it is dropped and the state is
folded from the events. Both are caches: without them every answer is the same.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Final, NamedTuple

import msgspec

from events.chain import GENESIS
from events.errors import redis_errors
from events.records import AppendResult, RecordedEvent
from events.schema import AnyEvent
from events.store import RedisEventStore
from projections.snapshot import dump, load
from projections.state import EMPTY, ThreadState, fold

DEFAULT_CACHE: Final = 1_000
DEFAULT_SNAPSHOT_EVERY: Final = 100
SNAPSHOT_TTL: Final = 7 * 24 * 3600  # a snapshot of an idle thread goes; it is only a cache


class ReadStats(msgspec.Struct, kw_only=True):
    """What the reads cost: events folded, snapshots loaded and written, cache hits."""

    events_folded: int = 0
    snapshots_loaded: int = 0
    snapshots_written: int = 0
    cache_hits: int = 0
    discarded: int = 0


class _Kept(NamedTuple):
    state: ThreadState
    head: bytes  # the chain hash at state.version
    snapshotted: int  # the version of the thread's newest snapshot in Redis


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
        self._cache: OrderedDict[str, _Kept] = OrderedDict()
        self._cache_size = cache_size
        self._snapshot_every = snapshot_every

    async def state(self, thread_id: str, *, at: int | None = None) -> ThreadState:
        """The thread as it stands (or as it stood at version `at`)."""
        version, head = await self.store.version(thread_id)
        if at is not None and not 0 <= at <= version:
            raise ValueError(f"thread {thread_id!r} has versions 0..{version}, not {at}")
        target = version if at is None else at
        kept = await self._kept(thread_id, target)
        kept = await self._catch_up(thread_id, kept, target, version, head)
        if at is None:
            if kept.state.version - kept.snapshotted >= self._snapshot_every:
                await self._write_snapshot(thread_id, kept)
                kept = kept._replace(snapshotted=kept.state.version)
            self._remember(thread_id, kept)
        return kept.state

    def cached(self, thread_id: str) -> ThreadState | None:
        """The newest state this reader holds of the thread, without asking Redis: it may be
        behind. Writers use it optimistically; the store's version check catches a stale one."""
        kept = self._cache.get(thread_id)
        return kept.state if kept is not None else None

    def advance(
        self, state: ThreadState, events: Sequence[AnyEvent], result: AppendResult
    ) -> ThreadState | None:
        """The state after this process appended `events` at `state.version`, folded here
        without a read and kept as the thread's newest state; None if the append was not a
        plain continuation of `state` (a replayed batch): then read it."""
        thread_id = result.thread_id
        if result.replayed or result.first_version != state.version + 1:
            self._cache.pop(thread_id, None)
            return None
        after = fold(events, state)
        previous = self._cache.get(thread_id)
        self._remember(
            thread_id, _Kept(after, result.head, previous.snapshotted if previous else 0)
        )
        return after

    async def _catch_up(
        self, thread_id: str, kept: _Kept, target: int, version: int, head: bytes
    ) -> _Kept:
        """Fold the events after `kept` up to `target`, if the history still continues it.

        The hash at the kept version proves that: the stored head when the thread is still at
        that version, else the first entry of the range read to catch up, which starts there.
        One read either way.
        """
        at = kept.state.version
        if at == version:
            if kept.head == head:
                return kept
            kept, at = self._discard(thread_id), 0
        if at == 0:
            recorded = await self._read(thread_id, after=0, until=target)
        else:
            recorded = await self._read(thread_id, after=at - 1, until=target)
            if recorded and recorded[0].hash == kept.head:
                recorded = recorded[1:]
            else:
                kept = self._discard(thread_id)
                recorded = await self._read(thread_id, after=0, until=target)
        if not recorded:
            return kept
        self.stats.events_folded += len(recorded)
        state = fold((e.event for e in recorded), kept.state)
        return _Kept(state, recorded[-1].hash, kept.snapshotted)

    async def _read(self, thread_id: str, *, after: int, until: int) -> list[RecordedEvent]:
        if until <= after:
            return []
        return [e async for e in self.store.events(thread_id, after=after, until=until)]

    async def _kept(self, thread_id: str, target: int) -> _Kept:
        """The newest state kept for the thread that is not past `target`."""
        cached = self._cache.get(thread_id)
        if cached is not None and cached.state.version <= target:
            self._cache.move_to_end(thread_id)
            self.stats.cache_hits += 1
            return cached
        snapshot = await self._read_snapshot(thread_id)
        if snapshot is not None and snapshot[0].version <= target:
            self.stats.snapshots_loaded += 1
            state, head = snapshot
            return _Kept(state, head, state.version)
        return _Kept(EMPTY, GENESIS, 0)

    def _discard(self, thread_id: str) -> _Kept:
        """Forget what was kept of a thread whose history is not the one it was folded from."""
        self.stats.discarded += 1
        self._cache.pop(thread_id, None)
        return _Kept(EMPTY, GENESIS, 0)

    def _remember(self, thread_id: str, kept: _Kept) -> None:
        self._cache[thread_id] = kept
        self._cache.move_to_end(thread_id)
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    async def _read_snapshot(self, thread_id: str) -> tuple[ThreadState, bytes] | None:
        with redis_errors():
            data = await self.store.redis.get(self.store.keys.snapshot(thread_id))
        snapshot = load(data) if isinstance(data, bytes) else None
        if snapshot is not None and snapshot[0].thread_id != thread_id:
            return None
        return snapshot

    async def _write_snapshot(self, thread_id: str, kept: _Kept) -> None:
        key = self.store.keys.snapshot(thread_id)
        with redis_errors():
            await self.store.redis.set(key, dump(kept.state, kept.head), ex=SNAPSHOT_TTL)
        self.stats.snapshots_written += 1
