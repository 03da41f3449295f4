"""What the views hold: a thread's summary, and the analytics counters each event adds.

Both are pure: the summary is a function of the thread's state, the increments a function of
an event and the state just before it. The projector writes them; a rebuild from zero writes
the same.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import UTC
from typing import Final

from events.schema import (
    AnyEvent,
    BranchForked,
    EndRejected,
    FeedbackGiven,
    MessageClassified,
    MessagePosted,
    ReplyRedirected,
    ReplyWarned,
    ThreadEnded,
    ThreadStarted,
)
from projections.branches import active_tip, path, status
from projections.state import ThreadState, apply, fold

UNKNOWN_TENANT: Final = "-"


def summary(state: ThreadState) -> dict[str, str]:
    """The fields a thread list shows: title, status, when it changed, how many messages."""
    started = state.started
    tip = active_tip(state)
    return {
        "thread_id": state.thread_id,
        "tenant": started.tenant if started else UNKNOWN_TENANT,
        "owner": started.owner if started else "",
        "title": started.title if started else "",
        "status": status(state, tip) if tip else status(state),
        "created_at": started.occurred_at.isoformat() if started else "",
        "updated_at": state.updated_at.isoformat() if state.updated_at else "",
        "message_count": str(len(path(state, tip)) if tip else 0),
        "active_tip": tip or "",
    }


def increments(before: ThreadState, event: AnyEvent) -> Counter[str]:
    """The analytics counters one event adds, judged against the thread just before it."""
    out: Counter[str] = Counter()
    _count(out, before, event)
    return out


def tally(
    state: ThreadState, events: Iterable[AnyEvent]
) -> tuple[ThreadState, dict[str, Counter[str]]]:
    """The state after `events` and the counters they add, by UTC day: what `increments` then
    `apply`, event by event, give. Of the state before an event `increments` reads only what
    a `thread.ended` changes (the ends) and what the first event sets (the start), so the
    events between two ends are counted against the state before them and folded at once."""
    by_day: defaultdict[str, Counter[str]] = defaultdict(Counter)
    run: list[AnyEvent] = []
    for event in events:
        ending = isinstance(event, ThreadEnded)
        if ending and run:
            state, run = fold(run, state), []
        _count(by_day[day_of(event)], state, event)
        if ending:
            state = apply(state, event)
        else:
            run.append(event)
    return fold(run, state), {day: counts for day, counts in by_day.items() if counts}


def day_of(event: AnyEvent) -> str:
    """The UTC day of an event, whatever zone its time was written in."""
    return event.occurred_at.astimezone(UTC).date().isoformat()


def tenant_of(state: ThreadState) -> str:
    return state.started.tenant if state.started else UNKNOWN_TENANT


def _count(out: Counter[str], before: ThreadState, event: AnyEvent) -> None:
    """Add what `event` counts to `out`."""
    ended = bool(before.ends) or before.thread_end is not None
    match event:
        case ThreadStarted():
            out["threads_started"] += 1
        case MessagePosted():
            out["user_turns"] += 1
        case MessageClassified(tier=tier, categories=categories):
            out[f"tier:{tier}"] += 1
            out.update(f"category:{c}" for c in categories)
            if tier == "crisis":
                out["crisis_flags"] += 1
        case ReplyRedirected():
            out["redirects"] += 1
        case ReplyWarned():
            out["warnings"] += 1
        case ThreadEnded():
            out.update(+_end(before, event))  # only what it adds: no zero is written
        case EndRejected(reason=reason):
            out["ends_rejected"] += 1
            out[f"ends_rejected:reason:{reason}"] += 1
        case BranchForked():
            out["forks"] += 1
            if ended:
                out["forks_after_end"] += 1
        case FeedbackGiven(rating=rating):
            out[f"feedback:{rating}"] += 1
            if ended:
                out[f"feedback_on_ended:{rating}"] += 1


def _end(before: ThreadState, event: ThreadEnded) -> Counter[str]:
    out: Counter[str] = Counter()
    out["ends"] += 1
    out[f"ends:actor:{event.actor}"] += 1
    out[f"ends:category:{event.category or 'none'}"] += 1
    model = before.started.model if before.started else "unknown"
    out[f"ends:model:{model}"] += 1
    if event.leaf_id in before.messages:
        branch = path(apply(before, event), event.leaf_id)
        redirected = [i for i, m in enumerate(branch) if m.kind == "redirect"]
        if redirected:
            turns = sum(m.role == "user" for m in branch[redirected[0] :])
            out["turns_first_redirect_to_end"] += turns
            out["ends_after_redirects"] += 1
    return out
