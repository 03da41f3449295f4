"""Engines for tests: the rule classifier and the scripted model on a real store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from events.store import RedisEventStore
from projections.policy import Policy
from projections.state import ThreadState
from service.classifier import NO_CONTEXT, Classification, Classifier, Context, GuardedClassifier
from service.engine import Engine, EngineSettings
from service.generation import Outcome
from service.model import Model
from service.rules import RuleClassifier
from service.scripted import ScriptedModel


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
