"""More of the HTTP API, as a demanding client uses it: bad parameters, cursors, big bodies, the
endless stream against real servers, and the guarantees of access that no other test pins.

The ASGI tests run on fakeredis and a real Redis like test_http.py; the stream tests run
`coda serve` processes (tests/coda_process.py) on the test Redis under the test's key prefix.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from events.keys import Keyspace
from events.store import RedisEventStore
from projections.policy import Policy
from projections.projector import Projector
from service.engine import EngineSettings
from service.http.app import create_app
from service.http.context import MAX_BODY, Services
from service.http.principals import ApiKeys
from service.model import ModelEvent, ModelRequest
from service.scripted import ScriptedModel
from tests.coda_process import Served, serve_coda
from tests.service.engines import running
from tests.service.test_http import TERMINABLE, Api, parse_sse

pytestmark = pytest.mark.anyio

PROBLEM = "application/problem+json"
SSE = {"Accept": "text/event-stream"}
BEYOND_64_BITS = "99999999999999999999"


@pytest.fixture(params=["fakeredis", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@contextlib.asynccontextmanager
async def api_of(store: RedisEventStore, **engine: Any) -> AsyncIterator[Api]:
    """The app over `store`, its engine built with `engine` (model, policy, settings)."""
    keys = ApiKeys(store.redis, store.keys)
    callers = {
        "ann": await keys.create("acme", "ann", frozenset({"user"})),
        "bob": await keys.create("acme", "bob", frozenset({"user"})),
        "auditor": await keys.create("acme", "audit", frozenset({"auditor"})),
        "eve": await keys.create("other", "ann", frozenset({"user", "auditor"})),
    }
    async with running(store, **engine) as built:
        app = create_app(Services(store=store, engine=built, keys=keys))
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://coda") as client,
        ):
            yield Api(client, callers, store)


@pytest.fixture
async def api(store: RedisEventStore) -> AsyncIterator[Api]:
    async with api_of(store) as built:
        yield built


async def turn(api: Api, thread: str, content: str, parent: str | None = None) -> dict[str, Any]:
    body = {"content": content} if parent is None else {"content": content, "parent_id": parent}
    response = await api.call("POST", f"/v1/threads/{thread}/messages", body=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def versions_of(api: Api, thread: str, tag: str) -> list[int]:
    events = (await api.call("GET", f"/v1/threads/{thread}/events?limit=200")).json()["data"]
    return [e["version"] for e in events if e["type"] == tag]


# --- parameters: a malformed or out-of-range one is 422 `validation`, never a 500 ------------


@pytest.mark.parametrize(
    ("path", "header"),
    [
        pytest.param("/v1/threads?limit=%C2%B2", None, id="list-limit-superscript-two"),
        pytest.param(f"/v1/threads?cursor={BEYOND_64_BITS}", None, id="list-cursor-beyond-64-bits"),
        pytest.param("/v1/threads/{t}?at=%C2%B2", None, id="thread-at-superscript-two"),
        pytest.param("/v1/threads/{t}/events?limit=%C2%B2", None, id="events-limit-superscript"),
        pytest.param(
            f"/v1/threads/{{t}}/events?after={BEYOND_64_BITS}", None, id="events-after-huge"
        ),
        pytest.param("/v1/threads/{t}/stream?after=%C2%B2", None, id="stream-after-superscript"),
        pytest.param("/v1/threads/{t}/stream", BEYOND_64_BITS, id="last-event-id-beyond-64-bits"),
        pytest.param(
            "/v1/threads/{t}/stream?after={started}:%D9%A1-%D9%A1", None, id="entry-arabic-digits"
        ),
    ],
)
async def test_a_malformed_or_out_of_range_parameter_is_422_not_500(
    api: Api, path: str, header: str | None
) -> None:
    thread = await api.thread()
    await api.say(thread, "hello")
    started = (await versions_of(api, thread, "reply.started"))[0]
    headers = {} if header is None else {"Last-Event-ID": header.format(started=started)}
    try:  # a stream that takes a bad cursor runs for ever: bounded here
        response = await asyncio.wait_for(
            api.call("GET", path.format(t=thread, started=started), headers=headers), timeout=10
        )
    except TimeoutError:
        pytest.fail("the bad parameter was taken: the stream started")
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["type"] == "validation"


# --- the thread list's cursor -------------------------------------------------------------------


async def test_paging_the_thread_list_never_shows_a_thread_twice(api: Api) -> None:
    oldest = await api.thread(title="oldest")
    await api.thread(title="middle")
    await api.thread(title="newest")
    await Projector(api.store).run_once()
    first = (await api.call("GET", "/v1/threads?limit=1")).json()
    # Given the first page, the oldest thread changes (feedback moves it to the top) ...
    await api.call("POST", f"/v1/threads/{oldest}/feedback", body={"rating": "up"})
    await Projector(api.store).run_once()
    # ... when the client follows the cursor to the end,
    seen = [t["id"] for t in first["data"]]
    cursor = first["next_cursor"]
    while cursor is not None:
        page = (await api.call("GET", f"/v1/threads?limit=1&cursor={cursor}")).json()
        seen += [t["id"] for t in page["data"]]
        cursor = page["next_cursor"]
    # then no thread came twice.
    assert len(seen) == len(set(seen)), seen


# --- bodies ------------------------------------------------------------------------------------


async def test_an_oversize_body_is_refused_without_reading_all_of_it(api: Api) -> None:
    thread = await api.thread()
    chunk = b"x" * (1024 * 1024)
    sent = 0

    async def endless_body() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(64):  # 64 MiB, a thousand times the limit
            sent += len(chunk)
            yield chunk

    response = await api.client.post(
        f"/v1/threads/{thread}/messages",
        content=endless_body(),
        headers={"Authorization": f"Bearer {api.keys['ann']}"},
    )
    assert response.status_code == 413
    assert sent <= MAX_BODY + len(chunk), f"the server read {sent} bytes to refuse it"


async def test_a_cancel_with_a_body_it_does_not_take_is_422(api: Api) -> None:
    thread = await api.thread()
    response = await api.call(
        "POST", f"/v1/threads/{thread}/cancel", body={"reply_id": "01the-reply-i-meant"}
    )
    assert response.status_code == 422, response.text
    assert response.json()["type"] == "validation"
    assert "reply_id" in response.json()["detail"]


# --- problems ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        pytest.param("GET", "/v1/thread", 404, id="no-such-path"),
        pytest.param("GET", "/v1/threads/{t}/messages/x", 404, id="no-such-message-path"),
        pytest.param("DELETE", "/v1/threads/{t}", 405, id="method-not-allowed"),
    ],
)
async def test_a_routing_error_is_problem_json_too(
    api: Api, method: str, path: str, status: int
) -> None:
    thread = await api.thread()
    response = await api.call(method, path.format(t=thread))
    assert response.status_code == status
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["status"] == status


# --- access: what no other test pins -----------------------------------------------------------


@pytest.mark.parametrize("who", ["bob", "eve"])
async def test_every_thread_endpoint_hides_another_users_or_tenants_thread(
    api: Api, who: str
) -> None:
    """Pins: existence is not revealed on any endpoint (test_http covers three of them)."""
    thread = await api.thread()
    said = await turn(api, thread, "hello")
    mine = said["message"]["id"]
    for method, path, body in [
        ("GET", f"/v1/threads/{thread}/stream", None),
        ("POST", f"/v1/threads/{thread}/feedback", {"rating": "down"}),
        ("POST", f"/v1/threads/{thread}/cancel", None),
        ("POST", f"/v1/threads/{thread}/messages/{mine}/edit", {"content": "hi"}),
        ("GET", f"/v1/threads/{thread}?at=1", None),
        ("GET", f"/v1/threads/{thread}/stream?after=zzz", None),
    ]:
        response = await api.call(method, path, who, body)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json() == {
            "type": "not-found",
            "title": "Not found",
            "status": 404,
            "detail": f"no thread {thread!r}",
        }
    missing = await api.call("GET", "/v1/threads/01nosuchthread", who)
    assert missing.json()["detail"] == "no thread '01nosuchthread'"
    assert (await api.store.version(thread))[0] == 5


async def test_an_auditor_takes_no_action_of_any_kind(api: Api) -> None:
    """Pins: an auditor reads (thread, events, stream) but every write is 403 and writes nothing."""
    thread = await api.thread()
    said = await turn(api, thread, "hello")
    mine = said["message"]["id"]
    for method, path, body in [
        ("POST", "/v1/threads", {"title": "mine"}),
        ("POST", f"/v1/threads/{thread}/feedback", {"rating": "down"}),
        ("POST", f"/v1/threads/{thread}/cancel", None),
        ("POST", f"/v1/threads/{thread}/messages/{mine}/edit", {"content": "hi"}),
        ("POST", f"/v1/threads/{thread}/messages", {"content": "hi"}),
    ]:
        response = await api.call(method, path, "auditor", body)
        assert response.status_code == 403, (method, path, response.text)
        assert response.json()["type"] == "forbidden"
    assert (await api.store.version(thread))[0] == 5
    events = await api.call("GET", f"/v1/threads/{thread}/events", "auditor")
    assert events.status_code == 200


# --- turns as event streams ---------------------------------------------------------------------


async def test_an_edits_stream_begins_with_the_fork_and_ends_with_its_reply(api: Api) -> None:
    """Pins: the stream of an edit (test_http streams only posts)."""
    thread = await api.thread()
    first = await turn(api, thread, "hello")
    response = await api.call(
        "POST",
        f"/v1/threads/{thread}/messages/{first['message']['id']}/edit",
        body={"content": "hello again"},
        headers=SSE,
    )
    frames = parse_sse(response.text)
    names = [name for _, name, _ in frames]
    deltas = "".join(data["text"] for _, name, data in frames if name == "reply.delta")
    assert response.status_code == 200
    assert names[:4] == ["branch.forked", "message.posted", "message.classified", "reply.started"]
    assert names[-1] == "reply.completed"
    assert deltas == frames[-1][2]["content"]
    assert [int(i) for i, name, _ in frames if name != "reply.delta"] == list(range(6, 11))


async def test_a_streamed_turn_whose_reply_fails_ends_with_the_failure_and_its_text(
    store: RedisEventStore,
) -> None:
    """Pins: a failing reply's stream ends, and its deltas add up to `partial_content`."""
    async with api_of(store, model=ScriptedModel(fail_after=9)) as api:
        thread = await api.thread()
        response = await api.call(
            "POST", f"/v1/threads/{thread}/messages", body={"content": "hello"}, headers=SSE
        )
    frames = parse_sse(response.text)
    deltas = "".join(data["text"] for _, name, data in frames if name == "reply.delta")
    assert frames[-1][1] == "reply.failed"
    assert frames[-1][2]["reason"] == "error"
    assert deltas == frames[-1][2]["partial_content"]
    assert len(deltas.split()) == 9


