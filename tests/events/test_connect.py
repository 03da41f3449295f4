"""Connecting: the embedded Redis by default, URLs and cluster URLs, and the startup checks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from events.connect import RedisSettings, check_node, client_for, open_store
from events.embedded import EmbeddedRedis
from events.errors import EventStoreError, StoreConfigError, StoreUnavailableError
from events.keys import Keyspace
from events.schema import new_id
from events.store import RedisEventStore
from tests.factories import ended, posted, replied, started

pytestmark = pytest.mark.anyio

T = "t1"


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A Redis of this test's own, whose settings it may change."""
    with EmbeddedRedis(tmp_path / "redis") as server:
        yield server


def config_set(server: EmbeddedRedis, name: str, value: str) -> None:
    with redis.Redis(unix_socket_path=str(server.socket_path)) as r:
        r.config_set(name, value)


async def test_with_no_url_an_embedded_redis_keeps_events_across_restarts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CODA_SEAL_KEY", raising=False)
    settings = RedisSettings(data_dir=tmp_path / "data")
    async with open_store(settings) as store:
        await store.append(T, [started(T)], 0)
        await store.append(T, [posted(T, "m1", None), replied(T, "r1", "m1"), ended(T, "r1")], 1)

    async with open_store(settings) as store:
        report = await store.verify(T)
        assert (report.ok, report.version, report.seals_checked) == (True, 4, 1), report
    assert (tmp_path / "data" / "appendonlydir").exists() or (
        tmp_path / "data" / "appendonly.aof"
    ).exists()


