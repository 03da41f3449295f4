"""Edges of the event streams: a turn's own stream and the replies of other branches, a thread
stream holding an entry whose id is not `<version>-0`, and a stream that catches up in the hub
on replies whose live channels have expired."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, cast

import pytest

from events.store import RedisEventStore
from service.http.context import Services
from service.http.principals import ApiKeys
from service.http.streams import Cursor, thread_frames
from service.model import ModelEvent, ModelRequest
from service.scripted import ScriptedModel
from tests.service.engines import new_thread, running, say
from tests.service.test_http import parse_sse
from tests.service.test_http_more import api_of, backend, turn  # noqa: F401 (fixture)

pytestmark = pytest.mark.anyio

SSE = {"Accept": "text/event-stream"}


class TwoGates:
    """The scripted model, holding its reply to "first" until `first` is set and its reply to
    "slow" until `slow` is set."""

    name = "scripted"

    def __init__(self) -> None:
        self.inner = ScriptedModel()
        self.gates = {"first": asyncio.Event(), "slow": asyncio.Event()}
        self.entered = {"first": asyncio.Event(), "slow": asyncio.Event()}

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        said = request.messages[-1].content if request.messages else ""
        if said in self.gates:
            self.entered[said].set()
            await self.gates[said].wait()
        async for event in self.inner.stream(request):
            yield event

    async def aclose(self) -> None:
        pass


@pytest.mark.timeout(60)
async def test_a_streamed_turn_is_not_held_up_by_a_reply_started_on_another_branch_after_it(
    store: RedisEventStore,
) -> None:
    model = TwoGates()
    async with api_of(store, model=model) as api:
        thread = await api.thread()
        hello = await turn(api, thread, "hello")
        other = await api.call(
            "POST",
            f"/v1/threads/{thread}/messages/{hello['message']['id']}/edit",
            body={"content": "hello again"},
        )
        # Given a turn streamed to its poster, its reply still being generated,
        streamed = asyncio.create_task(
            api.call(
                "POST",
                f"/v1/threads/{thread}/messages",
                body={"content": "first", "parent_id": hello["reply"]["id"]},
                headers=SSE,
            )
        )
        await model.entered["first"].wait()
        # and a reply started after it on another branch, a long one,
        slow = asyncio.create_task(turn(api, thread, "slow", parent=other.json()["reply"]["id"]))
        await model.entered["slow"].wait()
        # when the streamed turn's reply is recorded,
        model.gates["first"].set()
        try:
            response = await asyncio.wait_for(streamed, timeout=8)
        except TimeoutError:
            pytest.fail("the turn's stream waited for the deltas of another branch's reply")
        finally:
            model.gates["slow"].set()
            await slow
    # then its stream ends with its own reply, not after the other branch's.
    frames = parse_sse(response.text)
    assert frames[-1][1] == "reply.completed"


async def test_an_entry_whose_id_is_not_version_dash_0_is_not_sent_as_its_version_again(
    store: RedisEventStore,
) -> None:
    async with running(store) as engine:
        svc = Services(store=store, engine=engine, keys=ApiKeys(store.redis, store.keys))
        thread = await new_thread(engine)
        frames = cast(AsyncGenerator[bytes, None], thread_frames(svc, thread, Cursor(0)))
        try:
            first = await asyncio.wait_for(frames.__anext__(), timeout=5)
            assert first.startswith(b"id: 1\nevent: thread.started")
            # Given an entry `1-1` in the thread's stream, written by something other than coda
            # (the store reads versions above 1 from `2-0`: it never shows it),
            key = store.keys.stream(thread)
            [(_, fields)] = cast(list[Any], await store.redis.xrange(key, "1-0", "1-0"))
            await store.redis.xadd(key, fields, id="1-1")
            # when the next event comes to a stream waiting after version 1,
            await engine.give_feedback(thread, "up")
            got: list[bytes] = []
            while len(got) < 20 and (not got or b"feedback.given" not in got[-1]):
                got.append(await asyncio.wait_for(frames.__anext__(), timeout=5))
        finally:
            await frames.aclose()
    # then the stream goes on with version 2: version 1 is not sent again.
    ids = [frame.split(b"\n", 1)[0].decode() for frame in got]
    assert ids == ["id: 2"]


async def test_a_stream_that_fell_behind_does_not_wait_on_each_expired_channel_it_catches_up(
    store: RedisEventStore,
) -> None:
    replies = 3
    async with running(store) as engine:
        svc = Services(store=store, engine=engine, keys=ApiKeys(store.redis, store.keys))
        thread = await new_thread(engine)
        frames = cast(AsyncGenerator[bytes, None], thread_frames(svc, thread, Cursor(0)))
        try:
            await asyncio.wait_for(frames.__anext__(), timeout=5)  # thread.started: caught up
            # Given a stream whose client stopped reading (a phone asleep) while turns went on,
            for i in range(replies):
                await say(engine, thread, f"question {i}")
            # and the replies' live channels expired meanwhile (an hour after they ended),
            expired = [k async for k in store.redis.scan_iter(match=f"{store.keys.prefix}:*")]
            expired = [k for k in expired if b":live:" in k]
            assert len(expired) == replies
            await store.redis.delete(*expired)
            # when the client reads again,
            began = time.monotonic()
            got: list[bytes] = []
            while sum(b"event: reply.completed" in f for f in got) < replies:
                got.append(await asyncio.wait_for(frames.__anext__(), timeout=10))
            took = time.monotonic() - began
        finally:
            await frames.aclose()
    # then what it missed comes at once: the final events carry the text.
    assert took < 1.0, f"{replies} replies whose channels expired took {took:.1f} s"


def test_what_streams_share_is_kept_within_a_budget_of_bytes() -> None:
    from service.http.streams import _Recent

    kept: _Recent[str, int] = _Recent(10)
    for name, weight in [("a", 4), ("b", 4), ("c", 4)]:
        kept.put(name, weight, weight)
    assert (kept.get("a"), kept.get("b"), kept.get("c"), kept.weight) == (None, 4, 4, 8)
    kept.put("huge", 50, 50)  # over the budget alone: kept, the rest goes
    assert (kept.get("b"), kept.get("huge"), kept.weight) == (None, 50, 50)