class GatedModel:
    """The scripted model, which holds its reply to "slow" until `gate` is set."""

    name = "scripted"

    def __init__(self) -> None:
        self.inner = ScriptedModel()
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        if request.messages and request.messages[-1].content == "slow":
            self.entered.set()
            await self.gate.wait()
        async for event in self.inner.stream(request):
            yield event

    async def aclose(self) -> None:
        pass


@pytest.mark.timeout(60)
async def test_a_streamed_turn_ends_when_a_thread_wide_end_closes_its_reply(
    store: RedisEventStore,
) -> None:
    model = GatedModel()
    policy = Policy(end_scope="thread")
    settings = EngineSettings(shutdown_grace=0.5)
    async with api_of(store, model=model, policy=policy, settings=settings) as api:
        thread = await api.thread()
        await turn(api, thread, "hello")
        second = await turn(api, thread, "more")
        other = await api.call(
            "POST",
            f"/v1/threads/{thread}/messages/{second['message']['id']}/edit",
            body={"content": "something else"},
        )
        # Given a reply being generated on one branch, streamed to its poster ...
        streamed = asyncio.create_task(
            api.call(
                "POST",
                f"/v1/threads/{thread}/messages",
                body={"content": "slow", "parent_id": second["reply"]["id"]},
                headers=SSE,
            )
        )
        await model.entered.wait()
        # ... when the ladder ends the whole thread on another branch,
        tip = other.json()["reply"]["id"]
        for _ in range(4):
            tip = (await turn(api, thread, TERMINABLE, parent=tip))["reply"]["id"]
        shown = (await api.call("GET", f"/v1/threads/{thread}")).json()
        assert shown["status"] == "ended"
        model.gate.set()
        # then the streamed turn's reply is closed, and its stream ends.
        try:
            response = await asyncio.wait_for(streamed, timeout=10)
        except TimeoutError:
            pytest.fail("the stream of a turn whose reply the thread's end closed never ended")
    names = [name for _, name, _ in parse_sse(response.text)]
    assert names[-1] == "thread.ended"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("by", ["ladder", "user"])
