"""The OpenAPI 3.1 document of the HTTP API, served at `GET /openapi.json`.

The request bodies are the msgspec Structs the handlers decode, and the events that `/events`
and the streams carry are the Structs the store keeps: msgspec writes their JSON Schema, so what
the server accepts and records cannot drift from what this says. The answers are written here
from representations.py; tests/service/test_openapi.py holds real answers against them, and
checks that the document has every route of the app, no other, and every problem `type` the
code can produce.
"""

from __future__ import annotations

import functools
import re
import typing
from typing import Any, Final, TypeAlias

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from events.schema import Actor, AnyEvent, EndScope, Rating, Tier
from events.verify import Area
from projections.analytics import MAX_DAYS
from projections.branches import ThreadStatus
from projections.state import Kind, Role
from service.http.context import MAX_BODY
from service.http.oversight import DEFAULT_DAYS
from service.http.problems import MEDIA_TYPE as PROBLEM
from service.http.representations import ALLOWED_AFTER_END, PRIVATE_FIELDS
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

Json: TypeAlias = dict[str, Any]
Operation: TypeAlias = tuple[str, str, Json]  # (path, method, operation object)

JSON: Final = "application/json"
BODIES: Final = (NewThread, NewMessage, Edit, EndRequest, NoBody, NewFeedback)

# type -> (status, when). The Problem schema's enum; `None`: the status is the router's own.
PROBLEM_TYPES: Final[dict[str, tuple[int | None, str]]] = {
    "unauthorized": (401, "no key, or an unknown or revoked one"),
    "forbidden": (403, "the key's roles do not allow it"),
    "not-found": (404, "no such thread or message, or one the caller may not see"),
    "method-not-allowed": (405, "a path that exists, with another method"),
    "thread-ended": (409, "the branch (or the thread) has ended; carries `ended`"),
    "turn-in-progress": (409, "a reply is still being generated on that branch"),
    "end-refused": (
        409,
        "the policy keeps the branch open (a message on it was flagged as a crisis); "
        "carries `reason`",
    ),
    "no-generation": (409, "no reply is being generated"),
    "request-in-progress": (
        409,
        "the first request with this `Idempotency-Key` is still running; `Retry-After` says when",
    ),
    "thread-exists": (409, "a thread id taken by another thread"),
    "version-conflict": (412, "`If-Match` names a version the thread has moved past"),
    "too-large": (413, f"the body is over {MAX_BODY // 1024} KiB"),
    "validation": (422, "the body or a parameter is wrong; `detail` names the field"),
    "idempotency-key-reused": (
        422,
        "an `Idempotency-Key` or a message id used before for another request",
    ),
    "rate-limited": (429, "too many turns or streams for now; `Retry-After` says when to retry"),
    "internal": (500, "a bug: the traceback is logged"),
    "unavailable": (503, "Redis cannot be reached"),
    "client-disconnected": (400, "the client left mid-body: nobody reads this answer"),
    "http": (None, "another error of the router, with the status it gives"),
}

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
_STR: Final[Json] = {"type": "string"}
_STR_OR_NULL: Final[Json] = {"type": ["string", "null"]}
_INT: Final[Json] = {"type": "integer"}
_INT_OR_NULL: Final[Json] = {"type": ["integer", "null"]}
_BOOL: Final[Json] = {"type": "boolean"}
_TIME: Final[Json] = {"type": "string", "format": "date-time"}
_DATE: Final[Json] = {"type": "string", "format": "date"}
_TEXT: Final[Json] = {"schema": _STR}
_EVENTS: Final[Json] = {"schema": {**_STR, "description": SSE_DESCRIPTION}}


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
    written = _schemas()
    assert not written.keys() & {*generated, "Event"}, "a schema name given twice"
    return {**generated, "Event": event, **written}


@functools.cache
def _encoded() -> bytes:
    return _encoder.encode(document())


def _operations() -> list[Operation]:
    thread = "/v1/threads/{thread_id}"
    turn = ("thread-ended", "turn-in-progress", "rate-limited")
    limit = _query("limit", {**_INT, "minimum": 1, "maximum": MAX_PAGE, "default": DEFAULT_PAGE})
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
            query=[limit, _query("cursor", _STR, "a `next_cursor`, passed back as it is")],
        ),
        _v1(
            "get",
            thread,
            "getThread",
            "The thread with the messages on the path to a tip, and that branch's end",
            _ok("ThreadWithMessages", etag=True),
            query=[
                _query("tip", _STR, "a message id (default: the active tip)"),
                _query("at", {**_INT, "minimum": 1}, "the thread as it stood at a version"),
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
            {"202": _json("Being stopped", _ref("Cancelling"))},
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
            query=[_query("after", _STR, "a frame id, as `Last-Event-ID`")],
            headers=["Last-Event-ID"],
            problems=("rate-limited",),
        ),
        _v1(
            "get",
            f"{thread}/events",
            "threadEvents",
            "The thread's recorded events, in order",
            _ok("EventPage"),
            query=[_query("after", {**_INT, "minimum": 0, "default": 0}, "a version"), limit],
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
                _query("from", _DATE, f"the first day (default: {DEFAULT_DAYS - 1} before `to`)"),
                _query("to", _DATE, f"the last day, UTC (default: today); {MAX_DAYS} at most"),
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
        operation["requestBody"] = {"required": required, "content": {JSON: {"schema": _ref(body)}}}
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
            "content": {PROBLEM: {"schema": _ref("Problem")}},
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
        _ref("Turn"),
        etag=True,  # on the JSON form
    )
    response["content"][SSE] = _EVENTS
    return response


def _ok(schema: str | Json, description: str = "OK", *, etag: bool = False) -> Json:
    return {"200": _json(description, _ref(schema) if isinstance(schema, str) else schema, etag)}


def _created(name: str, *, etag: bool = False) -> Json:
    return {"201": _json("Created", _ref(name), etag)}


def _json(description: str, schema: Json, etag: bool = False) -> Json:
    response: Json = {"description": description, "content": {JSON: {"schema": schema}}}
    if etag:
        response["headers"] = {"ETag": {"$ref": "#/components/headers/ETag"}}
    return response


def _query(name: str, schema: Json, description: str = "") -> Json:
    return {"name": name, "in": "query", "schema": schema, "description": description}


def _parameters() -> Json:
    def header(name: str, description: str) -> Json:
        return {"name": name, "in": "header", "schema": _STR, "description": description}

    def path(name: str) -> Json:
        return {"name": name, "in": "path", "required": True, "schema": _STR}

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
        "ETag": {"description": "The thread's version, quoted", "schema": _STR},
        "Idempotent-Replayed": {
            "description": "`true` on an answer replayed for a repeated `Idempotency-Key`",
            "schema": {"const": "true"},
        },
        "Retry-After": {"description": "Seconds to wait", "schema": {**_INT, "minimum": 0}},
    }


