"""The rule classifier's speed on a realistic mix, and its precision and recall per tier.

    python bench/classify.py [--seconds S] [--rounds R]

Speed: messages/s of `RuleClassifier` on one core over a mix of everyday chat (80%) and the
labelled fixtures (20%: harmful messages and their look-alikes), against a baseline that puts
the same texts through `str.lower` and one compiled regex search (ratio = classifier /
baseline). The goal is absolute: >= 20,000 messages/s. The round with the median ratio is
printed.

Quality: for each labelled set, precision and recall per tier, one JSON line each.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from common import emit

from service.rules import RuleClassifier
from service.taxonomy import tier_of

FIXTURES = Path(__file__).parent.parent / "tests" / "service" / "fixtures"
SETS = ("classify", "classify_holdout", "classify_fresh", "classify_sealed")
TIERS = ("benign", "redirect", "terminable", "crisis")
EVERYDAY = [
    "hi! can you help me plan a weekend trip to lisbon?",
    "what's a good way to learn rust if i already know python",
    "explain how a hash map works",
    "write a haiku about autumn rain",
    "thanks, that worked perfectly",
    "can you make it shorter and more formal",
    "what's the capital of australia",
    "fix this sql query for me please: select * form users where id = 3",
    "how long should i boil an egg for a runny yolk",
    "summarise this article in three bullet points",
    "what does the error 'undefined is not a function' mean",
    "give me a recipe for a vegan lasagna",
    "translate 'good morning, how are you' into spanish",
    "how do i center a div in css",
    "what are some good books about the roman empire",
    "help me write a cover letter for a junior data analyst job",
    "why is the sky blue",
    "can you suggest names for a golden retriever puppy",
    "how many calories are in a banana",
    "what's the difference between a list and a tuple in python",
]
BASELINE = re.compile(r"\b(kill|bomb|suicide|hate|attack|nude|stupid|weapon)\b")


def mix(size: int, seed: int = 7) -> list[str]:
    labelled = [row["text"] for name in SETS for row in _load(name)]
    rng = random.Random(seed)
    return [
        rng.choice(EVERYDAY) if rng.random() < 0.8 else rng.choice(labelled) for _ in range(size)
    ]


def rate(work: Callable[[str], object], texts: list[str], seconds: float) -> float:
    done = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for text in texts:
            work(text)
        done += len(texts)
    return done / (time.perf_counter() - start)


def baseline(text: str) -> object:
    return BASELINE.search(text.lower())


def quality() -> None:
    classifier = RuleClassifier()
    for name in SETS:
        rows = _load(name)
        if not rows:
            continue
        counts = Counter(
            (r["tier"], tier_of(classifier.classify_text(r["text"]).categories)) for r in rows
        )
        for tier in TIERS:
            found = counts[(tier, tier)]
            predicted = sum(n for (_, got), n in counts.items() if got == tier)
            actual = sum(n for (want, _), n in counts.items() if want == tier)
            emit(
                bench="classify-quality",
                case=f"{name}:{tier}",
                precision=round(found / predicted, 3) if predicted else None,
                recall=round(found / actual, 3) if actual else None,
                support=actual,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    texts = mix(2000)
    classifier = RuleClassifier()
    rounds = []
    for _ in range(args.rounds):
        base = rate(baseline, texts, args.seconds)
        value = rate(classifier.classify_text, texts, args.seconds)
        rounds.append((value / base, value, base))
    ratio, value, base = sorted(rounds)[len(rounds) // 2]
    emit(
        bench="classify",
        case="realistic mix, one core",
        value=round(value),
        baseline=round(base),
        unit="messages/s",
        ratio=round(ratio, 3),
        goal="value >= 20000",
        spread=round(statistics.pstdev(r[0] for r in rounds), 3),
    )
    quality()


def _load(name: str) -> list[dict[str, str]]:
    path = FIXTURES / f"{name}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


if __name__ == "__main__":
    main()
