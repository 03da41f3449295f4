"""A classifier backed by Llama Guard 3 behind an OpenAI-compatible chat endpoint (vLLM, say).

The server applies Llama Guard's own chat template, so the request is an ordinary chat completion
and the verdict comes back as the message text: "safe", or "unsafe" and a line of codes
("unsafe\\nS4,S9"). A verdict is trusted whole or not at all: an unknown code, an "unsafe" without
codes, or a verdict cut short is a `ClassifierError`, never a partial or a benign answer.
"""

from __future__ import annotations

import re
from typing import Final, Literal

import msgspec

from service.classifier import NO_CONTEXT, Classification, ClassifierError, Context
from service.http_client import Upstream, http_client
from service.taxonomy import BY_CODE, CATEGORIES, tier_of

DEFAULT_MODEL: Final = "meta-llama/Llama-Guard-3-8B"
MAX_TOKENS: Final = 20  # a verdict with every one of the 14 codes fits

# "safe" or "unsafe", then optionally codes after a newline or space, separated by commas
_VERDICT: Final = re.compile(r"(safe|unsafe)(?:\s+(S\d+(?:\s*,\s*S\d+)*))?")
_CODE_SEPARATOR: Final = re.compile(r"\s*,\s*")


class _Message(msgspec.Struct, frozen=True):
    role: Literal["user"]
    content: str


class _Request(msgspec.Struct, frozen=True, kw_only=True):
    model: str
    messages: list[_Message]
    temperature: float = 0.0
    max_tokens: int = MAX_TOKENS


class _Answer(msgspec.Struct, frozen=True):
    content: str


class _Choice(msgspec.Struct, frozen=True):
    message: _Answer
    finish_reason: str | None = None


class _Response(msgspec.Struct, frozen=True):
    choices: list[_Choice]


_encode: Final = msgspec.json.Encoder().encode
_decode: Final = msgspec.json.Decoder(_Response).decode
_ORDER: Final = {category.name: index for index, category in enumerate(CATEGORIES)}


class LlamaGuardClassifier(Upstream):
    """Classifies with POST {base_url}/chat/completions; `base_url` ends in /v1, e.g. vLLM's.

    Only the new message is sent: `Context` holds earlier user messages without the replies
    between them, and Llama Guard's template wants a conversation of alternating turns.
    `api_key`, if given, is sent as a bearer token (vLLM's --api-key).
    """

    name = "llama-guard"
    failure = ClassifierError

    def __init__(
        self,
        base_url: str,
        *,
        model: str = DEFAULT_MODEL,
        api_key: str | None = None,
        timeout: float = 5.0,
        retries: int = 2,
        backoff: float = 0.25,
    ) -> None:
        self.model = model
        self.version = model
        headers = {"Content-Type": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._client = http_client(
            base_url, headers=headers, timeout=timeout, retries=retries, backoff=backoff
        )

    async def classify(self, text: str, context: Context = NO_CONTEXT) -> Classification:
        request = _Request(model=self.model, messages=[_Message("user", text)])
        body = await self._post("chat/completions", _encode(request))
        try:
            response = _decode(body)
        except msgspec.DecodeError as exc:
            raise ClassifierError(f"invalid chat completion: {exc}") from exc
        if not response.choices:
            raise ClassifierError("invalid chat completion: no choices")
        choice = response.choices[0]
        if choice.finish_reason == "length":
            # cut short, "S1" may be the start of "S10"
            raise ClassifierError(
                f"verdict cut short at {MAX_TOKENS} tokens: {choice.message.content!r}"
            )
        categories = parse_verdict(choice.message.content)
        return Classification(
            tier=tier_of(categories),
            categories=categories,
            score=1.0 if categories else 0.0,
            classifier=self.name,
            version=self.model,
        )


def parse_verdict(verdict: str) -> tuple[str, ...]:
    """The categories of a Llama Guard verdict in taxonomy order: none for "safe"."""
    match = _VERDICT.fullmatch(verdict.strip())
    if match is None:
        raise ClassifierError(f"unexpected verdict {verdict!r}")
    label, codes = match.groups()
    if label == "safe":
        if codes:
            raise ClassifierError(f"a safe verdict with codes {verdict!r}")
        return ()
    if not codes:
        # no category, no tier: benign would be wrong, so the answer is unknown
        raise ClassifierError(f"an unsafe verdict without codes {verdict!r}")
    names: set[str] = set()
    for code in _CODE_SEPARATOR.split(codes):
        category = BY_CODE.get(code)
        if category is None:
            raise ClassifierError(f"unknown code {code} in verdict {verdict!r}")
        names.add(category.name)
    return tuple(sorted(names, key=_ORDER.__getitem__))
