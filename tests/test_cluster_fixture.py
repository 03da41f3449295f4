from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.cluster import RedisCluster

from events.embedded import find_redis_server
from tests.servers import ClusterProcesses, start_cluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ClusterProcesses]:
    started = start_cluster(find_redis_server(), tmp_path)
    yield started
    started.stop()


def test_cluster_client_reads_back_keys_stored_on_every_node(cluster: ClusterProcesses) -> None:
    client = RedisCluster.from_url(cluster.url, decode_responses=True)
    try:
        key_on = one_key_per_node(client)
        assert set(key_on) == set(cluster.ports)
        for key in key_on.values():
            client.set(key, f"value of {key}")
        assert [client.get(key) for key in key_on.values()] == [
            f"value of {key}" for key in key_on.values()
        ]
    finally:
        client.close()


def one_key_per_node(client: RedisCluster) -> dict[int, str]:
    key_on: dict[int, str] = {}
    for number in range(100):
        key = f"key:{number}"
        key_on.setdefault(client.get_node_from_key(key).port, key)
    return key_on


def test_stop_leaves_no_node_running(tmp_path: Path) -> None:
    cluster = start_cluster(find_redis_server(), tmp_path)
    cluster.stop()
    cluster.stop()
    assert [process.poll() is not None for process in cluster.processes] == [True] * 3
