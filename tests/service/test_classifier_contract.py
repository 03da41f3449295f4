"""The `Classifier` contract, run against every HTTP adapter and its fake API on a real uvicorn.

Each adapter comes with a dialect (`tests.fake_classifiers`) that answers in the API's own wire
format; how one API's answer is read is tested in that adapter's module.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from starlette.responses import JSONResponse, Response

from service.classifier import ClassifierError, GuardedClassifier
from tests.fake_classifiers import (
    LLAMA_GUARD,
    OPENAI_MODERATION,
    ClassifierAdapter,
    ClassifierDialect,
)
from tests.fake_upstream import HANG, FakeUpstream, closed_port, contract_fixtures

pytestmark = pytest.mark.anyio


dialect, fake = contract_fixtures(LLAMA_GUARD, OPENAI_MODERATION)


@pytest.fixture
async def classifier(
    dialect: ClassifierDialect, fake: FakeUpstream
) -> AsyncIterator[ClassifierAdapter]:
    async with dialect.classifier(fake.url) as classifier:
        yield classifier


async def test_a_benign_message_is_benign_and_versioned_by_the_model(
    dialect: ClassifierDialect, fake: FakeUpstream, classifier: ClassifierAdapter
) -> None:
    fake.script(dialect.flagging())

    result = await classifier.classify("hello there")

    assert (result.tier, result.categories, result.score) == ("benign", (), 0.0)
    assert (result.classifier, result.version) == (dialect.name, dialect.version)


async def test_several_categories_take_the_strongest_tier_and_crisis_wins(
    dialect: ClassifierDialect, fake: FakeUpstream, classifier: ClassifierAdapter
) -> None:
    fake.script(
        dialect.flagging("suicide_self_harm", "child_sexual_exploitation", "violent_crimes")
    )

    result = await classifier.classify("text")

    assert result.tier == "crisis"
    assert result.categories == ("violent_crimes", "child_sexual_exploitation", "suicide_self_harm")


async def test_the_request_carries_the_bearer_key_and_asks_about_the_text(
    dialect: ClassifierDialect, fake: FakeUpstream
) -> None:
    fake.script(dialect.flagging())

    async with dialect.classifier(fake.url, api_key="sk-secret") as classifier:
        await classifier.classify("hello there")

    [received] = fake.requests
    assert received.headers["authorization"] == "Bearer sk-secret"
    assert received.headers["content-type"] == "application/json"
    assert received.body == dialect.body("hello there")


async def test_without_any_key_no_authorization_is_sent(
    dialect: ClassifierDialect, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in dialect.key_variables:
        monkeypatch.delenv(variable, raising=False)
    fake.script(dialect.flagging())

    async with dialect.classifier(fake.url, api_key=None) as classifier:
        await classifier.classify("hello there")

    assert "authorization" not in fake.requests[0].headers


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
async def test_a_passing_failure_is_retried_until_it_succeeds(
    dialect: ClassifierDialect,
    fake: FakeUpstream,
    classifier: ClassifierAdapter,
    failure: Response,
) -> None:
    fake.script(failure, failure, dialect.flagging("hate"))

    result = await classifier.classify("text")

    assert (result.categories, len(fake.requests)) == (("hate",), 3)


async def test_a_server_failing_every_time_is_an_error_after_every_attempt(
    dialect: ClassifierDialect, fake: FakeUpstream
) -> None:
    fake.script(Response(status_code=500))

    async with dialect.classifier(fake.url, retries=3) as classifier:
        with pytest.raises(ClassifierError) as raised:
            await classifier.classify("text")

    assert str(raised.value) == (
        f"HTTP 500 Internal Server Error from POST {fake.url}{dialect.path} after 4 attempts"
    )
    assert len(fake.requests) == 4


async def test_a_refusal_is_an_error_at_once(
    dialect: ClassifierDialect, fake: FakeUpstream, classifier: ClassifierAdapter
) -> None:
    fake.script(JSONResponse({"error": {"message": "Incorrect API key"}}, 401))

    with pytest.raises(ClassifierError) as raised:
        await classifier.classify("text")

    assert str(raised.value) == f"HTTP 401 Unauthorized from POST {fake.url}{dialect.path}"
    assert len(fake.requests) == 1


async def test_malformed_json_is_an_error(
    dialect: ClassifierDialect, fake: FakeUpstream, classifier: ClassifierAdapter
) -> None:
    fake.script(Response(b"<html>Bad gateway</html>", media_type="application/json"))

    with pytest.raises(ClassifierError) as raised:
        await classifier.classify("text")

    assert str(raised.value) == f"{dialect.invalid}: JSON is malformed: invalid character (byte 0)"


async def test_answers_of_the_wrong_shape_are_errors_that_say_what_is_wrong(
    dialect: ClassifierDialect, fake: FakeUpstream, classifier: ClassifierAdapter
) -> None:
    for case, body, words in dialect.wrong_shapes:  # the shapes are the API's own
        fake.script(JSONResponse(body))

        with pytest.raises(ClassifierError) as raised:
            await classifier.classify("text")

        assert (case, str(raised.value)) == (case, f"{dialect.invalid}: {words}")


async def test_a_hung_server_times_out_to_tier_unknown_without_asking_again(
    dialect: ClassifierDialect, fake: FakeUpstream
) -> None:
    fake.script(HANG)

    async with dialect.classifier(fake.url, timeout=0.2, retries=2) as classifier:
        result = await GuardedClassifier(classifier, timeout=5.0).classify("text")

    assert (result.tier, result.classifier) == ("unknown", dialect.name)
    assert result.error == f"ReadTimeout on POST {fake.url}{dialect.path}"
    assert len(fake.requests) == 1


async def test_the_guard_timeout_bounds_a_slow_classifier(
    dialect: ClassifierDialect, fake: FakeUpstream, classifier: ClassifierAdapter
) -> None:
    fake.script(HANG)

    result = await GuardedClassifier(classifier, timeout=0.2).classify("text")

    assert (result.tier, result.error) == ("unknown", "timed out after 0.2s")


async def test_an_unreachable_server_is_tier_unknown_through_the_guard(
    dialect: ClassifierDialect,
) -> None:
    url = f"http://127.0.0.1:{closed_port()}"

    async with dialect.classifier(url, retries=1) as classifier:
        result = await GuardedClassifier(classifier).classify("text")

    assert (result.tier, result.classifier) == ("unknown", dialect.name)
    assert result.error == (
        f"ConnectError on POST {url}{dialect.path}: All connection attempts failed"
    )