def _schemas() -> Json:
    """The answers' shapes, from representations.py and the handlers that build them."""
    counters = {"type": "object", "additionalProperties": _INT}
    thread = {
        "id": _STR,
        "title": _STR,
        "status": {**_enum(ThreadStatus), "description": "`busy`: a reply is being generated"},
        "created_at": _TIME,
        "updated_at": _TIME,
        "active_tip": _STR_OR_NULL,
        "version": _INT,
    }
    problem_types = "; ".join(f"`{t}`: {when}" for t, (_, when) in PROBLEM_TYPES.items())
    return {
        "Thread": _object(**thread),
        "ThreadWithMessages": _object(
            **thread, messages=_array(_ref("Message")), ended=_nullable("End")
        ),
        "Message": _object(
            id=_STR,
            role=_enum(Role),
            content=_STR,
            parent_id=_STR_OR_NULL,
            kind=_enum(Kind),
            created_at=_TIME,
            sibling_ids=_array(_STR),
        ),
        "End": _object(
            leaf_id=_STR,
            actor=_enum(Actor),
            reason=_STR,
            category=_STR_OR_NULL,
            at=_TIME,
            allowed_actions=_array({"enum": list(ALLOWED_AFTER_END)}),
        ),
        "Classification": _object(
            tier=_enum(Tier),
            categories=_array(_STR),
            score={"type": "number"},
            classifier=_STR,
            version=_STR,
        ),
        "Turn": _object(
            message=_ref("Message"),
            classification=_ref("Classification"),
            reply=_nullable("Message"),
            ended=_nullable("End"),
        ),
        "ThreadPage": _object(data=_array(_ref("Thread")), next_cursor=_STR_OR_NULL),
        "Feedback": _object(
            rating=_enum(Rating), message_id=_STR_OR_NULL, comment=_STR, version=_INT
        ),
        "Cancelling": _object(reply_id=_STR, status={"const": "cancelling"}),
        "EventPage": _object(
            data=_array({"allOf": [_object(version=_INT), _ref("Event")]}), next=_INT_OR_NULL
        ),
        "Delta": _object(message_id=_STR, index=_INT, text=_STR),
        "Health": _object(status={"const": "ok"}),
        "Ready": _object(status={"const": "ready"}),
        "Audit": _object(
            thread_id=_STR,
            version=_INT,
            ok=_BOOL,
            chain_ok=_BOOL,
            seal_ok=_BOOL,
            meta_ok=_BOOL,
            first_bad_version=_INT_OR_NULL,
            problems=_array(_object(version=_INT, area=_enum(Area), reason=_STR)),
            ends=_array(_ref("AuditedEnd")),
        ),
        "AuditedEnd": _object(
            leaf_id=_STR,
            version=_INT,
            scope=_enum(EndScope),
            actor=_enum(Actor),
            actor_id=_STR_OR_NULL,
            reason=_STR,
            category=_STR_OR_NULL,
            policy_version=_STR,
            justified=_BOOL,
            verdict=_STR,
            path=_array(
                _object(
                    id=_STR,
                    role=_enum(Role),
                    kind=_enum(Kind),
                    content=_STR,
                    tier={"anyOf": [_enum(Tier), {"type": "null"}]},
                    version=_INT,
                )
            ),
        ),
        "AnalyticsSummary": _object(
            tenant=_STR,
            totals=counters,
            days=_array(_object(day=_DATE, counters=counters)),
            **{"from": _DATE, "to": _DATE},  # `from` is a keyword
        ),
        "Problem": {
            "type": "object",
            "description": "RFC 9457 problem details, as `application/problem+json`",
            "properties": {
                "type": {"enum": list(PROBLEM_TYPES), "description": problem_types},
                "title": _STR,
                "status": _INT,
                "detail": _STR,
                "ended": {**_nullable("End"), "description": "with `thread-ended`"},
                "reason": {**_STR, "description": "with `end-refused`"},
            },
            "required": ["type", "title", "status", "detail"],
        },
    }


def _object(**properties: Json) -> Json:
    """An object with all of `properties`, each always present (maybe null)."""
    return {"type": "object", "properties": properties, "required": list(properties)}


def _array(items: Json) -> Json:
    return {"type": "array", "items": items}


def _enum(literal: Any) -> Json:
    return {"enum": list(typing.get_args(literal))}


def _nullable(name: str) -> Json:
    return {"anyOf": [_ref(name), {"type": "null"}]}


def _ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}
