"""More of the store contract: the message tree, invalid events, failed writes, recovery."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import pytest
from msgspec.structs import replace

from events.chain import GENESIS, chain_hash
from events.errors import ChainError, EventStoreError, InvalidBatchError, ThreadEndedError
from events.keys import Keyspace
from events.schema import AnyEvent, encode, tag_of
from events.store import Redis, RedisEventStore
from tests.conftest import SEAL_KEY
from tests.events.test_store_contract import opened, snapshot
from tests.factories import (
    ended,
    failed,
    feedback,
    forked,
    posted,
    replied,
    reply_started,
)

pytestmark = pytest.mark.anyio

T = "thread-1"

# --- the message tree --------------------------------------------------------------------

TREE_ERRORS = [
    pytest.param([ended(T, "m1")], "not the tip of a branch", id="end-of-a-non-tip"),
    pytest.param([ended(T, "nope")], "not a message of this thread", id="end-of-no-message"),
    pytest.param([posted(T, "m3", "nope")], "not a message of this thread", id="unknown-parent"),
    pytest.param([replied(T, "r9", "nope")], "not a message of this thread", id="reply-to-nothing"),
    pytest.param([posted(T, "m1", "r2")], "message id m1 is taken", id="message-id-reused"),
    pytest.param([replied(T, "r9", "r1")], "a reply answers a user message", id="reply-to-reply"),
    pytest.param([posted(T, "m9", "m2")], "hangs below a reply or the root", id="message-to-msg"),
    pytest.param([replied(T, "m2", "m2")], "not a reply to m2", id="reply-id-of-a-message"),
    pytest.param([reply_started(T, "r2", "m2")], "message id r2 is taken", id="started-twice"),
    pytest.param([replied(T, "r1", "m1")], "the generation of r1 is over", id="finished-twice"),
    pytest.param([posted(T, "m2x", "r1")], "a new one is an edit", id="edit-without-fork"),
    pytest.param([posted(T, "m0", None)], "the root has a message", id="root-edit-without-fork"),
    pytest.param([forked(T, "m2", "r1", "m2b")], "followed by the message.posted", id="fork-alone"),
    pytest.param(
        [forked(T, "nope", "r1", "m2b"), posted(T, "m2b", "r1")],
        "edited message nope is not a user message",
        id="fork-of-nothing",
    ),
    pytest.param(
        [forked(T, "m1", "r1", "m1b"), posted(T, "m1b", "r1")],
        "does not hang below r1",
        id="fork-wrong-parent",
    ),
    pytest.param(
        [forked(T, "m1", None, "r1"), posted(T, "r1", None)],
        "message id r1 is taken",
        id="fork-taken-id",
    ),
]


async def in_flight(store: RedisEventStore) -> int:
    """m1 -> r1 -> m2 -> r2, the generation of r2 still running; returns the version."""
    version = await opened(store)
    batch = [posted(T, "m2", "r1"), reply_started(T, "r2", "m2")]
    return (await store.append(T, batch, version)).last_version


@pytest.mark.parametrize(("batch", "message"), TREE_ERRORS)
async def test_a_batch_that_breaks_the_message_tree_is_rejected_and_writes_nothing(
    store: RedisEventStore, client: Redis, keys: Keyspace, batch: list[AnyEvent], message: str
) -> None:
    version = await in_flight(store)
    before = await snapshot(client, keys, T)
    with pytest.raises(InvalidBatchError, match=message):
        await store.append(T, batch, version)
    assert await snapshot(client, keys, T) == before


@pytest.mark.parametrize(
    "batch",
    [
        pytest.param([forked(T, "m1", None, "m1b"), posted(T, "m1b", None)], id="edit-at-root"),
        pytest.param([forked(T, "m2", "r1", "m2b"), posted(T, "m2b", "r1")], id="edit"),
        pytest.param([replied(T, "r2", "m2")], id="generation-completes"),
        pytest.param([failed(T, "r2", "m2")], id="generation-fails"),
        pytest.param([replied(T, "r1b", "m1")], id="retry"),
    ],
)
async def test_edits_retries_and_generations_keep_the_tree(
    store: RedisEventStore, batch: list[AnyEvent]
) -> None:
    version = await in_flight(store)
    result = await store.append(T, batch, version)
    assert result.last_version == version + len(batch)
    assert (await store.verify(T)).ok


async def test_a_generation_continues_its_own_reply(store: RedisEventStore) -> None:
    version = await opened(store)
    batch = [posted(T, "m2", "r1"), reply_started(T, "r2", "m2")]
    version = (await store.append(T, batch, version)).last_version
    result = await store.append(T, [replied(T, "r2", "m2")], version)
    assert result.last_version == version + 1
    assert (await store.verify(T)).ok


async def test_an_ended_pending_reply_cannot_be_completed(store: RedisEventStore) -> None:
    version = await opened(store)
    batch = [posted(T, "m2", "r1"), reply_started(T, "r2", "m2"), ended(T, "r2")]
    end = (await store.append(T, batch, version)).last_version
    with pytest.raises(ThreadEndedError) as caught:
        await store.append(T, [replied(T, "r2", "m2")], end)
    assert (caught.value.end_version, caught.value.leaf_id) == (end, "r2")


async def test_a_retry_of_an_earlier_message_opens_a_branch_beside_an_ended_one(
    store: RedisEventStore,
) -> None:
    """A new reply to m2, the message the ended farewell r2 answered, is a sibling of r2."""
    version = await opened(store)
    batch = [posted(T, "m2", "r1"), replied(T, "r2", "m2"), ended(T, "r2")]
    end = (await store.append(T, batch, version)).last_version
    result = await store.append(T, [replied(T, "r2b", "m2")], end)
    assert result.last_version == end + 1
    with pytest.raises(ThreadEndedError):
        await store.append(T, [posted(T, "m3", "r2")], result.last_version)


async def test_a_message_may_be_named_like_the_thread_end_marker(store: RedisEventStore) -> None:
    version = await opened(store)
    version = (await store.append(T, [posted(T, "*", "r1")], version)).last_version
    batch = [ended(T, "*"), forked(T, "*", "r1", "m2"), posted(T, "m2", "r1")]
    assert (await store.append(T, batch, version)).last_version == version + 3


# --- invalid events ----------------------------------------------------------------------

INVALID = [
    pytest.param(
        lambda: posted(T, "m" * 200, "r1"), "Expected `str` of length <= 128", id="long-id"
    ),
    pytest.param(
        lambda: replace(feedback(T), rating="meh"), "Invalid enum value 'meh'", id="rating"
    ),
    pytest.param(lambda: replace(ended(T, "r1"), leaf_id=""), "length >= 1", id="empty-leaf"),
    pytest.param(lambda: posted(T, "m\udc80", "r1"), "is invalid", id="lone-surrogate"),
]


@pytest.mark.parametrize(("make", "message"), INVALID)
async def test_an_event_the_store_could_not_read_back_is_rejected(
    store: RedisEventStore, client: Redis, keys: Keyspace, make: Any, message: str
) -> None:
    version = await opened(store)
    before = await snapshot(client, keys, T)
    with pytest.raises(InvalidBatchError, match=message):
        await store.append(T, [make()], version)
    assert await snapshot(client, keys, T) == before


# --- failed writes and recovery ----------------------------------------------------------


async def test_a_feed_key_of_another_type_fails_before_anything_is_written(
    store: RedisEventStore, client: Redis, keys: Keyspace
) -> None:
    version = await opened(store)
    feed = keys.feed(keys.partition(T))
    await client.delete(feed)
    await client.set(feed, "not a stream")
    stream_before = await client.xrange(keys.stream(T))
    meta_before = await client.hgetall(keys.meta(T))

    with pytest.raises(EventStoreError, match="WRONGTYPE"):
        await store.append(T, [posted(T, "m2", "r1")], version)

    assert await client.xrange(keys.stream(T)) == stream_before
    assert await client.hgetall(keys.meta(T)) == meta_before


async def test_a_stream_ahead_of_its_meta_is_a_chain_error_and_writes_nothing(
    store: RedisEventStore, client: Redis, keys: Keyspace
) -> None:
    version = await opened(store)
    event = feedback(T)
    data = encode(event)
    stray = {"type": "feedback.given", "data": data, "hash": b"\x00" * 32}
    await client.xadd(keys.stream(T), stray, id=f"{version + 1}-0")
    before = await snapshot(client, keys, T)

    with pytest.raises(ChainError, match="stream is ahead of the meta"):
        await store.append(T, [posted(T, "m2", "r1")], version)

    assert await snapshot(client, keys, T) == before


async def test_a_batch_that_does_not_continue_the_stored_head_is_a_chain_error(
    store: RedisEventStore, client: Redis, keys: Keyspace
) -> None:
    version = await opened(store)
    await client.hset(keys.meta(T), "head", b"\x07" * 32)  # what no entry hashes to
    before = await snapshot(client, keys, T)
    with pytest.raises(ChainError, match="does not continue the stored head"):
        await store.append(T, [posted(T, "m2", "r1")], version)
    assert await snapshot(client, keys, T) == before


async def test_a_head_redis_lost_is_forgotten_and_the_append_goes_through(
    client: Redis, keys: Keyspace
) -> None:
    """Store A caches its head at v3; the thread is then rebuilt differently (as after a
    failover that lost writes). A's next append must not be stuck on its stale head."""
    a = RedisEventStore(client, keys, SEAL_KEY)
    await opened(a)
    for key in keys.append_keys(T)[:3]:
        await client.delete(key)
    await opened(RedisEventStore(client, keys, SEAL_KEY))

    result = await a.append(T, [posted(T, "m2", "r1")], 3)

    assert result.last_version == 4
    assert (await a.verify(T)).ok


