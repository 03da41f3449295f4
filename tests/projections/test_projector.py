"""The projector on every backend: views equal the fold, whatever the delivery."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone

import pytest
from msgspec.structs import replace

from events.keys import Keyspace
from events.schema import AnyEvent
from events.store import Redis, RedisEventStore
from projections.projector import Projector
from projections.settle import ViewWriter
from projections.state import apply, fold
from projections.views import day_of, increments, summary, tenant_of
from tests.factories import ended, feedback, forked, posted, redirected, replied, started

pytestmark = pytest.mark.anyio

THREADS = ("pa", "pb", "pc")


async def converse(store: RedisEventStore, thread: str) -> None:
    """A short conversation with a redirect, an end, an edit and feedback."""
    batches: list[list[AnyEvent]] = [
        [started(thread, title=f"about {thread}")],
        [posted(thread, "m1", None), redirected(thread, "r1", "m1")],
        [posted(thread, "m2", "r1"), replied(thread, "r2", "m2"), ended(thread, "r2")],
        [feedback(thread, "r2"), forked(thread, "m2", "r1", "m2b"), posted(thread, "m2b", "r1")],
    ]
    version = 0
    for batch in batches:
        version = (await store.append(thread, batch, version)).last_version


async def expected(store: RedisEventStore, threads: tuple[str, ...]) -> Counter[str]:
    """The analytics all events of `threads` add, as `<tenant>/<day>/<field>` -> count."""
    total: Counter[str] = Counter()
    for thread in threads:
        state = fold([])
        for item in [e async for e in store.events(thread)]:
            tenant = tenant_of(apply(state, item.event))
            for field, amount in increments(state, item.event).items():
                total[f"{tenant}/{day_of(item.event)}/{field}"] += amount
            state = apply(state, item.event)
    return total


async def analytics(client: Redis, keys: Keyspace, view: str) -> Counter[str]:
    """Every counter of the view, as `<tenant>/<day>/<field>`: per tenant and day, not summed."""
    total: Counter[str] = Counter()
    async for key in client.scan_iter(match=f"{keys.prefix}:*:view:{view}:analytics:*"):
        tenant, day = key.decode().split(":analytics:", 1)[1].split(":")
        for field, value in (await client.hgetall(key)).items():
            total[f"{tenant}/{day}/{field.decode()}"] += int(value)
    return total


async def assert_view_is_the_fold(
    store: RedisEventStore, client: Redis, view: str, threads: tuple[str, ...]
) -> None:
    for thread in threads:
        state = fold([e.event async for e in store.events(thread)])
        stored = await client.hgetall(store.keys.view_thread(view, thread))
        want = {k.encode(): v.encode() for k, v in summary(state).items()}
        assert stored == {**want, b"version": str(state.version).encode()}
        tenant = tenant_of(state)
        score = await client.zscore(store.keys.view_owner(view, tenant, "u1"), thread)
        assert state.updated_at is not None
        assert score == state.updated_at.timestamp()
    assert await analytics(client, store.keys, view) == await expected(store, threads)


async def drain(projector: Projector) -> None:
    while (await projector.run_once()).handled:
        pass


async def test_one_pass_brings_every_view_to_the_fold(
    store: RedisEventStore, client: Redis
) -> None:
    for thread in THREADS:
        await converse(store, thread)
    await drain(Projector(store))
    await assert_view_is_the_fold(store, client, "live", THREADS)


async def test_entries_redelivered_after_a_crash_before_the_ack_change_nothing(
    store: RedisEventStore, client: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    await converse(store, "pa")
    crashed = Projector(store, consumer="worker-1")
    execute = store.coalescer.execute

    async def crashing_at_the_ack(*args: object) -> object:
        if args[0] == "XACK":
            raise RuntimeError("crashed before the ack")
        return await execute(*args)

    monkeypatch.setattr(store.coalescer, "execute", crashing_at_the_ack)
    with pytest.raises(RuntimeError, match="crashed before the ack"):
        await crashed.run_once()  # the view was written, the entry not acknowledged
    monkeypatch.undo()

    restarted = Projector(store, consumer="worker-1")
    stats = await restarted.run_once()

    assert stats.skipped >= 1  # its own pending entry, drained first, changes nothing

    await drain(restarted)
    await assert_view_is_the_fold(store, client, "live", ("pa",))
    for partition in range(store.keys.partitions):
        pending = await client.xpending(store.keys.feed(partition), "view:live")
        assert pending["pending"] == 0


async def test_entries_of_a_dead_consumer_are_claimed_after_their_idle_time(
    store: RedisEventStore, client: Redis
) -> None:
    await converse(store, "pb")
    dead = Projector(store, consumer="dead")
    await dead.run_once()  # creates the groups
    await converse(store, "pc")
    feed = store.keys.feed(store.keys.partition("pc"))
    taken = await client.xreadgroup("view:live", "dead", {feed: ">"})
    assert taken  # now pending on a consumer that will never ack

    live = Projector(store, consumer="alive", claim_idle_ms=0)
    stats = await live.run_once()

    assert stats.claimed >= 1
    assert (await client.xpending(feed, "view:live"))["pending"] == 0
    await assert_view_is_the_fold(store, client, "live", ("pb", "pc"))


async def test_a_poison_entry_goes_to_the_dead_letters_and_stops_nothing(
    store: RedisEventStore, client: Redis
) -> None:
    await converse(store, "pa")
    feed = store.keys.feed(store.keys.partition("pa"))
    projector = Projector(store, max_deliveries=3)
    await projector.run_once()
    await client.xadd(feed, {"thread": "pa", "version": "not a number"})
    await converse(store, "pb")

    for _ in range(4):
        await projector.run_once()

    dead = await client.xrange(store.keys.dead_letters("live", store.keys.partition("pa")))
    assert len(dead) == 1
    assert dead[0][1][b"version"] == b"not a number"
    assert b"invalid literal" in dead[0][1][b"error"]
    assert (await client.xpending(feed, "view:live"))["pending"] == 0
    await assert_view_is_the_fold(store, client, "live", ("pa", "pb"))


async def test_a_view_rebuilt_from_zero_equals_the_live_one(
    store: RedisEventStore, client: Redis
) -> None:
    live = Projector(store)
    for thread in THREADS:
        await converse(store, thread)
        await live.run_once()  # the live view follows as the threads grow
    await drain(Projector(store, view="rebuild"))

    for thread in THREADS:
        assert await client.hgetall(store.keys.view_thread("rebuild", thread)) == (
            await client.hgetall(store.keys.view_thread("live", thread))
        )
    assert await analytics(client, store.keys, "rebuild") == await analytics(
        client, store.keys, "live"
    )


async def test_two_projectors_sharing_the_work_count_every_event_once(
    store: RedisEventStore, client: Redis
) -> None:
    one, two = Projector(store, consumer="one"), Projector(store, consumer="two")
    await one.run_once()

    async def write() -> None:
        for thread in THREADS:
            await converse(store, thread)

    async def project(projector: Projector) -> None:
        for _ in range(6):
            await projector.run_once()

    await asyncio.gather(write(), project(one), project(two))
    await drain(one)
    await drain(two)

    await assert_view_is_the_fold(store, client, "live", THREADS)


async def test_an_entry_ahead_of_the_view_catches_up_from_the_thread(
    store: RedisEventStore, client: Redis
) -> None:
    await converse(store, "pa")
    projector = Projector(store)
    assert await projector._apply("pa", 9)  # the last entry arrives first
    assert await projector.checkpoint("pa") == 9
    assert not await projector._apply("pa", 3)
    await drain(projector)
    await assert_view_is_the_fold(store, client, "live", ("pa",))


async def test_a_gap_in_the_feed_is_filled_from_the_thread(
    store: RedisEventStore, client: Redis
) -> None:
    await converse(store, "pa")
    feed = store.keys.feed(store.keys.partition("pa"))
    fourth = next(i for i, f in await client.xrange(feed) if f[b"version"] == b"4")
    await client.xdel(feed, fourth)

    await drain(Projector(store))

    await assert_view_is_the_fold(store, client, "live", ("pa",))


async def test_an_entry_with_a_bad_thread_id_is_dead_lettered_alone(
    store: RedisEventStore, client: Redis
) -> None:
    await converse(store, "pa")
    feed = store.keys.feed(store.keys.partition("pa"))
    await client.xadd(feed, {"thread": "not a thread", "version": "1", "data": b""})
    projector = Projector(store, max_deliveries=2)
    for _ in range(3):
        await projector.run_once()
    dead = await client.xrange(store.keys.dead_letters("live", store.keys.partition("pa")))
    assert [f[b"thread"] for _, f in dead] == [b"not a thread"]
    await assert_view_is_the_fold(store, client, "live", ("pa",))


async def test_a_bad_copy_in_the_feed_is_read_again_from_the_thread(
    store: RedisEventStore, client: Redis
) -> None:
    """The feed is a copy: a damaged copy of an event is replaced by the stream's."""
    batch: list[AnyEvent] = [started("pa"), posted("pa", "m1", None)]
    await store.append("pa", batch[:1], 0)
    version = (await store.append("pa", batch[1:], 1)).last_version
    feed = store.keys.feed(store.keys.partition("pa"))
    entries = await client.xrange(feed)
    await client.delete(feed)
    for entry_id, fields in entries:
        copy = {**fields, b"data": b"\xc1"} if fields[b"version"] == b"2" else fields
        await client.xadd(feed, copy, id=entry_id)

    projector = Projector(store)
    await drain(projector)

    assert await projector.checkpoint("pa") == version
    assert await client.xlen(store.keys.dead_letters("live", store.keys.partition("pa"))) == 0


