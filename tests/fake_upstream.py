"""A fake HTTP upstream on a real uvicorn: it answers POSTs from a script and records them.

The replies are written in each API's own wire format by `tests.fake_llm` (the streaming chat
APIs) and `tests.fake_classifiers` (the classifier APIs); this module only serves them.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeAlias

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.http_servers import serve


@dataclass(frozen=True)
class Stream:
    """A 200 streaming `frames`; with `hold`, the stream then stays open until the client leaves."""

    frames: tuple[str, ...]
    hold: bool = False


@dataclass(frozen=True)
class Hang:
    """No answer at all: the request waits until the client gives up."""


HANG: Final = Hang()


class Dialect(Protocol):
    """An API as a contract suite knows it (tests.fake_llm, tests.fake_classifiers)."""

    @property
    def id(self) -> str: ...  # the test id

    @property
    def path(self) -> str: ...  # where the API answers, from the server's root


# A Starlette response is sent as it is: an API's error, a whole JSON answer, a bare status.
Reply: TypeAlias = Stream | Response | Hang


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]  # names in lower case
    body: Any


class FakeUpstream:
    """Answers each POST to `path` with the next scripted reply (the last repeats); records each.

    `url` is the server's base URL ("http://127.0.0.1:PORT") once `serve_fake` has started it.
    """

    def __init__(self, path: str) -> None:
        self.url = ""
        self.requests: list[Received] = []
        self.disconnected = threading.Event()  # set when a held request sees its client leave
        self.app = Starlette(routes=[Route(path, self._answer, methods=["POST"])])
        self._replies: list[Reply] = []

    def script(self, *replies: Reply) -> None:
        """Forget what was received and answer the next requests with `replies`."""
        self.requests.clear()
        self.disconnected.clear()
        self._replies = list(replies)

    async def _answer(self, request: Request) -> Response:
        self.requests.append(Received(dict(request.headers), await request.json()))
        reply = self._replies.pop(0) if len(self._replies) > 1 else self._replies[0]
        if isinstance(reply, Hang):
            await request.receive()  # returns once the client hangs up
            self.disconnected.set()
            return Response(status_code=500)
        if isinstance(reply, Stream):
            return StreamingResponse(self._frames(reply), media_type="text/event-stream")
        return reply

    async def _frames(self, reply: Stream) -> AsyncIterator[str]:
        for frame in reply.frames:
            yield frame
        if not reply.hold:
            return
        try:
            await asyncio.Event().wait()  # Starlette cancels this when the client disconnects
        except asyncio.CancelledError:
            self.disconnected.set()
            raise


@contextmanager
def serve_fake(path: str) -> Iterator[FakeUpstream]:
    """A fake answering POSTs to `path` on a real uvicorn, its `url` set."""
    fake = FakeUpstream(path)
    with serve(fake.app) as url:
        fake.url = url
        yield fake


def fake_fixture(path: str) -> Any:  # pytest does not export the type of a fixture
    """A module-scoped fixture serving a fake at `path`: `fake = fake_fixture(path)`."""

    @pytest.fixture(scope="module")
    def fake() -> Iterator[FakeUpstream]:
        with serve_fake(path) as fake:
            yield fake

    return fake


def contract_fixtures(*dialects: Dialect) -> tuple[Any, Any]:
    """A contract suite's module-scoped fixtures: each of `dialects` in turn, and a fake that
    answers at its path; `dialect, fake = contract_fixtures(...)`."""

    @pytest.fixture(scope="module", params=dialects, ids=lambda dialect: dialect.id)
    def dialect(request: pytest.FixtureRequest) -> Any:
        return request.param

    @pytest.fixture(scope="module")
    def fake(dialect: Dialect) -> Iterator[FakeUpstream]:
        with serve_fake(dialect.path) as fake:
            yield fake

    return dialect, fake


def closed_port() -> int:
    """A port nothing listens on (free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
