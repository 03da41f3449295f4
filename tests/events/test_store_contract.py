"""The event store contract, run on fakeredis, a real Redis and a real 3-node Redis Cluster."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest
from msgspec.structs import replace

from events.chain import GENESIS, chain_hash
from events.errors import (
    ConcurrencyError,
    IdempotencyError,
    InvalidBatchError,
    ThreadEndedError,
)
from events.keys import Keyspace
from events.schema import AnyEvent, encode, tag_of
from events.store import APPEND, Redis, RedisEventStore
from tests.conftest import SEAL_KEY
from tests.factories import (
    classified,
    ended,
    failed,
    feedback,
    forked,
    posted,
    redirected,
    replied,
    reply_started,
    started,
    warned,
)

pytestmark = pytest.mark.anyio

T = "thread-1"


async def snapshot(client: Redis, keys: Keyspace, thread: str) -> tuple[Any, ...]:
    """Everything an append can write: stream, feed, index and meta."""
    return (
        await client.xrange(keys.stream(thread)),
        await client.xrange(keys.feed(keys.partition(thread))),
        await client.hgetall(keys.index(thread)),
        await client.hgetall(keys.meta(thread)),
    )


async def opened(store: RedisEventStore, thread: str = T) -> int:
    """A thread with one exchange (m1 -> r1); returns its version."""
    await store.append(thread, [started(thread)], 0)
    result = await store.append(
        thread, [posted(thread, "m1", None), replied(thread, "r1", "m1")], 1
    )
    return result.last_version


async def ended_at_r2(store: RedisEventStore, scope: str = "branch") -> int:
    """m1 -> r1 -> m2 -> r2, the branch ended at r2; returns the version of the end."""
    await opened(store)
    await store.append(T, [posted(T, "m2", "r1"), replied(T, "r2", "m2")], 3)
    result = await store.append(T, [ended(T, "r2", scope)], 5)  # type: ignore[arg-type]
    return result.last_version


# --- appending and reading ---------------------------------------------------------------


async def test_append_assigns_consecutive_versions_and_chains_hashes(
    store: RedisEventStore,
) -> None:
    first = await store.append(T, [started(T)], 0)
    batch = [posted(T, "m1", None), replied(T, "r1", "m1")]
    second = await store.append(T, batch, 1)

    assert (first.first_version, first.last_version) == (1, 1)
    assert (second.first_version, second.last_version) == (2, 3)
    stored_start = (await store.read(T))[0].event
    h1 = chain_hash(GENESIS, T, 1, "thread.started", encode(stored_start))
    assert first.head == h1
    h2 = chain_hash(h1, T, 2, "message.posted", encode(batch[0]))
    assert second.head == chain_hash(h2, T, 3, "reply.completed", encode(batch[1]))


async def test_read_returns_events_in_order_after_a_version(store: RedisEventStore) -> None:
    await opened(store)
    events = await store.read(T, after=1)
    assert [(e.version, tag_of(e.event)) for e in events] == [
        (2, "message.posted"),
        (3, "reply.completed"),
    ]


async def test_events_pages_through_a_long_thread(store: RedisEventStore) -> None:
    await store.append(T, [started(T)], 0)
    version, parent = 1, None
    for i in range(10):
        batch: list[AnyEvent] = [posted(T, f"m{i}", parent), replied(T, f"r{i}", f"m{i}")]
        version = (await store.append(T, batch, version)).last_version
        parent = f"r{i}"

    versions = [e.version async for e in store.events(T, page=3)]
    assert versions == list(range(1, 22))


async def test_head_reports_version_hash_and_ends(store: RedisEventStore) -> None:
    end_version = await ended_at_r2(store)
    head = await store.head(T)
    events = await store.read(T)
    assert (head.version, head.hash) == (6, events[-1].hash)
    assert head.ended == {"r2": end_version}
    assert head.thread_end is None
    assert set(head.seals) == {end_version}


async def test_feed_receives_every_event_with_thread_and_version(
    store: RedisEventStore, keys: Keyspace
) -> None:
    await opened(store)
    feed = await store.read_feed(keys.partition(T))
    assert [(f.thread_id, f.version, f.type) for f in feed] == [
        (T, 1, "thread.started"),
        (T, 2, "message.posted"),
        (T, 3, "reply.completed"),
    ]
    assert feed[1].event == (await store.read(T))[1].event
    assert await store.read_feed(keys.partition(T), after=feed[1].entry_id) == feed[2:]


# --- optimistic concurrency --------------------------------------------------------------


async def test_fifty_concurrent_appends_at_one_version_have_exactly_one_winner(
    store: RedisEventStore, client: Redis, keys: Keyspace
) -> None:
    version = await opened(store)
    before = await snapshot(client, keys, T)

    attempts = [
        store.append(T, [posted(T, f"m-{i}", "r1"), replied(T, f"r-{i}", f"m-{i}")], version)
        for i in range(50)
    ]
    results = await asyncio.gather(*attempts, return_exceptions=True)

    winners = [r for r in results if not isinstance(r, BaseException)]
    losers = [r for r in results if isinstance(r, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(e, ConcurrencyError) for e in losers)
    assert {(e.expected, e.actual) for e in losers} == {(3, 5)}  # type: ignore[union-attr]
    after = await snapshot(client, keys, T)
    stream, feed, index = (len(a) - len(b) for a, b in zip(after[:3], before[:3], strict=True))
    assert (stream, feed) == (2, 2)
    # two event ids, two messages, r1 and the new message have children, the reply is done
    assert index == 7
    assert int(after[3][b"version"]) == 5


async def test_stale_expected_version_is_a_concurrency_error_naming_both(
    store: RedisEventStore,
) -> None:
    await opened(store)
    with pytest.raises(ConcurrencyError) as caught:
        await store.append(T, [posted(T, "m2", "r1")], 1)
    assert (caught.value.expected, caught.value.actual) == (1, 3)


# --- a rejected batch writes nothing -----------------------------------------------------


REJECTED = [
    pytest.param([], 3, InvalidBatchError, id="empty"),
    pytest.param([feedback(T) for _ in range(65)], 3, InvalidBatchError, id="over-64"),
    pytest.param([posted(T, "m2", "r1")] * 2, 3, InvalidBatchError, id="id-twice"),
    pytest.param([started(T)], 3, InvalidBatchError, id="second-start"),
    pytest.param([posted(T, "m2", "r1")], 2, ConcurrencyError, id="stale-version"),
    pytest.param([posted(T, "m2", "r2")], 3, ThreadEndedError, id="below-ended-leaf"),
    pytest.param([ended(T, "r1"), posted(T, "m2", "r1")], 3, InvalidBatchError, id="end-then-more"),
]


@pytest.mark.parametrize(("batch", "expected", "error"), REJECTED)
async def test_a_rejected_batch_writes_nothing_anywhere(
    store: RedisEventStore,
    client: Redis,
    keys: Keyspace,
    batch: list[AnyEvent],
    expected: int,
    error: type[Exception],
) -> None:
    await opened(store)
    await store.append(T, [posted(T, "x1", "r1"), replied(T, "r2", "x1"), ended(T, "r2")], 3)
    expected += 3
    before = await snapshot(client, keys, T)

    with pytest.raises(error):
        await store.append(T, batch, expected)

    assert await snapshot(client, keys, T) == before


async def test_the_script_itself_rejects_a_malformed_batch(
    store: RedisEventStore, client: Redis, keys: Keyspace
) -> None:
    await opened(store)
    before = await snapshot(client, keys, T)

    async def run(batch: list[list[object]], hashes: bytes, data: bytes = b"") -> list[bytes]:
        control = msgspec.json.encode([T, 3, batch, ""])
        reply: list[bytes] = await store.run_script(keys.append_keys(T), [control, hashes, data])
        return reply

    assert await run([], GENESIS) == [b"err", b"batch", b"a batch holds 1 to 64 events, not 0"]
    too_many = [[f"e{i}", "feedback.given", False, "", "", "", "", "", 0] for i in range(65)]
    assert (await run(too_many, GENESIS * 66))[:2] == [b"err", b"batch"]
    twice = [["e1", "feedback.given", False, "", "", "", "", "", 0]] * 2
    reply = await run(twice, GENESIS * 3)
    assert reply == [b"err", b"batch", b"event id e1 appears twice in the batch"]
    one = [["e1", "feedback.given", False, "", "", "", "", "", 4]]
    assert (await run(one, GENESIS * 2, b"abc"))[:2] == [b"err", b"batch"]
    assert await snapshot(client, keys, T) == before


async def test_a_thread_must_begin_with_thread_started(store: RedisEventStore) -> None:
    with pytest.raises(InvalidBatchError, match=r"begins with thread\.started"):
        await store.append(T, [posted(T, "m1", None)], 0)


async def test_an_event_of_another_thread_is_rejected(store: RedisEventStore) -> None:
    await opened(store)
    with pytest.raises(InvalidBatchError, match="belongs to thread"):
        await store.append(T, [posted("other", "m2", "r1")], 3)


# --- idempotency -------------------------------------------------------------------------


@pytest.mark.parametrize("resend_at", [0, 1, 3, 6], ids=lambda v: f"at-{v}")
@pytest.mark.parametrize("which", ["first", "later"])
async def test_resending_a_stored_batch_returns_the_original_result(
    store: RedisEventStore, client: Redis, keys: Keyspace, resend_at: int, which: str
) -> None:
    start = [started(T)]
    first = await store.append(T, start, 0)
    await store.append(T, [posted(T, "m1", None), replied(T, "r1", "m1")], 1)
    later = [posted(T, "m2", "r1"), replied(T, "r2", "m2")]
    original_later = await store.append(T, later, 3)
    await store.append(T, [feedback(T)], 5)
    before = await snapshot(client, keys, T)
    batch, original = (start, first) if which == "first" else (later, original_later)

    again = await store.append(T, batch, resend_at)

    assert (again.first_version, again.last_version, again.head) == (
        original.first_version,
        original.last_version,
        original.head,
    )
    assert again.replayed
    assert await snapshot(client, keys, T) == before


@pytest.mark.parametrize(
    "resend",
    [
        pytest.param(lambda a, b: [b], id="part-of-a-batch"),
        pytest.param(lambda a, b: [a, b], id="two-batches-as-one"),
    ],
)
async def test_a_resend_that_is_not_a_stored_batch_is_rejected(
    store: RedisEventStore, client: Redis, keys: Keyspace, resend: Any
) -> None:
    await opened(store)
    m2, r2 = posted(T, "m2", "r1"), replied(T, "r2", "m2")
    await store.append(T, [m2], 3)
    await store.append(T, [r2, feedback(T)], 4)
    before = await snapshot(client, keys, T)
    with pytest.raises(IdempotencyError, match="not as this batch"):
        await store.append(T, resend(m2, r2), 6)
    assert await snapshot(client, keys, T) == before


async def test_a_batch_partly_stored_is_rejected(store: RedisEventStore) -> None:
    await opened(store)
    stored = posted(T, "m2", "r1")
    await store.append(T, [stored], 3)
    with pytest.raises(IdempotencyError, match="some events") as caught:
        await store.append(T, [stored, replied(T, "r2", "m2")], 4)
    assert caught.value.event_id == stored.event_id


async def test_an_event_id_reused_with_other_content_is_rejected(store: RedisEventStore) -> None:
    await opened(store)
    first = posted(T, "m2", "r1", content="one")
    await store.append(T, [first], 3)
    reused = replace(first, content="two")
    with pytest.raises(IdempotencyError, match="different content"):
        await store.append(T, [reused], 4)


async def test_the_same_event_id_in_two_threads_is_fine(store: RedisEventStore) -> None:
    await opened(store, "a")
    await opened(store, "b")
    event = feedback("a")
    twin = replace(event, thread_id="b")
    await store.append("a", [event], 3)
    result = await store.append("b", [twin], 3)
    assert (result.first_version, result.replayed) == (4, False)


# --- the ended lock ----------------------------------------------------------------------


ATTACHING_TO_R2 = [
    pytest.param(lambda: [posted(T, "m3", "r2")], id="message.posted"),
    pytest.param(lambda: [reply_started(T, "r3", "r2")], id="reply.started"),
    pytest.param(lambda: [replied(T, "r3", "r2")], id="reply.completed"),
    pytest.param(lambda: [redirected(T, "r3", "r2")], id="reply.redirected"),
    pytest.param(lambda: [warned(T, "r3", "r2")], id="reply.warned"),
    pytest.param(lambda: [failed(T, "r3", "r2")], id="reply.failed"),
    pytest.param(lambda: [forked(T, "m3", "r2", "m3b"), posted(T, "m3b", "r2")], id="fork"),
    pytest.param(lambda: [ended(T, "r2")], id="thread.ended-again"),
]


@pytest.mark.parametrize("make", ATTACHING_TO_R2)
async def test_after_an_end_every_attaching_append_is_rejected(
    store: RedisEventStore, make: Any
) -> None:
    end_version = await ended_at_r2(store)
    with pytest.raises(ThreadEndedError) as caught:
        await store.append(T, make(), end_version)
    assert (caught.value.end_version, caught.value.leaf_id) == (end_version, "r2")


async def test_a_stale_writer_learns_of_the_end_not_of_the_version(
    store: RedisEventStore,
) -> None:
    end_version = await ended_at_r2(store)
    with pytest.raises(ThreadEndedError):
        await store.append(T, [posted(T, "m3", "r2")], end_version - 1)


async def test_after_an_end_a_fork_from_an_earlier_message_is_accepted(
    store: RedisEventStore,
) -> None:
    end_version = await ended_at_r2(store)
    fork = [forked(T, "m2", "r1", "m2b"), posted(T, "m2b", "r1", "let me rephrase")]
    result = await store.append(T, fork, end_version)
    more = await store.append(T, [replied(T, "r2b", "m2b")], result.last_version)
    assert more.last_version == end_version + 3


async def test_after_an_end_feedback_and_classifications_are_accepted(
    store: RedisEventStore,
) -> None:
    end_version = await ended_at_r2(store)
    result = await store.append(T, [feedback(T, "r2"), classified(T, "m2")], end_version)
    assert result.last_version == end_version + 2


async def test_retrying_the_ending_append_returns_the_original_result(
    store: RedisEventStore,
) -> None:
    await opened(store)
    await store.append(T, [posted(T, "m2", "r1")], 3)
    farewell_and_end = [replied(T, "r2", "m2", "goodbye"), ended(T, "r2")]
    original = await store.append(T, farewell_and_end, 4)

    again = await store.append(T, farewell_and_end, 4)

    assert (again.first_version, again.last_version, again.head) == (5, 6, original.head)


async def test_a_thread_scope_end_rejects_forks_too(store: RedisEventStore) -> None:
    end_version = await ended_at_r2(store, scope="thread")
    with pytest.raises(ThreadEndedError) as caught:
        await store.append(T, [forked(T, "m2", "r1", "m2b"), posted(T, "m2b", "r1")], end_version)
    assert (caught.value.end_version, caught.value.leaf_id) == (end_version, None)
    with pytest.raises(ThreadEndedError):
        await store.append(T, [posted(T, "m0", None)], end_version)
    assert (await store.append(T, [feedback(T)], end_version)).last_version == end_version + 1


@pytest.mark.parametrize("leaf", ["r2", "r1"], ids=["the-ended-leaf", "an-earlier-message"])
async def test_a_thread_scope_end_may_follow_a_branch_end(
    store: RedisEventStore, leaf: str
) -> None:
    end_version = await ended_at_r2(store)
    result = await store.append(T, [ended(T, leaf, "thread")], end_version)
    head = await store.head(T)
    assert head.thread_end == result.last_version
    assert head.ended["r2"] == end_version
    assert (await store.verify(T)).ok


@pytest.mark.parametrize("first", ["end", "message"])
async def test_terminate_and_append_at_one_version_have_one_winner(
    store: RedisEventStore, first: str
) -> None:
    version = await opened(store)
    end, message = [ended(T, "r1")], [posted(T, "m2", "r1")]

    if first == "end":
        await store.append(T, end, version)
        with pytest.raises(ThreadEndedError):
            await store.append(T, message, version)
    else:
        await store.append(T, message, version)
        with pytest.raises(ConcurrencyError):
            await store.append(T, end, version)
    assert len(await store.read(T)) == version + 1


async def test_terminate_and_append_racing_from_two_stores_never_continue_the_end(
    client: Redis, keys: Keyspace
) -> None:
    """Two stores (two processes' worth of head caches) race; each round has one winner."""
    ends, messages = (
        RedisEventStore(client, keys, SEAL_KEY),
        RedisEventStore(client, keys, SEAL_KEY),
    )
    for round_ in range(20):
        thread = f"race-{round_}"
        version = await opened(ends, thread)
        results = await asyncio.gather(
            ends.append(thread, [ended(thread, "r1")], version),
            messages.append(thread, [posted(thread, "m2", "r1")], version),
            return_exceptions=True,
        )
        assert sum(not isinstance(r, BaseException) for r in results) == 1
        tags = [tag_of(e.event) for e in await ends.read(thread)]
        if tags[-1] == "thread.ended":
            assert isinstance(results[1], ThreadEndedError)
        else:
            assert tags[-1] == "message.posted"
            assert isinstance(results[0], ConcurrencyError)
        assert (await ends.verify(thread)).ok


# --- meta and scripts --------------------------------------------------------------------


async def test_the_meta_equals_what_the_events_say(store: RedisEventStore) -> None:
    await ended_at_r2(store)
    await store.append(T, [forked(T, "m2", "r1", "m2b"), posted(T, "m2b", "r1")], 6)
    await store.append(T, [replied(T, "r2b", "m2b"), ended(T, "r2b", "thread")], 8)

    report = await store.verify(T)
    head = await store.head(T)

    assert report.ok, report.problems
    assert (head.version, head.hash) == (report.version, report.head)
    assert head.ended == {"r2": 6, "r2b": 10}
    assert head.thread_end == 10


async def test_append_works_after_script_flush(store: RedisEventStore, client: Redis) -> None:
    await opened(store)
    await client.script_flush()
    assert await client.script_exists(APPEND.sha) == [False]

    result = await store.append(T, [posted(T, "m2", "r1")], 3)
    assert result.last_version == 4
