"""The events: immutable facts, tagged with stable dotted names, stored as msgpack.

Schema rules (see docs/storage.md): a new field always gets a default, and a default never
changes (stored events omit default values); a field's type never changes; a breaking change is a
new tag. Stored events are decoded ignoring unknown fields, so old readers keep working.
"""

from __future__ import annotations

import typing
from datetime import UTC, datetime
from typing import Annotated, Final, Literal, NamedTuple, TypeAlias, assert_never

import msgspec
import uuid_utils

# Who caused an event. `policy` is coda's own rule engine; `system` is housekeeping (leases).
Actor: TypeAlias = Literal["user", "model", "classifier", "policy", "moderator", "system"]
Tier: TypeAlias = Literal["benign", "redirect", "terminable", "crisis", "unknown"]
ReplyKind: TypeAlias = Literal["answer", "crisis_support", "end_confirmation", "farewell"]
FailureReason: TypeAlias = Literal["error", "cancelled", "owner_lost", "timeout"]
EndScope: TypeAlias = Literal["branch", "thread"]
Rating: TypeAlias = Literal["up", "down"]

Id: TypeAlias = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
PolicyParam: TypeAlias = str | int | float | bool


def new_id() -> str:
    """A new UUIDv7: unique, and sorted by creation time."""
    return str(uuid_utils.uuid7())


def utc_now() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime, name: str) -> None:
    if moment.tzinfo is None:
        raise ValueError(f"{name} must carry a time zone (use UTC), not {moment.isoformat()}")


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", omit_defaults=True):
    """Fields every event carries."""

    thread_id: Id
    actor: Actor
    actor_id: str | None = None
    event_id: Id = msgspec.field(default_factory=new_id)
    occurred_at: datetime = msgspec.field(default_factory=utc_now)

    def __post_init__(self) -> None:
        _aware(self.occurred_at, "occurred_at")


class PolicyRef(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The versioned policy a thread runs under, with the parameters in force."""

    name: str
    version: str
    params: dict[str, PolicyParam] = {}


class Usage(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    input_tokens: int = 0
    output_tokens: int = 0


class ThreadStarted(Event, frozen=True, tag="thread.started"):
    tenant: Id
    owner: Id
    model: str
    policy: PolicyRef
    title: str = ""
    metadata: dict[str, str] = {}


class MessagePosted(Event, frozen=True, tag="message.posted"):
    """A user turn; `parent_id` is None for the first message of a branch from the root."""

    message_id: Id
    parent_id: Id | None
    content: str


class MessageClassified(Event, frozen=True, tag="message.classified"):
    message_id: Id
    classifier: str
    classifier_version: str
    tier: Tier
    categories: tuple[str, ...] = ()
    score: float = 0.0
    error: str | None = None


class ReplyStarted(Event, frozen=True, tag="reply.started"):
    message_id: Id
    parent_id: Id
    model: str
    lease_owner: str
    lease_expires_at: datetime

    def __post_init__(self) -> None:
        super().__post_init__()
        _aware(self.lease_expires_at, "lease_expires_at")


class ReplyCompleted(Event, frozen=True, tag="reply.completed"):
    message_id: Id
    parent_id: Id
    content: str
    kind: ReplyKind
    content_sha256: str
    finish_reason: str = "stop"
    model: str = ""
    usage: Usage = Usage()


class ReplyRedirected(Event, frozen=True, tag="reply.redirected"):
    message_id: Id
    parent_id: Id
    content: str
    attempt: int
    category: str


class ReplyWarned(Event, frozen=True, tag="reply.warned"):
    message_id: Id
    parent_id: Id
    content: str
    category: str


class ReplyFailed(Event, frozen=True, tag="reply.failed"):
    message_id: Id
    parent_id: Id
    reason: FailureReason
    partial_content: str = ""
    detail: str = ""


class BranchForked(Event, frozen=True, tag="branch.forked"):
    """A user edited `edited_message_id`; `new_message_id` is its new sibling under `parent_id`."""

    edited_message_id: Id
    parent_id: Id | None
    new_message_id: Id


class EndRejected(Event, frozen=True, tag="end.rejected"):
    leaf_id: Id
    reason: str
    category: str | None = None


class ThreadEnded(Event, frozen=True, tag="thread.ended"):
    """The branch ending at `leaf_id` (scope `thread`: the whole thread) takes no more turns."""

    leaf_id: Id
    scope: EndScope
    reason: str
    policy_version: str
    category: str | None = None
    evidence: tuple[int, ...] = ()
    # The user ended it themselves, with an explicit confirmation (the API's end), rather than
    # by answering the assistant's question.
    direct: bool = False


class FeedbackGiven(Event, frozen=True, tag="feedback.given"):
    rating: Rating
    message_id: Id | None = None
    comment: str = ""


AnyEvent: TypeAlias = (
    ThreadStarted
    | MessagePosted
    | MessageClassified
    | ReplyStarted
    | ReplyCompleted
    | ReplyRedirected
    | ReplyWarned
    | ReplyFailed
    | BranchForked
    | EndRejected
    | ThreadEnded
    | FeedbackGiven
)

_TAGS: Final[dict[type, str]] = {
    cls: str(cls.__struct_config__.tag) for cls in typing.get_args(AnyEvent)
}
_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final[msgspec.msgpack.Decoder[AnyEvent]] = msgspec.msgpack.Decoder(AnyEvent)


def tag_of(event: AnyEvent) -> str:
    return _TAGS[type(event)]


def encode(event: AnyEvent) -> bytes:
    """The stored bytes of an event (msgpack)."""
    return _encoder.encode(event)


def decode(data: bytes) -> AnyEvent:
    """An event from its stored bytes; unknown fields are ignored."""
    return _decoder.decode(data)


class Placement(NamedTuple):
    """Where an event sits in the message tree, as the append script checks it.

    `guard` is the message the event hangs below if it continues a branch ("" for the root),
    or the leaf a thread.ended ends; None for events outside the tree (feedback, ...).
    `message` is the message it posts or continues, `role` "u" (user) or "a" (reply) for events
    that post one, `edited` the message a branch.forked edits.
    """

    guard: str | None
    message: str = ""
    role: str = ""
    edited: str = ""


def placement(event: AnyEvent) -> Placement:
    match event:
        case MessagePosted(message_id=message, parent_id=parent):
            return Placement(parent or "", message, "u")
        case (
            ReplyStarted(message_id=message, parent_id=parent)
            | ReplyCompleted(message_id=message, parent_id=parent)
            | ReplyRedirected(message_id=message, parent_id=parent)
            | ReplyWarned(message_id=message, parent_id=parent)
            | ReplyFailed(message_id=message, parent_id=parent)
        ):
            return Placement(parent, message, "a")
        case BranchForked(edited_message_id=edited, parent_id=parent, new_message_id=new):
            return Placement(parent or "", new, "", edited)
        case ThreadEnded(leaf_id=leaf):
            return Placement(leaf)
        case ThreadStarted() | MessageClassified() | EndRejected() | FeedbackGiven():
            return Placement(None)
        case _:
            assert_never(event)
