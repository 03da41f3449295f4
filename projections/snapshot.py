"""Thread states stored as bytes: the snapshots that spare a read from replaying a history.

A snapshot is a cache. It carries the format it was written in; one of another format, or one
that does not decode, is ignored, and the state is folded from the events instead.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

import immutables
import msgspec

from events.schema import ThreadStarted
from projections.state import Classification, End, Feedback, Message, Rejection, ThreadState

FORMAT: Final = 3  # bump whenever ThreadState or what the fold derives changes


class _Stored(msgspec.Struct, frozen=True, kw_only=True):
    format: int
    thread_id: str
    version: int
    head: bytes
    started: ThreadStarted | None
    messages: dict[str, Message]
    roots: tuple[str, ...]
    edits: dict[str, str]
    early: dict[str, tuple[Classification, ...]]
    ends: dict[str, End]
    thread_end: End | None
    rejections: tuple[Rejection, ...]
    feedback: tuple[Feedback, ...]
    updated_at: datetime | None


_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final = msgspec.msgpack.Decoder(_Stored)


def dump(state: ThreadState, head: bytes) -> bytes:
    """The snapshot of `state`, whose last event has chain hash `head`."""
    return _encoder.encode(
        _Stored(
            format=FORMAT,
            thread_id=state.thread_id,
            version=state.version,
            head=head,
            started=state.started,
            messages=dict(state.messages),
            roots=state.roots,
            edits=dict(state.edits),
            early=dict(state.early),
            ends=dict(state.ends),
            thread_end=state.thread_end,
            rejections=state.rejections,
            feedback=state.feedback,
            updated_at=state.updated_at,
        )
    )


def load(data: bytes) -> tuple[ThreadState, bytes] | None:
    """The state in a snapshot and the hash of its last event; None if it is of another format
    or unreadable."""
    try:
        stored = _decoder.decode(data)
    except msgspec.DecodeError:
        return None
    if stored.format != FORMAT:
        return None
    return ThreadState(
        thread_id=stored.thread_id,
        version=stored.version,
        started=stored.started,
        messages=immutables.Map(stored.messages),
        roots=stored.roots,
        edits=immutables.Map(stored.edits),
        early=immutables.Map(stored.early),
        ends=immutables.Map(stored.ends),
        thread_end=stored.thread_end,
        rejections=stored.rejections,
        feedback=stored.feedback,
        updated_at=stored.updated_at,
    ), stored.head
