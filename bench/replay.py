"""Replaying and reading threads: coda against the eventsourcing library, and long against short.

    python bench/replay.py [--events N]

Uses REDIS_URL if set, else the embedded Redis in a temporary directory. Prints two JSON lines:

- bench `replay`: XRANGE + decode + fold of an N-event thread (default 10,000) against the
  eventsourcing library (the `bench` extra) replaying an aggregate of N events from its own
  in-memory store; ratio = peer seconds / coda seconds, goal >= 10. Without the library the
  line says so and has no ratio. The line also gives the parts, each timed alone: `read_s`
  (the entries read, XRANGE pages), `decode_s` (their bytes decoded), `fold_s` (the fold).
- bench `read`: a current-state read of the N-event thread against one of a 10-event thread,
  through a warm `ThreadReader`; ratio = long / short, goal <= 1.5.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Awaitable, Callable

from common import bench_store, emit, exchange, run_with_redis, started

from events.schema import AnyEvent, decode
from events.store import RedisEventStore
from projections.reader import ThreadReader
from projections.state import fold

QUESTION = "How do I keep a long conversation coherent across sessions? " * 2
ANSWER = "Keep a running summary, and restate the goal when the topic shifts. " * 6


def conversation(thread: str, count: int) -> list[list[AnyEvent]]:
    """`count` events (a start, then whole exchanges), in batches of up to 64."""
    events: list[AnyEvent] = [started(thread)]
    i = 0
    while len(events) + 2 <= count:
        events += exchange(thread, i, QUESTION, ANSWER)
        i += 1
    return [events[:1]] + [events[k : k + 64] for k in range(1, len(events), 64)]


async def write(store: RedisEventStore, thread: str, count: int) -> None:
    version = 0
    for batch in conversation(thread, count):
        version = (await store.append(thread, batch, version)).last_version


async def best(work: Callable[[], Awaitable[object]], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        await work()
        times.append(time.perf_counter() - start)
    return min(times)


def peer_seconds(count: int, rounds: int) -> float | None:
    """The eventsourcing library replaying an aggregate of `count` events, or None."""
    try:
        from eventsourcing.application import Application
        from eventsourcing.domain import Aggregate, event
    except ImportError:
        return None

    class Thread(Aggregate):  # type: ignore[misc]
        def __init__(self) -> None:
            self.messages: list[str] = []

        @event("Posted")  # type: ignore[misc]
        def post(self, content: str) -> None:
            self.messages.append(content)

    app = Application()
    aggregate = Thread()
    for i in range(count - 1):
        aggregate.post(QUESTION if i % 2 == 0 else ANSWER)
    app.save(aggregate)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        app.repository.get(aggregate.id)
        times.append(time.perf_counter() - start)
    return min(times)


async def run(url: str, count: int, rounds: int) -> None:
    async with bench_store(url) as store:
        await write(store, "long", count)
        await write(store, "short", 10)

        async def replay() -> object:
            return fold([e.event async for e in store.events("long")])

        coda = await best(replay, rounds)
        # Where the time goes, part by part: the stream's entries read (XRANGE pages), their
        # bytes decoded, the events folded.
        entries = [e async for e in store.entries("long")]
        read = await best(lambda: _entries(store, "long"), rounds)
        decode_s = await best(lambda: _decoded([e.data for e in entries]), rounds)
        events = [decode(e.data) for e in entries]
        fold_s = await best(lambda: _folded(events), rounds)
        peer = peer_seconds(count, rounds)
        line: dict[str, object] = {
            "bench": "replay",
            "case": f"{count} events, eventsourcing peer",
            "value": round(coda, 4),
            "unit": "s",
            "goal": ">= 10",
            "read_s": round(read, 4),
            "decode_s": round(decode_s, 4),
            "fold_s": round(fold_s, 4),
        }
        if peer is None:
            line["note"] = "install the bench extra (eventsourcing) for the peer"
        else:
            line |= {"baseline": round(peer, 4), "ratio": round(peer / coda, 2)}
        emit(**line)

        reader = ThreadReader(store)
        await reader.state("long")
        await reader.state("short")
        reads = 200
        long_reads, short_reads = [], []
        for _ in range(reads):  # interleaved, so both see the same machine
            long_reads.append(await best(lambda: reader.state("long"), 1))
            short_reads.append(await best(lambda: reader.state("short"), 1))
        long_t, short_t = statistics.median(long_reads), statistics.median(short_reads)
        emit(
            bench="read",
            case=f"{count} vs 10 events",
            value=round(long_t * 1e6, 1),
            baseline=round(short_t * 1e6, 1),
            unit="us",
            ratio=round(long_t / short_t, 3),
            goal="<= 1.5",
        )


async def _entries(store: RedisEventStore, thread: str) -> object:
    return [e async for e in store.entries(thread)]


async def _decoded(stored: list[bytes]) -> object:
    return [decode(data) for data in stored]


async def _folded(events: list[AnyEvent]) -> object:
    return fold(events)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    run_with_redis(lambda url: run(url, args.events, args.rounds))


if __name__ == "__main__":
    main()
