"""Commands issued together go to Redis in one pipeline, each still answered as its own."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
import redis.asyncio
import redis.asyncio.cluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, ResponseError

from events.coalesce import MAX_CALLS, Coalescer
from events.connect import client_for
from events.errors import ConcurrencyError
from events.keys import Keyspace
from events.store import APPEND, Redis, RedisEventStore
from tests.factories import posted, started

pytestmark = pytest.mark.anyio


class CountingPipelines:
    """Records how many commands each pipeline the client opens carries."""

    def __init__(self, client: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sizes: list[int] = []
        make = client.pipeline

        def pipeline(*args: Any, **kwargs: Any) -> Any:
            pipe = make(*args, **kwargs)
            execute = pipe.execute

            async def counted(*a: Any, **kw: Any) -> Any:
                self.sizes.append(len(pipe))
                return await execute(*a, **kw)

            monkeypatch.setattr(pipe, "execute", counted)
            return pipe

        monkeypatch.setattr(client, "pipeline", pipeline)


async def test_commands_issued_together_share_one_pipeline(
    client: Redis, keys: Keyspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipelines = CountingPipelines(client, monkeypatch)
    coalescer = Coalescer(client)
    names = [f"{keys.prefix}:k{i}" for i in range(8)]

    replies = await asyncio.gather(*(coalescer.execute("SET", n, i) for i, n in enumerate(names)))

    assert replies == [True] * 8
    assert pipelines.sizes == [8]
    assert [await client.get(n) for n in names] == [str(i).encode() for i in range(8)]


async def test_a_pipeline_holds_at_most_max_calls_and_the_rest_go_in_more(
    client: Redis, keys: Keyspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipelines = CountingPipelines(client, monkeypatch)
    coalescer = Coalescer(client)
    calls = [
        coalescer.execute_many(("SET", f"{keys.prefix}:a{i}", i), ("SET", f"{keys.prefix}:b{i}", i))
        for i in range(MAX_CALLS * 2 + 1)
    ]

    replies = await asyncio.gather(*calls)

    assert replies == [[True, True]] * (MAX_CALLS * 2 + 1)
    assert sorted(pipelines.sizes) == [2, MAX_CALLS * 2, MAX_CALLS * 2]  # commands in each
    assert await client.get(f"{keys.prefix}:b{MAX_CALLS * 2}") == str(MAX_CALLS * 2).encode()


async def test_a_lone_command_goes_out_on_its_own(
    client: Redis, keys: Keyspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipelines = CountingPipelines(client, monkeypatch)
    coalescer = Coalescer(client)

    assert await coalescer.execute("SET", f"{keys.prefix}:a", "1") is True
    assert await coalescer.execute("GET", f"{keys.prefix}:a") == b"1"
    assert pipelines.sizes == []


async def test_a_failing_command_fails_alone(client: Redis, keys: Keyspace) -> None:
    coalescer = Coalescer(client)
    text, other = f"{keys.prefix}:text", f"{keys.prefix}:other"
    await client.set(text, "not a number")

    replies = await asyncio.gather(
        coalescer.execute("SET", other, "1"),
        coalescer.execute("INCR", text),
        coalescer.execute("INCR", other),
        return_exceptions=True,
    )

    assert replies[0] is True
    assert isinstance(replies[1], ResponseError)
    assert replies[2] == 2


async def test_a_command_cancelled_before_it_is_sent_is_not_sent(
    client: Redis, keys: Keyspace
) -> None:
    coalescer = Coalescer(client)
    kept, dropped = f"{keys.prefix}:kept", f"{keys.prefix}:dropped"
    sending = asyncio.ensure_future(coalescer.execute("SET", dropped, "1"))
    keeping = asyncio.ensure_future(coalescer.execute("SET", kept, "1"))
    await asyncio.sleep(0)  # both are waiting for the loop's next turn
    sending.cancel()

    assert await keeping is True
    with pytest.raises(asyncio.CancelledError):
        await sending
    assert await client.exists(dropped) == 0


async def test_a_connection_error_reaches_every_caller() -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    client = redis.asyncio.Redis(port=port, retry=None)
    coalescer = Coalescer(client)
    try:
        replies = await asyncio.gather(
            *(coalescer.execute("GET", f"k{i}") for i in range(3)), return_exceptions=True
        )
    finally:
        await client.aclose()

    assert all(isinstance(r, RedisConnectionError) for r in replies), replies


async def test_a_pipeline_that_gets_no_connection_fails_its_callers_once(
    redis_url: str, keys: Keyspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A busy pool's refusal is no lost reply: nothing is sent again, each command alone, to
    wait on the same busy pool."""
    pool = redis.asyncio.BlockingConnectionPool.from_url(redis_url, max_connections=2, timeout=0.3)
    client = redis.asyncio.Redis.from_pool(pool)
    taken = [await pool.get_connection() for _ in range(2)]  # both connections are taken
    sent_alone = 0
    execute = client.execute_command

    async def counted(*args: Any, **options: Any) -> Any:
        nonlocal sent_alone
        sent_alone += 1
        return await execute(*args, **options)

    monkeypatch.setattr(client, "execute_command", counted)
    coalescer = Coalescer(client)
    try:
        replies = await asyncio.gather(
            *(coalescer.execute("GET", f"{keys.prefix}:k{i}") for i in range(4)),
            return_exceptions=True,
        )
    finally:
        for connection in taken:
            await pool.release(connection)
        await client.aclose()
    assert all(isinstance(r, RedisConnectionError) for r in replies), replies
    assert sent_alone == 0


