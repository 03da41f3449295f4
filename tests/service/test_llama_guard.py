"""How `LlamaGuardClassifier` reads a verdict, from a fake chat endpoint as vLLM serves it; the
rest is the classifier contract."""

from __future__ import annotations

from typing import Final

import pytest

from service.classifier import ClassifierError
from service.taxonomy import tier_of
from tests.fake_classifiers import LLAMA_GUARD, classify, verdict
from tests.fake_upstream import FakeUpstream, fake_fixture

pytestmark = pytest.mark.anyio


# Llama Guard 3's codes, as its model card names them, in coda's names
CODES: Final = {
    "S1": "violent_crimes",
    "S2": "non_violent_crimes",
    "S3": "sex_crimes",
    "S4": "child_sexual_exploitation",
    "S5": "defamation",
    "S6": "specialized_advice",
    "S7": "privacy",
    "S8": "intellectual_property",
    "S9": "indiscriminate_weapons",
    "S10": "hate",
    "S11": "suicide_self_harm",
    "S12": "sexual_content",
    "S13": "elections",
    "S14": "code_interpreter_abuse",
}

# one verdict, spaced as servers and model versions space it
SPACINGS: Final = {
    "plain": "unsafe\nS9,S4",
    "padded": "\n\nunsafe\nS9, S4\n",
    "spaced-and-repeated": "unsafe\nS9 ,S4,S9",
    "one-line": "unsafe S9,S4",
}

fake = fake_fixture(LLAMA_GUARD.path)


@pytest.mark.parametrize(("code", "category"), CODES.items(), ids=CODES)
async def test_an_unsafe_code_is_read_as_its_category(
    fake: FakeUpstream, code: str, category: str
) -> None:
    result = await classify(LLAMA_GUARD, fake, verdict(f"\n\nunsafe\n{code}"))

    assert (result.tier, result.categories, result.score) == (
        tier_of([category]),
        (category,),
        1.0,
    )


@pytest.mark.parametrize("content", SPACINGS.values(), ids=SPACINGS)
async def test_a_verdict_is_read_whatever_its_spacing(fake: FakeUpstream, content: str) -> None:
    result = await classify(LLAMA_GUARD, fake, verdict(content))

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
async def test_a_verdict_that_cannot_be_trusted_is_an_error(
    fake: FakeUpstream, content: str, message: str
) -> None:
    with pytest.raises(ClassifierError) as raised:
        await classify(LLAMA_GUARD, fake, verdict(content))

    assert str(raised.value) == message


async def test_a_verdict_cut_short_is_an_error(fake: FakeUpstream) -> None:
    answer = verdict("unsafe\nS1,S2,S3,S4,S5,S6,S1", finish_reason="length")

    with pytest.raises(ClassifierError, match=r"^verdict cut short at 20 tokens: "):
        await classify(LLAMA_GUARD, fake, answer)
