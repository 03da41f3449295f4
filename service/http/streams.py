"""Server-sent events: a thread's durable events and its replies' deltas, in one resumable order.

Every frame has an id. A durable event's id is its version (`"7"`); a delta's id is the
version of the `reply.started` it belongs to and its live-channel entry (`"7:1732..-0"`). The
order is: an event, then, right after a `reply.started`, that reply's deltas until its
generation closes, then the events after it. Sending the last id received (`Last-Event-ID`, or
`?after=`) resumes right after that frame, from any process: the events come from the thread's
stream, the deltas from the live channel in Redis. A delta whose channel has expired is not
sent again; the reply's final event carries the whole text.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final, Generic, NamedTuple, TypeVar

import msgspec
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from events.records import RecordedEvent, stored_entry
from events.records import recorded as decoded
from events.schema import ReplyStarted, tag_of
from service.http.context import Services
from service.http.limits import Limiter, Slot
from service.http.metrics import Metrics
from service.http.problems import Problem, problem_of
from service.http.representations import event_json
from service.live import Closed

KEEP_ALIVE_MS: Final = 15_000
# How long one blocking read waits: well under the Redis client's socket timeout.
WAIT_MS: Final = 5_000
MAX_VERSION: Final = 2**53
PAGE: Final = 100  # events a stream reads at a time while it catches up
LAST_SEQ: Final = 2**64 - 1  # `<version>-<LAST_SEQ>`: after every entry of that version
# Events decoded and frames encoded once for every stream are kept, up to this many bytes (of
# stored event, of frame) each: a few hundred ordinary events, a few dozen of the largest.
RECENT_BYTES: Final = 4 * 1024 * 1024

K = TypeVar("K")
V = TypeVar("V")
# How long a stream waits on a reply's live channel before it looks at the thread again: a
# generation whose owner died is closed (`recover`) soon after its lease, not a keep-alive later.
LIVE_POLL_MS: Final = 1_000
HEADERS: Final = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
MEDIA_TYPE: Final = "text/event-stream"

_json: Final = msgspec.json.Encoder()
log = logging.getLogger("coda.http")


class Cursor(NamedTuple):
    """Where a stream stands: after `version`, and within the reply started there after `entry`."""

    version: int
    entry: str | None = None

    @classmethod
    def parse(cls, text: str | None) -> Cursor:
        if not text:
            return cls(0)
        version, _, entry = text.partition(":")
        if not _digits(version) or int(version) > MAX_VERSION or (entry and not _entry_id(entry)):
            raise Problem(422, "validation", "The request is not valid", f"bad event id {text!r}")
        return cls(int(version), entry or None)


def frame(frame_id: str, event: str, data: object) -> bytes:
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (
        frame_id.encode(),
        event.encode(),
        _json.encode(data),
    )


KEEP_ALIVE: Final = b": keep-alive\n\n"


async def thread_frames(
    svc: Services,
    thread_id: str,
    cursor: Cursor,
    *,
    resumed: bool = True,
    last: Callable[[RecordedEvent], Awaitable[int | None]] | None = None,
    only: str | None = None,
) -> AsyncIterator[bytes]:
    """The thread's frames after `cursor`, waiting for more (with keep-alive comments); until
    the version `last` names once it has seen the event that decides it, or for ever. With
    `only`, the deltas of that reply alone are followed (a turn's own stream is not held up
    by a reply of another branch); other replies are seen by their events."""
    version = cursor.version
    until: int | None = None
    if resumed and version > 0:  # after a reply.started, or one of its deltas: its deltas first
        started = await svc.store.read(thread_id, after=version - 1, limit=1)
        if started and isinstance(started[0].event, ReplyStarted):
            async for chunk in _deltas(svc, thread_id, started[0], after=cursor.entry or "0-0"):
                yield chunk
    sent = time.monotonic()
    # Catching up, the stream reads its own pages; caught up, it waits in the process's hub,
    # which reads each new event once for every stream of the thread.
    recorded = await svc.store.read(thread_id, after=version, limit=PAGE)
    caught_up, live = len(recorded) < PAGE, False
    while True:
        if not recorded:
            recorded, live = await _next(svc, thread_id, version), True
            if not recorded:
                if time.monotonic() - sent >= KEEP_ALIVE_MS / 1000:
                    sent = time.monotonic()
                    yield KEEP_ALIVE
                continue
        sent = time.monotonic()
        for i, event in enumerate(recorded):
            yield _event_frame(thread_id, event)
            version = event.version
            if isinstance(event.event, ReplyStarted) and only in (None, event.event.message_id):
                # Just started if nothing came after it: every stream waits for its text in
                # the hub together. Behind it, the reply may be long over (its channel gone).
                just_started = live and i == len(recorded) - 1
                async for chunk in _deltas(svc, thread_id, event, after="0-0", live=just_started):
                    yield chunk
            if last is not None:  # told of every event, it may count them too
                decided = await last(event)
                until = decided if until is None else until
            if until is not None and version >= until:
                return
        recorded = []
        if not caught_up:
            recorded = await svc.store.read(thread_id, after=version, limit=PAGE)
            caught_up, live = len(recorded) < PAGE, False


class EventStream(StreamingResponse):
    """An event stream that holds one of its key's stream slots until it is over: also when
    it never starts (the client was gone already) or is cancelled (the client left)."""

    def __init__(
        self, frames: AsyncIterator[bytes], metrics: Metrics, limiter: Limiter, slot: Slot
    ) -> None:
        super().__init__(guarded(frames, metrics), media_type=MEDIA_TYPE, headers=HEADERS)
        self.limiter = limiter
        self.slot = slot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with self.limiter.held(self.slot):
            await super().__call__(scope, receive, send)


async def guarded(frames: AsyncIterator[bytes], metrics: Metrics) -> AsyncIterator[bytes]:
    """The frames, and, if something fails once the stream has started, an `error` frame with
    the problem object instead of a broken connection. Counted as an open stream meanwhile."""
    metrics.stream_clients.inc()
    try:
        async for chunk in frames:
            yield chunk
    except Exception as exc:  # the response has started: the error can only be a frame now
        try:
            status, type_, title, detail, members = problem_of(exc)
        except LookupError:
            log.error("stream failed", exc_info=exc)
            status, type_, title, detail, members = 500, "internal", "Internal error", "", {}
        body = {"type": type_, "title": title, "status": status, "detail": detail, **members}
        yield b"event: error\ndata: %s\n\n" % _json.encode(body)
    finally:
        metrics.stream_clients.dec()


async def _deltas(
    svc: Services, thread_id: str, started: RecordedEvent, *, after: str, live: bool = False
) -> AsyncIterator[bytes]:
    """The deltas of the reply `started` began, after live entry `after`, until it closes.
    `live`: the reply has just started, and every stream of the process waits for its first
    piece of text together; catching up, the first read does not wait (an old reply's channel
    is gone)."""
    assert isinstance(started.event, ReplyStarted)
    reply_id = started.event.message_id
    channel = svc.engine.live
    index, position, cursor = 0, "0-0", _order(after)
    quiet, block = 0, LIVE_POLL_MS if live else None
    closing = False
    while True:
        items = await channel.read(thread_id, reply_id, after=position, block_ms=block)
        block = LIVE_POLL_MS
        if not items:
            if closing:
                return  # recorded, and nothing more on its channel: the event has the text
            if not await _still_running(svc, thread_id, reply_id):
                # Recorded: its owner writes the last piece and the close just after, so
                # look once more, without waiting, before leaving it to the reply's event.
                closing, block = True, None
                continue
            quiet += LIVE_POLL_MS
            if quiet >= KEEP_ALIVE_MS:
                quiet = 0
                yield KEEP_ALIVE
            continue
        quiet = 0
        for item in items:
            position = item.entry_id
            if isinstance(item, Closed):
                return
            if _order(item.entry_id) > cursor:  # by order: the cursor's entry may be gone
                data = {"message_id": reply_id, "index": index, "text": item.text}
                yield frame(f"{started.version}:{item.entry_id}", "reply.delta", data)
            index += 1


async def _still_running(svc: Services, thread_id: str, reply_id: str) -> bool:
    """Whether the reply is still being generated, its generation closed if its owner is gone:
    one look a process and poll period, shared by every stream that follows the reply (a
    silent generation must not cost a read a second for each of thousands of streams)."""
    now = time.monotonic()
    known = _LOOKS.get((thread_id, reply_id))
    if known is None or known[0] < now:
        for stale in [k for k, (until, _) in _LOOKS.items() if until < now]:
            del _LOOKS[stale]
        look = asyncio.ensure_future(_look(svc, thread_id, reply_id))
        known = _LOOKS[(thread_id, reply_id)] = (now + LIVE_POLL_MS / 2000, look)
    return await asyncio.shield(known[1])  # a stream that leaves does not stop the others'


async def _look(svc: Services, thread_id: str, reply_id: str) -> bool:
    state = await svc.engine.reader.state(thread_id)
    reply = state.messages.get(reply_id)
    if reply is None or reply.kind != "pending":
        return False
    await svc.engine.recover(thread_id)
    return True


async def _next(svc: Services, thread_id: str, version: int) -> list[RecordedEvent]:
    """The events after `version`, waited for in the hub (up to WAIT_MS); [] if none came.
    Every stream of the thread gets the same rows: the first decodes them for all."""
    key = svc.store.keys.stream(thread_id)
    rows = await svc.engine.hub.read(key, f"{version}-{LAST_SEQ}", WAIT_MS)
    events = []
    for entry_id, fields in rows:
        if not _entry_id(entry_id) or not entry_id.endswith("-0"):
            log.warning("thread %s: stream entry %s was not written by coda", thread_id, entry_id)
            continue
        known = (thread_id, entry_id, fields.get(b"hash", b""))
        event = _DECODED.get(known)
        if event is None:
            entry = stored_entry(entry_id, fields)
            event = _DECODED.put(known, decoded(entry), len(entry.data))
        events.append(event)
    return events


def _event_frame(thread_id: str, event: RecordedEvent) -> bytes:
    """The frame of a durable event, encoded once for every stream that sends it (the chain
    hash in the key: a version that Redis lost and was written again is another event)."""
    known = (thread_id, event.version, event.hash)
    shown = _FRAMES.get(known)
    if shown is None:
        data = event_json(event.event)
        encoded = frame(str(event.version), tag_of(event.event), data)
        shown = _FRAMES.put(known, encoded, len(encoded))
    return shown


class _Recent(Generic[K, V]):
    """The values put last, by key, as many as fit in `budget` (each put with its weight)."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.weight = 0
        self._kept: OrderedDict[K, tuple[V, int]] = OrderedDict()

    def get(self, key: K) -> V | None:
        kept = self._kept.get(key)
        return kept[0] if kept is not None else None

    def put(self, key: K, value: V, weight: int) -> V:
        if key in self._kept:
            self.weight -= self._kept.pop(key)[1]
        self._kept[key] = (value, weight)
        self.weight += weight
        while self.weight > self.budget and len(self._kept) > 1:
            self.weight -= self._kept.popitem(last=False)[1][1]
        return value


_DECODED: Final[_Recent[tuple[str, str, bytes], RecordedEvent]] = _Recent(RECENT_BYTES)
_LOOKS: Final[dict[tuple[str, str], tuple[float, asyncio.Future[bool]]]] = {}
_FRAMES: Final[_Recent[tuple[str, int, bytes], bytes]] = _Recent(RECENT_BYTES)


def _entry_id(text: str) -> bool:
    head, _, tail = text.partition("-")
    return _digits(head) and _digits(tail) and len(head) <= 20 and len(tail) <= 20


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _order(entry_id: str) -> tuple[int, int]:
    head, _, tail = entry_id.partition("-")
    return int(head), int(tail or 0)
