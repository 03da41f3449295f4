"""The fold: literal event lists, whole expected states; no I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import immutables
import pytest
from msgspec.structs import replace

from events.schema import AnyEvent, MessageClassified, Tier
from projections.branches import (
    PathCounters,
    UnknownMessageError,
    active_tip,
    counters,
    path,
    status,
    tip_status,
    tips,
)
from projections.state import EMPTY, Classification, End, Message, ThreadState, apply, fold
from tests.factories import (
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

T = "t1"
AT = datetime(2026, 8, 15, 12, 0, tzinfo=UTC)


def timed(events: list[AnyEvent]) -> list[AnyEvent]:
    """The events with ids e1, e2, ... and one second apart, so states can be written out."""
    return [
        replace(e, event_id=f"e{i}", occurred_at=AT + timedelta(seconds=i))
        for i, e in enumerate(events, start=1)
    ]


def at(seconds: int) -> datetime:
    return AT + timedelta(seconds=seconds)


EXCHANGE = timed([started(T), posted(T, "m1", None, "hi"), replied(T, "r1", "m1", "hello")])


def test_an_exchange_folds_to_its_whole_state() -> None:
    state = fold(EXCHANGE)

    assert state == ThreadState(
        thread_id=T,
        version=3,
        started=EXCHANGE[0],  # type: ignore[arg-type]
        messages=immutables.Map(
            m1=Message(
                id="m1",
                role="user",
                parent_id=None,
                version=2,
                created_at=at(2),
                content="hi",
                children=("r1",),
            ),
            r1=Message(
                id="r1",
                role="assistant",
                parent_id="m1",
                version=3,
                created_at=at(3),
                content="hello",
                kind="answer",
            ),
        ),
        roots=("m1",),
        updated_at=at(3),
    )


def test_folding_from_a_state_equals_folding_in_one_pass() -> None:
    events = timed([*_ended_then_edited()])
    for k in range(len(events) + 1):
        assert fold(events[k:], fold(events[:k])) == fold(events)


def test_the_state_at_version_k_is_the_fold_of_the_first_k_events() -> None:
    state = fold(EXCHANGE[:2])
    assert (state.version, list(state.messages), status(state)) == (2, ["m1"], "open")
    assert fold([], EMPTY) == EMPTY


def test_a_pending_generation_makes_the_thread_busy_until_it_ends() -> None:
    events = timed([started(T), posted(T, "m1", None), reply_started(T, "r1", "m1")])
    busy = fold(events)
    assert (status(busy), busy.messages["r1"].kind) == ("busy", "pending")
    done = apply(busy, replace(replied(T, "r1", "m1", "there"), occurred_at=at(9)))
    assert (status(done), done.messages["r1"].kind, done.messages["r1"].content) == (
        "open",
        "answer",
        "there",
    )
    assert done.messages["r1"].version == 3  # a message is dated by its first event


def test_a_failed_generation_keeps_its_partial_text_and_reason() -> None:
    events = timed([started(T), posted(T, "m1", None), reply_started(T, "r1", "m1")])
    state = fold([*events, replace(failed(T, "r1", "m1"), partial_content="Hel")])
    reply = state.messages["r1"]
    assert (reply.kind, reply.content, reply.failure, status(state)) == (
        "failed",
        "Hel",
        "cancelled",
        "open",
    )


def _ended_then_edited() -> list[AnyEvent]:
    return [
        started(T),
        posted(T, "m1", None),
        redirected(T, "r1", "m1"),
        posted(T, "m2", "r1"),
        warned(T, "r2", "m2"),
        posted(T, "m3", "r2"),
        replied(T, "r3", "m3", "goodbye"),
        ended(T, "r3"),
        feedback(T, "r3"),
        forked(T, "m2", "r1", "m2b"),
        posted(T, "m2b", "r1", "sorry, let me ask differently"),
    ]


def test_an_edit_after_an_end_opens_a_new_active_branch() -> None:
    events = timed(_ended_then_edited())
    state = fold(events)

    assert tips(state) == ("r3", "m2b")
    assert active_tip(state) == "m2b"
    assert (tip_status(state, "r3"), tip_status(state, "m2b")) == ("ended", "open")
    assert (status(state), status(state, "r3")) == ("open", "ended")
    assert state.messages["m2b"].edited_from == "m2"
    assert state.messages["r1"].children == ("m2", "m2b")
    assert state.ends == immutables.Map(
        r3=End(
            leaf_id="r3",
            version=8,
            scope="branch",
            actor="model",
            actor_id=None,
            reason="persistent abuse after a warning",
            category="abuse",
            policy_version="1",
            evidence=(),
            at=at(8),
        )
    )
    assert [f.message_id for f in state.feedback] == ["r3"]


def test_the_path_to_a_tip_reads_the_conversation_on_that_branch() -> None:
    state = fold(timed(_ended_then_edited()))
    assert [m.id for m in path(state, "r3")] == ["m1", "r1", "m2", "r2", "m3", "r3"]
    assert [m.id for m in path(state, "m2b")] == ["m1", "r1", "m2b"]


def test_path_counters_count_what_the_branch_kept() -> None:
    state = fold(timed(_ended_then_edited()))
    assert counters(path(state, "r3")) == PathCounters(redirects=1, warned=True)
    assert counters(path(state, "m2b")) == PathCounters(redirects=1)


def test_a_crisis_classification_flags_the_path() -> None:
    events = timed([started(T), posted(T, "m1", None)])
    crisis = MessageClassified(
        thread_id=T,
        actor="classifier",
        message_id="m1",
        classifier="rules",
        classifier_version="1",
        tier="crisis",
        categories=("S11",),
        score=0.97,
        occurred_at=at(3),
    )
    state = fold([*events, crisis])
    assert state.messages["m1"].classifications == (
        Classification(
            tier="crisis",
            categories=("S11",),
            score=0.97,
            classifier="rules",
            classifier_version="1",
            version=3,
        ),
    )
    assert counters(path(state, "m1")) == PathCounters(crisis=True, classified=1)


def test_a_thread_wide_end_ends_every_branch() -> None:
    events = timed([*_ended_then_edited(), ended(T, "m2b", "thread")])
    state = fold(events)
    assert {tip: tip_status(state, tip) for tip in tips(state)} == {
        "r3": "ended",
        "m2b": "ended",
    }
    assert status(state) == "ended"
    assert state.thread_end is not None
    assert state.thread_end.version == 12


def test_a_path_to_an_unknown_message_is_an_error() -> None:
    with pytest.raises(UnknownMessageError, match="no message 'nope' in thread 't1'"):
        path(fold(EXCHANGE), "nope")


def classified(message: str, tier: Tier, *, error: str | None = None) -> MessageClassified:
    return MessageClassified(
        thread_id=T,
        actor="classifier",
        message_id=message,
        classifier="rules",
        classifier_version="1",
        tier=tier,
        error=error,
    )


def test_a_classification_stored_before_its_message_is_kept_for_it() -> None:
    state = fold([started(T), classified("m1", "crisis"), posted(T, "m1", None)])
    assert state.messages["m1"].tier == "crisis"
    assert state.early == immutables.Map()


@pytest.mark.parametrize(
    "later",
    [
        pytest.param(("terminable", None), id="another-verdict"),
        pytest.param(("unknown", "timeout"), id="a-failed-run"),
        pytest.param(("benign", None), id="benign"),
    ],
)
def test_a_crisis_flag_is_never_taken_back(later: tuple[Tier, str | None]) -> None:
    tier, error = later
    events = [started(T), posted(T, "m1", None), classified("m1", "crisis")]
    state = fold([*events, classified("m1", tier, error=error)])
    assert state.messages["m1"].tier == "crisis"
    assert counters(path(state, "m1")).crisis


def test_a_failed_classification_does_not_replace_a_decisive_one() -> None:
    events = [started(T), posted(T, "m1", None), classified("m1", "terminable")]
    state = fold([*events, classified("m1", "unknown", error="timeout")])
    assert state.messages["m1"].tier == "terminable"
    only_failed = fold([*events[:2], classified("m1", "unknown", error="x")])
    assert only_failed.messages["m1"].tier == "unknown"


@pytest.mark.parametrize("scope", ["branch", "thread"])
def test_an_end_closes_the_generation_it_cut_off(scope: str) -> None:
    events = [started(T), posted(T, "m1", None), reply_started(T, "r1", "m1")]
    state = fold([*events, ended(T, "r1", scope)])  # type: ignore[arg-type]
    reply = state.messages["r1"]
    assert (reply.kind, reply.failure) == ("failed", "ended")
    assert not counters(path(state, "r1")).pending


def test_a_generation_running_below_the_active_tip_makes_the_thread_busy() -> None:
    events = [started(T), posted(T, "m1", None), reply_started(T, "r1", "m1")]
    state = fold([*events, posted(T, "m2", "r1")])
    assert (active_tip(state), status(state)) == ("m2", "busy")


def test_status_of_an_unknown_tip_is_an_error() -> None:
    state = fold(EXCHANGE)
    with pytest.raises(UnknownMessageError):
        status(state, "nope")
    with pytest.raises(UnknownMessageError):
        tip_status(fold([*EXCHANGE, ended(T, "r1", "thread")]), "nope")
