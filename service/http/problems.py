"""Errors over HTTP: RFC 9457 `application/problem+json`, from one table of our exceptions.

Every problem has a stable `type` a client can switch on (`thread-ended`, `turn-in-progress`,
`not-found`, ...), a `title`, the `status`, and a `detail` for people. Anything not in the
table is a 500 with a logged traceback, never a quiet success.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeAlias

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from events.errors import (
    IdempotencyError,
    InvalidNameError,
    StoreUnavailableError,
    ThreadEndedError,
)
from projections.branches import UnknownMessageError
from service.errors import (
    InvalidTurnError,
    MessageConflictError,
    NoGenerationError,
    ThreadExistsError,
    ThreadNotFoundError,
    TurnInProgressError,
    VersionConflictError,
)

MEDIA_TYPE: Final = "application/problem+json"

Handler: TypeAlias = Callable[[Request, Exception], Awaitable[Response]]

log = logging.getLogger("coda.http")

_json: Final = msgspec.json.Encoder()

# exception -> (status, type, title)
TABLE: Final[dict[type[Exception], tuple[int, str, str]]] = {
    ThreadEndedError: (409, "thread-ended", "The conversation has ended"),
    TurnInProgressError: (409, "turn-in-progress", "A reply is still being generated"),
    ThreadNotFoundError: (404, "not-found", "Not found"),
    UnknownMessageError: (404, "not-found", "Not found"),
    ThreadExistsError: (409, "thread-exists", "The thread exists already"),
    InvalidTurnError: (422, "validation", "The request is not valid"),
    msgspec.DecodeError: (422, "validation", "The request is not valid"),
    InvalidNameError: (404, "not-found", "Not found"),
    MessageConflictError: (
        422,
        "idempotency-key-reused",
        "The id was used before for a different request",
    ),
    IdempotencyError: (
        422,
        "idempotency-key-reused",
        "The id was used before for a different request",
    ),
    NoGenerationError: (409, "no-generation", "No reply is being generated"),
    VersionConflictError: (412, "version-conflict", "The thread has changed"),
    StoreUnavailableError: (503, "unavailable", "The service is unavailable"),
    # Nobody reads this answer; it keeps a client that left mid-body out of the error log.
    ClientDisconnect: (400, "client-disconnected", "The client went away"),
}


class Problem(Exception):
    """A problem raised by the HTTP layer itself (401, 403, 413, ...), with extra members."""

    def __init__(
        self, status: int, type_: str, title: str, detail: str = "", **members: Any
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.type = type_
        self.title = title
        self.detail = detail or title
        self.members = members


def problem_response(
    status: int,
    type_: str,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
    **members: Any,
) -> Response:
    body = {"type": type_, "title": title, "status": status, "detail": detail, **members}
    return Response(_json.encode(body), status_code=status, media_type=MEDIA_TYPE, headers=headers)


def problem_of(exc: Exception) -> tuple[int, str, str, str, dict[str, Any]]:
    """(status, type, title, detail, extra members) for an exception of the table or a Problem."""
    if isinstance(exc, Problem):
        return exc.status, exc.type, exc.title, exc.detail, exc.members
    for cls in type(exc).__mro__:
        entry = TABLE.get(cls)
        if entry is not None:
            status, type_, title = entry
            return status, type_, title, _detail(exc), {}
    raise LookupError(type(exc).__name__)


async def handle(request: Request, exc: Exception) -> Response:
    """Starlette's exception handler for every exception of the table, and `Problem`."""
    status, type_, title, detail, members = problem_of(exc)
    headers = {"Retry-After": str(members.pop("retry_after"))} if "retry_after" in members else None
    return problem_response(status, type_, title, detail, headers, **members)


async def routing(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 and 405 (no such route, or method), as problems too."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        return problem_response(
            405, "method-not-allowed", "Method not allowed", exc.detail, dict(exc.headers or {})
        )
    if exc.status_code == 404:
        return problem_response(404, "not-found", "Not found", "no such resource")
    return problem_response(exc.status_code, "http", exc.detail, exc.detail)


async def unexpected(request: Request, exc: Exception) -> Response:
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(500, "internal", "Internal error", "something went wrong on our side")


def _detail(exc: Exception) -> str:
    if isinstance(exc, msgspec.DecodeError):
        return f"invalid body: {exc}"
    return str(exc)
