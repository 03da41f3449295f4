"""Reading a thread's state: its branch tips, the path to a tip, and what the path says.

A branch is named by its tip, a message with nothing below it. The path to a tip is the
conversation as it reads on that branch, from the first message down.
"""

from __future__ import annotations

from typing import Literal, TypeAlias

import msgspec

from projections.state import End, Message, ThreadState

TipStatus: TypeAlias = Literal["open", "ended"]
ThreadStatus: TypeAlias = Literal["open", "busy", "ended"]


class PathCounters(msgspec.Struct, frozen=True, kw_only=True):
    """What a policy needs to know of a path, counted from its messages."""

    redirects: int = 0
    warned: bool = False
    crisis: bool = False
    classified: int = 0
    pending: bool = False


class UnknownMessageError(LookupError):
    """A tip or message id that the thread does not have."""


def tips(state: ThreadState) -> tuple[str, ...]:
    """Every branch tip, oldest first."""
    leaves = [m for m in state.messages.values() if not m.children]
    return tuple(m.id for m in sorted(leaves, key=lambda m: m.version))


def active_tip(state: ThreadState) -> str | None:
    """The tip a viewer sees unless they choose another: the newest one."""
    every = tips(state)
    return every[-1] if every else None


def path(state: ThreadState, tip: str) -> tuple[Message, ...]:
    """The messages from the first one down to `tip`."""
    _known(state, tip)
    out: list[Message] = []
    current: str | None = tip
    while current is not None:
        message = state.messages[current]
        out.append(message)
        current = message.parent_id
    return tuple(reversed(out))


def end_of(state: ThreadState, tip: str) -> End | None:
    """The end that closed the branch at `tip`, if any (a thread-wide end closes them all)."""
    _known(state, tip)
    return state.ends.get(tip) or state.thread_end


def tip_status(state: ThreadState, tip: str) -> TipStatus:
    return "ended" if end_of(state, tip) is not None else "open"


def status(state: ThreadState, tip: str | None = None) -> ThreadStatus:
    """`ended` if the tip (default: the active one) is ended, `busy` while a reply is being
    generated on it, else `open`."""
    if state.thread_end is not None:
        return "ended"
    tip = tip if tip is not None else active_tip(state)
    if tip is None:
        return "open"
    if tip_status(state, tip) == "ended":
        return "ended"
    return "busy" if any(m.kind == "pending" for m in path(state, tip)) else "open"


def counters(messages: tuple[Message, ...]) -> PathCounters:
    """Redirects, warning, crisis flag, classifications and pending generation on a path."""
    return PathCounters(
        redirects=sum(m.kind == "redirect" for m in messages),
        warned=any(m.kind == "warning" for m in messages),
        crisis=any(m.tier == "crisis" for m in messages),
        classified=sum(bool(m.classifications) for m in messages),
        pending=any(m.kind == "pending" for m in messages),
    )


def _known(state: ThreadState, message_id: str) -> None:
    if message_id not in state.messages:
        raise UnknownMessageError(f"no message {message_id!r} in thread {state.thread_id!r}")
