"""Reading current and past states through the reader, on every backend."""

from __future__ import annotations

import msgspec
import pytest

from events.keys import Keyspace
from events.schema import AnyEvent
from events.store import Redis, RedisEventStore
from projections.reader import SNAPSHOT_TTL, ReadStats, ThreadReader
from projections.snapshot import dump, load
from projections.state import fold
from tests.factories import ended, feedback, forked, posted, replied, started

pytestmark = pytest.mark.anyio

T = "read-1"


async def grow(store: RedisEventStore, turns: int, version: int = 0) -> int:
    """Append `turns` exchanges (m_i -> r_i) to T; the new version."""
    if version == 0:
        version = (await store.append(T, [started(T)], 0)).last_version
    state_tip = None if version == 1 else f"r{(version - 1) // 2}"
    for _ in range(turns):
        i = (version + 1) // 2
        batch: list[AnyEvent] = [posted(T, f"m{i}", state_tip), replied(T, f"r{i}", f"m{i}")]
        version = (await store.append(T, batch, version)).last_version
        state_tip = f"r{i}"
    return version


async def everything(store: RedisEventStore) -> list[AnyEvent]:
    return [e.event async for e in store.events(T)]


async def test_the_current_state_is_the_fold_of_every_event(store: RedisEventStore) -> None:
    await grow(store, 5)
    reader = ThreadReader(store)
    assert await reader.state(T) == fold(await everything(store))


async def test_a_warm_read_folds_only_the_new_events(store: RedisEventStore) -> None:
    version = await grow(store, 5)
    reader = ThreadReader(store)
    await reader.state(T)
    await grow(store, 2, version)

    state = await reader.state(T)

    assert state == fold(await everything(store))
    assert reader.stats == ReadStats(events_folded=11 + 4, cache_hits=1)


async def test_a_cold_reader_starts_from_the_snapshot(store: RedisEventStore) -> None:
    version = await grow(store, 10)
    await ThreadReader(store, snapshot_every=10).state(T)  # writes a snapshot at 21
    await grow(store, 1, version)

    cold = ThreadReader(store, snapshot_every=10)
    state = await cold.state(T)

    assert state == fold(await everything(store))
    assert cold.stats == ReadStats(events_folded=2, snapshots_loaded=1)


async def test_deleting_the_snapshots_changes_no_answer(
    store: RedisEventStore, client: Redis, keys: Keyspace
) -> None:
    await grow(store, 10)
    with_snapshot = await ThreadReader(store, snapshot_every=5).state(T)
    assert await client.exists(keys.snapshot(T))
    await client.delete(keys.snapshot(T))

    without = ThreadReader(store)
    assert await without.state(T) == with_snapshot
    assert without.stats.snapshots_loaded == 0


@pytest.mark.parametrize("kind", ["unreadable", "other-format", "other-thread"])
async def test_a_snapshot_coda_cannot_use_is_ignored(
    store: RedisEventStore, client: Redis, keys: Keyspace, kind: str
) -> None:
    await grow(store, 3)
    events = await everything(store)
    good = msgspec.msgpack.decode(dump(fold(events), b"\x00" * 32))
    if kind == "other-format":
        good["format"] = 999
    if kind == "other-thread":
        good["thread_id"] = "another"
    data = b"\x00not a snapshot" if kind == "unreadable" else msgspec.msgpack.encode(good)
    await client.set(keys.snapshot(T), data)
    reader = ThreadReader(store)
    assert await reader.state(T) == fold(events)
    assert reader.stats.snapshots_loaded == 0


async def test_snapshots_expire(store: RedisEventStore, client: Redis, keys: Keyspace) -> None:
    await grow(store, 5)
    await ThreadReader(store, snapshot_every=5).state(T)
    assert 0 < await client.ttl(keys.snapshot(T)) <= SNAPSHOT_TTL


async def test_kept_states_of_a_history_that_was_replaced_are_dropped(
    store: RedisEventStore, client: Redis, keys: Keyspace
) -> None:
    """As after a failover that lost writes, or a thread deleted and written anew."""
    await grow(store, 10)
    warm = ThreadReader(store, snapshot_every=5)
    await warm.state(T)  # cached and snapshotted at version 21
    for key in keys.append_keys(T)[:3]:
        await client.delete(key)
    fresh = RedisEventStore(client, keys, store._seal_key)
    await fresh.append(T, [started(T, title="anew")], 0)
    await grow(fresh, 12, 1)  # longer than the old history, and different

    for reader in (warm, ThreadReader(store)):
        state = await reader.state(T)
        assert state == fold(await everything(fresh))
        assert state.started is not None
        assert state.started.title == "anew"
    assert warm.stats.discarded == 1


@pytest.mark.parametrize("at", [-1, 8])
async def test_a_version_the_thread_does_not_have_is_an_error(
    store: RedisEventStore, at: int
) -> None:
    await grow(store, 3)
    with pytest.raises(ValueError, match=r"has versions 0\.\.7"):
        await ThreadReader(store).state(T, at=at)


@pytest.mark.parametrize("at", [0, 1, 4, 7])
async def test_the_state_at_a_version_is_the_fold_of_the_events_up_to_it(
    store: RedisEventStore, at: int
) -> None:
    await grow(store, 3)
    reader = ThreadReader(store)
    await reader.state(T)  # a warm cache must not leak the present into the past
    events = await everything(store)
    assert await reader.state(T, at=at) == fold(events[:at])


def test_a_snapshot_round_trips_a_state_with_every_kind_of_entry() -> None:
    events: list[AnyEvent] = [
        started(T),
        posted(T, "m1", None),
        replied(T, "r1", "m1"),
        ended(T, "r1"),
        feedback(T, "r1"),
        forked(T, "m1", None, "m1b"),
        posted(T, "m1b", None),
        ended(T, "m1b", "thread"),
    ]
    state = fold(events)
    assert load(dump(state, b"\x01" * 32)) == (state, b"\x01" * 32)
