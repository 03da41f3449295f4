"""The OpenAPI 3.1 document of the HTTP API, served at `GET /openapi.json`.

The request bodies are the msgspec Structs the handlers decode, and the events that `/events`
and the streams carry are the Structs the store keeps: msgspec writes their JSON Schema, so what
the server accepts and records cannot drift from what this says. The answers' shapes are in
shapes.py; tests/service/test_openapi.py holds real answers against them, and checks that the
document has every route of the app, no other, and every problem `type` the code can produce.
"""

from __future__ import annotations

import functools
import re
import typing
from typing import Final, TypeAlias

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from events.schema import AnyEvent
from projections.analytics import MAX_DAYS
from service.http.oversight import DEFAULT_DAYS
from service.http.problems import MEDIA_TYPE as PROBLEM
from service.http.representations import PRIVATE_FIELDS
from service.http.shapes import (
    DATE,
    INT,
    PROBLEM_TYPES,
    STR,
    Json,
    answers,
    ref,
)
from service.http.streams import KEEP_ALIVE_MS
from service.http.streams import MEDIA_TYPE as SSE
from service.http.threads import (
    DEFAULT_PAGE,
    MAX_PAGE,
    EndRequest,
    NewFeedback,
    NewThread,
    NoBody,
)
from service.http.turns import Edit, NewMessage

Operation: TypeAlias = tuple[str, str, Json]  # (path, method, operation object)

JSON: Final = "application/json"
BODIES: Final = (NewThread, NewMessage, Edit, EndRequest, NoBody, NewFeedback)

EVENT_NAMES: Final = (
    *(str(cls.__struct_config__.tag) for cls in typing.get_args(AnyEvent)),
    "reply.delta",
    "error",
)

SSE_DESCRIPTION: Final = (
    "Server-sent events, each frame an `id`, an `event` and its `data`. The events: "
    + ", ".join(f"`{name}`" for name in EVENT_NAMES)
    + ". `data` is the event as JSON (`Event`), except for `reply.delta` (`Delta`: the deltas"
    " of a reply concatenate to its final `content`) and `error` (a `Problem`: something failed"
    " once the stream had started). An event's id is its version (`7`); a delta's is the"
    " version of its `reply.started` and its entry in the reply's live channel"
    f" (`7:1764183...-0`). A `: keep-alive` comment comes after {KEEP_ALIVE_MS // 1000} seconds"
    " of silence."
)

_encoder: Final = msgspec.json.Encoder()
_TEXT: Final[Json] = {"schema": STR}
_EVENTS: Final[Json] = {"schema": {**STR, "description": SSE_DESCRIPTION}}


@functools.cache
def document() -> Json:
    """The whole document, as served (built once: treat it as read-only)."""
    paths: Json = {}
    for path, method, operation in _operations():
        paths.setdefault(path, {})[method] = operation
    built = {
        "openapi": "3.1.0",
        "info": {
            "title": "coda",
            "version": "1",  # the API's, as in /v1
            "description": "A chat backend in which the model may end a conversation as a last"
            " resort. Errors are RFC 9457 problem details (`Problem`).",
        },
        "paths": paths,
        "components": {
            "schemas": _components(),
            "parameters": _parameters(),
            "headers": _headers(),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key (`coda keys create`): it names a tenant, a user"
                    " and roles (`user`, `auditor`, `admin`).",
                }
            },
        },
    }
    # Through JSON and back: msgspec writes a tuple default as a tuple, the wire as an array.
    served: Json = msgspec.json.decode(_encoder.encode(built))
    return served


async def endpoint(request: Request) -> Response:
    """`GET /openapi.json`: needs no key, like /healthz."""
    return Response(_encoded(), media_type=JSON)


@functools.cache
def _components() -> Json:
    """The schemas msgspec writes from the bodies and the events, and those written here."""
    (*_, event), generated = msgspec.json.schema_components(
        (*BODIES, AnyEvent), ref_template="#/components/schemas/{name}"
    )
    for schema in generated.values():  # events as the API shows them (event_json)
        for name in PRIVATE_FIELDS:
            schema.get("properties", {}).pop(name, None)
            if name in schema.get("required", ()):
                schema["required"] = [f for f in schema["required"] if f != name]
    written = answers()
    assert not written.keys() & {*generated, "Event"}, "a schema name given twice"
    return {**generated, "Event": event, **written}


@functools.cache
def _encoded() -> bytes:
    return _encoder.encode(document())


