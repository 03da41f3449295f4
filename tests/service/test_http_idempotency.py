"""`Idempotency-Key` over HTTP: a retry is answered as the first request was, never done twice."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.service.test_http import Api, api, backend  # noqa: F401 (fixtures)

pytestmark = pytest.mark.anyio


def keyed(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


async def _types(api: Api, thread: str) -> list[str]:
    events = (await api.call("GET", f"/v1/threads/{thread}/events?limit=200")).json()["data"]
    return [e["type"] for e in events]


async def test_a_new_thread_sent_twice_is_one_thread(api: Api) -> None:
    first = await api.call("POST", "/v1/threads", body={"title": "t"}, headers=keyed("k1"))
    again = await api.call("POST", "/v1/threads", body={"title": "t"}, headers=keyed("k1"))
    other = await api.call("POST", "/v1/threads", body={"title": "t"}, headers=keyed("k2"))
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json()["id"] == first.json()["id"] != other.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert await _types(api, first.json()["id"]) == ["thread.started"]


async def test_a_turn_sent_twice_is_one_turn_with_one_answer(api: Api) -> None:
    thread = await api.thread()
    path = f"/v1/threads/{thread}/messages"
    first = await api.call("POST", path, body={"content": "hello"}, headers=keyed("t1"))
    again = await api.call("POST", path, body={"content": "hello"}, headers=keyed("t1"))
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert (await _types(api, thread)).count("message.posted") == 1


async def test_a_retry_while_the_first_turn_runs_attaches_to_it(api: Api) -> None:
    thread = await api.thread()
    path = f"/v1/threads/{thread}/messages"
    answers = await asyncio.gather(
        *(api.call("POST", path, body={"content": "hi"}, headers=keyed("same")) for _ in range(3))
    )
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert len({a.json()["reply"]["id"] for a in answers}) == 1
    assert (await _types(api, thread)).count("message.posted") == 1


@pytest.mark.parametrize(
    ("path", "body"),
    [
        pytest.param("/feedback", {"rating": "up"}, id="feedback"),
        pytest.param("/end", {"confirm": True}, id="end"),
    ],
)
async def test_a_stored_answer_is_given_again_not_done_again(
    api: Api, path: str, body: dict[str, Any]
) -> None:
    thread = await api.thread()
    await api.say(thread, "hello")
    url = f"/v1/threads/{thread}{path}"
    first = await api.call("POST", url, body=body, headers=keyed("once"))
    again = await api.call("POST", url, body=body, headers=keyed("once"))
    fresh = await api.call("POST", url, body=body, headers=keyed("twice"))
    assert first.status_code in (200, 201)
    assert (again.status_code, again.content) == (first.status_code, first.content)
    assert (
        again.headers["etag" if path == "/end" else "content-type"]
        == first.headers["etag" if path == "/end" else "content-type"]
    )
    assert again.headers["idempotent-replayed"] == "true"
    types = await _types(api, thread)
    assert types.count("feedback.given" if path == "/feedback" else "thread.ended") == (
        2 if path == "/feedback" else 1
    )
    if path == "/end":  # without the key, a second end is the conflict it is
        assert (fresh.status_code, fresh.json()["type"]) == (409, "thread-ended")


async def test_the_same_key_for_another_request_is_422_and_does_nothing(api: Api) -> None:
    thread = await api.thread()
    path = f"/v1/threads/{thread}/messages"
    await api.call("POST", path, body={"content": "hello"}, headers=keyed("k"))
    before = await _types(api, thread)
    for url, body in [
        (path, {"content": "something else"}),
        (f"/v1/threads/{thread}/feedback", {"rating": "up"}),
    ]:
        reused = await api.call("POST", url, body=body, headers=keyed("k"))
        assert reused.status_code == 422, url
        assert reused.json()["type"] == "idempotency-key-reused"
    assert await _types(api, thread) == before


async def test_keys_belong_to_their_caller(api: Api) -> None:
    mine = await api.call("POST", "/v1/threads", body={"title": "a"}, headers=keyed("k"))
    theirs = await api.call("POST", "/v1/threads", "bob", {"title": "b"}, headers=keyed("k"))
    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert mine.json()["id"] != theirs.json()["id"]
    assert "idempotent-replayed" not in theirs.headers


async def test_a_refusal_is_an_answer_too_and_is_given_again(api: Api) -> None:
    thread = await api.thread()  # no message: nothing to end
    url = f"/v1/threads/{thread}/end"
    first = await api.call("POST", url, body={"confirm": True}, headers=keyed("e"))
    await api.say(thread, "hello")
    again = await api.call("POST", url, body={"confirm": True}, headers=keyed("e"))
    assert first.status_code == again.status_code == 422
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert "thread.ended" not in await _types(api, thread)


@pytest.mark.parametrize("key", [b"", b"x" * 256, "naïve".encode(), b"tab\there"])
async def test_a_key_that_is_not_one_is_422(api: Api, key: bytes) -> None:
    auth = {"Authorization": f"Bearer {api.keys['ann']}"}
    response = await api.client.post(
        "/v1/threads", json={}, headers={**auth, "Idempotency-Key": key}
    )
    assert response.status_code == 422
    assert "Idempotency-Key" in response.json()["detail"]