# --- the meta, rebuilt independently from the events ----------------------------------------


async def test_the_meta_and_index_equal_a_rebuild_from_the_events(
    store: RedisEventStore, client: Redis, keys: Keyspace
) -> None:
    await opened(store)
    await store.append(T, [posted(T, "m2", "r1"), replied(T, "r2", "m2"), ended(T, "r2")], 3)
    await store.append(T, [forked(T, "m2", "r1", "m2b"), posted(T, "m2b", "r1")], 6)
    await store.append(T, [replied(T, "r2b", "m2b"), ended(T, "r2b", "thread")], 8)
    await store.append(T, [feedback(T, "r2")], 10)

    prev, ids = GENESIS, {}
    for entry in await client.xrange(keys.stream(T)):
        version = int(entry[0].split(b"-")[0])
        fields = entry[1]
        prev = chain_hash(prev, T, version, fields[b"type"].decode(), fields[b"data"])
        ids[version] = fields
    meta = await client.hgetall(keys.meta(T))
    index = await client.hgetall(keys.index(T))

    assert int(meta[b"version"]) == 11
    assert meta[b"head"] == prev
    assert {k: int(v) for k, v in meta.items() if k.startswith(b"end:")} == {
        b"end:r2": 6,
        b"end:r2b": 10,
    }
    assert int(meta[b"thread_end"]) == 10
    assert sorted(k for k in meta if k.startswith(b"seal:")) == [b"seal:10", b"seal:6"]
    messages = {k[2:]: v for k, v in index.items() if k.startswith(b"m:")}
    assert messages == {
        b"m1": b"u",
        b"r1": b"am1",
        b"m2": b"ur1",
        b"r2": b"am2",
        b"m2b": b"ur1",
        b"r2b": b"am2b",
    }
    assert sorted(k[2:] for k in index if k.startswith(b"c:")) == [b"", b"m1", b"m2", b"m2b", b"r1"]
    assert sorted(k[2:] for k in index if k.startswith(b"f:")) == [b"r1", b"r2", b"r2b"]
    batches = sorted(v for k, v in index.items() if k.startswith(b"e:"))
    stored_as = ["1:1:1", "2:2:3", "3:2:3", "4:4:6", "5:4:6", "6:4:6", "7:7:8", "8:7:8"]
    stored_as += ["9:9:10", "10:9:10", "11:11:11"]
    assert batches == sorted(v.encode() for v in stored_as)


