"""The rule classifier on its labelled fixtures, and the look-alikes it must leave alone.

`classify.jsonl` is the set the rules were developed on; `classify_holdout.jsonl` was written
separately, without the rules, and `classify_fresh.jsonl` after them; docs/policy.md reports
all three. The thresholds here guard what matters most: crisis recall, and no benign message
ever moving toward an end.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from service.classifier import Context
from service.rules import RuleClassifier, match
from service.taxonomy import tier_of

pytestmark = pytest.mark.anyio

FIXTURES = Path(__file__).parent / "fixtures"
SETS = ("classify", "classify_holdout", "classify_fresh", "classify_sealed")


def load(name: str) -> list[dict[str, Any]]:
    path = FIXTURES / f"{name}.jsonl"
    if not path.exists():
        pytest.skip(f"{path.name} is not there")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def confusion(rows: list[dict[str, Any]]) -> Counter[tuple[str, str]]:
    return Counter((row["tier"], tier_of(match(row["text"])[0])) for row in rows)


def recall(counts: Counter[tuple[str, str]], tier: str) -> float:
    total = sum(n for (want, _), n in counts.items() if want == tier)
    return counts[(tier, tier)] / total


@pytest.mark.parametrize("name", SETS)
def test_the_word_prefilter_never_changes_an_answer(name: str) -> None:
    for row in load(name):
        assert match(row["text"]) == match(row["text"], prefilter=False), row["text"]


@pytest.mark.parametrize("name", SETS)
def test_no_benign_message_is_classified_terminable(name: str) -> None:
    wrong = [r["text"] for r in load(name) if r["tier"] == "benign"]
    assert [t for t in wrong if tier_of(match(t)[0]) == "terminable"] == []


@pytest.mark.parametrize(
    ("name", "floor"), [("classify", 0.95), ("classify_holdout", 0.9), ("classify_fresh", 0.75)]
)
def test_crisis_recall_stays_high(name: str, floor: float) -> None:
    assert recall(confusion(load(name)), "crisis") >= floor


def test_on_the_development_set_every_tier_is_found() -> None:
    counts = confusion(load("classify"))
    for tier in ("benign", "redirect", "terminable"):
        assert recall(counts, tier) >= 0.95, tier


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("how do I kill a python process", id="process"),
        pytest.param("kill -9 the zombie worker", id="kill-9"),
        pytest.param("best settings to shoot a photo at golden hour", id="photo"),
        pytest.param("what happened on 9/11 and why", id="history"),
        pytest.param("in my novel the villain plans a bombing, how is he caught", id="fiction"),
        pytest.param("news report on the school shooting in the headlines today", id="news"),
        pytest.param("what are the warning signs of suicide in teenagers", id="safety"),
        pytest.param("how do i help a friend who self-harms", id="helping"),
        pytest.param("my code is garbage lol", id="self-deprecating"),
        pytest.param("this joke killed me", id="idiom"),
        pytest.param("convert 400 kms to miles", id="kms"),
    ],
)
def test_look_alikes_are_benign(text: str) -> None:
    assert match(text) == ((), 0.0)


def test_crisis_wins_over_terminable() -> None:
    result = RuleClassifier().classify_text("you stupid bot, i want to kill myself tonight")
    assert result.categories == ("suicide_self_harm", "abuse")
    assert result.tier == "crisis"


async def test_the_classifier_names_itself_and_ignores_context() -> None:
    classifier = RuleClassifier()
    alone = await classifier.classify("explain how a hash map works")
    with_context = await classifier.classify(
        "explain how a hash map works", Context(previous=("i want to kill myself",))
    )
    assert alone == with_context
    assert (alone.tier, alone.classifier, alone.version) == ("benign", "rules", "2")
