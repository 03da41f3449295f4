"""Two projector processes sharing a view's work, on a real Redis and on the cluster."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from events.keys import Keyspace
from events.store import Redis, RedisEventStore
from tests.conftest import SEAL_KEY
from tests.projections.test_projector import THREADS, assert_view_is_the_fold, converse

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["redis", "cluster"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def projector_process(url: str, keys: Keyspace, data_dir: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "REDIS_URL": url,
        "CODA_KEY_PREFIX": keys.prefix,
        "CODA_SEAL_KEY": SEAL_KEY.decode(),
        "CODA_DATA_DIR": str(data_dir),
    }
    command = [sys.executable, "-m", "service.cli", "project", "--once"]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


async def test_two_projector_processes_keep_every_thread_in_order_and_count_once(
    store: RedisEventStore,
    client: Redis,
    keys: Keyspace,
    backend: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    url = request.getfixturevalue("redis_url" if backend == "redis" else "cluster_url")
    for thread in THREADS:
        await converse(store, thread)

    workers = [projector_process(url, keys, tmp_path) for _ in range(2)]
    outcomes = [worker.communicate(timeout=60) for worker in workers]

    assert [w.returncode for w in workers] == [0, 0], outcomes
    await assert_view_is_the_fold(store, client, "live", THREADS)
