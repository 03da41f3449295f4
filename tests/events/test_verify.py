"""The verifier catches every class of tampering, on every backend, and passes untouched threads."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from msgspec.structs import replace

from events.chain import chain_hash
from events.errors import ChainError
from events.keys import Keyspace
from events.records import StoredEntry
from events.schema import FeedbackGiven, MessagePosted, decode, encode
from events.store import Redis, RedisEventStore
from tests.factories import ended, feedback, forked, posted, replied, started

pytestmark = pytest.mark.anyio

T = "audited"
Entries = list[StoredEntry]


async def build(store: RedisEventStore, thread: str = T) -> None:
    """started, m1, r1, m2, r2, end at r2 (v6), fork m2b (v7, v8), feedback (v9)."""
    await store.append(thread, [started(thread)], 0)
    await store.append(thread, [posted(thread, "m1", None), replied(thread, "r1", "m1")], 1)
    await store.append(thread, [posted(thread, "m2", "r1"), replied(thread, "r2", "m2")], 3)
    await store.append(thread, [ended(thread, "r2")], 5)
    await store.append(thread, [forked(thread, "m2", "r1", "m2b"), posted(thread, "m2b", "r1")], 6)
    await store.append(thread, [feedback(thread, "r2")], 8)


async def rewrite_stream(
    client: Redis, keys: Keyspace, change: Callable[[Entries], Entries], thread: str = T
) -> None:
    """Replace the thread stream with `change(entries)`: what someone with Redis access can do."""
    key = keys.stream(thread)
    rows = await client.xrange(key)
    entries = [
        StoredEntry(entry_id=i.decode(), type=f[b"type"].decode(), data=f[b"data"], hash=f[b"hash"])
        for i, f in rows
    ]
    await client.delete(key)
    for e in change(entries):
        await client.xadd(key, {"type": e.type, "data": e.data, "hash": e.hash}, id=e.entry_id)


async def point_meta_at_stream_head(client: Redis, keys: Keyspace) -> None:
    """Make the meta's head the stream's last hash, as whoever re-chained a history would."""
    new_head = (await client.xrevrange(keys.stream(T), count=1))[0][1][b"hash"]
    await client.hset(keys.meta(T), "head", new_head)


def at(entries: Entries, version: int) -> StoredEntry:
    return next(e for e in entries if e.entry_id == f"{version}-0")


def moved(entry: StoredEntry, version: int) -> StoredEntry:
    return StoredEntry(entry_id=f"{version}-0", type=entry.type, data=entry.data, hash=entry.hash)


def edit_payload(entries: Entries) -> Entries:
    e = at(entries, 2)
    event = decode(e.data)
    assert isinstance(event, MessagePosted)
    edited = StoredEntry(
        entry_id=e.entry_id, type=e.type, data=encode(replace(event, content="else")), hash=e.hash
    )
    return [edited if x is e else x for x in entries]


def edit_tag(entries: Entries) -> Entries:
    return [
        StoredEntry(entry_id=e.entry_id, type="feedback.given", data=e.data, hash=e.hash)
        if e.entry_id == "2-0"
        else e
        for e in entries
    ]


def reorder(entries: Entries) -> Entries:
    two, three = at(entries, 2), at(entries, 3)
    return [moved(three, 2) if e is two else moved(two, 3) if e is three else e for e in entries]


def delete_middle(entries: Entries) -> Entries:
    return [e for e in entries if e.entry_id != "4-0"]


def delete_tail(entries: Entries) -> Entries:
    return entries[:-1]


def insert_between(entries: Entries) -> Entries:
    extra = StoredEntry(entry_id="3-1", type="feedback.given", data=at(entries, 9).data, hash=b"x")
    return [*entries[:3], extra, *entries[3:]]


def insert_after(entries: Entries) -> Entries:
    last = entries[-1]
    return [*entries, moved(last, 10)]


TAMPERS = [
    pytest.param(edit_payload, 2, id="edited-payload"),
    pytest.param(edit_tag, 2, id="edited-tag"),
    pytest.param(reorder, 2, id="reordered"),
    pytest.param(delete_middle, 4, id="deleted-middle"),
    pytest.param(delete_tail, 9, id="deleted-tail"),
    pytest.param(insert_between, 4, id="inserted-between"),
    pytest.param(insert_after, 10, id="inserted-after"),
]


async def test_an_untouched_thread_passes(store: RedisEventStore) -> None:
    await build(store)
    report = await store.verify(T)
    assert report.ok, report.problems
    assert (report.version, report.seals_checked) == (9, 1)
    assert report.head == (await store.head(T)).hash


async def test_an_open_thread_without_seals_passes(store: RedisEventStore) -> None:
    await store.append(T, [started(T)], 0)
    report = await store.verify(T)
    assert report.ok
    assert report.seals_checked == 0


@pytest.mark.parametrize(("tamper", "first_bad"), TAMPERS)
async def test_the_verifier_names_the_first_tampered_version(
    store: RedisEventStore,
    client: Redis,
    keys: Keyspace,
    tamper: Callable[[Entries], Entries],
    first_bad: int,
) -> None:
    await build(store)
    await rewrite_stream(client, keys, tamper)

    report = await store.verify(T)

    assert not report.ok
    assert report.first_bad_version == first_bad, report.problems


async def test_an_entry_spliced_from_another_thread_is_caught(
    store: RedisEventStore, client: Redis, keys: Keyspace
) -> None:
    await build(store)
    await build(store, "other")
    foreign = at([e async for e in store.entries("other")], 3)
    await rewrite_stream(
        client, keys, lambda es: [foreign if e.entry_id == "3-0" else e for e in es]
    )

    report = await store.verify(T)

    assert report.first_bad_version == 3
    assert not report.chain_ok


async def test_a_rewritten_head_is_caught(
    store: RedisEventStore, client: Redis, keys: Keyspace
) -> None:
    await build(store)
    await client.hset(keys.meta(T), "head", b"\x01" * 32)
    report = await store.verify(T)
    assert (report.first_bad_version, report.meta_ok, report.chain_ok) == (9, False, True)


async def test_a_forged_seal_is_caught(
    store: RedisEventStore, client: Redis, keys: Keyspace
) -> None:
    await build(store)
    await client.hset(keys.meta(T), "seal:6", "02" * 32)
    report = await store.verify(T)
    assert (report.first_bad_version, report.seal_ok) == (6, False)


async def test_a_removed_seal_is_caught(
    store: RedisEventStore, client: Redis, keys: Keyspace
) -> None:
    await build(store)
    await client.hdel(keys.meta(T), "seal:6")
    report = await store.verify(T)
    assert (report.first_bad_version, report.seal_ok) == (6, False)


async def test_a_history_rewritten_consistently_is_caught_by_the_seal(
    store: RedisEventStore, client: Redis, keys: Keyspace
) -> None:
    """Edit v2 and recompute every later hash and the meta head: only the seal can tell."""
    await build(store)

    def rechain(entries: Entries) -> Entries:
        out: Entries = []
        prev = b"\x00" * 32
        for e in edit_payload(entries):
            h = chain_hash(prev, T, int(e.entry_id.split("-")[0]), e.type, e.data)
            out.append(StoredEntry(entry_id=e.entry_id, type=e.type, data=e.data, hash=h))
            prev = h
        return out

    await rewrite_stream(client, keys, rechain)
    await point_meta_at_stream_head(client, keys)

    report = await store.verify(T)

    assert (report.chain_ok, report.meta_ok, report.seal_ok) == (True, True, False)
    assert report.first_bad_version == 6


async def test_an_event_written_below_an_ended_leaf_is_caught(
    store: RedisEventStore, client: Redis, keys: Keyspace
) -> None:
    """Bypass the script: append a continuation of the ended branch with a valid hash."""
    await build(store)
    head = await store.head(T)
    sneaked = posted(T, "m3", "r2")
    data = encode(sneaked)
    h = chain_hash(head.hash, T, 10, "message.posted", data)
    await client.xadd(
        keys.stream(T), {"type": "message.posted", "data": data, "hash": h}, id="10-0"
    )
    await client.hset(keys.meta(T), mapping={"version": 10, "head": h})
    await client.hset(keys.index(T), f"e:{sneaked.event_id}", "10:10:10")

    report = await store.verify(T)

    assert report.first_bad_version == 10
    assert "ended" in report.first_bad.reason  # type: ignore[union-attr]


async def test_a_tampered_event_index_is_caught(
    store: RedisEventStore, client: Redis, keys: Keyspace
) -> None:
    await build(store)
    first_id = (await store.read(T, limit=1))[0].event.event_id
    await client.hdel(keys.index(T), f"e:{first_id}")
    report = await store.verify(T)
    assert (report.first_bad_version, report.meta_ok) == (1, False)


GARBAGE = [
    pytest.param("meta", "version", "4x", id="meta-version"),
    pytest.param("meta", "seal:abc", "00", id="seal-name"),
    pytest.param("meta", "end:r2", "six", id="end-version"),
    pytest.param("meta", "head_seal", "zz", id="head-seal"),
    pytest.param("index", "e:nobody", "notanint", id="index-value"),
]


@pytest.mark.parametrize(("where", "field", "value"), GARBAGE)
async def test_garbage_in_the_meta_or_index_is_reported_not_raised(
    store: RedisEventStore, client: Redis, keys: Keyspace, where: str, field: str, value: str
) -> None:
    await build(store)
    key = keys.meta(T) if where == "meta" else keys.index(T)
    await client.hset(key, field, value)

    report = await store.verify(T)

    assert not report.ok
    assert report.first_bad_version is not None


async def test_a_rewrite_after_a_thread_end_is_caught_by_the_head_seal(
    store: RedisEventStore, client: Redis, keys: Keyspace
) -> None:
    """After a thread-wide end only feedback may follow; rewriting it and re-chaining the
    head leaves every end seal valid, but not the seal of the head."""
    await build(store)
    await store.append(T, [ended(T, "m2b", "thread"), feedback(T, "m2b")], 9)

    def rewrite_feedback(entries: Entries) -> Entries:
        out, prev = entries[:-1], entries[-2].hash
        last = entries[-1]
        event = decode(last.data)
        assert isinstance(event, FeedbackGiven)
        data = encode(replace(event, comment="all fine, actually"))
        h = chain_hash(prev, T, 11, last.type, data)
        return [*out, StoredEntry(entry_id=last.entry_id, type=last.type, data=data, hash=h)]

    await rewrite_stream(client, keys, rewrite_feedback)
    await point_meta_at_stream_head(client, keys)

    report = await store.verify(T)

    assert (report.chain_ok, report.meta_ok, report.seal_ok) == (True, True, False)
    assert report.first_bad_version == 11


async def test_a_stream_id_pushed_past_the_meta_is_caught(
    store: RedisEventStore, client: Redis, keys: Keyspace
) -> None:
    await build(store)
    stray = {"type": "feedback.given", "data": b"", "hash": b""}
    await client.xadd(keys.stream(T), stray, id="999-0")
    await client.xdel(keys.stream(T), "999-0")  # gone, but the stream's last id stays
    report = await store.verify(T)
    assert (report.first_bad_version, report.meta_ok) == (10, False)


@pytest.mark.parametrize("value", ["²", "٤", "4x"])
async def test_digits_redis_would_not_read_are_not_numbers_to_the_verifier(
    store: RedisEventStore, client: Redis, keys: Keyspace, value: str
) -> None:
    await build(store)
    await client.hset(keys.meta(T), mapping={"thread_end": value, "end:r2": value})
    report = await store.verify(T)
    assert not report.ok
    with pytest.raises(ChainError, match="is not a number"):
        await store.append(T, [feedback(T)], 9)
