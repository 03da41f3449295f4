"""The embedded classifier: hand-written rules, no dependencies, tens of thousands of messages/s.

A rule (in `service.rulebook`) names a category, word stems one of which must appear for it to
be tried, patterns that must all match, and the safe contexts in which they mean no harm
("kill a python process", "the history of the 9/11 attacks", "how do I help a friend who
self-harms"). A set lookup of the message's word stems turns most messages away before any
pattern runs.

It is tuned for recall on crisis (a false crisis flag only blocks an end, the safe direction)
and for precision on everything that moves toward an end. It ignores the context: every
message is judged on its own words. docs/policy.md reports its precision and recall per tier.
"""

from __future__ import annotations

import re
from typing import Final

from service.classifier import NO_CONTEXT, Classification, Context
from service.rulebook import ENDABLE, OPERATIONAL, RULES, Rule
from service.taxonomy import CATEGORIES, tier_of

NAME: Final = "rules"
VERSION: Final = "2"

_WORDS: Final = re.compile(r"[a-z0-9]+")
_STEMS: Final = frozenset().union(*(rule.triggers for rule in RULES))
_HEAD: Final = 3
# Stems by their first three letters (a word shorter than that must equal its stem): one dict
# lookup per word finds the few stems it may start with.


def _by_head(stems: frozenset[str]) -> dict[str, tuple[str, ...]]:
    heads: dict[str, tuple[str, ...]] = {}
    for stem in sorted(stems):
        heads[stem[:_HEAD]] = (*heads.get(stem[:_HEAD], ()), stem)
    return heads


_BY_HEAD: Final = _by_head(_STEMS)
_ORDER: Final = {category.name: i for i, category in enumerate(CATEGORIES)}
_OPERATIONAL_RE: Final = re.compile(OPERATIONAL)


class RuleClassifier:
    name = NAME
    version = VERSION

    async def classify(self, text: str, context: Context = NO_CONTEXT) -> Classification:
        return self.classify_text(text)

    async def aclose(self) -> None:
        """Nothing to release."""

    def classify_text(self, text: str) -> Classification:
        """The same answer as `classify`, without the event loop (the CLI, benchmarks)."""
        categories, score = match(text)
        return Classification(
            tier=tier_of(categories),
            categories=categories,
            score=score,
            classifier=NAME,
            version=VERSION,
        )


def match(text: str, *, prefilter: bool = True) -> tuple[tuple[str, ...], float]:
    """The categories the rules find in `text`, in taxonomy order, and the highest score.

    `prefilter=False` tries every rule (the tests check that the stems never change the answer).
    """
    lower = normalise(text)
    stems = _stems(lower) if prefilter else _STEMS
    if not stems:
        return (), 0.0
    found: dict[str, float] = {}
    operational: bool | None = None
    for rule in RULES:
        if rule.triggers.isdisjoint(stems) or not _fires(rule, lower):
            continue
        if rule.unless is not None and rule.unless.search(lower):
            if rule.category not in ENDABLE:
                continue
            if operational is None:  # asking for operations undoes a safe context
                operational = _OPERATIONAL_RE.search(lower) is not None
            if not operational:
                continue
        found[rule.category] = max(found.get(rule.category, 0.0), rule.score)
    if not found:
        return (), 0.0
    return tuple(sorted(found, key=_ORDER.__getitem__)), max(found.values())


def normalise(text: str) -> str:
    """Lower case, straight apostrophes, and "dont" / "im" spelled as users type them."""
    return text.lower().replace("\u2019", "'")


def _stems(lower: str) -> set[str]:
    found: set[str] = set()
    for word in _WORDS.findall(lower):
        candidates = _BY_HEAD.get(word[:_HEAD])
        if candidates:
            found.update(stem for stem in candidates if word.startswith(stem))
    return found


def _fires(rule: Rule, lower: str) -> bool:
    return all(pattern.search(lower) for pattern in rule.patterns)
