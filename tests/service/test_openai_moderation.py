"""The OpenAI moderation classifier, against a fake endpoint speaking the real wire format."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final, Literal, NamedTuple

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.classifier import ClassifierError, GuardedClassifier
from service.openai_moderation import OpenAIModerationClassifier
from service.taxonomy import tier_of
from tests.http_servers import serve

pytestmark = pytest.mark.anyio

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
DATED_MODEL: Final = "omni-moderation-2024-09-26"
HANG: Final = "hang"


class Received(NamedTuple):
    headers: dict[str, str]
    body: Any


class Upstream:
    """A fake /v1/moderations: answers from a script (the last answer repeats), records requests."""

    def __init__(self, *answers: Response | Literal["hang"]) -> None:
        self.answers = list(answers)
        self.received: list[Received] = []

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/moderations", self.handle, methods=["POST"])])

    async def handle(self, request: Request) -> Response:
        self.received.append(Received(dict(request.headers), json.loads(await request.body())))
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if answer == HANG:
            await request.receive()  # returns once the client hangs up, so the server can stop
            return Response(status_code=500)
        return answer


def moderation(
    flagged: dict[str, float], *, scores: dict[str, float] | None = None, model: str = DATED_MODEL
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


@asynccontextmanager
async def moderating(
    upstream: Upstream, *, retries: int = 2, wait: float = 5.0, api_key: str | None = "sk-test"
) -> AsyncIterator[OpenAIModerationClassifier]:
    with serve(upstream.app()) as url:
        async with OpenAIModerationClassifier(
            f"{url}/v1", api_key=api_key, retries=retries, timeout=wait, backoff=0.001
        ) as classifier:
            yield classifier


async def test_a_benign_message_is_benign_and_versioned_by_the_dated_model() -> None:
    async with moderating(Upstream(moderation({}))) as classifier:
        result = await classifier.classify("hello there")
    assert (result.tier, result.categories, result.score) == ("benign", (), 0.0)
    assert (result.classifier, result.version) == ("openai-moderation", DATED_MODEL)


async def test_the_request_carries_the_bearer_key_the_model_and_the_text() -> None:
    upstream = Upstream(moderation({}))
    async with moderating(upstream, api_key="sk-secret") as classifier:
        await classifier.classify("hello there")
    [received] = upstream.received
    assert received.headers["authorization"] == "Bearer sk-secret"
    assert received.headers["content-type"] == "application/json"
    assert received.body == {"model": "omni-moderation-latest", "input": "hello there"}


async def test_the_key_defaults_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    upstream = Upstream(moderation({}))
    async with moderating(upstream, api_key=None) as classifier:
        await classifier.classify("hello there")
    assert upstream.received[0].headers["authorization"] == "Bearer sk-from-env"


@pytest.mark.parametrize(
    ("openai_category", "category"),
    [
        pytest.param("self-harm", "suicide_self_harm", id="self-harm"),
        pytest.param("self-harm/intent", "suicide_self_harm", id="self-harm/intent"),
        pytest.param("self-harm/instructions", "suicide_self_harm", id="self-harm/instructions"),
        pytest.param("sexual/minors", "child_sexual_exploitation", id="sexual/minors"),
        pytest.param("sexual", "sexual_content", id="sexual"),
        pytest.param("hate", "hate", id="hate"),
        pytest.param("harassment", "hate", id="harassment"),
        pytest.param("hate/threatening", "harm_to_others", id="hate/threatening"),
        pytest.param("harassment/threatening", "harm_to_others", id="harassment/threatening"),
        pytest.param("violence", "violent_crimes", id="violence"),
        pytest.param("violence/graphic", "violent_crimes", id="violence/graphic"),
        pytest.param("illicit", "non_violent_crimes", id="illicit"),
        pytest.param("illicit/violent", "violent_crimes", id="illicit/violent"),
    ],
)
async def test_a_flagged_openai_category_is_read_as_its_coda_category(
    openai_category: str, category: str
) -> None:
    async with moderating(Upstream(moderation({openai_category: 0.91}))) as classifier:
        result = await classifier.classify("text")
    assert (result.tier, result.categories, result.score) == (
        tier_of([category]),
        (category,),
        0.91,
    )


async def test_several_categories_take_the_strongest_tier_and_crisis_wins() -> None:
    flagged = {"self-harm": 0.6, "sexual/minors": 0.8, "violence": 0.7}
    async with moderating(Upstream(moderation(flagged))) as classifier:
        result = await classifier.classify("text")
    assert result.tier == "crisis"
    assert result.categories == ("violent_crimes", "child_sexual_exploitation", "suicide_self_harm")


async def test_openai_categories_naming_the_same_category_list_it_once() -> None:
    async with moderating(Upstream(moderation({"hate": 0.5, "harassment": 0.6}))) as classifier:
        result = await classifier.classify("text")
    assert result.categories == ("hate",)


async def test_the_score_is_the_highest_among_flagged_categories_only() -> None:
    answer = moderation({"sexual": 0.7, "hate": 0.55}, scores={"violence": 0.69, "illicit": 0.99})
    async with moderating(Upstream(answer)) as classifier:
        result = await classifier.classify("text")
    assert result.score == 0.7


async def test_an_unknown_openai_category_is_ignored_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="service.openai_moderation")
    async with moderating(Upstream(moderation({"violence/extreme": 0.97}))) as classifier:
        result = await classifier.classify("text")
    assert (result.tier, result.categories, result.score) == ("benign", (), 0.0)
    assert "ignoring unknown moderation category 'violence/extreme'" in caplog.messages


async def test_null_categories_of_an_older_model_are_not_flagged() -> None:
    answer = JSONResponse(
        {
            "id": "modr-0123",
            "model": "text-moderation-007",
            "results": [
                {
                    "flagged": True,
                    "categories": {"hate": True, "illicit": None, "illicit/violent": None},
                    "category_scores": {"hate": 0.8, "illicit": None, "illicit/violent": None},
                }
            ],
        }
    )
    async with moderating(Upstream(answer)) as classifier:
        result = await classifier.classify("text")
    assert (result.categories, result.score, result.version) == (
        ("hate",),
        0.8,
        "text-moderation-007",
    )


async def test_the_version_falls_back_to_the_configured_model() -> None:
    answer = JSONResponse({"results": [{"flagged": False, "categories": {}}]})
    async with moderating(Upstream(answer)) as classifier:
        result = await classifier.classify("text")
    assert result.version == "omni-moderation-latest"


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(Response(status_code=429, headers={"Retry-After": "0"}), id="429"),
        pytest.param(Response(status_code=500), id="500"),
        pytest.param(Response(status_code=502), id="502"),
        pytest.param(Response(status_code=503), id="503"),
        pytest.param(Response(status_code=504), id="504"),
        pytest.param(Response(status_code=529), id="529"),
    ],
)
async def test_a_passing_failure_is_retried_until_it_succeeds(failure: Response) -> None:
    upstream = Upstream(failure, failure, moderation({"sexual": 0.9}))
    async with moderating(upstream, retries=2) as classifier:
        result = await classifier.classify("text")
    assert (result.categories, len(upstream.received)) == (("sexual_content",), 3)


async def test_a_server_failing_every_time_is_an_error_after_every_attempt() -> None:
    upstream = Upstream(Response(status_code=500))
    with serve(upstream.app()) as url:
        async with OpenAIModerationClassifier(f"{url}/v1", retries=2, backoff=0.001) as classifier:
            with pytest.raises(ClassifierError) as raised:
                await classifier.classify("text")
    assert str(raised.value) == (
        f"HTTP 500 Internal Server Error from POST {url}/v1/moderations after 3 attempts"
    )
    assert len(upstream.received) == 3


async def test_a_refusal_is_an_error_at_once() -> None:
    upstream = Upstream(JSONResponse({"error": {"message": "Incorrect API key"}}, 401))
    async with moderating(upstream, retries=2) as classifier:
        with pytest.raises(ClassifierError, match=r"^HTTP 401 Unauthorized from POST .*$"):
            await classifier.classify("text")
    assert len(upstream.received) == 1


async def test_malformed_json_is_an_error() -> None:
    upstream = Upstream(Response(b"<html>Bad gateway</html>", media_type="application/json"))
    async with moderating(upstream) as classifier:
        with pytest.raises(
            ClassifierError, match=r"^invalid moderation response: JSON is malformed"
        ):
            await classifier.classify("text")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param({"error": "nope"}, "Object missing required field `results`", id="no-results"),
        pytest.param({"results": []}, "expected 1 result, got 0", id="empty-results"),
        pytest.param(
            {"results": [{"categories": {"hate": "yes"}}]},
            r"Expected `bool \| null`, got `str` - at `\$.results\[0\].categories\[...\]`",
            id="not-a-bool",
        ),
    ],
)
async def test_a_response_of_the_wrong_shape_is_an_error(body: Any, message: str) -> None:
    async with moderating(Upstream(JSONResponse(body))) as classifier:
        with pytest.raises(ClassifierError, match=f"^invalid moderation response: {message}"):
            await classifier.classify("text")


async def test_a_hung_server_times_out_to_tier_unknown_without_asking_again() -> None:
    upstream = Upstream(HANG)
    async with moderating(upstream, wait=0.2, retries=2) as classifier:
        result = await GuardedClassifier(classifier, timeout=5.0).classify("text")
    assert (result.tier, result.classifier) == ("unknown", "openai-moderation")
    assert result.error is not None
    assert result.error.startswith("ReadTimeout on POST http://127.0.0.1:")
    assert len(upstream.received) == 1


async def test_an_unreachable_server_is_tier_unknown_through_the_guard() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago, and is closed now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with OpenAIModerationClassifier(
        f"http://127.0.0.1:{port}/v1", retries=1, backoff=0.001
    ) as classifier:
        result = await GuardedClassifier(classifier).classify("text")
    assert result.tier == "unknown"
    assert result.error == (
        f"ConnectError on POST http://127.0.0.1:{port}/v1/moderations: "
        "All connection attempts failed"
    )
