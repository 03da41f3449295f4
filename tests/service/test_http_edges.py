"""Edges of the HTTP API's limits and retries: a refused turn sent again, a stream refused
before its turn, the turn rate's last millisecond, stream slots of clients that left or never
read, and a retry with If-Match while the first request runs."""

from __future__ import annotations

import asyncio
import types
from collections.abc import AsyncIterator
from typing import Any

import fakeredis
import httpx
import pytest
from starlette.applications import Starlette

from events.keys import Keyspace
from events.store import RedisEventStore
from service.classifier import NO_CONTEXT, Classification, Context
from service.http.app import create_app
from service.http.context import Services
from service.http.limits import Limiter, Limits
from service.http.principals import ApiKeys, digest
from service.http.problems import Problem
from service.rules import RuleClassifier
from tests.service.engines import running
from tests.service.test_http import Api, api, backend  # noqa: F401 (fixtures)

pytestmark = pytest.mark.anyio

SSE = {"Accept": "text/event-stream"}


async def _caller(api: Api, name: str, **limits: int) -> str:
    keys = ApiKeys(api.store.redis, api.store.keys)
    api.keys[name] = await keys.create("acme", name, frozenset({"user"}), limits)
    return name


async def _types(api: Api, thread: str, who: str = "ann") -> list[str]:
    events = (await api.call("GET", f"/v1/threads/{thread}/events?limit=200", who)).json()
    return [e["type"] for e in events["data"]]


# --- limits ---------------------------------------------------------------------------------


async def test_a_turn_refused_for_its_rate_is_refused_again_when_sent_again_with_its_key(
    api: Api,
) -> None:
    who = await _caller(api, "slow", turns_per_minute=1)
    thread = await api.thread(who)
    path = f"/v1/threads/{thread}/messages"
    assert (await api.say(thread, "hello", who)).status_code == 200  # the minute's one turn
    sent = {"Idempotency-Key": "retry-me"}
    refused = await api.call("POST", path, who, {"content": "and again"}, headers=sent)
    # A 429 is an answer that asks to try later: the retry runs afresh, and is counted afresh.
    retried = await api.call("POST", path, who, {"content": "and again"}, headers=sent)
    assert refused.status_code == 429
    assert retried.status_code == 429, "the key's first use let its retry skip the rate"
    assert (await _types(api, thread, who)).count("message.posted") == 1


async def test_a_streamed_turn_refused_for_want_of_a_stream_slot_takes_no_turn_of_the_rate(
    api: Api,
) -> None:
    who = await _caller(api, "narrow", turns_per_minute=1, streams=1)
    thread = await api.thread(who)
    path = f"/v1/threads/{thread}/messages"
    limiter = Limiter(api.store.redis, api.store.keys)
    taken = await limiter.take_slot(digest(api.keys[who]), Limits(streams=1))  # the one slot
    refused = await api.call("POST", path, who, {"content": "hello"}, headers=SSE)
    await limiter.free(taken)
    plain = await api.call("POST", path, who, {"content": "hello"})
    assert (refused.status_code, refused.json()["type"]) == (429, "rate-limited")
    assert "event streams" in refused.json()["detail"]
    # No turn was taken for the refused stream, so the minute's one turn is still there.
    assert plain.status_code == 200, plain.json()["detail"]


async def test_the_turn_rate_refuses_in_the_last_millisecond_before_a_turn_is_due(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The clock is the one thing mocked: fakeredis's TIME, frozen at chosen instants.
    now = [1_800_000_000.0]
    clock = types.SimpleNamespace(time=lambda: now[0])
    monkeypatch.setattr("fakeredis.commands_mixins.server_mixin.time", clock)
    client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    limiter = Limiter(client, Keyspace(prefix="edges"))
    limits = Limits(turns_per_minute=7)  # one turn every 8571.43 ms, in bursts of seven
    try:
        for _ in range(7):
            await limiter.turn("k", limits)
        now[0] += 8.5713  # 8571 ms later: the next turn is due in 0.43 ms
        allowed = [await _allowed(limiter, limits) for _ in range(20)]
        # The wait (0.43 ms) comes back from Lua as the integer 0, read as "allowed", and the
        # allowance is not even spent: every turn of that millisecond goes through.
        assert allowed.count(True) == 0
    finally:
        await client.aclose()


async def _allowed(limiter: Limiter, limits: Limits) -> bool:
    try:
        await limiter.turn("k", limits)
    except Problem as exc:
        if exc.status != 429:
            raise
        return False
    return True


# --- stream slots ---------------------------------------------------------------------------


class Served(Api):
    def __init__(
        self,
        app: Starlette,
        client: httpx.AsyncClient,
        keys: dict[str, str],
        store: RedisEventStore,
    ) -> None:
        super().__init__(client, keys, store)
        self.app = app


@pytest.fixture
async def served(store: RedisEventStore) -> AsyncIterator[Served]:
    """The app of the `api` fixture, reachable as ASGI too, with a caller of one stream."""
    keys = ApiKeys(store.redis, store.keys)
    callers = {"one": await keys.create("acme", "one", frozenset({"user"}), {"streams": 1})}
    async with running(store) as engine:
        app = create_app(Services(store=store, engine=engine, keys=keys))
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://coda") as client,
        ):
            yield Served(app, client, callers, store)


