"""A user turn: what its first append holds, what the model is asked, and a turn taken before.

Pure functions over a thread's state; the engine does the I/O around them.
"""

from __future__ import annotations

from typing import Final

import msgspec

from events.schema import AnyEvent, BranchForked, MessageClassified, MessagePosted
from projections.branches import UnknownMessageError, path
from projections.state import Message, ThreadState
from service.classifier import Classification, Context
from service.errors import MessageConflictError
from service.ladder import Decision
from service.model import ChatMessage, ModelRequest

CONTEXT_MESSAGES: Final = 5  # earlier user messages a classifier is shown


class Turn(msgspec.Struct, frozen=True, kw_only=True):
    """A user turn as it was taken: the message, its classification, the reply it started."""

    thread_id: str
    message_id: str
    reply_id: str
    parent_id: str | None
    edited_from: str | None
    classification: Classification
    decision: Decision | None  # None when the turn was taken before (a retry)
    version: int  # the version of its first append: the message up to its reply.started
    replayed: bool = False


def message_of(state: ThreadState, message_id: str) -> Message:
    message = state.messages.get(message_id)
    if message is None:
        raise UnknownMessageError(f"no message {message_id!r} in thread {state.thread_id!r}")
    return message


def running_below(state: ThreadState, parent_id: str | None) -> list[Message]:
    """Generations answering the user messages posted below `parent_id` (None: the root)."""
    users = state.roots if parent_id is None else state.messages[parent_id].children
    return [
        state.messages[reply]
        for user in users
        for reply in state.messages[user].children
        if state.messages[reply].kind == "pending"
    ]


def context_for(state: ThreadState, parent_id: str | None) -> Context:
    earlier: list[str] = []
    current = parent_id
    while current is not None and len(earlier) < CONTEXT_MESSAGES:  # up the branch, no further
        message = state.messages[current]
        if message.role == "user":
            earlier.append(message.content)
        current = message.parent_id
    return Context(previous=tuple(reversed(earlier)))


def opening_events(
    thread_id: str,
    message_id: str,
    parent_id: str | None,
    edited: str | None,
    content: str,
    classification: Classification,
    user_id: str | None,
) -> list[AnyEvent]:
    events: list[AnyEvent] = []
    if edited is not None:
        events.append(
            BranchForked(
                thread_id=thread_id,
                actor="user",
                actor_id=user_id,
                edited_message_id=edited,
                parent_id=parent_id,
                new_message_id=message_id,
            )
        )
    events.append(
        MessagePosted(
            thread_id=thread_id,
            actor="user",
            actor_id=user_id,
            message_id=message_id,
            parent_id=parent_id,
            content=content,
        )
    )
    events.append(
        MessageClassified(
            thread_id=thread_id,
            actor="classifier",
            message_id=message_id,
            classifier=classification.classifier,
            classifier_version=classification.version,
            tier=classification.tier,
            categories=classification.categories,
            score=classification.score,
            error=classification.error,
        )
    )
    return events


def model_request(state: ThreadState, message_id: str, decision: Decision) -> ModelRequest:
    messages = tuple(
        ChatMessage(m.role, m.content)
        for m in path(state, message_id)
        if m.content and m.kind != "failed"
    )
    return ModelRequest(
        directive=decision.directive,
        messages=messages,
        category=decision.category,
        attempt=decision.attempt,
    )


def replayed_turn(state: ThreadState, message: Message, content: str) -> Turn:
    if message.role != "user" or message.content != content:
        raise MessageConflictError(state.thread_id, message.id)
    last = message.classifications[-1] if message.classifications else None
    classification = Classification(
        tier=last.tier if last else "unknown",
        categories=last.categories if last else (),
        score=last.score if last else 0.0,
        classifier=last.classifier if last else "",
        version=last.classifier_version if last else "",
        error=last.error if last else None,
    )
    reply_id = message.children[0] if message.children else ""
    return Turn(
        thread_id=state.thread_id,
        message_id=message.id,
        reply_id=reply_id,
        parent_id=message.parent_id,
        edited_from=message.edited_from,
        classification=classification,
        decision=None,
        # The turn's first append ended with its reply.started.
        version=state.messages[reply_id].version if reply_id else message.version,
        replayed=True,
    )
