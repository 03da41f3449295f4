"""What the views hold: summaries and analytics increments, over literal events."""

from __future__ import annotations

from collections import Counter
from datetime import date

import pytest
from msgspec.structs import replace

from events.schema import AnyEvent, EndRejected, MessageClassified
from projections.analytics import AnalyticsRangeError, days
from projections.state import EMPTY, apply, fold
from projections.views import increments, summary, tally
from tests.factories import ended, feedback, forked, posted, redirected, replied, started

T = "v1"


def total(events: list[AnyEvent]) -> Counter[str]:
    out: Counter[str] = Counter()
    state = EMPTY
    for event in events:
        out += increments(state, event)
        state = apply(state, event)
    return out


def test_a_conversation_ended_after_a_redirect_counts_as_documented() -> None:
    events: list[AnyEvent] = [
        started(T),
        posted(T, "m1", None),
        MessageClassified(
            thread_id=T,
            actor="classifier",
            message_id="m1",
            classifier="rules",
            classifier_version="1",
            tier="terminable",
            categories=("S1", "S9"),
        ),
        redirected(T, "r1", "m1"),
        posted(T, "m2", "r1"),
        replied(T, "r2", "m2", "goodbye"),
        EndRejected(thread_id=T, actor="model", leaf_id="r2", reason="no warning given"),
        ended(T, "r2"),
        feedback(T, "r2"),
        forked(T, "m2", "r1", "m2b"),
        posted(T, "m2b", "r1"),
    ]
    assert total(events) == Counter(
        {
            "threads_started": 1,
            "user_turns": 3,
            "tier:terminable": 1,
            "category:S1": 1,
            "category:S9": 1,
            "redirects": 1,
            "ends_rejected": 1,
            "ends_rejected:reason:no warning given": 1,
            "ends": 1,
            "ends:actor:model": 1,
            "ends:category:abuse": 1,
            "ends:model:scripted": 1,
            "ends_after_redirects": 1,
            "turns_first_redirect_to_end": 1,
            "feedback:down": 1,
            "feedback_on_ended:down": 1,
            "forks": 1,
            "forks_after_end": 1,
        }
    )


def test_a_summary_shows_what_a_thread_list_needs() -> None:
    events: list[AnyEvent] = [
        started(T, title="Trip"),
        posted(T, "m1", None),
        replied(T, "r1", "m1"),
        ended(T, "r1"),
    ]
    fields = summary(fold(events))
    assert {k: fields[k] for k in ("tenant", "owner", "title", "status", "message_count")} == {
        "tenant": "acme",
        "owner": "u1",
        "title": "Trip",
        "status": "ended",
        "message_count": "2",
    }
    assert fields["updated_at"] == events[-1].occurred_at.isoformat()


def test_a_crisis_classification_counts_as_a_crisis_flag() -> None:
    crisis = MessageClassified(
        thread_id=T,
        actor="classifier",
        message_id="m1",
        classifier="rules",
        classifier_version="1",
        tier="crisis",
    )
    assert total([started(T), posted(T, "m1", None), crisis])["crisis_flags"] == 1


def test_feedback_on_an_open_thread_is_not_counted_as_on_an_ended_one() -> None:
    counts = total([started(T), posted(T, "m1", None), replace(feedback(T), rating="up")])
    assert (counts["feedback:up"], counts["feedback_on_ended:up"]) == (1, 0)


def test_analytics_days_are_a_bounded_forward_range() -> None:
    assert days(date(2026, 2, 27), date(2026, 3, 1)) == ["2026-02-27", "2026-02-28", "2026-03-01"]
    with pytest.raises(AnalyticsRangeError, match="ends"):
        days(date(2026, 3, 1), date(2026, 2, 1))
    with pytest.raises(AnalyticsRangeError, match="at most 366 days"):
        days(date(2025, 1, 1), date(2026, 3, 1))


def test_a_tally_writes_no_counter_that_adds_nothing() -> None:
    # Ended at the redirect itself: no user turn from the first redirect to the end.
    events: list[AnyEvent] = [
        started(T),
        posted(T, "m1", None),
        redirected(T, "r1", "m1"),
        ended(T, "r1"),
    ]
    _state, by_day = tally(EMPTY, events)
    (counts,) = by_day.values()
    assert counts["ends_after_redirects"] == 1
    assert "turns_first_redirect_to_end" not in counts
    assert all(amount > 0 for amount in counts.values())
