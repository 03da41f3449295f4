"""Guarded append vs a bare XADD of the same events, same client, same concurrency, one run.

    python bench/append.py [--events N] [--concurrency C] [--rounds R]

Uses REDIS_URL if set, else the embedded Redis in a temporary directory. Each round times the
bare XADD and then the guarded append back to back; the round with the median ratio is printed,
one JSON line per batch size: events/s of the guarded append (`value`), of the bare XADD
(`baseline`), and their ratio (goal >= 0.8). For batch=1 a second line, for reference (goal
null), compares with the same XADDs sent through the store's coalescer, as the appends are.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

from common import bench_store, emit, exchange, run_with_redis, started

from events.coalesce import Coalescer
from events.keys import Keyspace
from events.schema import (
    AnyEvent,
    encode,
    tag_of,
)
from events.store import Redis, RedisEventStore

QUESTION = "Could you explain how optimistic concurrency works in an event store? " * 3
ANSWER = "Each append states the version it expects; if another writer got there first... " * 6


def batches(thread: str, count: int, size: int) -> list[list[AnyEvent]]:
    events = [
        e for i in range((count * size + 1) // 2 + 1) for e in exchange(thread, i, QUESTION, ANSWER)
    ]
    return [events[i * size : (i + 1) * size] for i in range(count)]


async def guarded(
    store: RedisEventStore, prefix: str, writers: int, per_writer: int, size: int
) -> float:
    async def writer(w: int) -> None:
        thread = f"{prefix}-g{w}"
        version = (await store.append(thread, [started(thread)], 0)).last_version
        work = batches(thread, per_writer, size)
        await ready.wait()
        for batch in work:
            version = (await store.append(thread, batch, version)).last_version

    ready = Start(writers)
    return await _timed(writers, writer, ready)


async def bare(
    client: Redis,
    keys: Keyspace,
    prefix: str,
    writers: int,
    per_writer: int,
    size: int,
    *,
    coalesced: bool = False,
) -> float:
    xadd = Coalescer(client).execute if coalesced else client.execute_command

    async def writer(w: int) -> None:
        thread = f"{prefix}-b{w}"
        key = keys.stream(thread)
        work = batches(thread, per_writer, size)
        await ready.wait()
        for batch in work:
            if size == 1:
                event = batch[0]
                await xadd("XADD", key, "*", "type", tag_of(event), "data", encode(event))
                continue
            pipe = client.pipeline(transaction=False)
            for event in batch:
                pipe.xadd(key, {"type": tag_of(event), "data": encode(event)})
            await pipe.execute()

    ready = Start(writers)
    return await _timed(writers, writer, ready)


class Start:
    """A barrier: the clock starts once every writer has prepared its work."""

    def __init__(self, writers: int) -> None:
        self.waiting = writers
        self.all_prepared = asyncio.Event()
        self.go = asyncio.Event()

    async def wait(self) -> None:
        self.waiting -= 1
        if self.waiting == 0:
            self.all_prepared.set()
        await self.go.wait()


async def _timed(writers: int, writer: Callable[[int], Awaitable[None]], start: Start) -> float:
    tasks = [asyncio.ensure_future(writer(w)) for w in range(writers)]
    await start.all_prepared.wait()
    begin = time.perf_counter()
    start.go.set()
    await asyncio.gather(*tasks)
    return time.perf_counter() - begin


async def run(url: str, events: int, concurrency: int, rounds: int) -> None:
    async with bench_store(url, max_connections=concurrency * 2) as store:
        client, keys = store.redis, store.keys
        for size in (1, 4):
            per_writer = max(1, events // (concurrency * size))
            total = per_writer * concurrency * size
            pairs, alike = [], []
            for r in range(rounds):  # back to back, so all see the same machine
                secs = await bare(client, keys, f"r{r}s{size}", concurrency, per_writer, size)
                baseline = total / secs
                secs = await guarded(store, f"r{r}s{size}", concurrency, per_writer, size)
                pairs.append((total / secs / baseline, total / secs, baseline))
                if size == 1:
                    secs = await bare(
                        client, keys, f"r{r}c", concurrency, per_writer, size, coalesced=True
                    )
                    alike.append((pairs[-1][1] * secs / total, pairs[-1][1], total / secs))
            # The goal's line, and for reference (no goal) the same XADDs sent through the
            # coalescer the store uses: what the append costs beyond the round trips it shares.
            lines = [
                (f"batch={size}", pairs, ">= 0.8"),
                (f"batch={size}, XADDs coalesced", alike, None),
            ]
            for case, rows, goal in lines:
                if not rows:
                    continue
                ratio, value, baseline = statistics.median(rows)  # the median round, by ratio
                emit(
                    bench="append",
                    case=case,
                    value=round(value),
                    baseline=round(baseline),
                    unit="events/s",
                    ratio=round(ratio, 3),
                    goal=goal,
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    run_with_redis(lambda url: run(url, args.events, args.concurrency, args.rounds))


if __name__ == "__main__":
    main()
