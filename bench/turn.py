"""Engine turns/s against bare XADDs of as many events, on the same Redis, in the same run.

    python bench/turn.py [--turns N] [--concurrency C] [--rounds R]

A turn is the whole path: a user message is classified (the rule classifier), the ladder
decides, the scripted model writes the reply, and every event is appended (message.posted,
message.classified, reply.started with its lease, then the reply). C threads take turns at
once, each waiting for its reply before the next. The baseline does one bare XADD per event
the turns appended, from C writers. Uses REDIS_URL if set, else the embedded Redis. The round
with the median ratio is printed: turns/s (`value`), the baseline's XADDs/s turned into turns/s
at the same events per turn (`baseline`), and their ratio (goal >= 0.5).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from common import bench_store, emit, run_with_redis

from events.store import RedisEventStore
from service.classifier import GuardedClassifier
from service.engine import Engine
from service.rules import RuleClassifier
from service.scripted import ScriptedModel

MESSAGES = [
    "can you help me plan a weekend trip to lisbon?",
    "what's a good way to learn rust if i know python",
    "explain how optimistic concurrency works",
    "how do I kill a python process that hangs",
    "write a haiku about autumn rain",
]


async def engine_turns(store: RedisEventStore, threads: int, turns: int) -> tuple[float, int]:
    """Seconds for `threads` x `turns` turns, and the events they appended."""
    engine = Engine(store, model=ScriptedModel(), classifier=GuardedClassifier(RuleClassifier()))
    ids = [await engine.start_thread(tenant="bench", owner=f"u{i}") for i in range(threads)]
    before = sum([(await store.version(t))[0] for t in ids])

    async def talk(thread: str) -> None:
        for i in range(turns):
            turn = await engine.post_message(thread, MESSAGES[i % len(MESSAGES)])
            await engine.outcome(turn)

    start = time.perf_counter()
    await asyncio.gather(*(talk(t) for t in ids))
    elapsed = time.perf_counter() - start
    after = sum([(await store.version(t))[0] for t in ids])
    await engine.aclose()
    return elapsed, after - before


async def bare_xadds(store: RedisEventStore, writers: int, count: int, tag: str) -> float:
    """Seconds for `writers` writers to XADD `count` entries between them."""
    payload = {b"type": b"message.posted", b"data": b"x" * 200}

    async def writer(w: int) -> None:
        key = store.keys.stream(f"bare-{tag}-{w}")
        for _ in range(count // writers):
            await store.redis.xadd(key, payload)

    start = time.perf_counter()
    await asyncio.gather(*(writer(w) for w in range(writers)))
    return time.perf_counter() - start


async def run(url: str, args: argparse.Namespace) -> None:
    rounds = []
    async with bench_store(url) as store:
        for r in range(args.rounds):
            elapsed, events = await engine_turns(store, args.concurrency, args.turns)
            done = args.concurrency * args.turns
            base_elapsed = await bare_xadds(store, args.concurrency, events, str(r))
            value = done / elapsed
            baseline = done / base_elapsed  # turns/s if a turn cost its events' bare XADDs
            rounds.append((value / baseline, value, baseline, events / done))
    ratio, value, baseline, per_turn = sorted(rounds)[len(rounds) // 2]
    emit(
        bench="turn",
        case=f"concurrency {args.concurrency}",
        value=round(value, 1),
        baseline=round(baseline, 1),
        unit="turns/s",
        ratio=round(ratio, 3),
        goal=">= 0.5",
        events_per_turn=per_turn,
        spread=round(statistics.pstdev(r[0] for r in rounds), 3),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=40, help="turns per thread")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    run_with_redis(lambda url: run(url, args))


if __name__ == "__main__":
    main()
