"""The audit of ended threads, on every backend."""

from __future__ import annotations

import pytest
from msgspec.structs import replace

from events.keys import Keyspace
from events.records import StoredEntry
from events.schema import AnyEvent, MessageClassified, Tier
from events.store import Redis, RedisEventStore
from projections.audit import audit
from tests.events.test_verify import rewrite_stream
from tests.factories import ended, posted, redirected, replied, started, warned

pytestmark = pytest.mark.anyio

T = "audit-1"


def turn(i: int, tier: Tier, reply: str) -> list[AnyEvent]:
    parent = f"r{i - 1}" if i > 1 else None
    events: list[AnyEvent] = [
        posted(T, f"m{i}", parent, f"turn {i}"),
        MessageClassified(
            thread_id=T,
            actor="classifier",
            message_id=f"m{i}",
            classifier="rules",
            classifier_version="1",
            tier=tier,
        ),
    ]
    make = {"redirect": redirected, "warning": warned}.get(reply)
    if make is not None:
        return [*events, make(T, f"r{i}", f"m{i}")]
    return [*events, replace(replied(T, f"r{i}", f"m{i}"), kind=reply)]


async def write(store: RedisEventStore, *turns: list[AnyEvent], end: AnyEvent) -> int:
    version = (await store.append(T, [started(T)], 0)).last_version
    for events in turns:
        version = (await store.append(T, events, version)).last_version
    return (await store.append(T, [end], version)).last_version


LADDER = [
    turn(1, "terminable", "redirect"),
    turn(2, "terminable", "redirect"),
    turn(3, "terminable", "warning"),
    turn(4, "terminable", "farewell"),
]


async def test_an_untouched_thread_ended_by_the_ladder_passes(store: RedisEventStore) -> None:
    end_version = await write(store, *LADDER, end=ended(T, "r4"))

    report = await audit(store, T)

    assert report.ok, report
    assert (report.chain_ok, report.seal_ok, report.meta_ok) == (True, True, True)
    (end,) = report.ends
    assert (end.leaf_id, end.version, end.actor, end.justified) == (
        "r4",
        end_version,
        "model",
        True,
    )
    assert [(m.id, m.kind, m.tier) for m in end.path][-3:] == [
        ("r3", "warning", None),
        ("m4", "message", "terminable"),
        ("r4", "farewell", None),
    ]


async def test_an_end_without_its_preconditions_is_reported_unjustified(
    store: RedisEventStore,
) -> None:
    end_version = await write(
        store, *LADDER[:1], turn(2, "terminable", "farewell"), end=ended(T, "r2")
    )

    report = await audit(store, T)

    assert not report.ok
    assert report.first_bad_version == end_version
    (end,) = report.ends
    assert (end.justified, end.verdict) == (False, "1 of 2 redirections given")


async def test_a_moderators_end_is_recorded_as_such_and_justified(store: RedisEventStore) -> None:
    await write(store, turn(1, "benign", "answer"), end=replace(ended(T, "r1"), actor="moderator"))
    report = await audit(store, T)
    assert report.ok
    assert report.ends[0].verdict == "a moderator may end any branch"


async def test_a_tampered_history_fails_the_audit_at_its_first_bad_version(
    store: RedisEventStore, client: Redis, keys: Keyspace
) -> None:
    end_version = await write(store, *LADDER, end=ended(T, "r4"))
    await client.hset(keys.meta(T), "head", b"\x00" * 32)
    report = await audit(store, T)
    assert (report.ok, report.meta_ok, report.first_bad_version) == (False, False, end_version)


async def test_an_entry_that_does_not_decode_is_reported_not_raised(
    store: RedisEventStore, client: Redis, keys: Keyspace
) -> None:
    await write(store, *LADDER, end=ended(T, "r4"))
    garbage = StoredEntry(entry_id="2-1", type="x", data=b"\xc1", hash=b"")
    await rewrite_stream(client, keys, lambda es: [*es[:2], garbage, *es[2:]], thread=T)
    report = await audit(store, T)
    assert not report.ok
    assert (report.chain_ok, report.first_bad_version) == (False, 3)
