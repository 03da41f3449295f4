"""Full turns/s through `coda serve` against a bare Starlette endpoint doing as many XADDs.

    python bench/http_turn.py [--clients C] [--seconds S] [--rounds R] [--per-thread T]

coda: one `coda serve` process (uvicorn, one worker, the rule classifier, the scripted model
with no delay, the projector elsewhere), C clients each taking turns on a thread of its own:
POST .../messages, answered as JSON once the reply is recorded; after `--per-thread` turns (20,
a long chat) a client starts a new thread, whose creation is timed but not counted. The
baseline: a bare Starlette app under the same uvicorn, on the same Redis, whose one endpoint
does one XADD per event a coda turn appends (four) and answers JSON, driven by the same C
clients. Both servers run as
processes of their own and take turns being measured, S seconds each, R rounds; the round
with the median ratio is printed: turns/s (`value`), the baseline's requests/s (`baseline`),
and their ratio (goal >= 0.5). Uses REDIS_URL if set, else the embedded Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from common import emit

from events.embedded import EmbeddedRedis

ROOT = Path(__file__).resolve().parents[1]
EVENTS_PER_TURN = 4  # message.posted, message.classified, reply.started, reply.completed
MESSAGES = [
    "can you help me plan a weekend trip to lisbon?",
    "what's a good way to learn rust if i know python",
    "explain how optimistic concurrency works",
    "how do I kill a python process that hangs",
    "write a haiku about autumn rain",
]


def bare_app(url: str, prefix: str) -> object:
    """The baseline: an endpoint that XADDs what one turn appends, one command each."""
    import redis.asyncio
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    client = redis.asyncio.Redis.from_url(url)
    payload = {b"type": b"message.posted", b"data": b"x" * 200}

    async def turn(request: Request) -> JSONResponse:
        body = await request.json()
        key = f"{prefix}:bare:{request.path_params['thread']}"
        for _ in range(EVENTS_PER_TURN):
            await client.xadd(key, payload)
        return JSONResponse({"content": body["content"], "events": EVENTS_PER_TURN})

    return Starlette(routes=[Route("/bare/{thread}", turn, methods=["POST"])])


@contextlib.contextmanager
def server(command: list[str], env: dict[str, str], port: int) -> Iterator[str]:
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"{command[:4]} exited: {process.stderr.read().decode()[-2000:]}"
                )  # type: ignore[union-attr]
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/healthz", timeout=1).status_code in (200, 404):
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{command[:4]} did not start")
            time.sleep(0.1)
        yield base
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def drive(
    base: str, paths: list[str], headers: dict[str, str], seconds: float, per_thread: int = 0
) -> int:
    """Turns completed by len(paths) clients, each posting turns to its path, in `seconds`;
    with `per_thread`, a client starts a new thread (POST /v1/threads) after so many turns.

    Each client is one keep-alive HTTP/1.1 connection spoken over asyncio streams: a general
    client (httpx) costs more CPU per request than the servers measured, and at 32 clients
    on two cores it, not the server, would set the pace."""
    host, _, port = base.removeprefix("http://").partition(":")
    stop = time.monotonic() + seconds
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())

    async def client(path: str) -> int:
        reader, writer = await asyncio.open_connection(host, int(port))

        async def post(path: str, sent: object) -> bytes:
            body = json.dumps(sent).encode()
            writer.write(
                f"POST {path} HTTP/1.1\r\nHost: {host}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                f"{extra}\r\n".encode()
                + body
            )
            status = int((await reader.readline()).split()[1])
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            answer = await reader.readexactly(length)
            if status >= 400:
                raise RuntimeError(f"{path}: {status} {answer[:300]!r}")
            return answer

        done = 0
        try:
            while time.monotonic() < stop:
                if per_thread and done and done % per_thread == 0:
                    thread = json.loads(await post("/v1/threads", {}))["id"]
                    path = f"/v1/threads/{thread}/messages"
                await post(path, {"content": MESSAGES[done % len(MESSAGES)]})
                done += 1
        finally:
            writer.close()
        return done

    return sum(await asyncio.gather(*(client(p) for p in paths)))


def new_threads(base: str, headers: dict[str, str], count: int) -> list[str]:
    with httpx.Client(base_url=base, headers=headers, timeout=30) as http:
        return [
            http.post("/v1/threads", json={}).raise_for_status().json()["id"] for _ in range(count)
        ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(url: str, args: argparse.Namespace, data_dir: Path) -> None:
    prefix = f"bench-http-{os.getpid()}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CODA_")},
        "REDIS_URL": url,
        "CODA_KEY_PREFIX": prefix,
        "CODA_DATA_DIR": str(data_dir),
        "CODA_SCRIPTED_DELAY": "0",
        "CODA_LIMIT_TURNS_PER_MINUTE": "100000000",
    }
    coda_port, bare_port = free_port(), free_port()
    coda_cmd = [sys.executable, "-m", "service.cli", "serve", "--port", str(coda_port)]
    coda_cmd += ["--no-projector", "--no-access-log"]  # the baseline logs no requests either
    bare_cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "http_turn:baseline",
        "--port",
        str(bare_port),
        "--log-level",
        "warning",
        "--app-dir",
        str(ROOT / "bench"),
    ]
    with server(coda_cmd, env, coda_port) as coda, server(bare_cmd, env, bare_port) as bare:
        auth = {"Authorization": f"Bearer {(data_dir / 'dev-key').read_text().strip()}"}

        def fresh() -> list[str]:  # every round starts new conversations, made untimed
            return [f"/v1/threads/{t}/messages" for t in new_threads(coda, auth, args.clients)]

        bare_paths = [f"/bare/{i}" for i in range(args.clients)]
        asyncio.run(drive(coda, fresh(), auth, 1.0, args.per_thread))  # warm both up
        asyncio.run(drive(bare, bare_paths, {}, 1.0))
        rounds = []
        for _ in range(args.rounds):
            paths = fresh()
            taken = asyncio.run(drive(coda, paths, auth, args.seconds, args.per_thread))
            turns = taken / args.seconds
            xadds = asyncio.run(drive(bare, bare_paths, {}, args.seconds)) / args.seconds
            rounds.append((turns / xadds, turns, xadds))
        ratio, turns, xadds = sorted(rounds)[len(rounds) // 2]
        emit(
            bench="http_turn",
            case=f"{args.clients} clients, JSON turns",
            value=round(turns, 1),
            baseline=round(xadds, 1),
            unit="turns/s",
            ratio=round(ratio, 3),
            goal=">= 0.5",
            rounds=[round(r[0], 3) for r in rounds],
            spread=round(statistics.pstdev(r[0] for r in rounds), 3),
        )
    import redis

    with redis.Redis.from_url(url) as client:
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            client.delete(key)


def baseline() -> object:
    """uvicorn's factory for the baseline app (it reads where Redis is from the environment)."""
    return bare_app(os.environ["REDIS_URL"], os.environ["CODA_KEY_PREFIX"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--per-thread", type=int, default=20, help="turns a conversation has (0: no limit)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if url := os.environ.get("REDIS_URL"):
            run(url, args, Path(tmp))
            return
        with EmbeddedRedis(Path(tmp) / "redis") as redis_server:
            run(redis_server.url, args, Path(tmp) / "coda")


if __name__ == "__main__":
    main()
