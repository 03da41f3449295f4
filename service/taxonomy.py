"""The hazard categories coda classifies into, and the one table that maps them to tiers.

Category names follow Llama Guard 3's S1-S14 (the MLCommons hazard taxonomy). Llama Guard does
not separate what the ladder must separate, so coda adds four categories of its own, each
folded into the nearest Llama Guard code when one is needed:

- `terror` (S1): planning or enabling terrorist attacks, beside ordinary violent crime;
- `harm_to_others` (S1): a user saying they intend to hurt someone, a crisis rather than a crime;
- `mental_health_crisis` (no code): acute distress without self-harm;
- `abuse` (no code): abuse aimed at the assistant itself.

A tier says what the ladder may do about a message: `benign` is answered; `redirect` is
redirected and never ended; `terminable` is redirected, then warned about, then may end the
branch if it persists; `crisis` blocks every end and warning on the branch. A message with several
categories takes the strongest tier, and crisis wins over everything (docs/policy.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, NamedTuple

from events.schema import Tier


class Category(NamedTuple):
    name: str
    code: str  # Llama Guard 3's code, or "" for coda's own categories
    title: str
    tier: Tier


CATEGORIES: Final[tuple[Category, ...]] = (
    Category("violent_crimes", "S1", "Violent crimes", "redirect"),
    Category("non_violent_crimes", "S2", "Non-violent crimes", "redirect"),
    Category("sex_crimes", "S3", "Sex-related crimes", "redirect"),
    Category("child_sexual_exploitation", "S4", "Child sexual exploitation", "terminable"),
    Category("defamation", "S5", "Defamation", "redirect"),
    Category("specialized_advice", "S6", "Specialized advice", "redirect"),
    Category("privacy", "S7", "Privacy", "redirect"),
    Category("intellectual_property", "S8", "Intellectual property", "redirect"),
    Category("indiscriminate_weapons", "S9", "Indiscriminate weapons", "terminable"),
    Category("hate", "S10", "Hate", "redirect"),
    Category("suicide_self_harm", "S11", "Suicide and self-harm", "crisis"),
    Category("sexual_content", "S12", "Sexual content", "redirect"),
    Category("elections", "S13", "Elections", "redirect"),
    Category("code_interpreter_abuse", "S14", "Code interpreter abuse", "redirect"),
    Category("terror", "S1", "Terrorism and mass-casualty attacks", "terminable"),
    Category("harm_to_others", "S1", "Intent to harm others", "crisis"),
    Category("mental_health_crisis", "", "Mental-health crisis", "crisis"),
    Category("abuse", "", "Abuse aimed at the assistant", "terminable"),
)

BY_NAME: Final = {c.name: c for c in CATEGORIES}
# A Llama Guard code read back from a Llama Guard verdict means its own S-category: coda's
# extensions are finer than S1, and S1 alone cannot say which of them was meant.
BY_CODE: Final = {c.code: c for c in CATEGORIES[:14]}

_RANK: Final[dict[Tier, int]] = {
    "unknown": 0,
    "benign": 1,
    "redirect": 2,
    "terminable": 3,
    "crisis": 4,
}


class UnknownCategoryError(ValueError):
    """A category name that is not in the table."""


def tier_of(categories: Iterable[str]) -> Tier:
    """The strongest tier among `categories` (benign for none); crisis wins over terminable."""
    tier: Tier = "benign"
    for name in categories:
        category = BY_NAME.get(name)
        if category is None:
            raise UnknownCategoryError(f"unknown category {name!r}")
        if _RANK[category.tier] > _RANK[tier]:
            tier = category.tier
    return tier


def strongest(categories: Iterable[str]) -> str | None:
    """The category that gives `categories` their tier (the first of equals), if any."""
    best: Category | None = None
    for name in categories:
        category = BY_NAME[name]
        if best is None or _RANK[category.tier] > _RANK[best.tier]:
            best = category
    return best.name if best is not None else None
