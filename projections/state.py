"""A thread's state, derived from its events by a pure fold: the message tree, its tips and ends.

`fold(events)` is the thread as its events say; `fold(events[:k])` is the thread as it stood at
version k; `apply(state, event)` is one step. States are immutable values (the maps are
persistent, so a step costs O(log n), not a copy) and compare by value.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Final, Literal, TypeAlias, assert_never

import immutables
import msgspec
from msgspec.structs import replace

from events.schema import (
    AnyEvent,
    BranchForked,
    EndRejected,
    EndScope,
    FeedbackGiven,
    MessageClassified,
    MessagePosted,
    ReplyCompleted,
    ReplyFailed,
    ReplyRedirected,
    ReplyStarted,
    ReplyWarned,
    ThreadEnded,
    ThreadStarted,
    Tier,
)

Role: TypeAlias = Literal["user", "assistant"]
# What an assistant message is: the reply kinds, plus redirect, warning, failed and pending.
Kind: TypeAlias = Literal[
    "message",
    "answer",
    "crisis_support",
    "end_confirmation",
    "farewell",
    "redirect",
    "warning",
    "failed",
    "pending",
]


class Classification(msgspec.Struct, frozen=True, kw_only=True):
    tier: Tier
    categories: tuple[str, ...]
    score: float
    classifier: str
    classifier_version: str
    version: int
    error: str | None = None

    @property
    def decisive(self) -> bool:
        """A classification that says something: not a failed or timed-out one."""
        return self.tier != "unknown" and self.error is None


class Message(msgspec.Struct, frozen=True, kw_only=True):
    """A node of the message tree: a user message or an assistant reply."""

    id: str
    role: Role
    parent_id: str | None
    version: int
    created_at: datetime
    content: str = ""
    kind: Kind = "message"
    children: tuple[str, ...] = ()
    edited_from: str | None = None
    classifications: tuple[Classification, ...] = ()
    category: str | None = None
    attempt: int | None = None
    failure: str | None = None

    @property
    def tier(self) -> Tier | None:
        """What the message is: `crisis` if any classification ever said so (a crisis flag is
        never taken back), else the latest decisive tier, else `unknown` or None."""
        tiers = [c.tier for c in self.classifications if c.decisive]
        if "crisis" in tiers:
            return "crisis"
        if tiers:
            return tiers[-1]
        return "unknown" if self.classifications else None


class End(msgspec.Struct, frozen=True, kw_only=True):
    """Who ended a branch (or the thread), when, why, and under which policy."""

    leaf_id: str
    version: int
    scope: EndScope
    actor: str
    actor_id: str | None
    reason: str
    category: str | None
    policy_version: str
    evidence: tuple[int, ...]
    at: datetime


class Feedback(msgspec.Struct, frozen=True, kw_only=True):
    rating: str
    message_id: str | None
    comment: str
    version: int


class Rejection(msgspec.Struct, frozen=True, kw_only=True):
    leaf_id: str
    actor: str
    reason: str
    category: str | None
    version: int


class ThreadState(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the events of one thread say, at `version`."""

    thread_id: str = ""
    version: int = 0
    started: ThreadStarted | None = None
    messages: immutables.Map[str, Message] = immutables.Map()
    roots: tuple[str, ...] = ()
    edits: immutables.Map[str, str] = immutables.Map()  # new message id -> the one it edits
    # Classifications of messages not posted yet (the store allows them): attached on posting.
    early: immutables.Map[str, tuple[Classification, ...]] = immutables.Map()
    ends: immutables.Map[str, End] = immutables.Map()
    thread_end: End | None = None
    rejections: tuple[Rejection, ...] = ()
    feedback: tuple[Feedback, ...] = ()
    updated_at: datetime | None = None


EMPTY: Final = ThreadState()


def fold(events: Iterable[AnyEvent], state: ThreadState = EMPTY) -> ThreadState:
    """The state after `events`, applied in order from `state`."""
    for event in events:
        state = apply(state, event)
    return state


