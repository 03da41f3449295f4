"""The event store: one guarded append script over Redis Streams, and the reads around it."""

from __future__ import annotations

import functools
import hashlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from importlib import resources
from typing import Any, Final, TypeAlias, cast

import msgspec
import redis.asyncio
import redis.asyncio.cluster
from redis.exceptions import NoScriptError

from events.chain import GENESIS, chain_hash, seal
from events.errors import (
    ChainError,
    ConcurrencyError,
    EventStoreError,
    IdempotencyError,
    InvalidBatchError,
    ThreadEndedError,
    redis_errors,
)
from events.keys import Keyspace, check_thread_id
from events.records import (
    AppendResult,
    FeedEntry,
    Head,
    RecordedEvent,
    StoredEntry,
    parse_meta,
    recorded,
)
from events.schema import AnyEvent, ThreadEnded, attach_point, encode, tag_of
from events.verify import VerifyReport, check

Redis: TypeAlias = "redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster"

_Rows: TypeAlias = list[tuple[bytes, dict[bytes, bytes]]]

MAX_BATCH: Final = 64
DEFAULT_PAGE: Final = 1000
SCRIPT: Final = resources.files("events").joinpath("append.lua").read_text()
SCRIPT_SHA: Final = hashlib.sha1(SCRIPT.encode()).hexdigest()
_json: Final = msgspec.json.Encoder()


