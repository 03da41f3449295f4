"""Per-key limits: message and body size, turns per minute, and event streams open at once.

The defaults come from the environment (`CODA_LIMIT_*`); a key may carry its own, set when it
is made (`coda keys create --turns-per-minute 120`). Counting is in Redis, so the limits hold
across every API process:

- turns: a generic cell rate (GCRA) per key, `turns_per_minute` spread over the minute with
  a burst of as many; a turn refused is 429 `rate-limited` with `Retry-After`;
- streams: a sorted set per key of the streams open now, each with an expiry that its process
  renews while it is open; one stream too many is 429 before it starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
from collections.abc import AsyncIterator, Mapping
from typing import Final

import anyio
import msgspec

from events.coalesce import Coalescer
from events.errors import redis_errors
from events.keys import Keyspace
from events.schema import new_id
from events.store import Redis, Script
from service.http.problems import Problem

ENV_PREFIX: Final = "CODA_LIMIT_"
SLOT_MS: Final = 45_000  # a stream slot not renewed for this long is free again
COUNTED_MS: Final = 120_000  # a count is known this long: past a lone retry's 11 tries of 10 s
RENEW_SECONDS: Final = 15.0
STREAM_WAIT_MS: Final = 5_000  # what Retry-After suggests when every stream slot is taken

# KEYS[1] the key's theoretical arrival time, KEYS[2] this count's mark; ARGV: emission
# interval, burst tolerance, how long the mark is kept (ms). Returns 0 when the turn is allowed,
# else the milliseconds to wait. A count sent again (redis-py resends a command, or a whole
# pipeline, whose reply was lost) finds its mark and is not taken twice.
_GCRA: Final = Script.of("""
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
-- Whole milliseconds, rounded up: Redis turns a fraction into an integer by cutting it, and a
-- wait of 0.4 ms must not read as 0 (allowed).
if now < tat - tolerance then return math.ceil(tat - tolerance - now) end
local after = tat + interval
redis.call('SET', KEYS[1], after, 'PX', math.ceil(after - now))
redis.call('SET', KEYS[2], 1, 'PX', ARGV[3])
return 0
""")

# KEYS[1] the key's open streams; ARGV: stream id, limit, slot ms. 1 if the slot was taken
# (also when it was, by this very call sent again).
_TAKE_SLOT: Final = Script.of("""
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 1 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
""")

# KEYS[1] a key's open streams; ARGV[1] slot ms, then the ids of the streams still open.
_RENEW: Final = Script.of("""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local slot = tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', now + slot, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], slot)
return #ARGV - 1
""")


class LimitsError(ValueError):
    """A limit set to something that is not a positive whole number."""


class Limits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What one key may do; every value a positive whole number."""

    message_bytes: int = 32 * 1024  # of one message's text, in UTF-8
    body_bytes: int = 64 * 1024  # of a request body
    turns_per_minute: int = 30
    streams: int = 32  # event streams open at once

    def __post_init__(self) -> None:
        for name in self.__struct_fields__:
            if getattr(self, name) < 1:
                raise LimitsError(f"limit {name} must be at least 1, not {getattr(self, name)}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Limits:
        """The defaults, with `CODA_LIMIT_<NAME>` (e.g. CODA_LIMIT_TURNS_PER_MINUTE) read over."""
        env = os.environ if environ is None else environ
        given = {}
        for name in cls.__struct_fields__:
            text = env.get(ENV_PREFIX + name.upper())
            if text is not None:
                given[name] = _whole(ENV_PREFIX + name.upper(), text)
        return cls(**given)

    def over(self, overrides: Mapping[str, int]) -> Limits:
        """These limits with a key's own in place of the defaults."""
        known = {k: v for k, v in overrides.items() if k in self.__struct_fields__}
        return msgspec.structs.replace(self, **known)


def _whole(name: str, text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise LimitsError(f"{name} must be a whole number of at least 1, not {text!r}")
    return int(text)


def too_many(what: str, wait_ms: int) -> Problem:
    seconds = max(1, math.ceil(wait_ms / 1000))
    return Problem(
        429,
        "rate-limited",
        "Too many requests",
        f"{what}: retry in {seconds} s",
        retry_after=seconds,
    )


class Slot(msgspec.Struct, frozen=True):
    """A stream slot taken: its id in the key's set of open streams."""

    id: str
    name: str


class Limiter:
    """The counting side of the limits, shared by a process's requests."""

    def __init__(self, client: Redis, keys: Keyspace, coalescer: Coalescer | None = None) -> None:
        self.redis = client
        self.keys = keys
        # The store's, where there is one: a turn's count then shares the appends' round trips.
        # Every script here may run twice (a pipeline sent again) and count once.
        self._scripts = coalescer or Coalescer(client)
        self._open: dict[str, str] = {}  # stream id -> its key's set, renewed while open
        self._renewer: asyncio.Task[None] | None = None

    async def turn(self, key_id: str, limits: Limits) -> None:
        """Count a turn of the key; 429 if it is over its rate."""
        interval = 60_000 / limits.turns_per_minute
        tolerance = interval * (limits.turns_per_minute - 1)
        with redis_errors():
            wait = int(
                await self._scripts.run_script(
                    _GCRA,
                    [self.keys.turn_rate(key_id), self.keys.turn_counted(key_id, new_id())],
                    [interval, tolerance, COUNTED_MS],
                )
            )
        if wait > 0:
            raise too_many(f"at most {limits.turns_per_minute} turns a minute", wait)

    async def take_slot(self, key_id: str, limits: Limits) -> Slot:
        """One of the key's stream slots (429 if none is free). It lapses unless `held`."""
        slot = Slot(new_id(), self.keys.open_streams(key_id))
        with redis_errors():
            taken = await self._scripts.run_script(
                _TAKE_SLOT, [slot.name], [slot.id, limits.streams, SLOT_MS]
            )
        if not taken:
            raise too_many(f"at most {limits.streams} event streams open at once", STREAM_WAIT_MS)
        return slot

    async def free(self, slot: Slot) -> None:
        """Give a slot back (it lapses on its own too, if this cannot reach Redis)."""
        with contextlib.suppress(Exception), redis_errors():
            await self.redis.zrem(slot.name, slot.id)

    @contextlib.asynccontextmanager
    async def held(self, slot: Slot) -> AsyncIterator[None]:
        """Keep `slot` taken while the stream runs (renewed), and free it when it ends, also
        when the stream is cancelled (its client left)."""
        self._open[slot.id] = slot.name
        if self._renewer is None:
            self._renewer = asyncio.create_task(self._renew(), name="stream-slots")
        try:
            yield
        finally:
            del self._open[slot.id]
            with anyio.CancelScope(shield=True):
                await self.free(slot)

    async def aclose(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer

    async def _renew(self) -> None:
        """Keep this process's open streams' slots taken, a round trip per set each time."""
        try:
            while self._open:
                await asyncio.sleep(RENEW_SECONDS)
                by_set: dict[str, list[str]] = {}
                for slot, name in list(self._open.items()):
                    by_set.setdefault(name, []).append(slot)
                for name, slots in by_set.items():
                    with contextlib.suppress(Exception):  # a slot missed once lapses later
                        await self._scripts.run_script(_RENEW, [name], [SLOT_MS, *slots])
        finally:
            self._renewer = None