def _operations() -> list[Operation]:
    thread = "/v1/threads/{thread_id}"
    turn = ("thread-ended", "turn-in-progress", "rate-limited")
    limit = _query("limit", {**INT, "minimum": 1, "maximum": MAX_PAGE, "default": DEFAULT_PAGE})
    return [
        _open("/healthz", "health", "The process is up (it says nothing of Redis)", _ok("Health")),
        _open(
            "/readyz",
            "readiness",
            "Redis answers and keeps coda's data safely (no eviction, 6.2+)",
            {**_ok("Ready"), **_problems("unavailable")},
        ),
        _open(
            "/metrics",
            "metrics",
            "Prometheus metrics, across tenants: keep them off the public port",
            {"200": {"description": "The text format", "content": {"text/plain": _TEXT}}},
        ),
        _open("/openapi.json", "openapi", "This document", _ok({"type": "object"}, "OpenAPI 3.1")),
        _v1(
            "post",
            "/v1/threads",
            "createThread",
            "Start a thread",
            _created("Thread", etag=True),
            body="NewThread",
        ),
        _v1(
            "get",
            "/v1/threads",
            "listThreads",
            "The caller's threads, newest first (from the projector's view, a moment behind)",
            _ok("ThreadPage"),
            query=[limit, _query("cursor", STR, "a `next_cursor`, passed back as it is")],
        ),
        _v1(
            "get",
            thread,
            "getThread",
            "The thread with the messages on the path to a tip, and that branch's end",
            _ok("ThreadWithMessages", etag=True),
            query=[
                _query("tip", STR, "a message id (default: the active tip)"),
                _query("at", {**INT, "minimum": 1}, "the thread as it stood at a version"),
            ],
        ),
        _v1(
            "post",
            f"{thread}/messages",
            "postMessage",
            "Take a turn: continue the active branch, or the one at `parent_id`. A retry with"
            " the same `message_id` and content returns the same turn, never a second one.",
            {"200": _turn("The turn")},
            body="NewMessage",
            problems=turn,
        ),
        _v1(
            "post",
            f"{thread}/messages/{{message_id}}/edit",
            "editMessage",
            "Edit a message: its new sibling starts a new branch, and takes the turn",
            {"200": _turn("The turn of the new sibling")},
            body="Edit",
            problems=turn,
        ),
        _v1(
            "post",
            f"{thread}/end",
            "endThread",
            "End the active branch at the user's request (`confirm` must be true: an end is final)",
            _ok("ThreadWithMessages", "The thread, its `ended` set", etag=True),
            body="EndRequest",
            problems=("thread-ended", "turn-in-progress", "end-refused"),
        ),
        _v1(
            "post",
            f"{thread}/cancel",
            "cancelReply",
            "Stop the generation in flight; it is recorded as failed (`cancelled`)",
            {"202": _json("Being stopped", ref("Cancelling"))},
            body="NoBody",
            problems=("no-generation",),
        ),
        _v1(
            "post",
            f"{thread}/feedback",
            "giveFeedback",
            "Rate a reply (also on an ended thread)",
            _created("Feedback"),
            body="NewFeedback",
        ),
        _v1(
            "get",
            f"{thread}/stream",
            "streamThread",
            "The thread's live tail, resumable from the last frame id received",
            {"200": {"description": "Open until the client leaves", "content": {SSE: _EVENTS}}},
            query=[_query("after", STR, "a frame id, as `Last-Event-ID`")],
            headers=["Last-Event-ID"],
            problems=("rate-limited",),
        ),
        _v1(
            "get",
            f"{thread}/events",
            "threadEvents",
            "The thread's recorded events, in order",
            _ok("EventPage"),
            query=[_query("after", {**INT, "minimum": 0, "default": 0}, "a version"), limit],
        ),
        _v1(
            "get",
            f"{thread}/audit",
            "auditThread",
            "Is the thread's history intact, and was each end justified? (auditor or admin)",
            _ok("Audit"),
            problems=("forbidden",),
        ),
        _v1(
            "get",
            "/v1/analytics/summary",
            "analyticsSummary",
            "The tenant's counters, by day and in total (auditor or admin)",
            _ok("AnalyticsSummary"),
            query=[
                _query("from", DATE, f"the first day (default: {DEFAULT_DAYS - 1} before `to`)"),
                _query("to", DATE, f"the last day, UTC (default: today); {MAX_DAYS} at most"),
            ],
            problems=("forbidden",),
        ),
    ]


def _open(path: str, operation_id: str, summary: str, responses: Json) -> Operation:
    """An operation that needs no key."""
    operation = {"operationId": operation_id, "summary": summary, "security": []}
    return path, "get", {**operation, "responses": responses}


