"""The event store: one guarded append script over Redis Streams, and the reads around it."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import AsyncIterator, Sequence
from importlib import resources
from typing import Any, Final, NamedTuple, TypeAlias, cast

import msgspec
import redis.asyncio
import redis.asyncio.client
import redis.asyncio.cluster

from events.chain import GENESIS, Sealer, chain_hash
from events.coalesce import Coalescer
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
    ThreadSnapshot,
    parse_meta,
    recorded,
    stored_entry,
)
from events.schema import AnyEvent, ThreadEnded, decode, encode, placement, tag_of
from events.verify import VerifyReport, check

Redis: TypeAlias = "redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster"
Pipeline: TypeAlias = "redis.asyncio.client.Pipeline | redis.asyncio.cluster.ClusterPipeline"

_Rows: TypeAlias = list[tuple[bytes, dict[bytes, bytes]]]

DEFAULT_PAGE: Final = 1000


class Script(NamedTuple):
    body: str
    sha: str

    @classmethod
    def load(cls, name: str, package: str = "events") -> Script:
        return cls.of(resources.files(package).joinpath(name).read_text())

    @classmethod
    def of(cls, body: str) -> Script:
        return cls(body, hashlib.sha1(body.encode()).hexdigest())


APPEND: Final = Script.load("append.lua")
SNAPSHOT: Final = Script.load("snapshot.lua")
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
        self._sealer = Sealer(seal_key)
        self._heads: dict[str, tuple[int, bytes]] = {}
        self._head_cache_size = head_cache_size
        self.coalescer = Coalescer(client)  # for other writes to share the round trips
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
        try:
            result = _parse_reply(thread_id, await self.run_script(keys, args))
        except ChainError:
            # The head known here may be one Redis lost (a failover, an fsync window): forget
            # it, read the stored one, and try once more.
            if self._heads.pop(thread_id, None) is None:
                raise
            prev = await self._stored_hash(thread_id, expected_version)
            args = self._script_args(thread_id, events, expected_version, prev)
            result = _parse_reply(thread_id, await self.run_script(keys, args))
        if not result.replayed:
            self._remember_head(thread_id, result.last_version, result.head)
        return result

    async def run_script(
        self, keys: Sequence[str | bytes], args: Sequence[bytes], script: Script = APPEND
    ) -> Any:
        """EVALSHA a script, sending it again if Redis lost it (a restart, SCRIPT FLUSH)."""
        with redis_errors():
            return await self.coalescer.run_script(script, keys, args)

    async def read(
        self, thread_id: str, *, after: int = 0, limit: int = DEFAULT_PAGE
    ) -> list[RecordedEvent]:
        """Up to `limit` events with versions above `after`, oldest first."""
        return [recorded(e) for e in await self.read_entries(thread_id, after=after, limit=limit)]

    async def events(
        self, thread_id: str, *, after: int = 0, until: int | None = None, page: int = DEFAULT_PAGE
    ) -> AsyncIterator[RecordedEvent]:
        """Every event above version `after` (and up to `until`), read in pages."""
        end = "+" if until is None else f"{until}-0"
        async for entry in self.entries(thread_id, after=after, page=page, end=end):
            yield recorded(entry)

    async def entries(
        self, thread_id: str, *, after: int = 0, page: int = DEFAULT_PAGE, end: str = "+"
    ) -> AsyncIterator[StoredEntry]:
        """Every raw stream entry above version `after` (up to entry id `end`), in pages."""
        start = f"{after + 1}-0" if after else "-"
        while True:
            rows = await self._xrange(
                self.keys.stream(check_thread_id(thread_id)), start, page, end=end
            )
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
        """The thread's version, head hash, ended leaves and seals, from its meta."""
        try:
            return parse_meta(await self.meta(thread_id))
        except ValueError as exc:
            raise ChainError(thread_id, 0, f"the meta is unreadable ({exc}): run verify") from exc

    async def thread_ids(self) -> AsyncIterator[str]:
        """Every thread of this key prefix, in no particular order (a SCAN of every node)."""
        marker = ":meta:"
        with redis_errors():
            async for key in self.redis.scan_iter(match=f"{self.keys.prefix}:{{*}}{marker}*"):
                yield cast(bytes, key).decode().split(marker, 1)[1]

    async def version(self, thread_id: str) -> tuple[int, bytes]:
        """The thread's version (how many events it has; 0: no such thread) and head hash."""
        with redis_errors():
            raw = await self.redis.hmget(
                self.keys.meta(check_thread_id(thread_id)), ["version", "head"]
            )
        version, head = cast(list[bytes | None], raw)
        return (int(version) if version else 0), (head or GENESIS)

    async def verify(self, thread_id: str) -> VerifyReport:
        """Recompute the thread's chain and seals, and compare them with its meta and index."""
        return self.check(await self.snapshot(thread_id))

    async def snapshot(self, thread_id: str) -> ThreadSnapshot:
        """The thread's meta, index and stream's last id at one instant, and its entries.

        Entries up to the meta's version never change, so they are read after, in pages.
        """
        stream, meta_key, index_key, _ = self.keys.append_keys(thread_id)
        meta, index, last = await self.run_script([stream, meta_key, index_key], [], SNAPSHOT)
        meta = _pairs(meta)
        version = meta.get(b"version", b"0")
        end = f"{int(version)}-0" if version.isdigit() else "+"
        return ThreadSnapshot(
            thread_id=thread_id,
            meta=meta,
            index=_pairs(index),
            stream_last=last.decode(),
            entries=[e async for e in self.entries(thread_id, end=end)],
        )

    def check(self, snapshot: ThreadSnapshot) -> VerifyReport:
        """Verify a snapshot: chain, seals (with this store's key), meta and index."""
        return check(
            snapshot.thread_id,
            snapshot.entries,
            snapshot.meta,
            snapshot.index,
            self._seal_key,
            stream_last=snapshot.stream_last,
        )

    async def meta(self, thread_id: str) -> dict[bytes, bytes]:
        """The thread's meta hash as stored."""
        with redis_errors():
            raw = await self.redis.hgetall(self.keys.meta(check_thread_id(thread_id)))
        return cast(dict[bytes, bytes], raw)

    async def index(self, thread_id: str) -> dict[bytes, bytes]:
        """The thread's index hash as stored (event ids, messages, children)."""
        with redis_errors():
            raw = await self.redis.hgetall(self.keys.index(check_thread_id(thread_id)))
        return cast(dict[bytes, bytes], raw)

    async def batch_of(self, thread_id: str, event_id: str) -> tuple[int, int] | None:
        """The first and last versions of the append that stored `event_id`, if it is stored."""
        with redis_errors():
            raw = await self.redis.hget(
                self.keys.index(check_thread_id(thread_id)), f"e:{event_id}"
            )
        if raw is None:
            return None
        _version, first, last = (raw.decode() if isinstance(raw, bytes) else raw).split(":")
        return int(first), int(last)

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
        control: list[tuple[str, str, str | bool, str, str, str, str, str, int]] = []
        hashes = [prev]
        stored = []
        head = prev
        for version, event in enumerate(events, start=expected + 1):
            tag = tag_of(event)
            data = _checked_bytes(event)
            head = chain_hash(head, thread_id, version, tag, data)
            guard, message, role, edited = placement(event)
            scope = sealed = ""
            if isinstance(event, ThreadEnded):
                scope, sealed = (
                    event.scope,
                    self._sealer.seal("end", thread_id, version, head).hex(),
                )
            control.append(
                (
                    event.event_id,
                    tag,
                    False if guard is None else guard,
                    message,
                    role,
                    edited,
                    scope,
                    sealed,
                    len(data),
                )
            )
            hashes.append(head)
            stored.append(data)
        head_seal = self._sealer.seal("head", thread_id, expected + len(events), head).hex()
        return (
            _json.encode((thread_id, expected, control, head_seal)),
            b"".join(hashes),
            b"".join(stored),
        )

    def _cached_hash(self, thread_id: str, version: int) -> bytes | None:
        """The chain hash at `version`, if it is the last head this store wrote or read."""
        if version == 0:
            return GENESIS
        cached = self._heads.get(thread_id)
        return cached[1] if cached is not None and cached[0] == version else None

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
        if thread_id not in self._heads and len(self._heads) >= self._head_cache_size:
            del self._heads[next(iter(self._heads))]  # the longest known: first in, first out
        self._heads[thread_id] = (version, head)

    async def _xrange(
        self, key: str, start: str, count: int, *, end: str = "+"
    ) -> list[StoredEntry]:
        with redis_errors():
            rows = cast(_Rows, await self.redis.xrange(key, start, end, count=count))
        return [stored_entry(entry_id, fields) for entry_id, fields in rows]


def _pairs(flat: list[bytes]) -> dict[bytes, bytes]:
    """A hash from HGETALL as a script returns it: a flat list of fields and values."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _checked_bytes(event: AnyEvent) -> bytes:
    """The event's stored bytes, if the store's own decoder accepts them back.

    msgspec checks constraints (id lengths, literal values) when decoding, not when a Struct is
    built: without this, an invalid event would be stored and then break every read.
    """
    try:
        data = encode(event)
        decode(data)
    except (msgspec.ValidationError, msgspec.EncodeError, UnicodeEncodeError, OverflowError) as exc:
        raise InvalidBatchError(f"event {event.event_id!r} is invalid: {exc}") from exc
    return data


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
