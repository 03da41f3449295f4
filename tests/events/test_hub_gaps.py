"""The stream hub and a waiter that joins a read in flight from an earlier entry than that read
covers: it must get every entry after its own, not only those after the read's."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
import redis
import redis.cluster

from events.hub import StreamHub
from events.keys import Keyspace
from events.store import Redis

pytestmark = pytest.mark.anyio


@pytest.fixture
def writer(backend: str, client: Redis, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A blocking client of the same Redis: a write through it lands while the event loop
    stands still, so the hub's read answers before the hub's task can run again."""
    sync: Any
    if backend == "fakeredis":
        server = client.connection_pool.connection_kwargs["server"]  # type: ignore[union-attr]
        sync = fakeredis.FakeRedis(server=server)
    elif backend == "redis":
        sync = redis.Redis.from_url(request.getfixturevalue("redis_url"))
    else:
        url = request.getfixturevalue("cluster_url").partition("://")[2]
        sync = redis.cluster.RedisCluster.from_url(f"redis://{url}")
    try:
        yield sync
    finally:
        sync.close()


def _values(rows: list[tuple[str, dict[bytes, bytes]]]) -> list[bytes]:
    return [fields[b"v"] for _, fields in rows]


async def test_a_waiter_behind_the_read_in_flight_is_not_handed_entries_past_a_gap(
    client: Redis, keys: Keyspace, writer: Any
) -> None:
    hub = StreamHub(client, keys, block_ms=3_000)
    key = keys.live("t", "r")
    first, second = [(await client.xadd(key, {b"v": v})).decode() for v in (b"1", b"2")]
    try:
        ahead = asyncio.create_task(hub.read(key, second, 3_000))
        await asyncio.sleep(0.2)  # the group's read blocks on `key` from entry 2
        # Entry 3 lands, and the blocked read answers with it; before the hub's task sees that
        # answer, a second waiter comes from entry 1 (it has not seen entry 2 yet).
        writer.xadd(key, {b"v": b"3"})
        behind = asyncio.create_task(hub.read(key, first, 3_000))
        assert _values(await ahead) == [b"3"]
        # Then it gets what follows entry 1, as XREAD after entry 1 would: 2 first, never 3 alone.
        assert _values(await behind)[:1] == [b"2"]
    finally:
        await hub.aclose()