class RawStream:
    """A GET of an event stream straight through ASGI, so the client can leave at will: with
    ASGI spec 2.3 (uvicorn's) the response listens for the disconnect and cancels the stream;
    with 2.4 a send to a client that has gone raises OSError."""

    def __init__(self, app: Starlette, path: str, key: str, *, spec: str = "2.3") -> None:
        self.app = app
        self.path = path
        self.key = key
        self.spec = spec
        self.gone = asyncio.Event()
        self.answered = asyncio.Event()
        self.status: int | None = None
        self.body = b""
        self._requested = False
        self.task: asyncio.Task[None] | None = None

    def open(self) -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": self.spec},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": self.path,
            "raw_path": self.path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"coda"), (b"authorization", f"Bearer {self.key}".encode())],
            "client": ("127.0.0.1", 1),
            "server": ("coda", 80),
        }
        self.task = asyncio.create_task(self.app(scope, self._receive, self._send))

    async def first_frame(self) -> None:
        while b"\n\n" not in self.body:
            await asyncio.wait_for(self.answered.wait(), 5)
            self.answered.clear()

    async def close(self) -> None:
        self.gone.set()
        assert self.task is not None
        done, _ = await asyncio.wait({self.task}, timeout=5)
        assert done, "the app did not finish once its client had gone"
        if not self.task.cancelled():
            self.task.exception()  # a server logs what the app raised at a client gone; so may we

    async def _receive(self) -> dict[str, Any]:
        if not self._requested:
            self._requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: dict[str, Any]) -> None:
        if self.gone.is_set() and self.spec == "2.4":
            raise OSError("the client has gone")
        if message["type"] == "http.response.start":
            self.status = message["status"]
        else:
            self.body += message.get("body", b"")
        self.answered.set()


async def _next_stream_status(served: Served, path: str) -> int | None:
    """The status a new stream of the one-stream key is answered with."""
    again = RawStream(served.app, path, served.keys["one"])
    again.open()
    try:
        await asyncio.wait_for(again.answered.wait(), 5)
        return again.status
    finally:
        await again.close()


async def test_a_stream_whose_client_left_gives_its_slot_back_at_once(served: Served) -> None:
    thread = await served.thread("one")
    path = f"/v1/threads/{thread}/stream"
    first = RawStream(served.app, path, served.keys["one"])
    first.open()
    await first.first_frame()  # the stream runs, and waits for the thread's next event
    await first.close()  # the client leaves: Starlette cancels the stream
    # The slot is freed in the stream's `finally`, inside the cancelled scope: the ZREM is
    # cancelled with it unless it reached Redis before its first await, and the slot stays
    # taken for SLOT_MS (45 s).
    assert await _next_stream_status(served, path) == 200


async def test_a_stream_that_never_started_gives_its_slot_back(served: Served) -> None:
    thread = await served.thread("one")
    path = f"/v1/threads/{thread}/stream"
    # Given a client that left while the server prepared its stream (the slot was taken, the
    # answer had not started), on a server of ASGI spec 2.4 (a send to it raises OSError):
    left = RawStream(served.app, path, served.keys["one"], spec="2.4")
    left.gone.set()
    left.open()
    await left.close()
    assert left.status is None  # nothing was sent: the frames were never iterated
    # Then the one slot is free for the next stream, not held for 45 s.
    assert await _next_stream_status(served, path) == 200


# --- If-Match and Idempotency-Key -----------------------------------------------------------


class GatedClassifier:
    """The rule classifier, answering once `count` messages are being classified at once: two
    requests of one turn are then surely both past their read of the thread."""

    name = RuleClassifier.name
    version = RuleClassifier.version

    def __init__(self, count: int) -> None:
        self.count = count
        self.arrived = 0
        self.gate = asyncio.Event()
        self.inner = RuleClassifier()

    async def classify(self, text: str, context: Context = NO_CONTEXT) -> Classification:
        self.arrived += 1
        if self.arrived >= self.count:
            self.gate.set()
        await asyncio.wait_for(self.gate.wait(), 5)
        return await self.inner.classify(text, context)

    async def aclose(self) -> None:
        pass


@pytest.fixture
async def gated(store: RedisEventStore) -> AsyncIterator[Api]:
    """The `api` fixture's app, its classifier answering two messages at once."""
    keys = ApiKeys(store.redis, store.keys)
    callers = {"ann": await keys.create("acme", "ann", frozenset({"user"}))}
    async with running(store, classifier=GatedClassifier(2)) as engine:
        app = create_app(Services(store=store, engine=engine, keys=keys))
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://coda") as client,
        ):
            yield Api(client, callers, store)


async def test_a_retry_with_if_match_while_the_first_runs_attaches_to_it(gated: Api) -> None:
    thread = await gated.thread()
    path = f"/v1/threads/{thread}/messages"
    # The client acted on version 1, sent its turn, and sent it again (same key) meanwhile.
    sent = {"Idempotency-Key": "same", "If-Match": '"1"'}
    answers = await asyncio.gather(
        *(gated.call("POST", path, body={"content": "hi"}, headers=sent) for _ in range(2))
    )
    # The retry is the same turn, not a conflict with it: the append it lost was its own.
    assert [a.status_code for a in answers] == [200, 200], [a.json() for a in answers]
    assert len({a.json()["reply"]["id"] for a in answers}) == 1
    assert (await _types(gated, thread)).count("message.posted") == 1
