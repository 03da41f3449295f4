"""Projector catch-up against a raw XREADGROUP + XACK loop over the same feed, in one run.

    python bench/consume.py [--threads N] [--turns M] [--rounds R]

Uses REDIS_URL if set, else the embedded Redis in a temporary directory. Writes N threads of M
exchanges, then each round times (a) a new consumer group that reads every partition in batches
and acknowledges, doing nothing else, and (b) the projector catching a new view up from zero,
both over the whole feed. Prints one JSON line for the round with the median ratio: events/s
of each and their ratio (projector / raw, goal >= 0.7), with every round's ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

from common import bench_store, emit, exchange, run_with_redis, started

from events.keys import Keyspace
from events.store import Redis, RedisEventStore
from projections.projector import Projector

BATCH = 100


async def write(store: RedisEventStore, threads: int, turns: int) -> int:
    total = 0
    for t in range(threads):
        thread = f"t{t}"
        version = (await store.append(thread, [started(thread, f"u{t % 10}")], 0)).last_version
        for i in range(turns):
            batch = exchange(thread, i, "hi", "hello")
            version = (await store.append(thread, batch, version)).last_version
        total += version
    return total


async def raw(client: Redis, keys: Keyspace, group: str) -> int:
    """Read and acknowledge every feed entry with a bare consumer group; entries handled."""
    handled = 0
    for p in range(keys.partitions):
        await client.xgroup_create(keys.feed(p), group, id="0", mkstream=True)
    while True:
        found = 0
        for p in range(keys.partitions):
            feed = keys.feed(p)
            reply = await client.xreadgroup(group, "raw", {feed: ">"}, count=BATCH)
            entries = reply[0][1] if reply else []
            if entries:
                await client.xack(feed, group, *(entry_id for entry_id, _ in entries))
                found += len(entries)
        handled += found
        if not found:
            return handled


async def projected(store: RedisEventStore, view: str) -> None:
    """Catch a new view up from zero."""
    projector = Projector(store, view=view, batch=BATCH)
    while (await projector.run_once()).handled:
        pass


async def run(url: str, threads: int, turns: int, rounds: int) -> None:
    async with bench_store(url) as store:
        client, keys = store.redis, store.keys
        total = await write(store, threads, turns)
        pairs = []
        for r in range(rounds):  # back to back, each over the whole feed with a group of its own
            start = time.perf_counter()
            assert await raw(client, keys, f"bench-raw-{r}") == total
            raw_rate = total / (time.perf_counter() - start)
            start = time.perf_counter()
            await projected(store, f"bench-{r}")
            rate = total / (time.perf_counter() - start)
            pairs.append((rate / raw_rate, rate, raw_rate))
        ratio, rate, raw_rate = statistics.median(pairs)  # the median round, by its ratio
        emit(
            bench="consume",
            case=f"{threads} threads x {2 * turns + 1} events",
            value=round(rate),
            baseline=round(raw_rate),
            unit="events/s",
            ratio=round(ratio, 3),
            goal=">= 0.7",
            rounds=[round(p[0], 3) for p in pairs],
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=200)
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    run_with_redis(lambda url: run(url, args.threads, args.turns, args.rounds))


if __name__ == "__main__":
    main()
