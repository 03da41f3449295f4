"""The problems not met elsewhere: a turn while one runs, a retry while the first runs, Redis
down, and a bug — each a problem+json with its stable type, and nothing written."""

from __future__ import annotations

import asyncio
import hashlib

import httpx
import msgspec
import pytest
from redis.asyncio import Redis as Client

from events.keys import Keyspace
from events.store import RedisEventStore
from service.classifier import NO_CONTEXT, Classification, Context
from service.engine import Engine
from service.http import idempotency
from service.http.app import create_app
from service.http.context import Services
from service.http.principals import ApiKeys
from service.scripted import ScriptedModel
from tests.conftest import SEAL_KEY
from tests.service.engines import running
from tests.service.test_http_more import GatedModel, api_of, backend  # noqa: F401 (fixture)

pytestmark = pytest.mark.anyio

PROBLEM = "application/problem+json"


async def test_a_turn_while_the_branch_has_one_running_is_409_turn_in_progress(
    store: RedisEventStore,
) -> None:
    model = GatedModel()
    async with api_of(store, model=model) as api:
        thread = await api.thread()
        path = f"/v1/threads/{thread}/messages"
        slow = asyncio.create_task(api.call("POST", path, body={"content": "slow"}))
        await model.entered.wait()
        before = (await api.store.version(thread))[0]
        refused = await api.call("POST", path, body={"content": "and?"})
        after = (await api.store.version(thread))[0]
        model.gate.set()
        assert (await slow).status_code == 200
    assert refused.status_code == 409
    assert refused.headers["content-type"] == PROBLEM
    assert refused.json()["type"] == "turn-in-progress"
    assert after == before


async def test_a_retry_while_the_first_request_runs_waits_for_it_then_409_if_it_does_not_end(
    store: RedisEventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(idempotency, "WAIT_SECONDS", 0.3)
    async with api_of(store) as api:
        thread = await api.thread()
        path = f"/v1/threads/{thread}/feedback"
        body = b'{"rating":"up"}'
        # Given the first feedback with key "k" claimed and still running (as another process
        # would leave it mid-request),
        name = store.keys.idempotency(hashlib.sha256(b"acme\0ann\0k").hexdigest())
        fingerprint = hashlib.sha256(b"\0".join([b"POST", path.encode(), b"", body])).hexdigest()
        pending = idempotency.Record(fingerprint=fingerprint, request_id="r1", state="pending")
        await store.redis.set(name, msgspec.msgpack.encode(pending), ex=60)
        headers = {
            "Authorization": f"Bearer {api.keys['ann']}",
            "Idempotency-Key": "k",
            "Content-Type": "application/json",
        }
        # when a retry comes, it waits for the first's answer, and says to come back later,
        waited = await api.client.post(path, content=body, headers=headers)
        # and once the first has answered, the retry gets that answer.
        done = msgspec.structs.replace(
            pending,
            state="done",
            status=201,
            headers={"content-type": "application/json"},
            body=b'{"from":"the first"}',
        )
        await store.redis.set(name, msgspec.msgpack.encode(done), ex=60)
        answered = await api.client.post(path, content=body, headers=headers)
        events = (await api.call("GET", f"/v1/threads/{thread}/events")).json()["data"]
    assert waited.status_code == 409
    assert waited.json()["type"] == "request-in-progress"
    assert waited.headers["retry-after"] == "1"
    assert (answered.status_code, answered.json()) == (201, {"from": "the first"})
    assert answered.headers["idempotent-replayed"] == "true"
    assert [e["type"] for e in events].count("feedback.given") == 0


async def test_redis_down_is_503_unavailable(keys: Keyspace) -> None:
    dead = Client(port=1, socket_connect_timeout=1)
    store = RedisEventStore(dead, keys, SEAL_KEY)
    engine = Engine(store, model=ScriptedModel(), classifier=_Broken())
    app = create_app(Services(store=store, engine=engine, keys=ApiKeys(dead, keys)))
    transport = httpx.ASGITransport(app=app)
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://coda") as client,
        ):
            listed = await client.get("/v1/threads", headers={"Authorization": "Bearer coda_x"})
            ready = await client.get("/readyz")
    finally:
        await engine.aclose()
        await dead.aclose()
    for response in (listed, ready):
        assert response.status_code == 503
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["type"] == "unavailable"


class _Broken:
    """A classifier with a bug: it raises what no adapter should."""

    name = "broken"
    version = "0"

    async def classify(self, text: str, context: Context = NO_CONTEXT) -> Classification:
        raise RuntimeError("a bug")

    async def aclose(self) -> None:
        pass


async def test_a_bug_is_500_internal_and_writes_nothing(store: RedisEventStore) -> None:
    keys = ApiKeys(store.redis, store.keys)
    auth = {"Authorization": f"Bearer {await keys.create('acme', 'ann', frozenset({'user'}))}"}
    async with running(store, classifier=_Broken()) as engine:
        app = create_app(Services(store=store, engine=engine, keys=keys))
        # As uvicorn does, answer the client; Starlette re-raises the bug for the server's log.
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://coda") as client,
        ):
            thread = (await client.post("/v1/threads", json={}, headers=auth)).json()["id"]
            response = await client.post(
                f"/v1/threads/{thread}/messages", json={"content": "hello"}, headers=auth
            )
            version = (await store.version(thread))[0]
    assert response.status_code == 500
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["type"] == "internal"
    assert "a bug" not in response.text  # the detail stays in the log
    assert version == 1
