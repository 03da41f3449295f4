"""A process's bounded pool to a single Redis, and the hub that shares it: every blocking wait of
the process depends on the hub's read getting a connection."""

from __future__ import annotations

import asyncio

import pytest

from events import connect
from events.connect import client_for
from events.hub import StreamHub
from events.keys import Keyspace

pytestmark = pytest.mark.anyio


async def test_a_hub_read_kept_waiting_for_a_connection_is_not_every_waiters_error(
    redis_url: str, keys: Keyspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connect, "POOL_WAIT", 0.3)
    client = client_for(redis_url, max_connections=2)
    writer = client_for(redis_url)
    hub = StreamHub(client, keys)
    key = keys.stream("t")
    try:
        # Given every connection of the process's pool busy for longer than the pool's wait
        # (slow commands, a burst of them),
        async def slow_command() -> None:
            await client.blpop([f"{keys.prefix}:busy"], timeout=1)

        busy = [asyncio.create_task(slow_command()) for _ in range(2)]
        await asyncio.sleep(0.1)
        # when a stream waits for its thread's next event, which comes meanwhile,
        waiting = asyncio.create_task(hub.read(key, "0-0", 5_000))
        await asyncio.sleep(0.5)
        await writer.xadd(key, {b"v": b"1"})
        # then it gets the event once a connection is free: the wait is the stream's, not an
        # `unavailable` that ends every stream of the process at once.
        rows = await waiting
        await asyncio.gather(*busy)
    finally:
        await hub.aclose()
        await writer.delete(key)
        await client.aclose()
        await writer.aclose()
    assert [fields[b"v"] for _, fields in rows] == [b"1"]