async def test_a_thread_wide_end_stops_the_generations_it_cut_off(
    store: RedisEventStore, by: str
) -> None:
    model = GatedModel()  # its gate is never opened: only a stop ends the slow generation
    policy = Policy(end_scope="thread")
    settings = EngineSettings(shutdown_grace=0.5)
    async with api_of(store, model=model, policy=policy, settings=settings) as api:
        thread = await api.thread()
        await turn(api, thread, "hello")
        second = await turn(api, thread, "more")
        other = await api.call(
            "POST",
            f"/v1/threads/{thread}/messages/{second['message']['id']}/edit",
            body={"content": "something else"},
        )
        # Given a reply being generated on one branch,
        slow = asyncio.create_task(
            api.call(
                "POST",
                f"/v1/threads/{thread}/messages",
                body={"content": "slow", "parent_id": second["reply"]["id"]},
            )
        )
        await model.entered.wait()
        # when the whole thread is ended on another branch (by the ladder, or by its user),
        tip = other.json()["reply"]["id"]
        for _ in range(4 if by == "ladder" else 1):
            tip = (await turn(api, thread, TERMINABLE, parent=tip))["reply"]["id"]
        if by == "user":
            ended = await api.call("POST", f"/v1/threads/{thread}/end", body={"confirm": True})
            assert ended.status_code == 200, ended.text
        # then the cut-off generation is stopped, not left to write a reply nobody can record.
        try:
            answered = await asyncio.wait_for(slow, timeout=10)
        except TimeoutError:
            pytest.fail("a generation the thread's end cut off went on")
    assert answered.json()["reply"]["kind"] == "failed"


