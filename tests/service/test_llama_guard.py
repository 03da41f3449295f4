"""The Llama Guard classifier, against a fake OpenAI-compatible chat endpoint as vLLM serves."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final, Literal, NamedTuple

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.classifier import ClassifierError, GuardedClassifier
from service.llama_guard import LlamaGuardClassifier
from service.taxonomy import tier_of
from tests.http_servers import serve

pytestmark = pytest.mark.anyio

MODEL: Final = "meta-llama/Llama-Guard-3-8B"
HANG: Final = "hang"


class Received(NamedTuple):
    headers: dict[str, str]
    body: Any


class Upstream:
    """A fake /v1/chat/completions: answers from a script (the last repeats), records requests."""

    def __init__(self, *answers: Response | Literal["hang"]) -> None:
        self.answers = list(answers)
        self.received: list[Received] = []

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/chat/completions", self.handle, methods=["POST"])])

    async def handle(self, request: Request) -> Response:
        self.received.append(Received(dict(request.headers), json.loads(await request.body())))
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if answer == HANG:
            await request.receive()  # returns once the client hangs up, so the server can stop
            return Response(status_code=500)
        return answer


def verdict(content: str, *, finish_reason: str = "stop") -> JSONResponse:
    """A chat completion whose message is `content`, as vLLM answers it."""
    return JSONResponse(
        {
            "id": "chatcmpl-0123",
            "object": "chat.completion",
            "created": 1730000000,
            "model": MODEL,
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


@asynccontextmanager
async def guarding(
    upstream: Upstream, *, retries: int = 2, wait: float = 5.0, api_key: str | None = None
) -> AsyncIterator[LlamaGuardClassifier]:
    with serve(upstream.app()) as url:
        async with LlamaGuardClassifier(
            f"{url}/v1", api_key=api_key, retries=retries, timeout=wait, backoff=0.001
        ) as classifier:
            yield classifier


async def test_a_safe_verdict_is_benign_and_versioned_by_the_model() -> None:
    async with guarding(Upstream(verdict("\n\nsafe"))) as classifier:
        result = await classifier.classify("hello there")
    assert (result.tier, result.categories, result.score) == ("benign", (), 0.0)
    assert (result.classifier, result.version) == ("llama-guard", MODEL)


async def test_the_request_is_a_greedy_short_chat_completion_of_the_text() -> None:
    upstream = Upstream(verdict("safe"))
    async with guarding(upstream, api_key="vllm-secret") as classifier:
        await classifier.classify("hello there")
    [received] = upstream.received
    assert received.headers["authorization"] == "Bearer vllm-secret"
    assert received.body == {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hello there"}],
        "temperature": 0.0,
        "max_tokens": 20,
    }


async def test_without_a_key_no_authorization_is_sent() -> None:
    upstream = Upstream(verdict("safe"))
    async with guarding(upstream) as classifier:
        await classifier.classify("hello there")
    assert "authorization" not in upstream.received[0].headers


@pytest.mark.parametrize(
    ("code", "category"),
    [
        pytest.param("S1", "violent_crimes", id="S1"),
        pytest.param("S2", "non_violent_crimes", id="S2"),
        pytest.param("S3", "sex_crimes", id="S3"),
        pytest.param("S4", "child_sexual_exploitation", id="S4"),
        pytest.param("S5", "defamation", id="S5"),
        pytest.param("S6", "specialized_advice", id="S6"),
        pytest.param("S7", "privacy", id="S7"),
        pytest.param("S8", "intellectual_property", id="S8"),
        pytest.param("S9", "indiscriminate_weapons", id="S9"),
        pytest.param("S10", "hate", id="S10"),
        pytest.param("S11", "suicide_self_harm", id="S11"),
        pytest.param("S12", "sexual_content", id="S12"),
        pytest.param("S13", "elections", id="S13"),
        pytest.param("S14", "code_interpreter_abuse", id="S14"),
    ],
)
async def test_an_unsafe_code_is_read_as_its_category(code: str, category: str) -> None:
    async with guarding(Upstream(verdict(f"\n\nunsafe\n{code}"))) as classifier:
        result = await classifier.classify("text")
    assert (result.tier, result.categories, result.score) == (
        tier_of([category]),
        (category,),
        1.0,
    )


async def test_several_codes_take_the_strongest_tier_and_crisis_wins() -> None:
    async with guarding(Upstream(verdict("unsafe\nS11,S4,S1"))) as classifier:
        result = await classifier.classify("text")
    assert result.tier == "crisis"
    assert result.categories == ("violent_crimes", "child_sexual_exploitation", "suicide_self_harm")


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("unsafe\nS9,S4", id="plain"),
        pytest.param("\n\nunsafe\nS9, S4\n", id="padded"),
        pytest.param("unsafe\nS9 ,S4,S9", id="spaced-and-repeated"),
        pytest.param("unsafe S9,S4", id="one-line"),
    ],
)
async def test_a_verdict_is_read_whatever_its_spacing(content: str) -> None:
    async with guarding(Upstream(verdict(content))) as classifier:
        result = await classifier.classify("text")
    assert result.categories == ("child_sexual_exploitation", "indiscriminate_weapons")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param("unsafe\nS4,S15", "unknown code S15 in verdict 'unsafe\\nS4,S15'", id="S15"),
        pytest.param("unsafe", "an unsafe verdict without codes 'unsafe'", id="no-codes"),
        pytest.param("safe\nS1", "a safe verdict with codes 'safe\\nS1'", id="safe-with-codes"),
        pytest.param("I cannot help", "unexpected verdict 'I cannot help'", id="prose"),
        pytest.param("", "unexpected verdict ''", id="empty"),
    ],
)
async def test_a_verdict_that_cannot_be_trusted_is_an_error(content: str, message: str) -> None:
    async with guarding(Upstream(verdict(content))) as classifier:
        with pytest.raises(ClassifierError) as raised:
            await classifier.classify("text")
    assert str(raised.value) == message


async def test_a_verdict_cut_short_is_an_error() -> None:
    answer = verdict("unsafe\nS1,S2,S3,S4,S5,S6,S1", finish_reason="length")
    async with guarding(Upstream(answer)) as classifier:
        with pytest.raises(ClassifierError, match=r"^verdict cut short at 20 tokens: "):
            await classifier.classify("text")


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(Response(status_code=429, headers={"Retry-After": "0"}), id="429"),
        pytest.param(Response(status_code=503), id="503"),
    ],
)
async def test_a_passing_failure_is_retried_until_it_succeeds(failure: Response) -> None:
    upstream = Upstream(failure, verdict("unsafe\nS10"))
    async with guarding(upstream, retries=2) as classifier:
        result = await classifier.classify("text")
    assert (result.categories, len(upstream.received)) == (("hate",), 2)


async def test_a_server_failing_every_time_is_an_error_after_every_attempt() -> None:
    upstream = Upstream(Response(status_code=500))
    with serve(upstream.app()) as url:
        async with LlamaGuardClassifier(f"{url}/v1", retries=3, backoff=0.001) as classifier:
            with pytest.raises(ClassifierError) as raised:
                await classifier.classify("text")
    assert str(raised.value) == (
        f"HTTP 500 Internal Server Error from POST {url}/v1/chat/completions after 4 attempts"
    )
    assert len(upstream.received) == 4


async def test_malformed_json_is_an_error() -> None:
    upstream = Upstream(Response(b"<html>Bad gateway</html>", media_type="application/json"))
    async with guarding(upstream) as classifier:
        with pytest.raises(ClassifierError, match=r"^invalid chat completion: JSON is malformed"):
            await classifier.classify("text")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param({"choices": []}, "no choices", id="no-choices"),
        pytest.param(
            {"choices": [{"message": {"role": "assistant", "content": None}}]},
            r"Expected `str`, got `null` - at `\$.choices\[0\].message.content`",
            id="null-content",
        ),
    ],
)
async def test_a_response_of_the_wrong_shape_is_an_error(body: Any, message: str) -> None:
    async with guarding(Upstream(JSONResponse(body))) as classifier:
        with pytest.raises(ClassifierError, match=f"^invalid chat completion: {message}$"):
            await classifier.classify("text")


async def test_a_hung_server_times_out_to_tier_unknown_without_asking_again() -> None:
    upstream = Upstream(HANG)
    async with guarding(upstream, wait=0.2, retries=2) as classifier:
        result = await GuardedClassifier(classifier, timeout=5.0).classify("text")
    assert (result.tier, result.classifier) == ("unknown", "llama-guard")
    assert result.error is not None
    assert result.error.startswith("ReadTimeout on POST http://127.0.0.1:")
    assert len(upstream.received) == 1


async def test_the_guard_timeout_bounds_a_slow_classifier() -> None:
    async with guarding(Upstream(HANG), wait=5.0) as classifier:
        result = await GuardedClassifier(classifier, timeout=0.2).classify("text")
    assert (result.tier, result.error) == ("unknown", "timed out after 0.2s")