class RedisEventStore:
    """Threads as hash-chained Redis streams, with a feed per partition for consumers."""

    def __init__(
        self,
        client: Redis,
        keys: Keyspace,
        seal_key: bytes,
        *,
        head_cache_size: int = 10_000,
    ) -> None:
        self.redis = client
        self.keys = keys
        self._seal_key = seal_key
        self._heads: OrderedDict[str, tuple[int, bytes]] = OrderedDict()
        self._head_cache_size = head_cache_size
        self._append_keys = functools.lru_cache(maxsize=head_cache_size)(self._encoded_keys)

    async def append(
        self, thread_id: str, events: Sequence[AnyEvent], expected_version: int
    ) -> AppendResult:
        """Append a batch at `expected_version`, all or nothing; a stored batch is not re-added."""
        keys = self._append_keys(thread_id)
        if expected_version < 0:
            raise InvalidBatchError(f"expected version must be >= 0, not {expected_version}")
        for event in events:
            if event.thread_id != thread_id:
                raise InvalidBatchError(
                    f"event {event.event_id} belongs to thread {event.thread_id!r}, "
                    f"not {thread_id!r}"
                )
        prev = self._cached_hash(thread_id, expected_version)
        if prev is None:
            prev = await self._stored_hash(thread_id, expected_version)
        args = self._script_args(thread_id, events, expected_version, prev)
        reply = await self.run_script(keys, args)
        result = _parse_reply(thread_id, reply)
        if not result.replayed:
            self._remember_head(thread_id, result.last_version, result.head)
        return result

    async def run_script(self, keys: Sequence[str | bytes], args: Sequence[bytes]) -> Any:
        """EVALSHA the append script, loading it again if Redis lost it (restart, SCRIPT FLUSH)."""
        with redis_errors():
            try:
                return await self.redis.evalsha(SCRIPT_SHA, len(keys), *keys, *args)
            except NoScriptError:
                return await self.redis.eval(SCRIPT, len(keys), *keys, *args)

    async def read(
        self, thread_id: str, *, after: int = 0, limit: int = DEFAULT_PAGE
    ) -> list[RecordedEvent]:
        """Up to `limit` events with versions above `after`, oldest first."""
        return [recorded(e) for e in await self.read_entries(thread_id, after=after, limit=limit)]

    async def events(
        self, thread_id: str, *, after: int = 0, page: int = DEFAULT_PAGE
    ) -> AsyncIterator[RecordedEvent]:
        """Every event above `after`, read in pages."""
        async for entry in self.entries(thread_id, after=after, page=page):
            yield recorded(entry)

    async def entries(
        self, thread_id: str, *, after: int = 0, page: int = DEFAULT_PAGE
    ) -> AsyncIterator[StoredEntry]:
        """Every raw stream entry above version `after`, read in pages."""
        start = f"{after + 1}-0"
        while True:
            rows = await self._xrange(self.keys.stream(check_thread_id(thread_id)), start, page)
            for entry in rows:
                yield entry
            if len(rows) < page:
                return
            start = "(" + rows[-1].entry_id

    async def read_entries(
        self, thread_id: str, *, after: int = 0, limit: int = DEFAULT_PAGE
    ) -> list[StoredEntry]:
        return await self._xrange(
            self.keys.stream(check_thread_id(thread_id)), f"{after + 1}-0", limit
        )

    async def head(self, thread_id: str) -> Head:
        return parse_meta(await self.meta(thread_id))

    async def verify(self, thread_id: str, *, attempts: int = 5) -> VerifyReport:
        """Recompute the thread's chain and seals, and compare them with its meta and index."""
        for _ in range(attempts):
            meta = await self.meta(thread_id)
            ids = await self.id_index(thread_id)
            entries = [entry async for entry in self.entries(thread_id)]
            # Reads are not one snapshot: an append in between would look like a tamper.
            if await self.meta(thread_id) == meta:
                return check(thread_id, entries, meta, ids, self._seal_key)
        raise EventStoreError(f"thread {thread_id!r} kept changing while it was verified")

    async def meta(self, thread_id: str) -> dict[bytes, bytes]:
        """The thread's meta hash as stored."""
        with redis_errors():
            raw = await self.redis.hgetall(self.keys.meta(check_thread_id(thread_id)))
        return cast(dict[bytes, bytes], raw)

    async def id_index(self, thread_id: str) -> dict[str, int]:
        """The event-id index: event id -> version."""
        with redis_errors():
            raw = cast(
                dict[bytes, bytes],
                await self.redis.hgetall(self.keys.ids(check_thread_id(thread_id))),
            )
        return {k.decode(): int(v) for k, v in raw.items()}

    async def read_feed(
        self, partition: int, *, after: str = "0-0", limit: int = DEFAULT_PAGE
    ) -> list[FeedEntry]:
        """Feed entries of a partition after entry id `after`, oldest first."""
        with redis_errors():
            rows = cast(
                _Rows,
                await self.redis.xrange(self.keys.feed(partition), "(" + after, "+", count=limit),
            )
        return [
            FeedEntry(
                entry_id=entry_id.decode(),
                thread_id=fields[b"thread"].decode(),
                version=int(fields[b"version"]),
                type=fields[b"type"].decode(),
                data=fields[b"data"],
            )
            for entry_id, fields in rows
        ]

    def _script_args(
        self, thread_id: str, events: Sequence[AnyEvent], expected: int, prev: bytes
    ) -> tuple[bytes, bytes, bytes]:
        """ARGV of the append script: control data (JSON), the hashes, the stored bytes."""
        control: list[tuple[str, str, str | bool, str, str, int]] = []
        hashes = [prev]
        stored = []
        head = prev
        for version, event in enumerate(events, start=expected + 1):
            tag = tag_of(event)
            data = encode(event)
            head = chain_hash(head, thread_id, version, tag, data)
            attaches, parent = attach_point(event)
            if isinstance(event, ThreadEnded):
                sealed = seal(self._seal_key, thread_id, version, head).hex()
                control.append((event.event_id, tag, event.leaf_id, event.scope, sealed, len(data)))
            else:
                guard = (parent or "") if attaches else False
                control.append((event.event_id, tag, guard, "", "", len(data)))
            hashes.append(head)
            stored.append(data)
        return _json.encode((thread_id, expected, control)), b"".join(hashes), b"".join(stored)

    def _cached_hash(self, thread_id: str, version: int) -> bytes | None:
        """The chain hash at `version` if known here: history never changes, so it stays valid."""
        if version == 0:
            return GENESIS
        cached = self._heads.get(thread_id)
        if cached is not None and cached[0] == version:
            self._heads.move_to_end(thread_id)
            return cached[1]
        return None

    async def _stored_hash(self, thread_id: str, version: int) -> bytes:
        """The chain hash at `version`, read from the stream."""
        rows = await self._xrange(
            self.keys.stream(thread_id), f"{version}-0", 1, end=f"{version}-0"
        )
        # No entry there: the script answers with the stored version (or the original result).
        return rows[0].hash if rows else GENESIS

    def _encoded_keys(self, thread_id: str) -> tuple[bytes, ...]:
        return tuple(key.encode() for key in self.keys.append_keys(thread_id))

    def _remember_head(self, thread_id: str, version: int, head: bytes) -> None:
        self._heads[thread_id] = (version, head)
        self._heads.move_to_end(thread_id)
        if len(self._heads) > self._head_cache_size:
            self._heads.popitem(last=False)

    async def _xrange(
        self, key: str, start: str, count: int, *, end: str = "+"
    ) -> list[StoredEntry]:
        with redis_errors():
            rows = cast(_Rows, await self.redis.xrange(key, start, end, count=count))
        return [
            StoredEntry(
                entry_id=entry_id.decode(),
                type=fields.get(b"type", b"").decode(),
                data=fields.get(b"data", b""),
                hash=fields.get(b"hash", b""),
            )
            for entry_id, fields in rows
        ]


def _parse_reply(thread_id: str, reply: list[Any]) -> AppendResult:
    status, code = reply[0], reply[1]
    if status == b"ok":
        return AppendResult(
            thread_id=thread_id,
            first_version=int(reply[1]),
            last_version=int(reply[2]),
            head=bytes(reply[3]),
            replayed=bool(reply[4]),
        )
    detail = reply[2:]
    match code:
        case b"batch":
            raise InvalidBatchError(detail[0].decode())
        case b"idempotency":
            raise IdempotencyError(
                f"thread {thread_id!r}: {detail[0].decode()}", event_id=detail[1].decode()
            )
        case b"ended":
            raise ThreadEndedError(thread_id, int(detail[0]), detail[1].decode() or None)
        case b"version":
            raise ConcurrencyError(thread_id, int(detail[0]), int(detail[1]))
        case b"chain":
            raise ChainError(thread_id, int(detail[0]), detail[1].decode())
    raise EventStoreError(f"unexpected reply from the append script: {reply!r}")
