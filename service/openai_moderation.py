"""A classifier backed by OpenAI's moderation endpoint (or any server that speaks its format)."""

from __future__ import annotations

import logging
import os
from typing import Final

import msgspec

from service.classifier import NO_CONTEXT, Classification, ClassifierError, Context
from service.http_client import Upstream, http_client
from service.taxonomy import CATEGORIES, tier_of

DEFAULT_BASE_URL: Final = "https://api.openai.com/v1"
DEFAULT_MODEL: Final = "omni-moderation-latest"

# OpenAI's categories in coda's: several OpenAI categories may name the same coda category.
CATEGORY_MAP: Final[dict[str, str]] = {
    "self-harm": "suicide_self_harm",
    "self-harm/intent": "suicide_self_harm",
    "self-harm/instructions": "suicide_self_harm",
    "sexual/minors": "child_sexual_exploitation",
    "sexual": "sexual_content",
    "hate": "hate",
    "harassment": "hate",
    "hate/threatening": "harm_to_others",
    "harassment/threatening": "harm_to_others",
    "violence": "violent_crimes",
    "violence/graphic": "violent_crimes",
    "illicit": "non_violent_crimes",
    "illicit/violent": "violent_crimes",
}

log = logging.getLogger(__name__)


class _Request(msgspec.Struct, frozen=True):
    model: str
    input: str


class _Result(msgspec.Struct, frozen=True):
    # null appears for categories an older model does not score (illicit, for text-moderation)
    categories: dict[str, bool | None]
    category_scores: dict[str, float | None] = {}


class _Response(msgspec.Struct, frozen=True):
    results: list[_Result]
    model: str = ""


_encode: Final = msgspec.json.Encoder().encode
_decode: Final = msgspec.json.Decoder(_Response).decode
_ORDER: Final = {category.name: index for index, category in enumerate(CATEGORIES)}


class OpenAIModerationClassifier(Upstream):
    """Classifies with POST {base_url}/moderations; `base_url` ends in /v1, as in OpenAI's SDK.

    The API key is `api_key`, else the environment's OPENAI_API_KEY; with neither, no
    Authorization header is sent (a local server may need none).
    """

    name = "openai-moderation"
    failure = ClassifierError

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        api_key: str | None = None,
        model: str = DEFAULT_MODEL,
        timeout: float = 5.0,
        retries: int = 2,
        backoff: float = 0.25,
    ) -> None:
        self.model = model
        self.version = model  # until a response names the dated model behind the alias
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._client = http_client(
            base_url, headers=headers, timeout=timeout, retries=retries, backoff=backoff
        )

    async def classify(self, text: str, context: Context = NO_CONTEXT) -> Classification:
        """The tier of `text`; the endpoint sees the text alone, since it scores one input."""
        body = await self._post("moderations", _encode(_Request(model=self.model, input=text)))
        try:
            response = _decode(body)
        except msgspec.DecodeError as exc:
            raise ClassifierError(f"invalid moderation response: {exc}") from exc
        if len(response.results) != 1:
            raise ClassifierError(
                f"invalid moderation response: expected 1 result, got {len(response.results)}"
            )
        categories, score = _read(response.results[0])
        return Classification(
            tier=tier_of(categories),
            categories=categories,
            score=score,
            classifier=self.name,
            version=response.model or self.model,
        )


def _read(result: _Result) -> tuple[tuple[str, ...], float]:
    """The coda categories a result flags, in taxonomy order, and the highest of their scores."""
    names: set[str] = set()
    score = 0.0
    for category, flagged in result.categories.items():
        if not flagged:
            continue
        name = CATEGORY_MAP.get(category)
        if name is None:
            log.debug("ignoring unknown moderation category %r", category)
            continue
        names.add(name)
        # a flagged category without a score still counts: dropping it could hide a crisis
        score = max(score, result.category_scores.get(category) or 0.0)
    return tuple(sorted(names, key=_ORDER.__getitem__)), score
