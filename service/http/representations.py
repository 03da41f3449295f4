"""What the API shows of a thread: its summary, the path to a tip, and the end that closed it."""

from __future__ import annotations

from typing import Any, Final

import msgspec
from starlette.responses import Response

from events.schema import AnyEvent
from projections.branches import active_tip, end_of, path, status
from projections.state import End, Message, ThreadState
from service.classifier import Classification
from service.replies import Outcome

ALLOWED_AFTER_END: Final = ("new_thread", "edit", "feedback")

_encoder: Final = msgspec.json.Encoder()


class JSONBody(Response):
    """A JSON answer, encoded by msgspec (Starlette's JSONResponse goes through `json`)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return _encoder.encode(content)


# What clients are not shown of an event: which process runs a generation (its host and pid).
PRIVATE_FIELDS: Final = frozenset({"lease_owner"})


def event_json(event: AnyEvent) -> dict[str, Any]:
    """An event as the API shows it: all of it but what says where coda runs."""
    shown: dict[str, Any] = msgspec.to_builtins(event)
    for name in PRIVATE_FIELDS & shown.keys():
        del shown[name]
    return shown


def thread_json(state: ThreadState) -> dict[str, Any]:
    started = state.started
    assert started is not None
    return {
        "id": state.thread_id,
        "title": started.title,
        "status": status(state),
        "created_at": started.occurred_at.isoformat(),
        "updated_at": (state.updated_at or started.occurred_at).isoformat(),
        "active_tip": active_tip(state),
        "version": state.version,
    }


def thread_with_messages(state: ThreadState, tip: str | None) -> dict[str, Any]:
    """The thread, the messages on the path to `tip` (default: the active one), and its end."""
    tip = tip if tip is not None else active_tip(state)
    messages = path(state, tip) if tip is not None else ()
    end = end_of(state, tip) if tip is not None else state.thread_end
    return {
        **thread_json(state),
        "messages": [message_json(state, m) for m in messages],
        "ended": ended_json(end),
    }


def message_json(state: ThreadState, message: Message) -> dict[str, Any]:
    siblings = (
        state.roots if message.parent_id is None else state.messages[message.parent_id].children
    )
    return {
        "id": message.id,
        "role": message.role,
        "content": message.content,
        "parent_id": message.parent_id,
        "kind": message.kind,
        "created_at": message.created_at.isoformat(),
        "sibling_ids": [s for s in siblings if s != message.id],
    }


def ended_json(end: End | None) -> dict[str, Any] | None:
    if end is None:
        return None
    return {
        "leaf_id": end.leaf_id,
        "actor": end.actor,
        "reason": end.reason,
        "category": end.category,
        "at": end.at.isoformat(),
        "allowed_actions": list(ALLOWED_AFTER_END),
    }


def classification_json(classification: Classification) -> dict[str, Any]:
    return {
        "tier": classification.tier,
        "categories": list(classification.categories),
        "score": classification.score,
        "classifier": classification.classifier,
        "version": classification.version,
    }


def turn_json(
    state: ThreadState, classification: Classification, outcome: Outcome
) -> dict[str, Any]:
    """A finished turn: the user's message, its classification, the reply, and any end."""
    message = state.messages[outcome.message_id]
    reply = state.messages.get(outcome.reply_id)
    return {
        "message": message_json(state, message),
        "classification": classification_json(classification),
        "reply": message_json(state, reply) if reply is not None else None,
        "ended": ended_json(outcome.ended),
    }
