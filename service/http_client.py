"""The HTTP client every upstream adapter uses: one timeout, and retries of what is safe to retry.

Retried: the statuses an upstream uses to say "not now" (429, 500, 502, 503, 504 and Anthropic's
529 "overloaded"), after the back-off or the server's Retry-After; and a connection that could not
be made, or was dropped before any response. Not retried: a read timeout, since the upstream may
still be working and asking again would multiply the wait, and any other 4xx.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from types import TracebackType
from typing import ClassVar, Final, Self

import httpx
import msgspec
from httpx_retries import Retry, RetryTransport
from httpx_sse import ServerSentEvent, SSEError, aconnect_sse

RETRY_STATUSES: Final = frozenset({429, 500, 502, 503, 504, 529})
RETRY_ERRORS: Final = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError)
MAX_WAIT: Final = 30.0  # caps one wait, so a Retry-After of an hour cannot stall a caller


def http_client(
    base_url: str, *, headers: Mapping[str, str], timeout: float, retries: int, backoff: float
) -> httpx.AsyncClient:
    """A client of `base_url` that retries POST too, `retries` times after the first attempt."""
    retry = Retry(
        total=retries,
        allowed_methods=["GET", "POST"],
        status_forcelist=RETRY_STATUSES,
        retry_on_exceptions=RETRY_ERRORS,
        backoff_factor=backoff,
        respect_retry_after_header=True,
        max_backoff_wait=MAX_WAIT,
    )
    return httpx.AsyncClient(
        base_url=base_url,
        headers=dict(headers),
        timeout=httpx.Timeout(timeout),
        transport=RetryTransport(retry=retry),
    )


class _ErrorDetail(msgspec.Struct, frozen=True):
    type: str | None = None
    message: str = ""


class _ErrorBody(msgspec.Struct, frozen=True):
    error: _ErrorDetail


_decode_error: Final = msgspec.json.Decoder(_ErrorBody).decode


_JSON: Final = {"content-type": "application/json"}


class UpstreamError(Exception):
    """An upstream call that failed: one line, with the status or the transport error."""


class Upstream:
    """An adapter that owns one HTTP client: it closes it, and serves as `async with`.

    `failure` is the exception its calls raise (a classifier's `ClassifierError`, ...)."""

    _client: httpx.AsyncClient
    failure: ClassVar[type[Exception]] = UpstreamError
    _prefix: str = ""  # what the failure's message starts with (a model's name)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _post(self, path: str, body: bytes) -> bytes:
        """POST a JSON body and return the response's; `failure` if it failed."""
        try:
            response = await self._client.post(path, content=body, headers=_JSON)
        except httpx.HTTPError as exc:
            raise self.failure(self._prefix + describe_error(exc)) from exc
        if not response.is_success:
            raise self.failure(self._prefix + describe_status(response))
        return response.content

    async def _events(self, path: str, body: bytes) -> AsyncGenerator[ServerSentEvent, None]:
        """POST a JSON body and yield the answer's server-sent events; `failure`, with the
        status and the API's own words or the transport error, if it fails. Closing the
        iteration closes the connection."""
        try:
            async with aconnect_sse(
                self._client, "POST", path, content=body, headers=_JSON
            ) as source:
                response = source.response
                if not response.is_success:
                    await response.aread()
                    words = error_words(response.content)
                    raise self.failure(f"{self._prefix}{describe_status(response)}: {words}")
                async for event in source.aiter_sse():
                    yield event
        except SSEError as exc:  # raised by httpx-sse itself, so it carries no request
            raise self.failure(f"{self._prefix}{exc}") from exc
        except httpx.HTTPError as exc:
            raise self.failure(self._prefix + describe_error(exc)) from exc


def error_words(error: bytes) -> str:
    """What an API's error body says: `{"error": {"type", "message"}}` (Anthropic's and
    OpenAI's shape), or its first 200 characters."""
    try:
        detail = _decode_error(error).error
    except msgspec.DecodeError:
        return error.decode(errors="replace")[:200]
    return f"{detail.type}: {detail.message}" if detail.type else detail.message


def describe_status(response: httpx.Response) -> str:
    """One line for a response that is not a success: status, request, and attempts made."""
    request = response.request
    line = (
        f"HTTP {response.status_code} {response.reason_phrase} from {request.method} {request.url}"
    )
    retry = response.extensions.get("retry")
    if isinstance(retry, Retry) and retry.attempts_made:
        line += f" after {retry.attempts_made + 1} attempts"
    return line


def describe_error(exc: httpx.HTTPError) -> str:
    """One line for an error raised while sending: its kind, the request, and httpx's words."""
    request = exc.request  # set on every error a client's send raises
    detail = f": {exc}" if str(exc) else ""  # a timeout's text is often empty
    return f"{type(exc).__name__} on {request.method} {request.url}{detail}"
