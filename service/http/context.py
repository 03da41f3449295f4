"""What every request handler reaches: the store, the engine, the keys, and the caller.

`Services` is built once per process (by the app's lifespan, or by a test) and kept on the
app's state; `caller` authenticates a request, `thread_for` loads a thread the caller may see.
"""

from __future__ import annotations

from typing import Final, TypeVar, cast

import msgspec
from starlette.requests import Request

from events.store import RedisEventStore
from projections.projector import DEFAULT_VIEW
from projections.state import ThreadState
from service.engine import Engine
from service.errors import ThreadNotFoundError
from service.http.limits import Limiter, Limits
from service.http.metrics import Metrics
from service.http.principals import ApiKeys, Principal
from service.http.problems import Problem

MAX_BODY: Final = Limits().body_bytes  # bytes of a request body, unless configured otherwise

T = TypeVar("T")


class Services(msgspec.Struct, kw_only=True):
    store: RedisEventStore
    engine: Engine
    keys: ApiKeys
    view: str = DEFAULT_VIEW
    limits: Limits = Limits()  # every key's, unless it has its own
    limiter: Limiter | None = None  # made from the store if not given

    def __post_init__(self) -> None:
        if self.limiter is None:
            self.limiter = Limiter(self.store.redis, self.store.keys, self.store.coalescer)

    @property
    def counting(self) -> Limiter:
        assert self.limiter is not None
        return self.limiter


def services(request: Request) -> Services:
    return cast(Services, request.app.state.services)


def metrics(request: Request) -> Metrics:
    return cast(Metrics, request.app.state.metrics)


async def caller(request: Request) -> Principal:
    """The principal of the request's bearer key; 401 without a valid one."""
    known = kept(request, "principal")
    if known is not None:
        return cast(Principal, known)
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Problem(401, "unauthorized", "Unauthorized", "send Authorization: Bearer <key>")
    principal = await services(request).keys.principal(key.strip())
    if principal is None:
        raise Problem(401, "unauthorized", "Unauthorized", "unknown or revoked API key")
    keep(request, "principal", principal)
    return principal


async def thread_for(request: Request, principal: Principal, *, write: bool = False) -> ThreadState:
    """The thread of the path, if `principal` may see it (or, with `write`, act in it).

    A user reaches their own threads; auditors and admins read every thread of their tenant.
    Anything else is a 404, as if the thread did not exist: existence is not revealed.
    """
    thread_id = request.path_params["thread_id"]
    reader = services(request).engine.reader
    # Who may act in a thread never changes: a write may check it on the state this process
    # holds (the write itself then goes by the stored version); a read shows the stored thread.
    state = reader.cached(thread_id) if write else None
    if state is None or state.started is None:
        with metrics(request).timed():
            state = await reader.state(thread_id)
    started = state.started
    if started is None or started.tenant != principal.tenant:
        raise ThreadNotFoundError(thread_id)
    own = started.owner == principal.user and principal.can("user")
    if not own and (write or not principal.can("auditor", "admin")):
        raise ThreadNotFoundError(thread_id)
    return state


def if_match(request: Request) -> int | None:
    """The thread version the client acted on (`If-Match`: a version, bare or quoted), if any."""
    header = request.headers.get("if-match")
    if header is None or header.strip() == "*":
        return None
    text = header.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    if not (text.isascii() and text.isdigit()) or len(text) > 16:
        raise Problem(
            422, "validation", "The request is not valid", "If-Match must be a thread version"
        )
    return int(text)


def limits_of(request: Request) -> Limits:
    """The limits of the request's key: its own, over the defaults."""
    known = kept(request, "limits")
    if known is not None:
        return cast(Limits, known)
    principal = cast(Principal | None, kept(request, "principal"))
    defaults = services(request).limits
    if principal is None:
        return defaults  # not kept: the principal may be known later in the request
    return cast(Limits, keep(request, "limits", defaults.over(principal.limits)))


async def body_of(request: Request, kind: type[T]) -> T:
    """The JSON body as `kind`: 413 past the body limit (read no further), 422 naming the field."""
    return msgspec.json.decode(await raw_body(request) or b"{}", type=kind)


async def raw_body(request: Request) -> bytes:
    """The body's bytes, read once (413 past the key's body limit, and no further)."""
    known = kept(request, "raw_body")
    if known is not None:
        return cast(bytes, known)
    limit = limits_of(request).body_bytes
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            raise _too_large(limit)
    return cast(bytes, keep(request, "raw_body", bytes(raw)))


def _too_large(limit: int) -> Problem:
    return Problem(413, "too-large", "Request too large", f"a body holds at most {limit} bytes")


def kept(request: Request, name: str) -> object | None:
    """What the request's handlers keep for each other (the principal, the body), if any: the
    request's state dict, read without `request.state`, which raises on every miss."""
    state: dict[str, object] = request.scope.setdefault("state", {})
    return state.get(name)


def keep(request: Request, name: str, value: object) -> object:
    request.scope.setdefault("state", {})[name] = value
    return value
