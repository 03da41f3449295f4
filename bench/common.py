"""What the benchmarks share: where Redis is, a store under a private prefix, the JSON line."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from events.connect import client_for
from events.embedded import EmbeddedRedis
from events.keys import Keyspace
from events.schema import AnyEvent, MessagePosted, PolicyRef, ReplyCompleted, ThreadStarted
from events.store import RedisEventStore

SEAL_KEY = b"bench-seal-key-0123456789abcdef-0123"


def run_with_redis(run: Callable[[str], Coroutine[Any, Any, None]]) -> None:
    """Run `run(url)` against REDIS_URL if set, else an embedded Redis in a temporary dir."""
    if url := os.environ.get("REDIS_URL"):
        asyncio.run(run(url))
        return
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp)) as server:
        asyncio.run(run(server.url))


@asynccontextmanager
async def bench_store(url: str, **client_options: Any) -> AsyncIterator[RedisEventStore]:
    """A store under a prefix of this run's own, whose keys are deleted afterwards."""
    client = client_for(url, **client_options)
    keys = Keyspace(prefix=f"bench-{os.getpid()}")
    try:
        yield RedisEventStore(client, keys, SEAL_KEY)
    finally:
        async for key in client.scan_iter(match=f"{keys.prefix}:*", count=1000):
            await client.delete(key)
        await client.aclose()


def emit(**fields: Any) -> None:
    """One result line: bench, case, value, baseline, unit, ratio, goal (and any notes)."""
    print(json.dumps(fields), flush=True)


def started(thread: str, owner: str = "bench") -> ThreadStarted:
    """The first event of a benchmark thread."""
    return ThreadStarted(
        thread_id=thread,
        actor="user",
        tenant="bench",
        owner=owner,
        model="scripted",
        policy=PolicyRef(name="ladder", version="1"),
    )


def exchange(thread: str, i: int, question: str, answer: str) -> list[AnyEvent]:
    """Turn i of a thread: user message m{i} below reply r{i-1} (the root for i = 0), and r{i}."""
    m, r = f"m{i}", f"r{i}"
    return [
        MessagePosted(
            thread_id=thread,
            actor="user",
            message_id=m,
            parent_id=f"r{i - 1}" if i else None,
            content=question,
        ),
        ReplyCompleted(
            thread_id=thread,
            actor="model",
            message_id=r,
            parent_id=m,
            content=answer,
            kind="answer",
            content_sha256="0" * 64,
        ),
    ]
