"""`coda serve` as a user starts it: a real process, the embedded Redis, the development key."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

_START_TIMEOUT = 30.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`coda serve` in its own process on the embedded Redis in `tmp_path/.coda`."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.startswith("CODA_")}
    env["CODA_DATA_DIR"] = str(tmp_path / ".coda")
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port)],
        cwd=Path(__file__).parents[2],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + _START_TIMEOUT
        while True:  # the server's own checkpoint: it answers /healthz
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                output = process.stdout.read() if process.stdout else b""
                raise RuntimeError(f"coda serve did not start: {output!r}")
            time.sleep(0.1)
        yield url, tmp_path / ".coda"
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def test_serve_makes_a_development_key_and_takes_a_turn(served: tuple[str, Path]) -> None:
    url, data_dir = served
    key_file = data_dir / "dev-key"
    key = key_file.read_text().strip()
    auth = {"Authorization": f"Bearer {key}"}
    thread = httpx.post(f"{url}/v1/threads", json={"title": "hi"}, headers=auth).json()
    turn = httpx.post(
        f"{url}/v1/threads/{thread['id']}/messages",
        json={"content": "hello there"},
        headers=auth,
        timeout=30,
    )
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert httpx.get(f"{url}/readyz").json() == {"status": "ready"}
    assert turn.status_code == 200
    assert turn.json()["reply"]["kind"] == "answer"