async def test_appends_sent_together_after_a_script_flush_all_land(
    store: RedisEventStore, client: Redis
) -> None:
    threads = [f"flushed-{i}" for i in range(6)]
    await client.script_flush()
    assert await client.script_exists(APPEND.sha) == [False]

    results = await asyncio.gather(*(store.append(t, [started(t)], 0) for t in threads))

    assert [r.last_version for r in results] == [1] * 6
    for t in threads:
        assert (await store.verify(t)).ok


async def test_appends_to_one_thread_sent_together_have_one_winner(
    store: RedisEventStore,
) -> None:
    await store.append("race", [started("race")], 0)

    results = await asyncio.gather(
        *(store.append("race", [posted("race", f"m{i}", None)], 1) for i in range(5)),
        return_exceptions=True,
    )

    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert sum(isinstance(r, ConcurrencyError) for r in results) == 4
    assert (await store.verify("race")).ok


async def test_a_group_with_a_failing_command_raises_and_the_rest_still_ran(
    client: Redis, keys: Keyspace
) -> None:
    coalescer = Coalescer(client)
    text, after = f"{keys.prefix}:text", f"{keys.prefix}:after"
    await client.set(text, "not a number")

    with pytest.raises(ResponseError):
        await coalescer.execute_many(("INCR", text), ("SET", after, "1"))

    assert await client.get(after) == b"1"


async def test_no_commands_are_answered_at_once(client: Redis) -> None:
    assert await Coalescer(client).execute_many() == []


async def test_a_command_the_pipeline_cannot_encode_fails_alone(
    client: Redis, keys: Keyspace
) -> None:
    coalescer = Coalescer(client)
    a, b, c = (f"{keys.prefix}:{name}" for name in "abc")

    replies = await asyncio.gather(
        coalescer.execute("SET", a, "1"),
        coalescer.execute("SET", b, None),  # redis-py refuses None before sending anything
        coalescer.execute("SET", c, "1"),
        return_exceptions=True,
    )

    assert replies[0] is True
    assert replies[2] is True
    assert isinstance(replies[1], DataError)
    assert await client.exists(a, c) == 2


async def test_a_send_cancelled_before_it_ran_cancels_its_callers_and_leaves_no_stuck_batch(
    client: Redis, keys: Keyspace
) -> None:
    coalescer = Coalescer(client)
    first = asyncio.ensure_future(coalescer.execute("SET", f"{keys.prefix}:a", "1"))
    await asyncio.sleep(0)  # its command is queued; the task that sends it has not run yet
    for task in list(coalescer._sending):  # as the loop's shutdown cancels every task
        task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await first
    assert await asyncio.wait_for(coalescer.execute("PING"), 5) is True


BIG = b"x" * 200_000


@contextlib.asynccontextmanager
async def cut_cluster(
    cluster_url: str, keys: Keyspace, *, hold: float = 0.0
) -> AsyncIterator[tuple[Redis, ReplyCutter, str, str]]:
    """A cluster client behind cutting proxies, a big value (whose reply is cut) and a small
    one on another node."""
    direct = client_for(cluster_url)
    await direct.ping()
    big, small = f"{keys.prefix}:{{a}}:big", f"{keys.prefix}:{{b}}:small"  # two nodes
    await direct.set(big, BIG)
    await direct.set(small, b"1")
    ports = {node.port for node in direct.get_nodes()}
    try:
        async with ReplyCutter(ports, marker=b"$200000\r\n", hold=hold) as cutter:
            host, port = cluster_url.partition("://")[2].split(":")
            proxied = redis.asyncio.cluster.RedisCluster(
                host=host, port=int(port), address_remap=cutter.remap
            )
            try:
                await proxied.ping()
                yield proxied, cutter, big, small
            finally:
                await proxied.aclose()
    finally:
        await direct.delete(big, small)
        await direct.aclose()


