"""The thread endpoints: create and list threads, read one, take turns, feedback, cancel, events."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Final, Literal, cast

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from events.errors import ThreadEndedError, redis_errors
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
from service.errors import EndRefusedError
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
from service.http.representations import (
    ended_json,
    thread_json,
    thread_with_messages,
    turn_json,
)
from service.http.streams import HEADERS as SSE_HEADERS
from service.http.streams import MEDIA_TYPE as SSE
from service.http.streams import Cursor, guarded, thread_frames
from service.turns import Turn

REPLY_ENDS: Final = (ReplyCompleted, ReplyRedirected, ReplyWarned, ReplyFailed)

DEFAULT_PAGE: Final = 50
MAX_PAGE: Final = 200
MAX_VERSION: Final = 2**53  # a version past any real thread, and within every integer type

Title = Annotated[str, msgspec.Meta(max_length=200)]
Comment = Annotated[str, msgspec.Meta(max_length=4000)]


class NewThread(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    title: Title = ""


class NewMessage(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    content: str
    parent_id: Id | None = None
    message_id: Id | None = None


class Edit(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    content: str
    message_id: Id | None = None  # the new message's id, for a retry


class EndRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    confirm: bool  # ending is permanent: the client asked the user, and they said yes


class NoBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    pass


class NewFeedback(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    rating: Literal["up", "down"]
    message_id: Id | None = None
    comment: Comment = ""


async def create_thread(request: Request) -> Response:
    principal = await _user(request)
    body = await body_of(request, NewThread)
    engine = services(request).engine
    thread_id = await engine.start_thread(
        tenant=principal.tenant,
        owner=principal.user,
        title=body.title,
        thread_id=request_id(request),
    )
    state = await engine.reader.state(thread_id)
    return _json(thread_json(state), 201, version=state.version)


async def list_threads(request: Request) -> Response:
    """The caller's threads, newest first, from the thread-list view the projector keeps.

    The cursor is where the last page stopped (its last thread's time and id), not a count: a
    thread that changes while a client pages moves to the top and is not shown twice.
    """
    principal = await caller(request)
    limit = _integer(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
    after = _cursor(request.query_params.get("cursor"))
    svc = services(request)
    keys = svc.store.keys
    owner_key = keys.view_owner(svc.view, principal.tenant, principal.user)
    top: float | str = after[0] if after is not None else "+inf"
    page: list[tuple[str, float]] = []
    skip = 0
    while len(page) <= limit:
        with redis_errors():
            rows = cast(
                list[tuple[bytes, float]],
                await svc.store.redis.zrevrangebyscore(
                    owner_key, top, "-inf", start=skip, num=limit + 1, withscores=True
                ),
            )
        skip += len(rows)
        for member, score in rows:
            thread_id = _str(member)
            # Ties come in descending id order: those down to the cursor's were shown.
            if after is not None and score == after[0] and thread_id >= after[1]:
                continue
            page.append((thread_id, float(score)))
        if len(rows) < limit + 1:
            break
    more = len(page) > limit
    page = page[:limit]
    data = []
    for thread_id, _score in page:
        with redis_errors():
            fields = await svc.store.redis.hgetall(keys.view_thread(svc.view, thread_id))
        row = {_str(k): _str(v) for k, v in fields.items()}
        if row.get("tenant") == principal.tenant and row.get("owner") == principal.user:
            data.append(_listed(thread_id, row))
    cursor = f"{page[-1][1]!r}:{page[-1][0]}" if more and page else None
    return _json({"data": data, "next_cursor": cursor})


def _cursor(text: str | None) -> tuple[float, str] | None:
    if text is None:
        return None
    score, _, thread_id = text.partition(":")
    try:
        value = float(score)
    except ValueError:
        value = float("nan")
    if value != value or value in (float("inf"), float("-inf")) or not thread_id:
        raise Problem(422, "validation", "The request is not valid", "cursor is not one we gave")
    return value, thread_id


async def get_thread(request: Request) -> Response:
    principal = await caller(request)
    state = await thread_for(request, principal)
    at = request.query_params.get("at")
    if at is not None:
        version = _integer(request, "at", 0, 1, state.version)
        state = await services(request).engine.reader.state(state.thread_id, at=version)
    body = thread_with_messages(state, request.query_params.get("tip"))
    return _json(body, version=state.version)


async def post_message(request: Request) -> Response:
    principal = await _user(request)
    state = await thread_for(request, principal, write=True)
    body = await body_of(request, NewMessage)
    await _may_take_turn(request, principal, body.content)

    def take() -> Awaitable[Turn]:
        return services(request).engine.post_message(
            state.thread_id,
            body.content,
            parent_id=body.parent_id,
            message_id=body.message_id or request_id(request),
            user_id=principal.user,
            expected_version=if_match(request),
        )

    return await _turn_response(request, principal, state.thread_id, take)


async def edit_message(request: Request) -> Response:
    principal = await _user(request)
    state = await thread_for(request, principal, write=True)
    body = await body_of(request, Edit)
    await _may_take_turn(request, principal, body.content)

    def take() -> Awaitable[Turn]:
        return services(request).engine.edit_message(
            state.thread_id,
            request.path_params["message_id"],
            body.content,
            new_message_id=body.message_id or request_id(request),
            user_id=principal.user,
            expected_version=if_match(request),
        )

    return await _turn_response(request, principal, state.thread_id, take)


async def give_feedback(request: Request) -> Response:
    principal = await _user(request)
    state = await thread_for(request, principal, write=True)
    body = await body_of(request, NewFeedback)
    version = await services(request).engine.give_feedback(
        state.thread_id,
        body.rating,
        message_id=body.message_id,
        comment=body.comment,
        user_id=principal.user,
        expected_version=if_match(request),
    )
    feedback = {
        "rating": body.rating,
        "message_id": body.message_id,
        "comment": body.comment,
        "version": version,
    }
    return _json(feedback, 201)


async def cancel(request: Request) -> Response:
    principal = await _user(request)
    state = await thread_for(request, principal, write=True)
    await body_of(request, NoBody)  # it takes none: a field sent is a mistake worth saying
    reply_id = await services(request).engine.cancel(
        state.thread_id, expected_version=if_match(request)
    )
    return _json({"reply_id": reply_id, "status": "cancelling"}, 202)


async def end_thread(request: Request) -> Response:
    """The user ends the active branch themselves (`{"confirm": true}`): the thread as it reads
    now, with `ended` set; or `end-refused` when the policy keeps it open (a crisis flag)."""
    principal = await _user(request)
    state = await thread_for(request, principal, write=True)
    body = await body_of(request, EndRequest)
    if not body.confirm:
        raise Problem(
            422, "validation", "The request is not valid", "confirm must be true: an end is final"
        )
    engine = services(request).engine
    counted = metrics(request)
    try:
        end = await engine.end(
            state.thread_id, user_id=principal.user, expected_version=if_match(request)
        )
    except ThreadEndedError as exc:
        raise await _ended(request, state.thread_id, exc) from exc
    except EndRefusedError as exc:
        counted.rejections.labels("user").inc()
        raise Problem(
            409, "end-refused", "The conversation stays open", str(exc), reason=exc.reason
        ) from exc
    counted.ends.labels("user").inc()
    after = await engine.reader.state(state.thread_id)
    return _json(thread_with_messages(after, end.leaf_id), version=after.version)


async def thread_events(request: Request) -> Response:
    principal = await caller(request)
    state = await thread_for(request, principal)
    after = _integer(request, "after", 0, 0, MAX_VERSION)
    limit = _integer(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
    recorded = await services(request).store.read(state.thread_id, after=after, limit=limit)
    data = [{"version": r.version, **msgspec.to_builtins(r.event)} for r in recorded]
    more = len(recorded) == limit and recorded[-1].version < state.version
    return _json({"data": data, "next": recorded[-1].version if more else None})


async def _user(request: Request) -> Principal:
    principal = await caller(request)
    if not principal.can("user"):
        raise Problem(403, "forbidden", "Forbidden", "taking turns needs the user role")
    return principal


async def stream_thread(request: Request) -> Response:
    """The thread's live tail as server-sent events, resumable by `Last-Event-ID` or `after`."""
    principal = await caller(request)
    state = await thread_for(request, principal)
    cursor = Cursor.parse(request.headers.get("last-event-id") or request.query_params.get("after"))
    if cursor.version > state.version:
        raise Problem(
            422,
            "validation",
            "The request is not valid",
            f"event id {cursor.version} is past the thread's last ({state.version})",
        )
    svc = services(request)
    slot = await svc.counting.take_slot(principal.key_id, limits_of(request))
    frames = thread_frames(svc, state.thread_id, cursor)
    streamed = guarded(frames, metrics(request), svc.counting, slot)
    return StreamingResponse(streamed, media_type=SSE, headers=SSE_HEADERS)


async def _may_take_turn(request: Request, principal: Principal, content: str) -> None:
    """413 for a message over the key's size, 429 for a turn over its rate (a retry that
    returns a turn taken already is not counted)."""
    limits = limits_of(request)
    if len(content.encode()) > limits.message_bytes:
        raise Problem(
            413,
            "too-large",
            "Request too large",
            f"a message holds at most {limits.message_bytes} bytes of UTF-8",
        )
    if not getattr(request.state, "replayed", False):
        await services(request).counting.turn(principal.key_id, limits)


async def _turn_response(
    request: Request, principal: Principal, thread_id: str, take: Callable[[], Awaitable[Turn]]
) -> Response:
    """The turn as SSE if the client accepts an event stream, else as JSON once it is done;
    a turn refused because the branch ended is a `thread-ended` problem carrying the end. A
    stream takes its slot first: a turn is never taken for a stream that is then refused."""
    svc = services(request)
    streaming = _accepts_events(request.headers.get("accept", ""))
    slot = await svc.counting.take_slot(principal.key_id, limits_of(request)) if streaming else None
    try:
        turn = await take()
    except ThreadEndedError as exc:
        await _free(svc, slot)
        raise await _ended(request, thread_id, exc) from exc
    except BaseException:
        await _free(svc, slot)
        raise
    counted = metrics(request)
    directive = turn.decision.directive if turn.decision is not None else "replayed"
    counted.turns.labels(directive).inc()
    if not turn.replayed:
        counted.tiers.labels(turn.classification.tier).inc()
    if slot is None:
        return await _finished_turn(request, turn)
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

    # The turn's own frames, from its first event: not a resumption of what came before it.
    frames = thread_frames(svc, turn.thread_id, Cursor(first - 1), resumed=False, last=last)
    streamed = guarded(frames, counted, svc.counting, slot)
    return StreamingResponse(streamed, media_type=SSE, headers=SSE_HEADERS)


async def _free(svc: Services, slot: Slot | None) -> None:
    if slot is not None:
        await svc.counting.free(slot)


async def _finished_turn(request: Request, turn: Turn) -> Response:
    engine = services(request).engine
    outcome = await engine.outcome(turn)
    if not turn.replayed:
        counted = metrics(request)
        if outcome.ended is not None:
            counted.ends.labels(outcome.ended.actor).inc()
        for rejection in outcome.rejections:
            counted.rejections.labels(rejection.actor).inc()
    state = await engine.reader.state(turn.thread_id)
    return _json(turn_json(state, turn.classification, outcome), version=state.version)


async def _ended(request: Request, thread_id: str, exc: ThreadEndedError) -> Problem:
    """A `thread-ended` problem carrying the end, so a client can offer what is still allowed."""
    state = await services(request).engine.reader.state(thread_id)
    leaf = exc.leaf_id
    end = end_of(state, leaf) if leaf is not None and leaf in state.messages else state.thread_end
    return Problem(
        409, "thread-ended", "The conversation has ended", str(exc), ended=ended_json(end)
    )


def _accepts_events(accept: str) -> bool:
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


def _count_end(counted: Metrics, event: ThreadEnded | EndRejected) -> None:
    if isinstance(event, ThreadEnded):
        counted.ends.labels(event.actor).inc()
    else:
        counted.rejections.labels(event.actor).inc()


def _listed(thread_id: str, row: dict[str, str]) -> dict[str, Any]:
    return {
        "id": thread_id,
        "title": row.get("title", ""),
        "status": row.get("status", "open"),
        "created_at": row.get("created_at", ""),
        "updated_at": row.get("updated_at", ""),
        "active_tip": row.get("active_tip") or None,
        "version": int(row.get("version", "0") or 0),
    }


def _integer(request: Request, name: str, default: int, low: int, high: int | None) -> int:
    text = request.query_params.get(name)
    if text is None:
        return default
    if not _digits(text) or int(text) < low or (high is not None and int(text) > high):
        bounds = f"{low}..{high}" if high is not None else f">= {low}"
        raise Problem(422, "validation", "The request is not valid", f"{name} must be {bounds}")
    return int(text)


def _json(body: Any, status: int = 200, *, version: int | None = None) -> Response:
    headers = {"ETag": f'"{version}"'} if version is not None else None
    return JSONResponse(body, status_code=status, headers=headers)


def _str(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _digits(text: str) -> bool:
    """Plain ASCII digits: `str.isdigit` also takes "²", which `int` refuses."""
    return text.isascii() and text.isdigit()
