"""The ASGI application: routes, the problem+json handlers, and the process's services.

`create_app()` opens the store from the environment when the server starts (REDIS_URL, or the
embedded Redis in CODA_DATA_DIR), builds the engine from CODA_CLASSIFIER / CODA_MODEL /
CODA_POLICY_*, and, unless told not to, runs the projector that keeps the thread lists in the
same process. `create_app(services)` serves services built elsewhere (the tests do).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from typing import Final

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from events.connect import RedisSettings, check_server, open_store
from events.errors import EventStoreError
from projections.projector import Projector
from service.config import Settings, build_classifier, build_model
from service.engine import Engine, EngineSettings
from service.http import openapi, oversight, problems, threads, turns
from service.http.context import Services, services
from service.http.idempotency import idempotent
from service.http.limits import Limits
from service.http.metrics import Metrics, RequestCounter
from service.http.principals import ApiKeys

log = logging.getLogger("coda.http")

NO_PROJECTOR_ENV: Final = "CODA_NO_PROJECTOR"  # set: run the projector elsewhere (coda project)
KEY_SECONDS: Final = 5.0  # how long a process trusts what an API key resolved to


async def healthz(request: Request) -> Response:
    """The process is up (it says nothing of Redis: see /readyz)."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready when Redis answers and is configured to keep coda's data (no eviction, 6.2+)."""
    try:
        await check_server(services(request).store.redis)
    except EventStoreError as exc:  # StoreConfigError (unsafe) or unavailable
        return problems.problem_response(503, "unavailable", "Not ready", str(exc))
    return JSONResponse({"status": "ready"})


ROUTES: Final = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/openapi.json", openapi.endpoint, methods=["GET"]),
    Route("/v1/threads", idempotent(threads.create_thread, rerun=True), methods=["POST"]),
    Route("/v1/threads", threads.list_threads, methods=["GET"]),
    Route("/v1/threads/{thread_id}", threads.get_thread, methods=["GET"]),
    Route(
        "/v1/threads/{thread_id}/messages",
        idempotent(turns.post_message, rerun=True),
        methods=["POST"],
    ),
    Route(
        "/v1/threads/{thread_id}/messages/{message_id}/edit",
        idempotent(turns.edit_message, rerun=True),
        methods=["POST"],
    ),
    Route("/v1/threads/{thread_id}/feedback", idempotent(threads.give_feedback), methods=["POST"]),
    Route("/v1/threads/{thread_id}/cancel", idempotent(threads.cancel), methods=["POST"]),
    Route("/v1/threads/{thread_id}/end", idempotent(threads.end_thread), methods=["POST"]),
    Route("/v1/threads/{thread_id}/events", threads.thread_events, methods=["GET"]),
    Route("/v1/threads/{thread_id}/stream", threads.stream_thread, methods=["GET"]),
    Route("/v1/threads/{thread_id}/audit", oversight.thread_audit, methods=["GET"]),
    Route("/v1/analytics/summary", oversight.analytics_summary, methods=["GET"]),
]


def create_app(given: Services | None = None, *, projector: bool | None = None) -> Starlette:
    """The app; `projector` (default: unless CODA_NO_PROJECTOR is set) runs the projector here."""
    if projector is None:
        projector = not os.environ.get(NO_PROJECTOR_ENV)
    handlers: dict[type[Exception] | int, problems.Handler] = {
        cls: problems.handle for cls in problems.TABLE
    }
    handlers[problems.Problem] = problems.handle
    handlers[HTTPException] = problems.routing
    handlers[Exception] = problems.unexpected
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if given is not None:
            app.state.services = given
            try:
                yield
            finally:
                await given.counting.aclose()
            return
        async with running_services(projector=bool(projector)) as built:
            app.state.services = built
            yield

    app = Starlette(
        routes=[*ROUTES, Route("/metrics", metrics.endpoint, methods=["GET"])],
        exception_handlers=handlers,
        middleware=[Middleware(RequestCounter, metrics=metrics)],
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    return app


@contextlib.asynccontextmanager
async def running_services(*, projector: bool) -> AsyncIterator[Services]:
    """The store, the engine and (if asked) the projector, from the environment."""
    settings = Settings.from_env()
    limits = Limits.from_env()
    async with open_store(RedisSettings.from_env()) as store:
        engine = Engine(
            store,
            model=build_model(settings),
            classifier=build_classifier(settings),
            policy=settings.policy,
            settings=EngineSettings(lease_seconds=settings.lease_seconds),
        )
        stop = asyncio.Event()
        tasks = []
        if projector:
            tasks.append(asyncio.create_task(Projector(store).run(stop), name="projector"))
        built = Services(
            store=store,
            engine=engine,
            keys=ApiKeys(store.redis, store.keys, remember_seconds=KEY_SECONDS),
            limits=limits,
        )
        try:
            yield built
        finally:
            stop.set()
            await built.counting.aclose()
            await engine.aclose()
            await asyncio.gather(*tasks, return_exceptions=True)
            await engine.model.aclose()
            await engine.classifier.aclose()