async def test_a_cluster_reply_cut_in_a_shared_pipeline_is_asked_for_again(
    cluster_url: str, keys: Keyspace
) -> None:
    """A cluster pipeline hands a connection lost mid-reply to its command unretried; the
    coalescer sends that command again by itself, retried as any lone command is."""
    async with cut_cluster(cluster_url, keys) as (proxied, cutter, big, small):
        cutter.armed = True
        alone = await asyncio.gather(
            Coalescer(proxied).execute("GET", big), Coalescer(proxied).execute("GET", small)
        )
        coalescer = Coalescer(proxied)
        cutter.armed = True
        together = await asyncio.gather(
            coalescer.execute("GET", big), coalescer.execute("GET", small)
        )
    assert cutter.cut == 2
    assert alone == together == [BIG, b"1"]


async def test_callers_whose_replies_came_are_not_held_by_a_command_sent_again(
    cluster_url: str, keys: Keyspace
) -> None:
    answered: list[str] = []
    async with cut_cluster(cluster_url, keys, hold=0.5) as (proxied, cutter, big, small):
        coalescer = Coalescer(proxied)

        async def get(name: str, key: str) -> bytes:
            reply = cast(bytes, await coalescer.execute("GET", key))
            answered.append(name)
            return reply

        cutter.armed = True
        replies = await asyncio.gather(get("cut", big), get("came", small))
    assert cutter.cut == 1
    assert replies == [BIG, b"1"]
    assert answered == ["came", "cut"]  # the cut one went again, on a connection held 0.5 s


async def test_a_callers_cut_commands_go_again_in_their_order(
    cluster_url: str, keys: Keyspace
) -> None:
    async with cut_cluster(cluster_url, keys) as (proxied, cutter, big, small):
        stream = f"{keys.prefix}:{{a}}:stream"  # beside `big`: its commands follow the cut
        cutter.armed = True
        replies, other = await asyncio.gather(
            Coalescer(proxied).execute_many(
                ("GET", big),
                ("DEL", stream),
                ("XADD", stream, "*", "f", "v"),
                ("EXPIRE", stream, 100),
            ),
            Coalescer(proxied).execute("GET", small),
        )
        ttl = await proxied.ttl(stream)
        await proxied.delete(stream)
    assert cutter.cut == 1
    assert replies[0] == BIG
    assert other == b"1"
    assert 0 < ttl <= 100  # the EXPIRE came after the XADD that made the stream


class ReplyCutter:
    """A proxy before every node of a cluster that, when armed, cuts the first reply carrying
    `marker` halfway; connections made after a cut wait `hold` seconds."""

    def __init__(self, ports: set[int], marker: bytes, hold: float = 0.0) -> None:
        self.ports, self.marker, self.hold = ports, marker, hold
        self.armed, self.cut = False, 0
        self._proxies: dict[int, int] = {}
        self._servers: list[asyncio.Server] = []

    def remap(self, address: tuple[str, int]) -> tuple[str, int]:
        return address[0], self._proxies.get(address[1], address[1])

    async def __aenter__(self) -> ReplyCutter:
        for port in self.ports:
            server = await asyncio.start_server(self._handler(port), "127.0.0.1", 0)
            self._servers.append(server)
            self._proxies[port] = server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for server in self._servers:
            server.close()
            await server.wait_closed()

    def _handler(self, port: int) -> Any:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if self.cut:
                await asyncio.sleep(self.hold)  # a connection made after a cut is slow
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
            await asyncio.gather(
                self._pipe(reader, up_writer, cutting=False),
                self._pipe(up_reader, writer, cutting=True),
            )

        return handle

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, cutting: bool
    ) -> None:
        try:
            while data := await reader.read(65536):
                if cutting and self.armed and self.marker in data:
                    self.armed, self.cut = False, self.cut + 1
                    writer.write(data[: data.index(self.marker) + 1000])
                    await writer.drain()
                    writer.transport.abort()
                    return
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
