"""The thread endpoints: create and list threads, read one, feedback, cancel, end, events, the
live tail (turns are in service/http/turns.py)."""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal, cast

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from events.errors import ThreadEndedError, redis_errors
from events.schema import (
    Id,
)
from service.errors import EndRefusedError
from service.http.context import (
    body_of,
    caller,
    if_match,
    limits_of,
    metrics,
    services,
    thread_for,
)
from service.http.idempotency import request_id
from service.http.problems import Problem
from service.http.representations import JSONBody, event_json, thread_json, thread_with_messages
from service.http.streams import Cursor, EventStream, thread_frames
from service.http.turns import ended_problem, user

DEFAULT_PAGE: Final = 50
MAX_PAGE: Final = 200
MAX_VERSION: Final = 2**53  # a version past any real thread, and within every integer type

Title = Annotated[str, msgspec.Meta(max_length=200)]
Comment = Annotated[str, msgspec.Meta(max_length=4000)]


class NewThread(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    title: Title = ""


class EndRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    confirm: bool  # ending is permanent: the client asked the user, and they said yes


class NoBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    pass


class NewFeedback(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    rating: Literal["up", "down"]
    message_id: Id | None = None
    comment: Comment = ""


async def create_thread(request: Request) -> Response:
    principal = await user(request)
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


async def give_feedback(request: Request) -> Response:
    principal = await user(request)
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
    principal = await user(request)
    state = await thread_for(request, principal, write=True)
    await body_of(request, NoBody)  # it takes none: a field sent is a mistake worth saying
    reply_id = await services(request).engine.cancel(
        state.thread_id, expected_version=if_match(request)
    )
    return _json({"reply_id": reply_id, "status": "cancelling"}, 202)


async def end_thread(request: Request) -> Response:
    """The user ends the active branch themselves (`{"confirm": true}`): the thread as it reads
    now, with `ended` set; or `end-refused` when the policy keeps it open (a crisis flag)."""
    principal = await user(request)
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
        raise await ended_problem(request, state.thread_id, exc) from exc
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
    data = [{"version": r.version, **event_json(r.event)} for r in recorded]
    more = len(recorded) == limit and recorded[-1].version < state.version
    return _json({"data": data, "next": recorded[-1].version if more else None})


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
    return EventStream(frames, metrics(request), svc.counting, slot)


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
    return JSONBody(body, status_code=status, headers=headers)


def _str(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _digits(text: str) -> bool:
    """Plain ASCII digits: `str.isdigit` also takes "²", which `int` refuses."""
    return text.isascii() and text.isdigit()
