"""The live channel: a generation's text deltas as they come, for any process to relay.

One short-lived Redis stream per generation (`coda:{p}:live:<thread>:<reply>`): entries `d`
(a piece of text) and, last, `end` (the generation's outcome, as `Outcome.status` says it:
completed, redirected, warned, ended or failed), with a `d` of the text not relayed before.
Readers resume after any entry id. It is a relay, not history: it expires, and the final text
lands in the thread's event stream as one `reply.*` event with its content hash.

The owner's writes double as its check for a cancellation that another process asked for,
so a cancel reaches the generation at its next piece of text.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Final, TypeAlias

import msgspec

from events.errors import redis_errors
from events.hub import StreamHub
from events.keys import Keyspace
from events.store import Redis

DEFAULT_TTL: Final = 3600  # seconds after the last write
DEFAULT_BLOCK_MS: Final = 5_000
_DELTA: Final = b"d"
_END: Final = b"end"


class Delta(msgspec.Struct, frozen=True):
    entry_id: str
    text: str


class Closed(msgspec.Struct, frozen=True):
    entry_id: str
    outcome: str


LiveItem: TypeAlias = Delta | Closed


class LiveChannel:
    def __init__(
        self,
        client: Redis,
        keys: Keyspace,
        *,
        ttl: int = DEFAULT_TTL,
        hub: StreamHub | None = None,
    ) -> None:
        self.redis = client
        self.keys = keys
        self.ttl = ttl
        self.hub = hub or StreamHub(client, keys)  # blocking reads wait there, together

    async def publish(self, thread_id: str, reply_id: str, text: str) -> bool:
        """Add a piece of text; True if the generation was asked to stop meanwhile."""
        key = self.keys.live(thread_id, reply_id)
        with redis_errors():
            pipe = self.redis.pipeline(transaction=False)
            pipe.xadd(key, {_DELTA: text.encode()})
            pipe.expire(key, self.ttl)
            pipe.exists(self.keys.cancel(thread_id, reply_id))
            replies = await pipe.execute()
        return bool(replies[-1])

    async def close(self, thread_id: str, reply_id: str, outcome: str, text: str = "") -> None:
        """Add the last piece of text, if any, and the generation's outcome."""
        with redis_errors():
            pipe = self.redis.pipeline(transaction=False)
            for command in self.close_commands(thread_id, reply_id, outcome, text):
                pipe.execute_command(*command)
            await pipe.execute()

    def close_commands(
        self, thread_id: str, reply_id: str, outcome: str, text: str = ""
    ) -> list[tuple[Any, ...]]:
        """The commands of `close`, for a pipeline (the owner closes and releases together)."""
        key = self.keys.live(thread_id, reply_id)
        last = (_DELTA, text.encode(), _END, outcome.encode()) if text else (_END, outcome.encode())
        return [("XADD", key, "*", *last), ("EXPIRE", key, self.ttl)]

    async def read(
        self, thread_id: str, reply_id: str, *, after: str = "0-0", block_ms: int | None = None
    ) -> list[LiveItem]:
        """The items after `after`, waiting up to `block_ms` for one if there are none yet."""
        key = self.keys.live(thread_id, reply_id)
        if block_ms is not None:
            rows = await self.hub.read(key, after, block_ms)
        else:
            with redis_errors():
                reply: Any = await self.redis.xread({key: after})
            rows = [(_text(i), fields) for _stream, entries in reply or () for i, fields in entries]
        return [item for entry_id, fields in rows for item in _items(entry_id, fields)]

    async def follow(
        self, thread_id: str, reply_id: str, *, after: str = "0-0", block_ms: int = DEFAULT_BLOCK_MS
    ) -> AsyncIterator[LiveItem]:
        """Every item after `after` until the generation closes, or until nothing comes for
        `block_ms` (the channel expired, or its owner died: the event stream then has the
        truth)."""
        while True:
            items = await self.read(thread_id, reply_id, after=after, block_ms=block_ms)
            if not items:
                return
            for item in items:
                yield item
                if isinstance(item, Closed):
                    return
            after = items[-1].entry_id


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _items(entry_id: str, fields: dict[bytes, bytes]) -> list[LiveItem]:
    """An entry's text, then its close: the close carries the last piece of text with it."""
    items: list[LiveItem] = []
    if _DELTA in fields or _END not in fields:
        items.append(Delta(entry_id, fields.get(_DELTA, b"").decode()))
    if _END in fields:
        items.append(Closed(entry_id, fields[_END].decode()))
    return items
