"""A thread's state, derived from its events by a pure fold: the message tree, its tips and ends.

`fold(events)` is the thread as its events say; `fold(events[:k])` is the thread as it stood at
version k; `apply(state, event)` is one step. States are immutable values (the maps are
persistent, so a step costs O(log n), not a copy) and compare by value.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Final, Literal, TypeAlias, assert_never

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
    lease_expires_at: datetime | None = None  # a generation's first lease, as it was started

    @property
    def tier(self) -> Tier | None:
        """What the message is: `crisis` if any classification ever said so (a crisis flag is
        never taken back), else the latest decisive tier, else `unknown` or None."""
        if not self.classifications:
            return None  # every reply, and a message not classified yet
        tiers = [c.tier for c in self.classifications if c.decisive]
        if "crisis" in tiers:
            return "crisis"
        return tiers[-1] if tiers else "unknown"


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
    direct: bool = False  # the user's own end, confirmed outside the conversation


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
    draft = _Draft(state)
    for event in events:
        draft.apply(event)
    return draft.finish()


def apply(state: ThreadState, event: AnyEvent) -> ThreadState:
    """The state after one more event (the next version)."""
    return fold((event,), state)


class _Draft:
    """A state being folded: mutable, private to one fold, and frozen again at its end.

    Folding through immutable values one event at a time would copy the state for every event;
    the draft mutates persistent-map mutations instead, which is what makes a replay cheap. No
    one sees it but the fold, so the fold stays a pure function.
    """

    def __init__(self, state: ThreadState) -> None:
        self.thread_id = state.thread_id
        self.version = state.version
        self.started = state.started
        self.messages = state.messages.mutate()
        self.roots = list(state.roots)
        self.edits = state.edits.mutate()
        self.early = state.early.mutate()
        self.ends = state.ends.mutate()
        self.thread_end = state.thread_end
        self.rejections = list(state.rejections)
        self.feedback = list(state.feedback)
        self.updated_at = state.updated_at

    def finish(self) -> ThreadState:
        return ThreadState(
            thread_id=self.thread_id,
            version=self.version,
            started=self.started,
            messages=self.messages.finish(),
            roots=tuple(self.roots),
            edits=self.edits.finish(),
            early=self.early.finish(),
            ends=self.ends.finish(),
            thread_end=self.thread_end,
            rejections=tuple(self.rejections),
            feedback=tuple(self.feedback),
            updated_at=self.updated_at,
        )

    def apply(self, event: AnyEvent) -> None:
        self.thread_id = event.thread_id
        self.version += 1
        self.updated_at = event.occurred_at
        match event:
            case ThreadStarted():
                self.started = event
            case MessagePosted():
                self._user_message(event)
            case BranchForked():
                self.edits[event.new_message_id] = event.edited_message_id
            case MessageClassified():
                self._classification(event)
            case ReplyStarted():
                self._reply(event, content="", kind="pending")
                self._set(event.message_id, lease_expires_at=event.lease_expires_at)
            case ReplyCompleted():
                self._reply(event, content=event.content, kind=event.kind)
            case ReplyRedirected():
                self._reply(event, content=event.content, kind="redirect")
                self._set(event.message_id, category=event.category, attempt=event.attempt)
            case ReplyWarned():
                self._reply(event, content=event.content, kind="warning")
                self._set(event.message_id, category=event.category)
            case ReplyFailed():
                self._reply(event, content=event.partial_content, kind="failed")
                self._set(event.message_id, failure=event.reason)
            case ThreadEnded():
                self._end(event)
            case EndRejected():
                self.rejections.append(
                    Rejection(
                        leaf_id=event.leaf_id,
                        actor=event.actor,
                        reason=event.reason,
                        category=event.category,
                        version=self.version,
                    )
                )
            case FeedbackGiven():
                self.feedback.append(
                    Feedback(
                        rating=event.rating,
                        message_id=event.message_id,
                        comment=event.comment,
                        version=self.version,
                    )
                )
            case _:
                assert_never(event)

    def _user_message(self, event: MessagePosted) -> None:
        early = self.early.get(event.message_id, ())
        if early:
            del self.early[event.message_id]
        self._attach(
            Message(
                id=event.message_id,
                role="user",
                parent_id=event.parent_id,
                version=self.version,
                created_at=event.occurred_at,
                content=event.content,
                edited_from=self.edits.get(event.message_id),
                classifications=early,
            )
        )

    def _reply(
        self,
        event: ReplyStarted | ReplyCompleted | ReplyRedirected | ReplyWarned | ReplyFailed,
        *,
        content: str,
        kind: Kind,
    ) -> None:
        if event.message_id in self.messages:  # the generation it began ends here
            self._set(event.message_id, content=content, kind=kind)
            return
        self._attach(
            Message(
                id=event.message_id,
                role="assistant",
                parent_id=event.parent_id,
                version=self.version,
                created_at=event.occurred_at,
                content=content,
                kind=kind,
            )
        )

    def _classification(self, event: MessageClassified) -> None:
        classification = Classification(
            tier=event.tier,
            categories=event.categories,
            score=event.score,
            classifier=event.classifier,
            classifier_version=event.classifier_version,
            version=self.version,
            error=event.error,
        )
        message = self.messages.get(event.message_id)
        if message is None:
            self.early[event.message_id] = (*self.early.get(event.message_id, ()), classification)
            return
        self._set(message.id, classifications=(*message.classifications, classification))

    def _end(self, event: ThreadEnded) -> None:
        end = End(
            leaf_id=event.leaf_id,
            version=self.version,
            scope=event.scope,
            actor=event.actor,
            actor_id=event.actor_id,
            reason=event.reason,
            category=event.category,
            policy_version=event.policy_version,
            evidence=event.evidence,
            at=event.occurred_at,
            direct=event.direct,
        )
        if event.leaf_id not in self.ends:  # a leaf keeps its first end
            self.ends[event.leaf_id] = end
        if event.scope == "thread" and self.thread_end is None:
            self.thread_end = end
        # A generation the end cut off can never complete (the store refuses it): close it.
        # Ends are rare: looking through every message here is cheaper than tracking them.
        messages = self.messages.finish()
        self.messages = messages.mutate()
        for message in messages.values():
            if message.kind == "pending" and (event.scope == "thread" or message.id == end.leaf_id):
                self._set(message.id, kind="failed", failure="ended")

    def _attach(self, message: Message) -> None:
        self.messages[message.id] = message
        if message.parent_id is None:
            self.roots.append(message.id)
            return
        parent = self.messages[message.parent_id]
        self.messages[parent.id] = replace(parent, children=(*parent.children, message.id))

    def _set(self, message_id: str, **changes: Any) -> None:
        self.messages[message_id] = replace(self.messages[message_id], **changes)