@pytest.mark.timeout(60)
async def test_a_streamed_turn_is_not_held_up_by_a_reply_running_on_another_branch(
    store: RedisEventStore,
) -> None:
    model = GatedModel()
    async with api_of(store, model=model, settings=EngineSettings(shutdown_grace=0.5)) as api:
        thread = await api.thread()
        await turn(api, thread, "hello")
        second = await turn(api, thread, "more")
        other = await api.call(
            "POST",
            f"/v1/threads/{thread}/messages/{second['message']['id']}/edit",
            body={"content": "something else"},
        )
        # Given a reply still being generated on one branch (its reply.started is the last event)
        running = asyncio.create_task(turn(api, thread, "slow", parent=second["reply"]["id"]))
        await model.entered.wait()
        # when a turn on another branch is streamed to its poster,
        try:
            response = await asyncio.wait_for(
                api.call(
                    "POST",
                    f"/v1/threads/{thread}/messages",
                    body={"content": "hello there", "parent_id": other.json()["reply"]["id"]},
                    headers=SSE,
                ),
                timeout=10,
            )
        except TimeoutError:
            pytest.fail("the streamed turn waited for the other branch's reply")
        finally:
            model.gate.set()
            await running
    # then its stream is its own turn, from its message to its reply.
    frames = parse_sse(response.text)
    names = [name for _, name, _ in frames]
    assert names[:3] == ["message.posted", "message.classified", "reply.started"]
    assert names[-1] == "reply.completed"


