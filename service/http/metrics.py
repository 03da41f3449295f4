"""Prometheus metrics for `GET /metrics` (prometheus-client), one registry per app.

coda_http_requests_total{method,route,status}    requests, by route template
coda_turns_total{directive}                       turns taken, by what the ladder decided
coda_classifications_total{tier}                  user messages, by tier
coda_ends_total{actor}                            conversations ended, by who ended them
coda_end_rejections_total{actor}                  refused requests to end
coda_stream_clients                               event streams open now
coda_redis_seconds                                time of the thread reads requests make
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UNMATCHED: Final = "unmatched"


class Metrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.requests = Counter(
            "coda_http_requests", "HTTP requests", ["method", "route", "status"], registry=registry
        )
        self.turns = Counter(
            "coda_turns", "Turns taken, by directive", ["directive"], registry=registry
        )
        self.tiers = Counter(
            "coda_classifications", "User messages classified, by tier", ["tier"], registry=registry
        )
        self.ends = Counter(
            "coda_ends", "Conversations ended, by actor", ["actor"], registry=registry
        )
        self.rejections = Counter(
            "coda_end_rejections", "Requests to end that were refused", ["actor"], registry=registry
        )
        self.stream_clients = Gauge("coda_stream_clients", "Event streams open", registry=registry)
        self._requests: dict[tuple[str, str, int], Counter] = {}
        self.redis_seconds = Histogram(
            "coda_redis_seconds", "Time of the thread reads requests make", registry=registry
        )

    def request(self, method: str, route: str, status: int) -> Counter:
        """The requests counter of one method, route and status (found once, then kept:
        `labels` is not free, and every request counts)."""
        child = self._requests.get((method, route, status))
        if child is None:
            child = self._requests[(method, route, status)] = self.requests.labels(
                method, route, str(status)
            )
        return child

    @contextmanager
    def timed(self) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.redis_seconds.observe(time.perf_counter() - start)

    async def endpoint(self, request: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


class RequestCounter:
    """Pure ASGI middleware (no buffering of streamed responses): counts every request by
    method, route template and status once its response starts."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                route = scope.get("route")
                self.metrics.request(
                    scope["method"], getattr(route, "path", UNMATCHED), message["status"]
                ).inc()
            await send(message)

        await self.app(scope, receive, counted)
