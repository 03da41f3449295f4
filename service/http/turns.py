"""Taking turns over HTTP: a new message or an edit, answered as JSON or as an event stream.

Before a turn is taken: the message's size (413), a stream slot if the answer is a stream (429,
so no turn is taken for a stream that is then refused), then the key's turn rate (429; a retry
that finds its turn taken already is not counted). A turn refused because the branch ended is
a `thread-ended` problem carrying the end, so the client can offer what is still allowed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

import anyio
import msgspec
from starlette.requests import Request
from starlette.responses import Response

from events.errors import ThreadEndedError
from events.records import RecordedEvent
from events.schema import (
    EndRejected,
    Id,
    ReplyCompleted,
    ReplyFailed,
    ReplyRedirected,
    ReplyWarned,
    ThreadEnded,
)
from projections.branches import end_of
from projections.state import ThreadState
from service.http.context import (
    Services,
    body_of,
    caller,
    if_match,
    limits_of,
    metrics,
    services,
    thread_for,
)
from service.http.idempotency import request_id
from service.http.limits import Slot
from service.http.metrics import Metrics
from service.http.principals import Principal
from service.http.problems import Problem
from service.http.representations import JSONBody, ended_json, turn_json
from service.http.streams import MEDIA_TYPE as SSE
from service.http.streams import Cursor, EventStream, thread_frames
from service.turns import Turn

REPLY_ENDS: Final = (ReplyCompleted, ReplyRedirected, ReplyWarned, ReplyFailed)


class NewMessage(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    content: str
    parent_id: Id | None = None
    message_id: Id | None = None


class Edit(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    content: str
    message_id: Id | None = None  # the new message's id, for a retry


async def post_message(request: Request) -> Response:
    principal = await user(request)
    state = await thread_for(request, principal, write=True)
    body = await body_of(request, NewMessage)
    message_id = body.message_id or request_id(request)
    expected = if_match(request)

    def take() -> Awaitable[Turn]:
        return services(request).engine.post_message(
            state.thread_id,
            body.content,
            parent_id=body.parent_id,
            message_id=message_id,
            user_id=principal.user,
            expected_version=expected,
        )

    return await _turn(request, principal, state, body.content, message_id, take)


async def edit_message(request: Request) -> Response:
    principal = await user(request)
    state = await thread_for(request, principal, write=True)
    body = await body_of(request, Edit)
    message_id = body.message_id or request_id(request)
    expected = if_match(request)

    def take() -> Awaitable[Turn]:
        return services(request).engine.edit_message(
            state.thread_id,
            request.path_params["message_id"],
            body.content,
            new_message_id=message_id,
            user_id=principal.user,
            expected_version=expected,
        )

    return await _turn(request, principal, state, body.content, message_id, take)


async def user(request: Request) -> Principal:
    """The caller, who must have the user role: auditors and admins read, they take no turns."""
    principal = await caller(request)
    if not principal.can("user"):
        raise Problem(403, "forbidden", "Forbidden", "taking turns needs the user role")
    return principal


async def ended_problem(request: Request, thread_id: str, exc: ThreadEndedError) -> Problem:
    """A `thread-ended` problem carrying the end, so a client can offer what is still allowed."""
    state = await services(request).engine.reader.state(thread_id)
    leaf = exc.leaf_id
    end = end_of(state, leaf) if leaf is not None and leaf in state.messages else state.thread_end
    return Problem(
        409, "thread-ended", "The conversation has ended", str(exc), ended=ended_json(end)
    )


def accepts_events(accept: str) -> bool:
    """Whether an Accept header asks for an event stream (with a quality above 0)."""
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        if media.lower() != SSE:
            continue
        q = next((p.partition("=")[2] for p in params if p.lower().startswith("q=")), "1")
        try:
            return float(q) > 0
        except ValueError:
            return False
    return False


async def _turn(
    request: Request,
    principal: Principal,
    state: ThreadState,
    content: str,
    message_id: str | None,
    take: Callable[[], Awaitable[Turn]],
) -> Response:
    svc = services(request)
    limits = limits_of(request)
    if len(content.encode()) > limits.message_bytes:
        raise Problem(
            413,
            "too-large",
            "Request too large",
            f"a message holds at most {limits.message_bytes} bytes of UTF-8",
        )
    streaming = accepts_events(request.headers.get("accept", ""))
    slot = await svc.counting.take_slot(principal.key_id, limits) if streaming else None
    try:
        if message_id is None or message_id not in state.messages:
            await svc.counting.turn(principal.key_id, limits)
        try:
            turn = await take()
        except ThreadEndedError as exc:
            raise await ended_problem(request, state.thread_id, exc) from exc
        _count_turn(metrics(request), turn)
        if slot is None:
            return await _finished(request, turn)
        return await _streamed(request, svc, turn, slot)
    except BaseException:
        await _free(svc, slot)  # a response that holds it frees it itself, once it is sent
        raise


async def _finished(request: Request, turn: Turn) -> Response:
    engine = services(request).engine
    outcome = await engine.outcome(turn)
    if not turn.replayed:
        counted = metrics(request)
        if outcome.ended is not None:
            counted.ends.labels(outcome.ended.actor).inc()
        for rejection in outcome.rejections:
            counted.rejections.labels(rejection.actor).inc()
    # The runner left the recorded state in the reader's cache: read the stored one only if not.
    state = engine.reader.cached(turn.thread_id)
    reply = state.messages.get(turn.reply_id) if state is not None else None
    if state is None or reply is None or reply.kind == "pending":
        state = await engine.reader.state(turn.thread_id)
    body = turn_json(state, turn.classification, outcome)
    return JSONBody(body, headers={"ETag": f'"{state.version}"'})


async def _streamed(request: Request, svc: Services, turn: Turn, slot: Slot) -> Response:
    """The turn's own frames, from its first event (not a resumption of what came before it),
    until the event that closes its reply."""
    counted = metrics(request)
    state = await svc.engine.reader.state(turn.thread_id)
    message = state.messages[turn.message_id]
    first = message.version - (1 if turn.edited_from else 0)  # a fork comes just before
    mine = (turn.reply_id, turn.message_id)

    async def last(recorded: RecordedEvent) -> int | None:
        event = recorded.event
        if (
            not turn.replayed
            and isinstance(event, ThreadEnded | EndRejected)
            and event.leaf_id in mine
        ):
            _count_end(counted, event)
        if isinstance(event, REPLY_ENDS) and event.message_id == turn.reply_id:
            batch = await svc.store.batch_of(turn.thread_id, event.event_id)
            return batch[1] if batch else recorded.version
        if isinstance(event, ThreadEnded) and event.scope == "thread":
            return recorded.version  # it closes the reply too, if still running
        return None

    frames = thread_frames(
        svc, turn.thread_id, Cursor(first - 1), resumed=False, last=last, only=turn.reply_id
    )
    return EventStream(frames, counted, svc.counting, slot)


async def _free(svc: Services, slot: Slot | None) -> None:
    if slot is not None:
        with anyio.CancelScope(shield=True):
            await svc.counting.free(slot)


def _count_turn(counted: Metrics, turn: Turn) -> None:
    directive = turn.decision.directive if turn.decision is not None else "replayed"
    counted.turns.labels(directive).inc()
    if not turn.replayed:
        counted.tiers.labels(turn.classification.tier).inc()


def _count_end(counted: Metrics, event: ThreadEnded | EndRejected) -> None:
    if isinstance(event, ThreadEnded):
        counted.ends.labels(event.actor).inc()
    else:
        counted.rejections.labels(event.actor).inc()
