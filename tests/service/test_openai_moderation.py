"""How `OpenAIModerationClassifier` reads OpenAI's categories, from a fake moderation endpoint;
the rest is the classifier contract."""

from __future__ import annotations

import logging

import pytest
from starlette.responses import JSONResponse

from service.taxonomy import tier_of
from tests.fake_classifiers import OPENAI_MODERATION, classify, moderation
from tests.fake_upstream import FakeUpstream, fake_fixture

pytestmark = pytest.mark.anyio


fake = fake_fixture(OPENAI_MODERATION.path)


@pytest.mark.parametrize(
    ("openai_category", "category"),
    [
        ("self-harm", "suicide_self_harm"),
        ("self-harm/intent", "suicide_self_harm"),
        ("self-harm/instructions", "suicide_self_harm"),
        ("sexual/minors", "child_sexual_exploitation"),
        ("sexual", "sexual_content"),
        ("hate", "hate"),
        ("harassment", "hate"),
        ("hate/threatening", "harm_to_others"),
        ("harassment/threatening", "harm_to_others"),
        ("violence", "violent_crimes"),
        ("violence/graphic", "violent_crimes"),
        ("illicit", "non_violent_crimes"),
        ("illicit/violent", "violent_crimes"),
    ],
)
async def test_a_flagged_openai_category_is_read_as_its_coda_category(
    fake: FakeUpstream, openai_category: str, category: str
) -> None:
    result = await classify(OPENAI_MODERATION, fake, moderation({openai_category: 0.91}))

    assert (result.tier, result.categories, result.score) == (
        tier_of([category]),
        (category,),
        0.91,
    )


async def test_openai_categories_naming_the_same_category_list_it_once(
    fake: FakeUpstream,
) -> None:
    answer = moderation({"hate": 0.5, "harassment": 0.6})

    result = await classify(OPENAI_MODERATION, fake, answer)

    assert result.categories == ("hate",)


async def test_the_score_is_the_highest_among_flagged_categories_only(fake: FakeUpstream) -> None:
    answer = moderation({"sexual": 0.7, "hate": 0.55}, scores={"violence": 0.69, "illicit": 0.99})

    result = await classify(OPENAI_MODERATION, fake, answer)

    assert result.score == 0.7


async def test_an_unknown_openai_category_is_ignored_and_logged(
    fake: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="service.openai_moderation")

    result = await classify(OPENAI_MODERATION, fake, moderation({"violence/extreme": 0.97}))

    assert (result.tier, result.categories, result.score) == ("benign", (), 0.0)
    assert "ignoring unknown moderation category 'violence/extreme'" in caplog.messages


async def test_null_categories_of_an_older_model_are_not_flagged(fake: FakeUpstream) -> None:
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

    result = await classify(OPENAI_MODERATION, fake, answer)

    assert (result.categories, result.score, result.version) == (
        ("hate",),
        0.8,
        "text-moderation-007",
    )


async def test_the_version_falls_back_to_the_configured_model(fake: FakeUpstream) -> None:
    answer = JSONResponse({"results": [{"flagged": False, "categories": {}}]})

    result = await classify(OPENAI_MODERATION, fake, answer)

    assert result.version == "omni-moderation-latest"


async def test_the_key_defaults_to_the_environment(
    fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    fake.script(moderation({}))

    async with OPENAI_MODERATION.classifier(fake.url, api_key=None) as classifier:
        await classifier.classify("hello there")

    assert fake.requests[0].headers["authorization"] == "Bearer sk-from-env"