# --- the endless stream, against real servers -----------------------------------------------------

Frame = tuple[str, str, Any]
SLOW = {"CODA_SCRIPTED_DELAY": "0.2", "CODA_LEASE_SECONDS": "1"}  # 10 deltas: about 2 s


@pytest.fixture
def shared(served_env: dict[str, str]) -> dict[str, str]:
    """Settings that put servers on the test Redis, under this test's prefix."""
    return served_env


def lines_of(response: httpx.Response) -> Iterator[tuple[str, str]]:
    """("frame", id event data) and (":", comment) items of an event stream as they arrive."""
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if line.startswith(":"):
            yield ":", line
        elif not line:
            if "event" in fields:
                yield "frame", json.dumps([fields.get("id", ""), fields["event"], fields["data"]])
            fields = {}
        else:
            name, _, value = line.partition(": ")
            fields[name] = value


def frames_until(
    served: Served, thread: str, names: set[str], count: int = 1, **headers: str
) -> list[Frame]:
    """Frames of the thread's stream until the `count`th named in `names` arrives."""
    got: list[Frame] = []
    with httpx.stream(
        "GET",
        f"{served.url}/v1/threads/{thread}/stream",
        headers={"Authorization": f"Bearer {served.key()}", **headers},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        for kind, item in lines_of(response):
            if kind != "frame":
                continue
            frame_id, name, data = json.loads(item)
            got.append((frame_id, name, json.loads(data)))
            if name in names:
                count -= 1
                if count == 0:
                    return got
    raise AssertionError(f"the stream ended before any of {names}: {got}")


def new_thread(served: Served) -> str:
    auth = {"Authorization": f"Bearer {served.key()}"}
    return str(httpx.post(f"{served.url}/v1/threads", json={}, headers=auth).json()["id"])


def say(served: Served, thread: str, content: str) -> dict[str, Any]:
    auth = {"Authorization": f"Bearer {served.key()}"}
    response = httpx.post(
        f"{served.url}/v1/threads/{thread}/messages",
        json={"content": content},
        headers=auth,
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


@pytest.mark.timeout(90)
def test_an_idle_stream_stays_open_with_keep_alive_comments(
    tmp_path: Path, shared: dict[str, str]
) -> None:
    with serve_coda(tmp_path / "a", shared) as served:
        thread = new_thread(served)
        got: list[tuple[str, str]] = []
        with httpx.stream(
            "GET",
            f"{served.url}/v1/threads/{thread}/stream",
            headers={"Authorization": f"Bearer {served.key()}"},
            timeout=40,
        ) as response:
            for item in lines_of(response):
                got.append(item)
                if item[0] == ":":  # the first keep-alive: the stream is alive after 15 s
                    break
    assert got[-1] == (":", ": keep-alive"), got
    assert all("error" not in item for kind, item in got if kind == "frame"), got


@pytest.mark.timeout(90)
def test_a_stream_resumed_after_a_reply_started_frame_sends_that_replys_deltas(
    tmp_path: Path, shared: dict[str, str]
) -> None:
    with serve_coda(tmp_path / "a", {**shared, **SLOW}) as served:
        thread = new_thread(served)
        say(served, thread, "hello there")
        whole = frames_until(served, thread, {"reply.completed"})
        started = next(i for i, f in enumerate(whole) if f[1] == "reply.started")
        # The client got the reply.started frame, and lost the connection before a delta.
        resumed = frames_until(
            served, thread, {"reply.completed"}, **{"Last-Event-ID": whole[started][0]}
        )
    assert [f[1] for f in whole[started + 1 :]].count("reply.delta") > 1
    assert resumed == whole[started + 1 :]


@pytest.mark.timeout(120)
def test_replaying_replies_whose_live_channels_expired_does_not_wait_on_each(
    tmp_path: Path, shared: dict[str, str], keys: Keyspace, redis_url: str
) -> None:

    turns = 6
    with serve_coda(tmp_path / "a", shared) as served:
        thread = new_thread(served)
        for i in range(turns):
            say(served, thread, f"question {i}")
        # Given replies whose live channels have expired (an hour after they ended) ...
        with redis.Redis.from_url(redis_url) as client:
            expired = list(client.scan_iter(match=f"{keys.prefix}:*:live:{thread}:*"))
            assert len(expired) == turns
            client.delete(*expired)
        # ... when a client replays the thread from its beginning,
        began = time.monotonic()
        frames = frames_until(served, thread, {"reply.completed"}, count=turns)
        took = time.monotonic() - began
    # then the history comes at once: the final events carry the text, nothing is waited for.
    assert [name for _, name, _ in frames].count("reply.delta") == 0
    assert took < 2.0, f"{turns} replies took {took:.1f} s to replay"


def redis_clients(redis_url: str) -> int:
    with redis.Redis.from_url(redis_url) as client:
        return len(client.client_list())


@pytest.mark.timeout(120)
def test_streams_that_clients_leave_leave_no_connection_behind(
    tmp_path: Path, shared: dict[str, str], redis_url: str
) -> None:
    """Pins: streams waiting on Redis share the process's reads (not a connection each);
    clients that leave them leave neither a stream nor a Redis connection behind, and the
    connections left in the pool answer the next commands correctly (no reply of a cut-off
    XREAD is read by the next command). Nothing else opens and drops streams by the dozen."""
    streams = 10
    with serve_coda(tmp_path / "a", shared) as served:
        thread = new_thread(served)
        before = redis_clients(redis_url)
        url = f"{served.url}/v1/threads/{thread}/stream"
        auth = {"Authorization": f"Bearer {served.key()}"}

        def leave_streams(content: str) -> int:
            """Open streams, wait until each blocks on Redis past a turn, leave them all."""
            with contextlib.ExitStack() as open_streams:
                followed = []
                for _ in range(streams):
                    response = open_streams.enter_context(
                        httpx.stream("GET", url, headers=auth, timeout=30)
                    )
                    followed.append(response.iter_lines())
                say(served, thread, content)
                for lines in followed:
                    while "reply.completed" not in next(lines):
                        pass
                return redis_clients(redis_url)

        blocked = leave_streams("first")
        settled = [redis_clients(redis_url)]
        for i in range(3):
            leave_streams(f"again {i}")
            settled.append(redis_clients(redis_url))
        shown = [
            httpx.get(f"{served.url}/v1/threads/{thread}", headers=auth).json()["id"]
            for _ in range(2 * streams)
        ]
    assert blocked - before < streams, f"{blocked - before} more connections for {streams} streams"
    # Streams that leave at once free their slots at once: the pool grows to what that takes,
    # once, and then stays (a leak would add connections every round).
    assert settled[-1] <= settled[1] + 2, f"connections grew: {settled}"
    assert shown == [thread] * 2 * streams


@pytest.mark.timeout(30)
async def test_a_last_event_id_past_the_threads_last_event_is_422(api: Api) -> None:
    thread = await api.thread()
    await api.say(thread, "hello")
    version = (await api.store.version(thread))[0]
    try:  # a stream that takes the cursor waits for ever for versions that may never come
        response = await asyncio.wait_for(
            api.call(
                "GET",
                f"/v1/threads/{thread}/stream",
                headers={"Last-Event-ID": str(version + 1000)},
            ),
            timeout=10,
        )
    except TimeoutError:
        pytest.fail("a cursor past the thread's last event was taken: the stream waits on it")
    assert response.status_code == 422
    assert response.json()["type"] == "validation"


@pytest.mark.timeout(120)
def test_a_hundred_and_twenty_open_streams_do_not_take_the_api_down(
    tmp_path: Path, shared: dict[str, str]
) -> None:
    streams = 120  # many clients of one process (one key here, its stream limit raised)
    with serve_coda(tmp_path / "a", {**shared, "CODA_LIMIT_STREAMS": "200"}) as served:
        thread = new_thread(served)
        url = f"{served.url}/v1/threads/{thread}/stream"
        auth = {"Authorization": f"Bearer {served.key()}"}
        refused: list[tuple[int, str]] = []
        followed = []  # kept: a line iterator that is collected closes its connection
        with contextlib.ExitStack() as open_streams:
            for i in range(streams):
                response = open_streams.enter_context(
                    httpx.stream("GET", url, headers=auth, timeout=30)
                )
                if response.status_code != 200:
                    refused.append((i, response.read().decode()))
                    continue
                followed.append(response.iter_lines())
                while "thread.started" not in next(followed[-1]):
                    pass  # then this stream waits on Redis for the thread's next event
            # Given many streams open on one process, when anyone else calls,
            other = httpx.get(f"{served.url}/v1/threads/{thread}", headers=auth, timeout=30)
    # then the call is answered as usual, not `unavailable`.
    assert refused == [], f"{len(refused)} streams refused, the first: {refused[:1]}"
    assert other.status_code == 200, other.text


@pytest.mark.timeout(120)
def test_one_event_reaches_every_stream_of_a_process_with_four_connections(
    tmp_path: Path, shared: dict[str, str], redis_url: str
) -> None:
    """Pins the fan-out: a process's streams wait on Redis together (one read for all of them)
    and take what it read, not a read each, so a pool of four connections serves them all."""
    streams = 150
    env = {**shared, "CODA_LIMIT_STREAMS": "1000", "CODA_REDIS_MAX_CONNECTIONS": "4"}
    before = redis_clients(redis_url)
    with serve_coda(tmp_path / "a", env) as served:
        thread = new_thread(served)
        url = f"{served.url}/v1/threads/{thread}/stream"
        auth = {"Authorization": f"Bearer {served.key()}"}
        with contextlib.ExitStack() as open_streams:
            followed = []
            for _ in range(streams):
                response = open_streams.enter_context(
                    httpx.stream("GET", url, headers=auth, timeout=30)
                )
                assert response.status_code == 200
                followed.append(response.iter_lines())
                while "thread.started" not in next(followed[-1]):
                    pass
            ranges = xranges(redis_url)
            given = httpx.post(
                f"{served.url}/v1/threads/{thread}/feedback", json={"rating": "up"}, headers=auth
            )
            assert given.status_code == 201, given.text
            reached = 0
            for lines in followed:
                for line in lines:
                    assert not line.startswith("event: error"), line
                    if line == "event: feedback.given":
                        reached += 1
                        break
            ranges = xranges(redis_url) - ranges
            used = redis_clients(redis_url) - before
    assert reached == streams
    assert ranges < streams // 10, f"{ranges} XRANGEs for one event to {streams} streams"
    assert used <= 4 + 1, f"{used} connections"  # the pool, and the server's own first check


def xranges(redis_url: str) -> int:
    with redis.Redis.from_url(redis_url) as client:
        stats = client.info("commandstats")
    return int(stats.get("cmdstat_xrange", {}).get("calls", 0))
