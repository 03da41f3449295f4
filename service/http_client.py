"""The HTTP client every upstream adapter uses: one timeout, and retries of what is safe to retry.

Retried: the statuses an upstream uses to say "not now" (429, 500, 502, 503, 504 and Anthropic's
529 "overloaded"), after the back-off or the server's Retry-After; and a connection that could not
be made, or was dropped before any response. Not retried: a read timeout, since the upstream may
still be working and asking again would multiply the wait, and any other 4xx.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import httpx
from httpx_retries import Retry, RetryTransport

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
