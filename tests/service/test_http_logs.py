"""What the server logs below debug holds no message content and no API key, also when the
classifier and the model fail."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx
import pytest

from events.store import RedisEventStore
from service.classifier import (
    NO_CONTEXT,
    Classification,
    ClassifierError,
    Context,
    GuardedClassifier,
)
from service.http.app import create_app
from service.http.context import Services
from service.http.principals import ApiKeys
from tests.service.engines import FarewellFailsModel, running
from tests.service.test_http import TERMINABLE

pytestmark = pytest.mark.anyio

SECRET_WORDS = "my neighbour's name is Zebulon Quartermaine"


class FlakyClassifier:
    """Fails on the words it is given to fail on, as an overloaded service does."""

    name = "flaky"
    version = "0"

    def __init__(self, inner: GuardedClassifier) -> None:
        self.inner = inner

    async def classify(self, text: str, context: Context = NO_CONTEXT) -> Classification:
        if "Zebulon" in text:
            raise ClassifierError("upstream 503")
        return await self.inner.classify(text, context)

    async def aclose(self) -> None:
        pass


@pytest.fixture
def backend() -> str:
    return "redis"


@pytest.fixture
async def client(store: RedisEventStore) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    from service.rules import RuleClassifier

    keys = ApiKeys(store.redis, store.keys)
    key = await keys.create("acme", "ann", frozenset({"user"}))
    classifier = GuardedClassifier(FlakyClassifier(GuardedClassifier(RuleClassifier())))
    async with running(store, model=FarewellFailsModel(), classifier=classifier) as engine:
        app = create_app(Services(store=store, engine=engine, keys=keys))
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://coda") as http,
        ):
            yield http, key


async def test_no_content_or_key_reaches_the_logs(
    client: tuple[httpx.AsyncClient, str], caplog: pytest.LogCaptureFixture
) -> None:
    http, key = client
    caplog.set_level(logging.INFO)
    auth = {"Authorization": f"Bearer {key}"}
    thread = (await http.post("/v1/threads", json={}, headers=auth)).json()["id"]
    path = f"/v1/threads/{thread}/messages"
    await http.post(path, json={"content": SECRET_WORDS}, headers=auth)  # the classifier fails
    for _ in range(4):  # the farewell fails, and is recorded
        await http.post(path, json={"content": TERMINABLE}, headers=auth)
    await http.post(path, json={"content": 7}, headers=auth)  # 422
    await http.post(
        path, json={"content": SECRET_WORDS}, headers={"Authorization": "Bearer coda_not-a-key"}
    )
    ours = [r for r in caplog.records if r.name.startswith(("coda", "service"))]
    assert any("classifier" in r.getMessage() for r in ours)  # the failure was logged
    logged = caplog.text
    for secret in (SECRET_WORDS, "Zebulon", "nerve gas", key, "not-a-key"):
        assert secret not in logged, secret