# --- verifying a busy thread -------------------------------------------------------------


async def test_verify_reports_a_thread_written_to_meanwhile_as_intact(
    store: RedisEventStore,
) -> None:
    version = await opened(store)
    done = asyncio.Event()

    async def writer() -> None:
        nonlocal version
        for _ in range(60):
            version = (await store.append(T, [feedback(T)], version)).last_version
        done.set()

    task = asyncio.create_task(writer())
    reports = []
    while not done.is_set():
        reports.append(await store.verify(T))
    await task
    assert reports
    assert all(r.ok for r in reports), [r.problems for r in reports if not r.ok]
    assert tag_of((await store.read(T, after=version - 1))[0].event) == "feedback.given"


def test_an_event_with_a_naive_time_cannot_be_built() -> None:
    with pytest.raises(ValueError, match="occurred_at must carry a time zone"):
        replace(feedback(T), occurred_at=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="lease_expires_at must carry a time zone"):
        replace(reply_started(T, "r1", "m1"), lease_expires_at=datetime(2026, 1, 1))


async def test_a_number_too_large_to_store_is_an_invalid_batch(store: RedisEventStore) -> None:
    version = await opened(store)
    with pytest.raises(InvalidBatchError, match="is invalid"):
        await store.append(T, [replace(ended(T, "r1"), evidence=(2**70,))], version)


async def test_an_unreadable_meta_is_a_chain_error_when_reading_the_head(
    store: RedisEventStore, client: Redis, keys: Keyspace
) -> None:
    await opened(store)
    await client.hset(keys.meta(T), "version", "three")
    with pytest.raises(ChainError, match="the meta is unreadable"):
        await store.head(T)
