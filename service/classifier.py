"""The classifier protocol: what a user message is, in the tiers of `service.taxonomy`.

Any classifier may fail: `GuardedClassifier` turns a failure or a timeout into tier `unknown`,
which the turn records and which never counts toward an end.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final, Protocol

import msgspec

from events.schema import Tier

DEFAULT_TIMEOUT: Final = 2.0

log = logging.getLogger(__name__)


class Classification(msgspec.Struct, frozen=True, kw_only=True):
    tier: Tier
    categories: tuple[str, ...] = ()
    score: float = 0.0
    classifier: str
    version: str
    error: str | None = None


class Context(msgspec.Struct, frozen=True, kw_only=True):
    """What a classifier may consider beside the text: the conversation so far on this branch."""

    previous: tuple[str, ...] = ()  # earlier user messages on the path, oldest first


NO_CONTEXT: Final = Context()


class Classifier(Protocol):
    name: str
    version: str

    async def classify(self, text: str, context: Context = NO_CONTEXT) -> Classification: ...

    async def aclose(self) -> None:
        """Release what the classifier holds (an HTTP client, ...)."""
        ...


class ClassifierError(Exception):
    """A classifier could not give an answer (unreachable, refused, answered nonsense)."""


class GuardedClassifier:
    """A classifier that never fails: a failure or a timeout is tier `unknown`, with the error."""

    def __init__(self, inner: Classifier, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.inner = inner
        self.name = inner.name
        self.version = inner.version
        self.timeout = timeout

    async def classify(self, text: str, context: Context = NO_CONTEXT) -> Classification:
        try:
            async with asyncio.timeout(self.timeout):
                return await self.inner.classify(text, context)
        except TimeoutError:
            error = f"timed out after {self.timeout:g}s"
        except ClassifierError as exc:
            error = str(exc) or type(exc).__name__
        log.warning("classifier %s failed: %s", self.name, error)
        return Classification(
            tier="unknown", classifier=self.name, version=self.version, error=error
        )

    async def aclose(self) -> None:
        await self.inner.aclose()
