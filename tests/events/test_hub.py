"""The stream hub: many waiters, one blocking read per group of keys, nothing lost or repeated."""

from __future__ import annotations

import asyncio

import pytest

from events.errors import StoreUnavailableError
from events.hub import StreamHub
from events.keys import Keyspace
from events.store import Redis

pytestmark = pytest.mark.anyio


async def _later(client: Redis, key: str, value: bytes, seconds: float = 0.05) -> str:
    await asyncio.sleep(seconds)
    return (await client.xadd(key, {b"v": value})).decode()


def _values(rows: list[tuple[str, dict[bytes, bytes]]]) -> list[bytes]:
    return [fields[b"v"] for _, fields in rows]


async def test_a_waiter_gets_what_comes_after_it_and_nothing_when_nothing_comes(
    client: Redis, keys: Keyspace
) -> None:
    hub = StreamHub(client, keys, block_ms=500)
    key = keys.stream("t1")
    first = (await client.xadd(key, {b"v": b"old"})).decode()
    try:
        writer = asyncio.create_task(_later(client, key, b"new"))
        rows = await hub.read(key, first, 5_000)
        await writer
        assert _values(rows) == [b"new"]
        assert await hub.read(key, rows[-1][0], 300) == []  # nothing more: an empty answer
        assert _values(await hub.read(key, "0-0", 300)) == [b"old", b"new"]  # no wait needed
    finally:
        await hub.aclose()


async def test_many_waiters_on_many_keys_share_one_read(client: Redis, keys: Keyspace) -> None:
    await client.ping()  # a cluster client first met by forty tasks at once trips on itself
    hub = StreamHub(client, keys, block_ms=2_000)
    threads = [f"t{i}" for i in range(40)]
    try:
        waiting = [
            asyncio.create_task(hub.read(keys.stream(t), "0-0", 10_000))
            for t in threads
            for _ in range(25)
        ]
        await _in_flight(hub, *(keys.stream(t) for t in threads))  # all of them blocked
        groups = len({keys.partition(t) for t in threads})
        assert 1 <= hub.readers <= (groups if _is_cluster(client) else 1)
        for t in threads:
            await client.xadd(keys.stream(t), {b"v": t.encode()})
        answers = await asyncio.gather(*waiting)
        assert [_values(rows) for rows in answers] == [
            [t.encode()] for t in threads for _ in range(25)
        ]
    finally:
        await hub.aclose()


async def test_a_waiter_on_a_key_the_blocked_read_misses_wakes_it(
    client: Redis, keys: Keyspace
) -> None:
    # One group (one partition on a cluster): the second key is not in the read in flight.
    keys = Keyspace(prefix=keys.prefix, partitions=1)
    hub = StreamHub(client, keys, block_ms=10_000)
    try:
        first = asyncio.create_task(hub.read(keys.stream("a"), "0-0", 10_000))
        await _in_flight(hub, keys.stream("a"))  # the group's read now blocks on "a" alone
        writer = asyncio.create_task(_later(client, keys.stream("b"), b"b", seconds=0.2))
        # Given the read in flight does not cover "b", without a wake this would wait 10 s.
        rows = await hub.read(keys.stream("b"), "0-0", 3_000)
        await writer
        assert _values(rows) == [b"b"]
        assert not first.done()
        await client.xadd(keys.stream("a"), {b"v": b"a"})
        assert _values(await first) == [b"a"]
    finally:
        await hub.aclose()


async def test_waiters_at_different_places_each_get_what_follows_their_own(
    client: Redis, keys: Keyspace
) -> None:
    hub = StreamHub(client, keys, block_ms=2_000)
    key = keys.stream("t")
    ids = [(await client.xadd(key, {b"v": str(i).encode()})).decode() for i in range(3)]
    try:
        behind = asyncio.create_task(hub.read(key, ids[0], 5_000))
        level = asyncio.create_task(hub.read(key, ids[2], 5_000))
        assert _values(await behind) == [b"1", b"2"]
        await asyncio.sleep(0.1)
        assert not level.done()  # nothing after its entry yet: it still waits
        await client.xadd(key, {b"v": b"3"})
        assert _values(await level) == [b"3"]
    finally:
        await hub.aclose()


async def test_a_waiter_that_leaves_is_forgotten(client: Redis, keys: Keyspace) -> None:
    hub = StreamHub(client, keys, block_ms=300)
    key = keys.stream("t")
    try:
        gone = asyncio.create_task(hub.read(key, "0-0", 10_000))
        await _in_flight(hub, key)
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        # The read in flight returns (within its 300 ms), and nobody is left to read for.
        async with asyncio.timeout(5):
            await asyncio.gather(*(g.task for g in hub._groups.values() if g.task is not None))
        assert hub.readers == 0
    finally:
        await hub.aclose()


async def test_redis_down_is_the_waiters_error(keys: Keyspace) -> None:
    from redis.asyncio import Redis as Client

    client = Client(port=1, socket_connect_timeout=1)
    hub = StreamHub(client, keys)
    try:
        with pytest.raises(StoreUnavailableError):
            await hub.read(keys.stream("t"), "0-0", 30_000)
        assert hub.readers == 0
    finally:
        await hub.aclose()
        await client.aclose()


async def _in_flight(hub: StreamHub, *keys: str) -> None:
    """Until a read of the hub covers every one of `keys` (the checkpoint the tests wait on)."""
    for _ in range(1_000):  # 5 s at most
        groups = hub._groups.values()
        if all(any(g.reading and key in g.reading for g in groups) for key in keys):
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"no read of the hub covers {keys}")


def _is_cluster(client: Redis) -> bool:
    from redis.asyncio.cluster import RedisCluster

    return isinstance(client, RedisCluster)
