"""`coda serve` in a process of its own, as a user starts it, for tests that need real servers."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

_START_TIMEOUT = 30.0
_ROOT = Path(__file__).parents[1]


@dataclass
class Served:
    url: str
    data_dir: Path
    process: subprocess.Popen[bytes]

    def key(self) -> str:
        """The development key the server made on its first start."""
        return (self.data_dir / "dev-key").read_text().strip()

    def kill(self) -> None:
        """Die at once, as a crashed process does: nothing is cleaned up."""
        self.process.kill()
        self.process.wait()


@contextlib.contextmanager
def serve_coda(data_dir: Path, env: Mapping[str, str] = {}) -> Iterator[Served]:
    """`coda serve` on a free port, its data in `data_dir`, with `env` on top of a clean
    environment (no REDIS_URL or CODA_* unless given: the embedded Redis by default)."""
    port = _free_port()
    clean = {k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.startswith("CODA_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port)],
        cwd=_ROOT,
        env={**clean, "CODA_DATA_DIR": str(data_dir), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    served = Served(f"http://127.0.0.1:{port}", data_dir, process)
    try:
        _wait_until_healthy(served)
        yield served
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()


def _wait_until_healthy(served: Served) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    while True:  # the server's own checkpoint: it answers /healthz
        try:
            if httpx.get(f"{served.url}/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        if served.process.poll() is not None or time.monotonic() > deadline:
            output = served.process.stdout.read() if served.process.stdout else b""
            raise RuntimeError(f"coda serve did not start: {output!r}")
        time.sleep(0.1)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