async def test_a_redis_that_may_evict_keys_is_refused(
    private_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    config_set(private_redis, "maxmemory-policy", "allkeys-lru")
    settings = RedisSettings(url=private_redis.url, data_dir=tmp_path)
    with pytest.raises(StoreConfigError, match="maxmemory-policy is allkeys-lru"):
        async with open_store(settings):
            pass


async def test_a_redis_without_append_only_persistence_is_a_warning(
    private_redis: EmbeddedRedis, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config_set(private_redis, "appendonly", "no")
    settings = RedisSettings(url=private_redis.url, data_dir=tmp_path)
    with caplog.at_level(logging.WARNING, logger="coda.redis"):
        async with open_store(settings):
            pass
    assert "append-only persistence is off" in caplog.text


async def test_a_different_partition_count_is_refused(
    private_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    async with open_store(RedisSettings(url=private_redis.url, data_dir=tmp_path)):
        pass
    settings = RedisSettings(url=private_redis.url, data_dir=tmp_path, partitions=32)
    with pytest.raises(StoreConfigError, match="uses 64 partitions, not 32"):
        async with open_store(settings):
            pass


async def test_a_cluster_url_connects_to_every_primary(cluster_url: str, tmp_path: Path) -> None:
    prefix = f"connect-test-{new_id()}"
    settings = RedisSettings(url=cluster_url, data_dir=tmp_path, prefix=prefix)
    async with open_store(settings) as store:
        try:
            nodes = set()
            for i in range(20):  # threads on every node
                thread = f"c{i}"
                await store.append(thread, [started(thread)], 0)
                assert (await store.verify(thread)).ok
                node = store.redis.get_node_from_key(store.keys.stream(thread))  # type: ignore[union-attr]
                nodes.add(node.name)
            assert len(nodes) == 3
        finally:
            async for key in store.redis.scan_iter(match=f"{prefix}:*"):
                await store.redis.delete(key)


async def test_a_redis_out_of_memory_refuses_the_append_and_writes_nothing(
    private_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    settings = RedisSettings(url=private_redis.url, data_dir=tmp_path)
    async with open_store(settings) as store:
        await store.append(T, [started(T)], 0)
        config_set(private_redis, "maxmemory", "1")
        try:
            with pytest.raises(EventStoreError, match="OOM"):
                await store.append(T, [posted(T, "m1", None)], 1)
        finally:
            config_set(private_redis, "maxmemory", "0")
        assert [e.version for e in await store.read(T)] == [1]
        assert (await store.verify(T)).ok


def test_settings_come_from_the_environment() -> None:
    settings = RedisSettings.from_env(
        {
            "REDIS_URL": "redis://example:6380/2",
            "CODA_REDIS_CLUSTER": "yes",
            "CODA_DATA_DIR": "/var/lib/coda",
            "CODA_APPENDFSYNC": "always",
            "CODA_KEY_PREFIX": "prod",
            "CODA_PARTITIONS": "128",
            "CODA_REDIS_MAX_CONNECTIONS": "16",
        }
    )
    assert settings == RedisSettings(
        url="redis://example:6380/2",
        cluster=True,
        data_dir=Path("/var/lib/coda"),
        appendfsync="always",
        prefix="prod",
        partitions=128,
        max_connections=16,
    )
    assert settings.keys == Keyspace(prefix="prod", partitions=128)


def test_a_bad_partition_count_in_the_environment_is_a_clear_error() -> None:
    with pytest.raises(StoreConfigError, match="CODA_PARTITIONS must be a whole number"):
        RedisSettings.from_env({"CODA_PARTITIONS": "many"})


@pytest.mark.parametrize("bad", ["1", "0", "many", "-4", ""])
def test_a_bad_connection_count_in_the_environment_is_a_clear_error(bad: str) -> None:
    with pytest.raises(StoreConfigError, match="CODA_REDIS_MAX_CONNECTIONS"):
        RedisSettings.from_env({"CODA_REDIS_MAX_CONNECTIONS": bad})


async def test_a_bounded_client_waits_for_a_free_connection_rather_than_open_more(
    redis_url: str,
) -> None:
    name = f"bounded-{new_id()}"
    client = client_for(redis_url, max_connections=2, client_name=name)
    watcher = client_for(redis_url)
    try:
        blocked = [client.blpop(f"test-{new_id()}", timeout=1) for _ in range(2)]
        answers = await asyncio.gather(*blocked, client.ping())  # the ping waits its turn
        opened = [c for c in await watcher.client_list() if c.get("name") == name]
        assert answers[-1] is True
        assert len(opened) == 2
    finally:
        await client.aclose()
        await watcher.aclose()


async def test_a_cluster_scheme_selects_the_cluster_client() -> None:
    single = client_for("redis://127.0.0.1:1")
    cluster = client_for("redis+cluster://127.0.0.1:1")
    assert type(single).__name__ == "Redis"
    assert type(cluster).__name__ == "RedisCluster"
    await single.aclose()
    await cluster.aclose()


@pytest.mark.parametrize("version", ["6.0.16", "5.0.14", "garbage"])
def test_a_redis_older_than_6_2_is_refused(version: str) -> None:
    info = {"redis_version": version, "maxmemory_policy": "noeviction", "aof_enabled": 1}
    with pytest.raises(StoreConfigError, match=f"Redis {version} is too old"):
        check_node("node-1", info)


@pytest.mark.parametrize("version", ["6.2.14", "7.0.15", "7.4.0", "8.0.2"])
def test_redis_6_2_and_newer_pass(version: str) -> None:
    check_node("node-1", {"redis_version": version, "aof_enabled": 1})


async def test_an_unreachable_redis_is_store_unavailable() -> None:
    client = client_for("redis://127.0.0.1:1", retry=None)
    store = RedisEventStore(client, Keyspace(prefix="nowhere"), b"k" * 32)
    try:
        with pytest.raises(StoreUnavailableError, match="Redis unavailable"):
            await store.append(T, [started(T)], 0)
    finally:
        await client.aclose()


async def test_data_of_another_storage_format_is_refused(
    private_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    settings = RedisSettings(url=private_redis.url, data_dir=tmp_path)
    async with open_store(settings) as store:
        await store.redis.hset(store.keys.config, "format", "0")
    with pytest.raises(StoreConfigError, match="in storage format 0; this version"):
        async with open_store(settings):
            pass
