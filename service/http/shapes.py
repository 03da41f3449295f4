"""What the HTTP API answers with, as JSON Schema: the shapes of representations.py and of the
handlers that build answers, and the problem types. openapi.py puts them in its document;
tests/service/test_openapi.py holds real answers against them.
"""

from __future__ import annotations

import typing
from typing import Any, Final, TypeAlias

from events.schema import Actor, EndScope, Rating, Tier
from events.verify import Area
from projections.branches import ThreadStatus
from projections.state import Kind, Role
from service.http.context import MAX_BODY
from service.http.representations import ALLOWED_AFTER_END

Json: TypeAlias = dict[str, Any]

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

STR: Final[Json] = {"type": "string"}
STR_OR_NULL: Final[Json] = {"type": ["string", "null"]}
INT: Final[Json] = {"type": "integer"}
INT_OR_NULL: Final[Json] = {"type": ["integer", "null"]}
BOOL: Final[Json] = {"type": "boolean"}
TIME: Final[Json] = {"type": "string", "format": "date-time"}
DATE: Final[Json] = {"type": "string", "format": "date"}


def answers() -> Json:
    """The answers' shapes, from representations.py and the handlers that build them."""
    counters = {"type": "object", "additionalProperties": INT}
    thread = {
        "id": STR,
        "title": STR,
        "status": {**enum_of(ThreadStatus), "description": "`busy`: a reply is being generated"},
        "created_at": TIME,
        "updated_at": TIME,
        "active_tip": STR_OR_NULL,
        "version": INT,
    }
    problem_types = "; ".join(f"`{t}`: {when}" for t, (_, when) in PROBLEM_TYPES.items())
    return {
        "Thread": object_of(**thread),
        "ThreadWithMessages": object_of(
            **thread, messages=array_of(ref("Message")), ended=nullable("End")
        ),
        "Message": object_of(
            id=STR,
            role=enum_of(Role),
            content=STR,
            parent_id=STR_OR_NULL,
            kind=enum_of(Kind),
            created_at=TIME,
            sibling_ids=array_of(STR),
        ),
        "End": object_of(
            leaf_id=STR,
            actor=enum_of(Actor),
            reason=STR,
            category=STR_OR_NULL,
            at=TIME,
            allowed_actions=array_of({"enum": list(ALLOWED_AFTER_END)}),
        ),
        "Classification": object_of(
            tier=enum_of(Tier),
            categories=array_of(STR),
            score={"type": "number"},
            classifier=STR,
            version=STR,
        ),
        "Turn": object_of(
            message=ref("Message"),
            classification=ref("Classification"),
            reply=nullable("Message"),
            ended=nullable("End"),
        ),
        "ThreadPage": object_of(data=array_of(ref("Thread")), next_cursor=STR_OR_NULL),
        "Feedback": object_of(
            rating=enum_of(Rating), message_id=STR_OR_NULL, comment=STR, version=INT
        ),
        "Cancelling": object_of(reply_id=STR, status={"const": "cancelling"}),
        "EventPage": object_of(
            data=array_of({"allOf": [object_of(version=INT), ref("Event")]}), next=INT_OR_NULL
        ),
        "Delta": object_of(message_id=STR, index=INT, text=STR),
        "Health": object_of(status={"const": "ok"}),
        "Ready": object_of(status={"const": "ready"}),
        "Audit": object_of(
            thread_id=STR,
            version=INT,
            ok=BOOL,
            chain_ok=BOOL,
            seal_ok=BOOL,
            meta_ok=BOOL,
            first_bad_version=INT_OR_NULL,
            problems=array_of(object_of(version=INT, area=enum_of(Area), reason=STR)),
            ends=array_of(ref("AuditedEnd")),
        ),
        "AuditedEnd": object_of(
            leaf_id=STR,
            version=INT,
            scope=enum_of(EndScope),
            actor=enum_of(Actor),
            actor_id=STR_OR_NULL,
            reason=STR,
            category=STR_OR_NULL,
            policy_version=STR,
            justified=BOOL,
            verdict=STR,
            path=array_of(
                object_of(
                    id=STR,
                    role=enum_of(Role),
                    kind=enum_of(Kind),
                    content=STR,
                    tier={"anyOf": [enum_of(Tier), {"type": "null"}]},
                    version=INT,
                )
            ),
        ),
        "AnalyticsSummary": object_of(
            tenant=STR,
            totals=counters,
            days=array_of(object_of(day=DATE, counters=counters)),
            **{"from": DATE, "to": DATE},  # `from` is a keyword
        ),
        "Problem": {
            "type": "object",
            "description": "RFC 9457 problem details, as `application/problem+json`",
            "properties": {
                "type": {"enum": list(PROBLEM_TYPES), "description": problem_types},
                "title": STR,
                "status": INT,
                "detail": STR,
                "ended": {**nullable("End"), "description": "with `thread-ended`"},
                "reason": {**STR, "description": "with `end-refused`"},
            },
            "required": ["type", "title", "status", "detail"],
        },
    }


def object_of(**properties: Json) -> Json:
    """An object with all of `properties`, each always present (maybe null)."""
    return {"type": "object", "properties": properties, "required": list(properties)}


def array_of(items: Json) -> Json:
    return {"type": "array", "items": items}


def enum_of(literal: Any) -> Json:
    return {"enum": list(typing.get_args(literal))}


def nullable(name: str) -> Json:
    return {"anyOf": [ref(name), {"type": "null"}]}


def ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}
