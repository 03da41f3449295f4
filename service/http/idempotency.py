"""`Idempotency-Key`: a POST sent again with the same key and body is answered as the first was.

A key belongs to its caller (tenant and user) for a day. The first request with a key claims
it in Redis, with a fingerprint of the request (method, path, body) and an id that the handler
gives to what it creates (the new thread, the new message). A request that comes again:

- with another body, to another path, or with another `If-Match`: 422
  `idempotency-key-reused`, and nothing is done;
- after the first was answered: that answer, stored, with `Idempotent-Replayed: true`;
- a new thread or a turn, at any time: it runs again with the first's id, which the engine
  answers with the thread or the turn it made the first time (never a second one): a turn as
  JSON once it is done, or as its event stream. A retry while the first runs so attaches to it;
- anything else while the first is still running: the first's answer, if it comes within a
  few seconds, else 409 `request-in-progress`.

An answer that asks to try again later (another turn running, a rate limit, Redis down, a
500) is not kept: the key is released, and the retry runs afresh.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from typing import Final, Literal, cast

import anyio
import msgspec
from starlette.requests import Request
from starlette.responses import Response

from events.errors import redis_errors
from events.schema import new_id
from service.http.context import caller, keep, kept, raw_body, services
from service.http.problems import Problem, handle, problem_of

HEADER: Final = "idempotency-key"
REPLAYED: Final = "Idempotent-Replayed"
KEPT_SECONDS: Final = 24 * 3600
PENDING_SECONDS: Final = 300  # a claim whose request died is released after this
WAIT_SECONDS: Final = 10.0  # how long a retry waits for the first's answer
POLL_SECONDS: Final = 0.05
MAX_KEY: Final = 255
_TRANSIENT: Final = frozenset(
    {"turn-in-progress", "rate-limited", "unavailable", "internal", "request-in-progress"}
)
_KEPT_HEADERS: Final = ("content-type", "etag", "location")

Endpoint = Callable[[Request], Awaitable[Response]]


class Record(msgspec.Struct, frozen=True, kw_only=True):
    """What a key holds: the request it was first used for, and, once answered, the answer."""

    fingerprint: str
    request_id: str
    state: Literal["pending", "done", "rerun"]
    status: int = 0
    headers: dict[str, str] = {}
    body: bytes = b""


_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final = msgspec.msgpack.Decoder(Record)


def idempotent(handler: Endpoint, *, rerun: bool = False) -> Endpoint:
    """`handler`, answering a request with a known `Idempotency-Key` as described above;
    `rerun`: the handler is idempotent by the id it is given, and runs again on a retry."""

    async def endpoint(request: Request) -> Response:
        key = request.headers.get(HEADER)
        if key is None:
            return await handler(request)
        if not key or len(key) > MAX_KEY or not key.isascii() or not key.isprintable():
            raise Problem(
                422,
                "validation",
                "The request is not valid",
                f"Idempotency-Key must be 1-{MAX_KEY} printable ASCII characters",
            )
        principal = await caller(request)
        body = await raw_body(request)
        # The version a write was made on is part of what was asked.
        if_match = request.headers.get("if-match", "").encode()
        fingerprint = hashlib.sha256(
            b"\0".join([request.method.encode(), request.url.path.encode(), if_match, body])
        ).hexdigest()
        name = services(request).store.keys.idempotency(
            hashlib.sha256(f"{principal.tenant}\0{principal.user}\0{key}".encode()).hexdigest()
        )
        record, replayed = await _claim(request, name, fingerprint, rerun)
        if record.fingerprint != fingerprint:
            raise Problem(
                422,
                "idempotency-key-reused",
                "The id was used before for a different request",
                "this Idempotency-Key was used for another request: use a new key",
            )
        if replayed and not rerun:
            return _replayed(await _answer_of(request, name, record))
        keep(request, "request_id", record.request_id)
        if rerun:
            response = await handler(request)
            return _replayed(response) if replayed else response
        # Shielded: a client that leaves must not leave the key claimed with its work half done
        # (these handlers are short: one write each).
        with anyio.CancelScope(shield=True):
            try:
                response = await handler(request)
            except Exception as exc:
                try:
                    problem_of(exc)
                except LookupError:
                    await _release(request, name)
                    raise
                response = await handle(request, exc)
            await _keep(request, name, record, response)
        return response

    return endpoint


def request_id(request: Request) -> str | None:
    """The id the request's key gave it, for what the handler creates (None without a key)."""
    return cast(str | None, kept(request, "request_id"))


async def _claim(request: Request, name: str, fingerprint: str, rerun: bool) -> tuple[Record, bool]:
    """The key's record, and whether it was there before (a retry); claimed if it was not."""
    redis = services(request).store.redis
    fresh = Record(
        fingerprint=fingerprint, request_id=new_id(), state="rerun" if rerun else "pending"
    )
    while True:
        with redis_errors():
            ttl = KEPT_SECONDS if rerun else PENDING_SECONDS
            if await redis.set(name, _encoder.encode(fresh), nx=True, ex=ttl):
                return fresh, False
            stored = await redis.get(name)
        if stored is not None:
            return _decoder.decode(cast(bytes, stored)), True
        # It expired between the two commands: claim it again.


async def _answer_of(request: Request, name: str, record: Record) -> Response:
    """The stored answer; for a request still running, waited for a while."""
    deadline = time.monotonic() + WAIT_SECONDS
    redis = services(request).store.redis
    while record.state == "pending":
        if time.monotonic() > deadline:
            raise Problem(
                409,
                "request-in-progress",
                "The first request with this key is still running",
                "retry in a moment",
                retry_after=1,
            )
        await asyncio.sleep(POLL_SECONDS)
        with redis_errors():
            stored = await redis.get(name)
        if stored is None:
            raise Problem(
                409,
                "request-in-progress",
                "The first request with this key did not finish",
                "retry: it runs afresh",
                retry_after=1,
            )
        record = _decoder.decode(cast(bytes, stored))
    return Response(record.body, status_code=record.status, headers=record.headers)


async def _keep(request: Request, name: str, record: Record, response: Response) -> None:
    """Store the answer under the key, unless it says to try again later."""
    if response.status_code >= 500 or _problem_type(response) in _TRANSIENT:
        await _release(request, name)
        return
    headers = {k: v for k, v in response.headers.items() if k in _KEPT_HEADERS}
    done = msgspec.structs.replace(
        record, state="done", status=response.status_code, headers=headers, body=response.body
    )
    with redis_errors():
        await services(request).store.redis.set(name, _encoder.encode(done), ex=KEPT_SECONDS)


async def _release(request: Request, name: str) -> None:
    with redis_errors():
        await services(request).store.redis.delete(name)


def _replayed(response: Response) -> Response:
    response.headers[REPLAYED] = "true"
    return response


def _problem_type(response: Response) -> str | None:
    if response.headers.get("content-type") != "application/problem+json":
        return None
    try:
        body = msgspec.json.decode(response.body)
    except msgspec.DecodeError:
        return None
    return body.get("type") if isinstance(body, dict) else None
