"""A reply lost on the wire: redis-py retries the script by itself, and idempotency holds."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
import redis.asyncio
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from events.keys import Keyspace
from events.store import RedisEventStore
from tests.conftest import SEAL_KEY, delete_prefix
from tests.factories import posted, replied, started

pytestmark = pytest.mark.anyio

T = "lost-reply"


class ReplyDroppingProxy:
    """Forwards to Redis; when armed, cuts the client off right after the server ran EVALSHA."""

    def __init__(self, upstream: dict[str, object]) -> None:
        self.upstream = upstream
        self.armed = False
        self.dropped = 0
        self.port = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> ReplyDroppingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if "path" in self.upstream:
            up_reader, up_writer = await asyncio.open_unix_connection(str(self.upstream["path"]))
        else:
            host, port = str(self.upstream["host"]), int(self.upstream["port"])  # type: ignore[call-overload]
            up_reader, up_writer = await asyncio.open_connection(host, port)
        cut = asyncio.Event()
        pending_drop = asyncio.Event()

        async def requests() -> None:
            while data := await reader.read(65536):
                if self.armed and b"EVALSHA" in data.upper():
                    self.armed = False
                    pending_drop.set()
                up_writer.write(data)
                await up_writer.drain()

        async def replies() -> None:
            while data := await up_reader.read(65536):
                if pending_drop.is_set():
                    self.dropped += 1
                    cut.set()
                    return
                writer.write(data)
                await writer.drain()

        tasks = [asyncio.create_task(requests()), asyncio.create_task(replies())]
        self._tasks.update(tasks)
        await asyncio.wait([*tasks, asyncio.create_task(cut.wait())], return_when="FIRST_COMPLETED")
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for w in (writer, up_writer):
            w.close()
            with contextlib.suppress(ConnectionError):
                await w.wait_closed()


@pytest.fixture
async def proxied_store(
    redis_url: str, keys: Keyspace
) -> AsyncIterator[tuple[RedisEventStore, ReplyDroppingProxy]]:
    options = parse_url(redis_url)
    async with ReplyDroppingProxy(options) as proxy:
        client = redis.asyncio.Redis(
            host="127.0.0.1",
            port=proxy.port,
            db=int(options.get("db", 0)),
            username=options.get("username"),
            password=options.get("password"),
            retry=Retry(NoBackoff(), 3),
            retry_on_error=[RedisConnectionError],
        )
        try:
            yield RedisEventStore(client, keys, SEAL_KEY), proxy
        finally:
            await delete_prefix(client, keys.prefix)
            await client.aclose()


async def test_a_script_reply_lost_on_the_wire_is_retried_without_a_duplicate(
    proxied_store: tuple[RedisEventStore, ReplyDroppingProxy], keys: Keyspace
) -> None:
    store, proxy = proxied_store
    await store.append(T, [started(T)], 0)
    batch = [posted(T, "m1", None), replied(T, "r1", "m1")]

    proxy.armed = True
    result = await store.append(T, batch, 1)

    assert proxy.dropped == 1
    assert (result.first_version, result.last_version, result.replayed) == (2, 3, True)
    events = await store.read(T)
    assert [e.event for e in events[1:]] == batch
    assert len(await store.read_feed(keys.partition(T))) == 3
    assert (await store.verify(T)).ok


async def test_appends_sent_together_whose_replies_are_lost_are_retried_without_duplicates(
    proxied_store: tuple[RedisEventStore, ReplyDroppingProxy], keys: Keyspace
) -> None:
    store, proxy = proxied_store
    threads = [f"{T}-{i}" for i in range(4)]
    for thread in threads:
        await store.append(thread, [started(thread)], 0)
    batches = {t: [posted(t, "m1", None), replied(t, "r1", "m1")] for t in threads}

    proxy.armed = True
    results = await asyncio.gather(*(store.append(t, batches[t], 1) for t in threads))

    assert proxy.dropped == 1
    assert [(r.first_version, r.last_version, r.replayed) for r in results] == [(2, 3, True)] * 4
    for thread in threads:
        assert [e.event for e in (await store.read(thread))[1:]] == batches[thread]
        assert (await store.verify(thread)).ok
    partitions = {keys.partition(t) for t in threads}
    assert sum([len(await store.read_feed(p)) for p in partitions]) == 12  # 3 events a thread
