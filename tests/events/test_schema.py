"""Events: stable tags, golden stored bytes, and reading what older or newer writers stored."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import get_args

import msgspec
import pytest

from events.schema import (
    AnyEvent,
    BranchForked,
    EndRejected,
    FeedbackGiven,
    MessageClassified,
    MessagePosted,
    Placement,
    PolicyRef,
    ReplyCompleted,
    ReplyFailed,
    ReplyRedirected,
    ReplyStarted,
    ReplyWarned,
    ThreadEnded,
    ThreadStarted,
    Usage,
    decode,
    encode,
    new_id,
    placement,
    tag_of,
)

GOLDEN = json.loads((Path(__file__).parent / "golden" / "events.json").read_text())
AT = datetime(2026, 8, 15, 12, 0, tzinfo=UTC)
W = {"thread_id": "t1", "event_id": "e1", "occurred_at": AT}

EVENTS: dict[str, AnyEvent] = {
    "thread.started": ThreadStarted(
        actor="user",
        actor_id="u1",
        tenant="acme",
        owner="u1",
        model="claude-opus-4-1",
        policy=PolicyRef(name="ladder", version="1", params={"redirects_before_warning": 2}),
        title="Trip",
        **W,  # type: ignore[arg-type]
    ),
    "message.posted": MessagePosted(
        actor="user",
        message_id="m1",
        parent_id=None,
        content="hello",
        **W,  # type: ignore[arg-type]
    ),
    "message.classified": MessageClassified(
        actor="classifier",
        message_id="m1",
        classifier="rules",
        classifier_version="1",
        tier="terminable",
        categories=("S1",),
        score=0.9,
        **W,  # type: ignore[arg-type]
    ),
    "reply.started": ReplyStarted(
        actor="system",
        message_id="r1",
        parent_id="m1",
        model="scripted",
        lease_owner="w1",
        lease_expires_at=datetime(2026, 8, 15, 12, 0, 30, tzinfo=UTC),
        **W,  # type: ignore[arg-type]
    ),
    "reply.completed": ReplyCompleted(
        actor="model",
        message_id="r1",
        parent_id="m1",
        content="hi",
        kind="answer",
        content_sha256="8f434346648f6b96df89dda901c5176b10a6d83961dd3c1ac88b59b2dc327aa4",
        usage=Usage(input_tokens=3, output_tokens=1),
        **W,  # type: ignore[arg-type]
    ),
    "reply.redirected": ReplyRedirected(
        actor="model",
        message_id="r1",
        parent_id="m1",
        content="Let's change course.",
        attempt=1,
        category="S9",
        **W,  # type: ignore[arg-type]
    ),
    "reply.warned": ReplyWarned(
        actor="model",
        message_id="r1",
        parent_id="m1",
        content="This chat may end.",
        category="S9",
        **W,  # type: ignore[arg-type]
    ),
    "reply.failed": ReplyFailed(
        actor="system",
        message_id="r1",
        parent_id="m1",
        reason="cancelled",
        partial_content="Hel",
        **W,  # type: ignore[arg-type]
    ),
    "branch.forked": BranchForked(
        actor="user",
        edited_message_id="m1",
        parent_id=None,
        new_message_id="m1b",
        **W,  # type: ignore[arg-type]
    ),
    "end.rejected": EndRejected(
        actor="model",
        leaf_id="r1",
        reason="no warning given",
        category="S9",
        **W,  # type: ignore[arg-type]
    ),
    "thread.ended": ThreadEnded(
        actor="model",
        leaf_id="r3",
        scope="branch",
        reason="abuse persisted after a warning",
        category="abuse",
        policy_version="1",
        evidence=(4, 6, 8),
        **W,  # type: ignore[arg-type]
    ),
    "feedback.given": FeedbackGiven(
        actor="user",
        rating="up",
        message_id="r1",
        comment="fair",
        **W,  # type: ignore[arg-type]
    ),
}


def test_the_union_holds_exactly_the_documented_tags() -> None:
    assert {tag_of(e) for e in EVENTS.values()} == set(EVENTS)
    assert len(get_args(AnyEvent)) == len(EVENTS) == len(GOLDEN)


@pytest.mark.parametrize("tag", sorted(EVENTS))
def test_stored_bytes_match_the_golden_bytes(tag: str) -> None:
    assert encode(EVENTS[tag]).hex() == GOLDEN[tag]


@pytest.mark.parametrize("tag", sorted(EVENTS))
def test_golden_bytes_decode_to_the_event(tag: str) -> None:
    assert decode(bytes.fromhex(GOLDEN[tag])) == EVENTS[tag]


def test_a_newer_writers_unknown_fields_are_ignored_when_reading() -> None:
    newer = msgspec.msgpack.decode(bytes.fromhex(GOLDEN["message.posted"]))
    newer["language"] = "en"
    assert decode(msgspec.msgpack.encode(newer)) == EVENTS["message.posted"]


def test_an_older_writers_missing_optional_fields_take_their_defaults() -> None:
    older = msgspec.msgpack.decode(bytes.fromhex(GOLDEN["feedback.given"]))
    del older["comment"]
    assert decode(msgspec.msgpack.encode(older)).comment == ""  # type: ignore[union-attr]


def test_an_unknown_tag_is_a_decode_error() -> None:
    stored = msgspec.msgpack.decode(bytes.fromhex(GOLDEN["feedback.given"]))
    stored["type"] = "feedback.retracted"
    with pytest.raises(msgspec.ValidationError, match=r"Invalid value 'feedback\.retracted'"):
        decode(msgspec.msgpack.encode(stored))


def test_new_ids_are_uuid7_and_sort_by_creation() -> None:
    ids = [new_id() for _ in range(100)]
    assert all(i[14] == "7" for i in ids)
    assert ids == sorted(ids)


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("message.posted", Placement("", "m1", "u")),
        ("reply.started", Placement("m1", "r1", "a")),
        ("reply.completed", Placement("m1", "r1", "a")),
        ("reply.failed", Placement("m1", "r1", "a")),
        ("branch.forked", Placement("", "m1b", "", "m1")),
        ("thread.ended", Placement("r3")),
        ("feedback.given", Placement(None)),
        ("message.classified", Placement(None)),
        ("end.rejected", Placement(None)),
        ("thread.started", Placement(None)),
    ],
)
def test_placement_says_where_an_event_sits_in_the_tree(tag: str, expected: Placement) -> None:
    assert placement(EVENTS[tag]) == expected