async def test_entries_deleted_while_pending_do_not_stall_the_partition(
    store: RedisEventStore, client: Redis
) -> None:
    await Projector(store, consumer="dead").run_once()  # creates the groups
    await converse(store, "pa")
    feed = store.keys.feed(store.keys.partition("pa"))
    taken = await client.xreadgroup("view:live", "dead", {feed: ">"})
    ids = [entry_id for entry_id, _ in taken[0][1]]
    await client.xdel(feed, *ids[:3])  # gone from the feed, still pending on "dead"

    live = Projector(store, consumer="alive", claim_idle_ms=0)
    await drain(live)

    assert (await client.xpending(feed, "view:live"))["pending"] == 0
    assert await live.checkpoint("pa") == 9


async def test_two_writers_reading_the_same_checkpoint_write_once(
    store: RedisEventStore, client: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both read checkpoint 0 before either writes: one write lands, the other reads again."""
    await converse(store, "pa")
    one, two = Projector(store, consumer="one"), Projector(store, consumer="two")
    both_read = asyncio.Barrier(2)
    reads: Counter[int] = Counter()
    original = ViewWriter._checkpoints

    async def checkpoints(self: ViewWriter, threads: list[str]) -> dict[str, int]:
        result = await original(self, threads)
        reads[id(self)] += 1
        if reads[id(self)] == 1:
            await both_read.wait()
        return result

    monkeypatch.setattr(ViewWriter, "_checkpoints", checkpoints)
    applied = await asyncio.gather(one._apply("pa", 9), two._apply("pa", 9))

    assert sorted(applied) == [False, True]
    await assert_view_is_the_fold(store, client, "live", ("pa",))


async def test_an_older_listing_time_never_replaces_a_newer_one(
    store: RedisEventStore, client: Redis
) -> None:
    writer = ViewWriter(store, "live")
    key = store.keys.view_owner("live", "acme", "u1")
    await writer._zadd([("pa", "acme", "u1", "2026-11-26T10:00:00+00:00")])
    await writer._zadd([("pa", "acme", "u1", "2026-11-26T09:00:00+00:00")])
    assert await client.zscore(key, "pa") == datetime(2026, 11, 26, 10, tzinfo=UTC).timestamp()


def test_day_of_is_the_utc_date_of_an_event_in_any_zone() -> None:
    late = datetime(2026, 11, 26, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    assert day_of(replace(started("x"), occurred_at=late)) == "2026-11-27"


async def test_a_checkpoint_expected_wrongly_is_read_and_every_event_counted_once(
    store: RedisEventStore, client: Redis
) -> None:
    """A writer expects the checkpoint it last wrote (or 0 for a thread's first event): when
    another writer moved the view meanwhile, the script leaves it alone and it reads the view."""
    await converse(store, "pa")
    stored = {e.version: e.data for e in await store.read_entries("pa")}
    one, two = ViewWriter(store, "live"), ViewWriter(store, "live")

    await one.settle({"pa": 3}, {"pa": {v: stored[v] for v in (1, 2, 3)}})
    moved = await two.settle({"pa": 6}, {"pa": {v: stored[v] for v in range(1, 7)}})
    behind = await one.settle({"pa": 9}, {"pa": {v: stored[v] for v in (7, 8, 9)}})

    assert (moved.applied, behind.applied) == ({"pa"}, {"pa"})
    assert await one.checkpoint("pa") == 9
    await assert_view_is_the_fold(store, client, "live", ("pa",))