def apply(state: ThreadState, event: AnyEvent) -> ThreadState:
    """The state after one more event (the next version)."""
    state = replace(
        state,
        thread_id=event.thread_id,
        version=state.version + 1,
        updated_at=event.occurred_at,
    )
    match event:
        case ThreadStarted():
            return replace(state, started=event)
        case MessagePosted():
            return _with_user_message(state, event)
        case BranchForked():
            return replace(
                state, edits=state.edits.set(event.new_message_id, event.edited_message_id)
            )
        case MessageClassified():
            return _with_classification(state, event)
        case ReplyStarted():
            return _with_reply(state, event, content="", kind="pending")
        case ReplyCompleted():
            return _with_reply(state, event, content=event.content, kind=event.kind)
        case ReplyRedirected():
            reply = _with_reply(state, event, content=event.content, kind="redirect")
            return _set(reply, event.message_id, category=event.category, attempt=event.attempt)
        case ReplyWarned():
            reply = _with_reply(state, event, content=event.content, kind="warning")
            return _set(reply, event.message_id, category=event.category)
        case ReplyFailed():
            reply = _with_reply(state, event, content=event.partial_content, kind="failed")
            return _set(reply, event.message_id, failure=event.reason)
        case ThreadEnded():
            return _with_end(state, event)
        case EndRejected():
            rejection = Rejection(
                leaf_id=event.leaf_id,
                actor=event.actor,
                reason=event.reason,
                category=event.category,
                version=state.version,
            )
            return replace(state, rejections=(*state.rejections, rejection))
        case FeedbackGiven():
            feedback = Feedback(
                rating=event.rating,
                message_id=event.message_id,
                comment=event.comment,
                version=state.version,
            )
            return replace(state, feedback=(*state.feedback, feedback))
        case _:
            assert_never(event)


def _with_user_message(state: ThreadState, event: MessagePosted) -> ThreadState:
    message = Message(
        id=event.message_id,
        role="user",
        parent_id=event.parent_id,
        version=state.version,
        created_at=event.occurred_at,
        content=event.content,
        edited_from=state.edits.get(event.message_id),
        classifications=state.early.get(event.message_id, ()),
    )
    if event.message_id in state.early:
        state = replace(state, early=state.early.delete(event.message_id))
    return _attach(state, message)


def _with_reply(
    state: ThreadState,
    event: ReplyStarted | ReplyCompleted | ReplyRedirected | ReplyWarned | ReplyFailed,
    *,
    content: str,
    kind: Kind,
) -> ThreadState:
    existing = state.messages.get(event.message_id)
    if existing is not None:  # the generation it began ends here
        return _set(state, event.message_id, content=content, kind=kind)
    message = Message(
        id=event.message_id,
        role="assistant",
        parent_id=event.parent_id,
        version=state.version,
        created_at=event.occurred_at,
        content=content,
        kind=kind,
    )
    return _attach(state, message)


def _with_classification(state: ThreadState, event: MessageClassified) -> ThreadState:
    classification = Classification(
        tier=event.tier,
        categories=event.categories,
        score=event.score,
        classifier=event.classifier,
        classifier_version=event.classifier_version,
        version=state.version,
        error=event.error,
    )
    message = state.messages.get(event.message_id)
    if message is None:
        early = (*state.early.get(event.message_id, ()), classification)
        return replace(state, early=state.early.set(event.message_id, early))
    return _set(state, message.id, classifications=(*message.classifications, classification))


def _with_end(state: ThreadState, event: ThreadEnded) -> ThreadState:
    end = End(
        leaf_id=event.leaf_id,
        version=state.version,
        scope=event.scope,
        actor=event.actor,
        actor_id=event.actor_id,
        reason=event.reason,
        category=event.category,
        policy_version=event.policy_version,
        evidence=event.evidence,
        at=event.occurred_at,
    )
    if event.leaf_id not in state.ends:  # a leaf keeps its first end
        state = replace(state, ends=state.ends.set(event.leaf_id, end))
    if event.scope == "thread" and state.thread_end is None:
        state = replace(state, thread_end=end)
    # A generation the end cut off can never complete (the store refuses it): close it.
    cut = [
        m.id
        for m in state.messages.values()
        if m.kind == "pending" and (event.scope == "thread" or m.id == event.leaf_id)
    ]
    for reply in cut:
        state = _set(state, reply, kind="failed", failure="ended")
    return state


def _attach(state: ThreadState, message: Message) -> ThreadState:
    messages = state.messages.set(message.id, message)
    if message.parent_id is None:
        return replace(state, messages=messages, roots=(*state.roots, message.id))
    parent = messages[message.parent_id]
    parent = replace(parent, children=(*parent.children, message.id))
    return replace(state, messages=messages.set(parent.id, parent))


def _set(state: ThreadState, message_id: str, **changes: object) -> ThreadState:
    message = replace(state.messages[message_id], **changes)
    return replace(state, messages=state.messages.set(message_id, message))
