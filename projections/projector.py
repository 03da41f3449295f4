"""The projector: consumer groups over every partition's feed, keeping a view up to date.

A view holds each thread's summary (for thread lists) and analytics counters per tenant and day.
Delivery is at least once; the effect is exactly once: a thread's summary carries the version it
was taken at, and the script that writes it (with the analytics the new events add) runs only if
the view is still at the version the projector read. A feed entry for a version the view already
has is acknowledged and changes nothing; one ahead of the view makes the projector catch up from
the thread's own stream, so per-thread order holds whatever order entries arrive in and however
many projectors share the work.

On each pass over a partition the projector first takes its own pending entries (what it was
given before a crash), then entries idle on other consumers (`XAUTOCLAIM`), then new ones. An
entry that fails `max_deliveries` times goes to the partition's dead-letter stream and is
acknowledged, so one poison entry cannot stall a partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any, Final

import msgspec

from events.errors import EventStoreError, redis_errors
from events.keys import check_thread_id
from events.schema import new_id
from events.store import RedisEventStore
from projections.settle import ViewWriter

DEFAULT_VIEW: Final = "live"


class PassStats(msgspec.Struct, kw_only=True):
    """What one pass did: entries applied, skipped as already applied, claimed, dead-lettered."""

    applied: int = 0
    skipped: int = 0
    claimed: int = 0
    failed: int = 0
    dead: int = 0

    @property
    def handled(self) -> int:
        return self.applied + self.skipped + self.dead


class Projector:
    """One consumer of a view's group, over every partition of the feed."""

    def __init__(
        self,
        store: RedisEventStore,
        *,
        view: str = DEFAULT_VIEW,
        consumer: str | None = None,
        batch: int = 100,
        claim_idle_ms: int = 30_000,
        max_deliveries: int = 5,
        concurrency: int = 16,
    ) -> None:
        self.store = store
        self.keys = store.keys
        self.view = view
        self.group = f"view:{view}"
        self.consumer = consumer or f"{socket.gethostname()}:{os.getpid()}:{new_id()[-8:]}"
        self.batch = batch
        self.claim_idle_ms = claim_idle_ms
        self.max_deliveries = max_deliveries
        self.concurrency = concurrency
        self.writer = ViewWriter(store, view)
        # Partitions where this consumer may hold unacknowledged entries: all of them at first
        # for a named consumer (it may be restarting), none for a fresh random name.
        named = consumer is not None
        self._own_pending: set[int] = set(range(store.keys.partitions)) if named else set()
        self._next_claim: dict[int, float] = {}
        self._claim_cursor: dict[int, str] = {}
        self._failures: Counter[tuple[int, str]] = Counter()
        self._grouped = False

    async def run_once(self) -> PassStats:
        """One pass over every partition: own pending entries, claimed ones, then new ones."""
        if not self._grouped:
            await self._create_groups()
        stats = PassStats()
        # Partitions, and the threads within one, are independent: overlap their round trips.
        lanes = asyncio.Semaphore(self.concurrency)

        async def lane(partition: int) -> None:
            async with lanes:
                await self._partition(partition, stats)

        await asyncio.gather(*(lane(p) for p in range(self.keys.partitions)))
        return stats

    async def run(self, stop: asyncio.Event, idle_wait: float = 0.2) -> None:
        """Pass after pass until `stop` is set, waiting a little after a pass that found nothing."""
        while not stop.is_set():
            stats = await self.run_once()
            if stats.handled == 0 and stats.failed == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), idle_wait)

    async def checkpoint(self, thread_id: str) -> int:
        """The version of the thread the view holds (0: none)."""
        return await self.writer.checkpoint(thread_id)

    async def _create_groups(self) -> None:
        for partition in range(self.keys.partitions):
            try:
                with redis_errors():
                    await self.store.redis.xgroup_create(
                        self.keys.feed(partition), self.group, id="0", mkstream=True
                    )
            except EventStoreError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self._grouped = True

    async def _partition(self, partition: int, stats: PassStats) -> None:
        feed = self.keys.feed(partition)
        redis_ = self.store.redis
        taken: list[tuple[bytes, dict[bytes, bytes]]] = []
        now = time.monotonic()
        with redis_errors():
            # Own pending entries exist only after a restart or a failure: look then, not always.
            if partition in self._own_pending:
                own = await redis_.xreadgroup(
                    self.group, self.consumer, {feed: "0"}, count=self.batch
                )
                taken += _entries(own)
                if len(taken) < self.batch:
                    self._own_pending.discard(partition)
            # Entries idle on other consumers: look once per half of the idle time, going on
            # from where the last look stopped (Redis 6.2 keeps deleted entries in the list).
            if now >= self._next_claim.get(partition, 0.0):
                cursor = self._claim_cursor.get(partition, "0-0")
                claimed = await self.store.coalescer.execute(
                    "XAUTOCLAIM",
                    feed,
                    self.group,
                    self.consumer,
                    self.claim_idle_ms,
                    cursor,
                    "COUNT",
                    self.batch,
                )
                taken += list(claimed[1])
                stats.claimed += len(claimed[1])
                following = claimed[0].decode() if isinstance(claimed[0], bytes) else claimed[0]
                self._claim_cursor[partition] = following
                if following == "0-0":
                    self._next_claim[partition] = now + self.claim_idle_ms / 2000
            # The store's coalescer: the partitions' reads and acknowledgements share pipelines.
            new = await self.store.coalescer.execute(
                "XREADGROUP",
                "GROUP",
                self.group,
                self.consumer,
                "COUNT",
                self.batch,
                "STREAMS",
                feed,
                ">",
            )
        taken += _entries(new)
        # One settlement per thread per pass: its newest entry brings the view up to date, and
        # every entry of the thread is then acknowledged at once.
        by_thread: dict[str, dict[bytes, tuple[int, dict[bytes, bytes]]]] = {}
        gone: list[bytes] = []  # entries deleted from the feed while pending: nothing to apply
        for entry_id, fields in taken:
            if entry_id is None:
                # Redis 6.2 hands over deleted entries without their ids: they are this
                # consumer's now, and its own pending list names them. Read it next pass.
                self._own_pending.add(partition)
                continue
            if not fields:
                gone.append(entry_id)
                continue
            try:
                thread = check_thread_id(fields[b"thread"].decode())
                version = int(fields[b"version"])
            except (KeyError, ValueError, UnicodeDecodeError) as exc:
                await self._failed(partition, feed, entry_id, fields, exc, stats)
                continue
            by_thread.setdefault(thread, {})[entry_id] = (version, fields)
        if gone:
            with redis_errors():
                await redis_.xack(feed, self.group, *gone)
            stats.skipped += len(gone)
        if not by_thread:
            return
        wanted = {t: max(v for v, _ in entries.values()) for t, entries in by_thread.items()}
        known = {
            t: {v: fields[b"data"] for v, fields in entries.values() if b"data" in fields}
            for t, entries in by_thread.items()
        }
        settled = await self.writer.settle(wanted, known)
        for thread, error in settled.failed.items():
            for entry_id, (_, fields) in by_thread[thread].items():
                await self._failed(partition, feed, entry_id, fields, error, stats)
        done = [e for t, entries in by_thread.items() if t not in settled.failed for e in entries]
        for entry_id in done:
            self._failures.pop((partition, entry_id.decode()), None)
        stats.applied += len(settled.applied)
        stats.skipped += len(done) - len(settled.applied)
        if done:
            with redis_errors():
                await self.store.coalescer.execute("XACK", feed, self.group, *done)

    async def _failed(
        self,
        partition: int,
        feed: str,
        entry_id: bytes,
        fields: dict[bytes, bytes],
        error: Exception,
        stats: PassStats,
    ) -> None:
        key = (partition, entry_id.decode())
        self._failures[key] += 1
        self._own_pending.add(partition)  # it stays pending on this consumer: retry it
        stats.failed += 1
        with redis_errors():
            pending = await self.store.redis.xpending_range(
                feed, self.group, min=entry_id, max=entry_id, count=1
            )
        delivered = int(pending[0]["times_delivered"]) if pending else 0
        if max(self._failures[key], delivered) < self.max_deliveries:
            return
        dead: dict[Any, Any] = {**fields, b"entry": entry_id, b"error": str(error)[:1000]}
        with redis_errors():
            await self.store.redis.xadd(self.keys.dead_letters(self.view, partition), dead)
            await self.store.redis.xack(feed, self.group, entry_id)
        self._failures.pop(key, None)
        stats.dead += 1

    async def _apply(self, thread_id: str, version: int) -> bool:
        """Bring one thread's view to at least `version`; False if it was there already."""
        settled = await self.writer.settle({thread_id: version})
        if thread_id in settled.failed:
            raise settled.failed[thread_id]
        return thread_id in settled.applied


def _entries(reply: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """The entries of an XREADGROUP reply over one stream (RESP2 or RESP3 shape)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        streams: Sequence[Any] = list(reply.values())
        return [tuple(e) for e in streams[0][0]] if streams and streams[0] else []
    return [(entry_id, fields) for entry_id, fields in reply[0][1]]
