"""Engines for tests: the rule classifier and the scripted model on a real store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

from events.store import RedisEventStore
from projections.policy import Policy
from projections.state import ThreadState
from service.classifier import NO_CONTEXT, Classification, Classifier, Context, GuardedClassifier
from service.engine import Engine, EngineSettings
from service.live import Delta
from service.model import Finished, Model, ModelError, ModelEvent, ModelRequest
from service.replies import Outcome
from service.rules import RuleClassifier
from service.scripted import ScriptedModel
from service.turns import Turn

BLOCK_MS: Final = 5_000  # how long a test waits for the live channel to say something


@asynccontextmanager
async def running(
    store: RedisEventStore,
    *,
    model: Model | None = None,
    classifier: Classifier | None = None,
    policy: Policy | None = None,
    settings: EngineSettings | None = None,
) -> AsyncIterator[Engine]:
    engine = Engine(
        store,
        model=model or ScriptedModel(),
        classifier=classifier or GuardedClassifier(RuleClassifier()),
        policy=policy,
        settings=settings,
    )
    try:
        yield engine
    finally:
        await engine.aclose()


async def new_thread(engine: Engine, policy: Policy | None = None) -> str:
    return await engine.start_thread(tenant="acme", owner="u1", policy=policy)


async def say(engine: Engine, thread_id: str, text: str) -> Outcome:
    """Post a message and wait for its reply to be recorded."""
    return await engine.outcome(await engine.post_message(thread_id, text, user_id="u1"))


async def state_of(engine: Engine, thread_id: str) -> ThreadState:
    return await engine.reader.state(thread_id)


class HangingClassifier:
    """A classifier whose service never answers."""

    name = "hanging"
    version = "0"

    async def classify(self, text: str, context: Context = NO_CONTEXT) -> Classification:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        pass


async def streamed(engine: Engine, turn: Turn, words: int = 1) -> str:
    """Wait until the live channel of `turn` has carried at least `words` words of text."""
    text, after = "", "0-0"
    while len(text.split()) < words:
        items = await engine.live.read(
            turn.thread_id, turn.reply_id, after=after, block_ms=BLOCK_MS
        )
        assert items, "the live channel went quiet"
        for item in items:
            assert isinstance(item, Delta), f"the generation closed after {text!r}"
            text += item.text
        after = items[-1].entry_id
    return text


class SilentModel:
    """A model that never says its first word."""

    name = "silent"

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        await asyncio.Event().wait()
        yield Finished()

    async def aclose(self) -> None:
        pass


class RefusingModel:
    """A model that refuses the request before it streams anything (the `Model` protocol's
    `stream` is a plain method returning an iterator, so it may raise when called)."""

    name = "refusing"

    def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        raise ModelError("refusing: the request was rejected before streaming")

    async def aclose(self) -> None:
        pass


class FarewellFailsModel:
    """The scripted model, eager to end (it calls the end tool on every answer), whose
    farewells fail: the provider is overloaded just when the ladder ends the branch."""

    name = "scripted"

    def __init__(self) -> None:
        self.inner = ScriptedModel(tool_on=frozenset({"answer", "end", "end_by_user"}))

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        if request.directive == "end":
            raise ModelError("overloaded")
        async for event in self.inner.stream(request):
            yield event

    async def aclose(self) -> None:
        pass
