"""Per-key limits: message and body size, turns per minute, streams open at once; and their
configuration."""

from __future__ import annotations

import contextlib
from pathlib import Path

import httpx
import pytest

from service.http.limits import Limits, LimitsError
from service.http.principals import ApiKeyError, ApiKeys
from tests.coda_process import serve_coda
from tests.service.test_http import Api, api, backend  # noqa: F401 (fixtures)
from tests.service.test_http_more import new_thread, shared  # noqa: F401 (fixtures)

pytestmark = pytest.mark.anyio


async def _caller(api: Api, name: str, **limits: int) -> str:
    keys = ApiKeys(api.store.redis, api.store.keys)
    api.keys[name] = await keys.create("acme", name, frozenset({"user"}), limits)
    return name


async def test_turns_over_the_keys_rate_are_429_with_retry_after_and_write_nothing(
    api: Api,
) -> None:
    who = await _caller(api, "quick", turns_per_minute=2)
    thread = await api.thread(who)
    answers = [await api.say(thread, f"hello {i}", who) for i in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    refused = answers[-1]
    assert refused.json()["type"] == "rate-limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 30  # one turn back every 30 s
    assert (await api.store.version(thread))[0] == 1 + 2 * 4  # two turns of four events
    # Another key of the same user is counted apart, and so is the default limit.
    assert (await api.say(await api.thread(), "hi")).status_code == 200


async def test_a_retried_turn_is_not_counted_again(api: Api) -> None:
    who = await _caller(api, "once", turns_per_minute=1)
    thread = await api.thread(who)
    path = f"/v1/threads/{thread}/messages"
    sent = {"Idempotency-Key": "k"}
    first = await api.call("POST", path, who, {"content": "hi"}, headers=sent)
    again = await api.call("POST", path, who, {"content": "hi"}, headers=sent)
    other = await api.call("POST", path, who, {"content": "and?"})
    assert (first.status_code, again.status_code, other.status_code) == (200, 200, 429)


async def test_a_message_over_the_keys_size_is_413(api: Api) -> None:
    who = await _caller(api, "terse", message_bytes=10)
    thread = await api.thread(who)
    fits = await api.say(thread, "0123456789", who)
    over = await api.say(thread, "ééééé!", who)  # six characters, eleven bytes
    assert fits.status_code == 200
    assert over.status_code == 413
    assert over.json()["type"] == "too-large"
    assert "10 bytes" in over.json()["detail"]


async def test_a_body_over_the_keys_size_is_413(api: Api) -> None:
    who = await _caller(api, "small", body_bytes=100)
    response = await api.call("POST", "/v1/threads", who, {"title": "x" * 120})
    assert response.status_code == 413
    assert (await api.call("POST", "/v1/threads", who, {"title": "x" * 10})).status_code == 201


async def test_a_key_cannot_be_made_with_a_limit_that_is_none() -> None:
    keys = ApiKeys(None, None)  # type: ignore[arg-type]  # refused before Redis is reached
    with pytest.raises(ApiKeyError):
        await keys.create("acme", "ann", frozenset({"user"}), {"turns_per_minute": 0})
    with pytest.raises(ApiKeyError):
        await keys.create("acme", "ann", frozenset({"user"}), {"tokens": 5})


def test_limits_come_from_the_environment_and_bad_ones_are_refused() -> None:
    assert Limits.from_env({}) == Limits()
    read = Limits.from_env({"CODA_LIMIT_TURNS_PER_MINUTE": "5", "CODA_LIMIT_STREAMS": "2"})
    assert (read.turns_per_minute, read.streams) == (5, 2)
    assert read.over({"streams": 9}).streams == 9
    for bad in ["0", "-1", "five", "1.5", ""]:
        with pytest.raises(LimitsError, match="CODA_LIMIT_STREAMS"):
            Limits.from_env({"CODA_LIMIT_STREAMS": bad})


@pytest.mark.timeout(60)
def test_streams_over_the_keys_limit_are_429_and_a_closed_one_frees_its_slot(
    tmp_path: Path,
    shared: dict[str, str],
) -> None:
    with serve_coda(tmp_path / "a", {**shared, "CODA_LIMIT_STREAMS": "2"}) as served:
        thread = new_thread(served)
        url = f"{served.url}/v1/threads/{thread}/stream"
        auth = {"Authorization": f"Bearer {served.key()}"}
        with contextlib.ExitStack() as first_two:
            for _ in range(2):
                opened = first_two.enter_context(httpx.stream("GET", url, headers=auth))
                assert opened.status_code == 200
            third = httpx.get(url, headers=auth)
            turn = httpx.post(
                f"{served.url}/v1/threads/{thread}/messages",
                json={"content": "hi"},
                headers={**auth, "Accept": "text/event-stream"},
            )
            plain = httpx.post(
                f"{served.url}/v1/threads/{thread}/messages", json={"content": "hi"}, headers=auth
            )
        assert (third.status_code, third.json()["type"]) == (429, "rate-limited")
        assert int(third.headers["retry-after"]) >= 1
        # A streamed turn needs a slot too, and is refused before the turn is taken.
        assert turn.status_code == 429
        assert plain.status_code == 200  # a turn answered as JSON holds no stream
        events = httpx.get(f"{served.url}/v1/threads/{thread}/events", headers=auth).json()
        assert [e["type"] for e in events["data"]].count("message.posted") == 1
        with httpx.stream("GET", url, headers=auth) as again:
            assert again.status_code == 200  # the closed streams gave their slots back