def _v1(
    method: str,
    path: str,
    operation_id: str,
    summary: str,
    responses: Json,
    *,
    body: str | None = None,
    query: list[Json] | None = None,
    headers: list[str] | None = None,
    problems: tuple[str, ...] = (),
) -> Operation:
    """An operation under /v1, with what its path and method imply: the key, the path's
    parameters, and on a POST `Idempotency-Key` (and `If-Match` within a thread)."""
    in_thread = "{thread_id}" in path
    post = method == "post"
    named = [*re.findall(r"{(\w+)}", path), *(headers or [])]
    named += ["Idempotency-Key", *(["If-Match"] if in_thread else [])] if post else []
    common = ["unauthorized", "validation", "internal", "unavailable"]
    common += ["not-found"] if in_thread else []
    common += (
        ["forbidden", "too-large", "idempotency-key-reused", "request-in-progress"] if post else []
    )
    common += ["version-conflict"] if post and in_thread else []
    if post:
        replayed = {"Idempotent-Replayed": {"$ref": "#/components/headers/Idempotent-Replayed"}}
        responses = {
            status: {**response, "headers": {**response.get("headers", {}), **replayed}}
            for status, response in responses.items()
        }
    operation: Json = {
        "operationId": operation_id,
        "summary": summary,
        "security": [{"bearer": []}],
        "parameters": [{"$ref": f"#/components/parameters/{n}"} for n in named] + (query or []),
        "responses": {**responses, **_problems(*dict.fromkeys([*common, *problems]))},
    }
    if body is not None:
        # An empty body reads as `{}`: one with no required field may be left out.
        required = bool(_components()[body].get("required"))
        operation["requestBody"] = {"required": required, "content": {JSON: {"schema": ref(body)}}}
    return path, method, operation


def _problems(*types: str) -> Json:
    """The problem responses for `types`, one a status (the types that share it described)."""
    by_status: dict[int, list[str]] = {}
    for type_ in types:
        status = PROBLEM_TYPES[type_][0]
        assert status is not None, type_
        by_status.setdefault(status, []).append(type_)
    responses: Json = {}
    for status, named in sorted(by_status.items()):
        response = {
            "description": "; ".join(f"`{t}`: {PROBLEM_TYPES[t][1]}" for t in named),
            "content": {PROBLEM: {"schema": ref("Problem")}},
        }
        if status == 429:
            response["headers"] = {"Retry-After": {"$ref": "#/components/headers/Retry-After"}}
        responses[str(status)] = response
    return responses


def _turn(description: str) -> Json:
    """A turn's answer: JSON once the reply is recorded, or its events as they happen."""
    response = _json(
        f"{description}: as JSON once the reply is recorded, or, with `Accept: {SSE}`, its"
        " events as they happen, the stream ending after the turn's last event",
        ref("Turn"),
        etag=True,  # on the JSON form
    )
    response["content"][SSE] = _EVENTS
    return response


def _ok(schema: str | Json, description: str = "OK", *, etag: bool = False) -> Json:
    return {"200": _json(description, ref(schema) if isinstance(schema, str) else schema, etag)}


def _created(name: str, *, etag: bool = False) -> Json:
    return {"201": _json("Created", ref(name), etag)}


def _json(description: str, schema: Json, etag: bool = False) -> Json:
    response: Json = {"description": description, "content": {JSON: {"schema": schema}}}
    if etag:
        response["headers"] = {"ETag": {"$ref": "#/components/headers/ETag"}}
    return response


def _query(name: str, schema: Json, description: str = "") -> Json:
    return {"name": name, "in": "query", "schema": schema, "description": description}


def _parameters() -> Json:
    def header(name: str, description: str) -> Json:
        return {"name": name, "in": "header", "schema": STR, "description": description}

    def path(name: str) -> Json:
        return {"name": name, "in": "path", "required": True, "schema": STR}

    return {
        "thread_id": path("thread_id"),
        "message_id": path("message_id"),
        "Idempotency-Key": header(
            "Idempotency-Key",
            "The same key with the same request again answers as the first time (with"
            " `Idempotent-Replayed: true`) and does nothing more; with another request it is"
            " 422 `idempotency-key-reused`.",
        ),
        "If-Match": header(
            "If-Match",
            "The thread version the client last saw (its `ETag`, bare or quoted; `*`: any):"
            " if the thread has moved past it, 412 `version-conflict` and nothing is done.",
        ),
        "Last-Event-ID": header("Last-Event-ID", "The last frame id received: resume after it."),
    }


def _headers() -> Json:
    return {
        "ETag": {"description": "The thread's version, quoted", "schema": STR},
        "Idempotent-Replayed": {
            "description": "`true` on an answer replayed for a repeated `Idempotency-Key`",
            "schema": {"const": "true"},
        },
        "Retry-After": {"description": "Seconds to wait", "schema": {**INT, "minimum": 0}},
    }
