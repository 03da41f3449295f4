"""Fake classifier answers in each API's real wire format, and a dialect per API for the contract.

Llama Guard answers as vLLM serves it, a chat completion whose text is the verdict; OpenAI's
moderation endpoint answers with a score for each of its categories.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, Protocol, TypeAlias

from starlette.responses import JSONResponse

from service.classifier import Classification
from service.llama_guard import LlamaGuardClassifier
from service.openai_moderation import OpenAIModerationClassifier
from service.taxonomy import BY_NAME
from tests.fake_upstream import FakeUpstream, Reply

KEY: Final = "sk-test"
LLAMA_GUARD_MODEL: Final = "meta-llama/Llama-Guard-3-8B"
MODERATION_MODEL: Final = "omni-moderation-2024-09-26"  # the dated model behind the alias
OPENAI_CATEGORIES: Final = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)
# one OpenAI category for each coda category the contract asks for
_OPENAI_CATEGORY: Final = {
    "hate": "hate",
    "violent_crimes": "violence",
    "child_sexual_exploitation": "sexual/minors",
    "suicide_self_harm": "self-harm",
}

ClassifierAdapter: TypeAlias = LlamaGuardClassifier | OpenAIModerationClassifier
WrongShape: TypeAlias = tuple[str, Any, str]  # a name, an answer, the error after `invalid`


class ClassifierDialect(Protocol):
    """One classifier API as the contract suite needs it: its adapter, and answers in its format."""

    id: str
    path: str  # where the API answers, from the server's root
    name: str  # the adapter's name, as its classifications carry it
    version: str  # the version a classification of the fake's answers carries
    invalid: str  # what starts the error for an answer that does not decode
    wrong_shapes: tuple[WrongShape, ...]
    key_variables: tuple[str, ...]  # the environment variables a missing key is read from

    def classifier(
        self, url: str, *, api_key: str | None = KEY, timeout: float = 5.0, retries: int = 2
    ) -> ClassifierAdapter:
        """The adapter, asking the server at `url` and hardly waiting between retries."""
        ...

    def flagging(self, *categories: str) -> JSONResponse:
        """An answer that finds the coda `categories` (none: a benign answer)."""
        ...

    def body(self, text: str) -> dict[str, Any]:
        """The whole JSON body that asks about `text`."""
        ...


def verdict(content: str, *, finish_reason: str = "stop") -> JSONResponse:
    """A chat completion whose message is `content`, as vLLM answers it."""
    return JSONResponse(
        {
            "id": "chatcmpl-0123",
            "object": "chat.completion",
            "created": 1730000000,
            "model": LLAMA_GUARD_MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "tool_calls": []},
                    "logprobs": None,
                    "finish_reason": finish_reason,
                    "stop_reason": None,
                }
            ],
            "usage": {"prompt_tokens": 212, "total_tokens": 217, "completion_tokens": 5},
        }
    )


def moderation(
    flagged: dict[str, float],
    *,
    scores: dict[str, float] | None = None,
    model: str = MODERATION_MODEL,
) -> JSONResponse:
    """A moderation response flagging `flagged` (name: score), other scores tiny or `scores`."""
    all_scores = {name: 0.0001 for name in OPENAI_CATEGORIES} | (scores or {}) | flagged
    return JSONResponse(
        {
            "id": "modr-0123",
            "model": model,
            "results": [
                {
                    "flagged": bool(flagged),
                    "categories": dict.fromkeys(OPENAI_CATEGORIES, False)
                    | dict.fromkeys(flagged, True),
                    "category_scores": all_scores,
                    "category_applied_input_types": {name: ["text"] for name in OPENAI_CATEGORIES},
                }
            ],
        }
    )


class _Dialect:
    """What the dialects share: how an adapter is made."""

    _adapter: Callable[..., ClassifierAdapter]

    def classifier(
        self, url: str, *, api_key: str | None = KEY, timeout: float = 5.0, retries: int = 2
    ) -> ClassifierAdapter:
        return self._adapter(
            f"{url}/v1", api_key=api_key, timeout=timeout, retries=retries, backoff=0.001
        )


class LlamaGuardDialect(_Dialect):
    """POST /v1/chat/completions, as vLLM serves Llama Guard: the verdict is the message."""

    id = name = "llama-guard"
    path = "/v1/chat/completions"
    version = LLAMA_GUARD_MODEL
    invalid = "invalid chat completion"
    wrong_shapes: tuple[WrongShape, ...] = (
        ("no-choices", {"choices": []}, "no choices"),
        (
            "null-content",
            {"choices": [{"message": {"role": "assistant", "content": None}}]},
            "Expected `str`, got `null` - at `$.choices[0].message.content`",
        ),
    )
    key_variables: tuple[str, ...] = ()
    _adapter = LlamaGuardClassifier

    def flagging(self, *categories: str) -> JSONResponse:
        codes = ",".join(BY_NAME[name].code for name in categories)
        return verdict(f"\n\nunsafe\n{codes}" if codes else "\n\nsafe")

    def body(self, text: str) -> dict[str, Any]:
        # greedy and short: a verdict is a few tokens
        return {
            "model": LLAMA_GUARD_MODEL,
            "messages": [{"role": "user", "content": text}],
            "temperature": 0.0,
            "max_tokens": 20,
        }


class OpenAIModerationDialect(_Dialect):
    """POST /v1/moderations: a score and a flag for each of OpenAI's categories."""

    id = name = "openai-moderation"
    path = "/v1/moderations"
    version = MODERATION_MODEL
    invalid = "invalid moderation response"
    wrong_shapes: tuple[WrongShape, ...] = (
        ("no-results", {"error": "nope"}, "Object missing required field `results`"),
        ("empty-results", {"results": []}, "expected 1 result, got 0"),
        (
            "not-a-bool",
            {"results": [{"categories": {"hate": "yes"}}]},
            "Expected `bool | null`, got `str` - at `$.results[0].categories[...]`",
        ),
    )
    key_variables: tuple[str, ...] = ("OPENAI_API_KEY",)
    _adapter = OpenAIModerationClassifier

    def flagging(self, *categories: str) -> JSONResponse:
        return moderation({_OPENAI_CATEGORY[name]: 0.9 for name in categories})

    def body(self, text: str) -> dict[str, Any]:
        return {"model": "omni-moderation-latest", "input": text}


LLAMA_GUARD: Final = LlamaGuardDialect()
OPENAI_MODERATION: Final = OpenAIModerationDialect()


async def classify(
    dialect: ClassifierDialect, fake: FakeUpstream, answer: Reply, text: str = "text"
) -> Classification:
    """What `dialect`'s adapter makes of `text` when `fake` gives `answer`."""
    fake.script(answer)
    async with dialect.classifier(fake.url) as classifier:
        return await classifier.classify(text)
