"""Properties of the fold over generated histories that the store accepted.

Histories are driven through a real append script (on fakeredis, for speed: the store itself is
tested on every backend by its own suite), so every history here is one the store allows.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from typing import Literal

import fakeredis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from events.errors import EventStoreError
from events.keys import Keyspace
from events.schema import Actor, AnyEvent, MessageClassified, Tier
from events.store import RedisEventStore
from projections.branches import active_tip, path, tips
from projections.policy import Policy, may_end
from projections.snapshot import dump, load
from projections.state import Message, ThreadState, apply, fold
from projections.views import day_of, increments, tally
from tests.conftest import SEAL_KEY
from tests.factories import (
    ended,
    failed,
    feedback,
    forked,
    posted,
    redirected,
    replied,
    reply_started,
    started,
    warned,
)

T = "prop"
Op = Literal[
    "say",
    "answer",
    "redirect",
    "warn",
    "start",
    "finish",
    "fail",
    "end",
    "end_thread",
    "edit",
    "retry",
    "feedback",
    "reclassify",
    "classify_early",
    "confirm",
]
OPS: tuple[Op, ...] = (
    "say",
    "say",
    "answer",
    "redirect",
    "redirect",
    "warn",
    "start",
    "finish",
    "fail",
    "end",
    "end",
    "end_thread",
    "edit",
    "retry",
    "feedback",
    "reclassify",
    "classify_early",
    "confirm",
)
# Weighted towards harm, so that ladders complete and ends happen often enough to be tested.
TIERS: tuple[Tier, ...] = ("terminable",) * 5 + ("benign", "benign", "redirect", "crisis")
ACTORS: tuple[Actor, ...] = ("model", "user", "moderator")

steps = st.lists(
    st.tuples(
        st.sampled_from(OPS), st.sampled_from(TIERS), st.sampled_from(ACTORS), st.integers(0, 99)
    ),
    min_size=1,
    max_size=60,
)


class Driver:
    """Turns generated steps into batches against the current state, and appends them."""

    def __init__(self, store: RedisEventStore) -> None:
        self.store = store
        self.events: list[AnyEvent] = [started(T)]
        self.counter = 0

    @property
    def state(self) -> ThreadState:
        return fold(self.events)

    async def start(self) -> None:
        await self.store.append(T, self.events, 0)

    async def step(self, op: Op, tier: Tier, actor: Actor, pick: int) -> None:
        batch = self._batch(op, tier, actor, pick)
        if not batch:
            return
        try:
            await self.store.append(T, batch, len(self.events))
        except EventStoreError:
            return  # a refused batch writes nothing, and the history goes on without it
        self.events += batch

    def _new(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def _batch(self, op: Op, tier: Tier, actor: Actor, pick: int) -> list[AnyEvent]:
        state = self.state
        tip = active_tip(state)
        at = state.messages.get(tip) if tip else None
        by_age = sorted(state.messages.values(), key=lambda m: m.version)
        users = [m.id for m in by_age if m.role == "user"]
        if op in ("end", "end_thread") and tip is not None:
            # Ends are attempted whatever the policy says: the store takes them, and the
            # properties below judge them against a reference of the rules.
            scope = "thread" if op == "end_thread" else "branch"
            return [replace(ended(T, tip, scope), actor=actor)]  # type: ignore[arg-type]
        if op == "edit" and users:
            edited = state.messages[users[pick % len(users)]]
            new = self._new("m")
            return [
                forked(T, edited.id, edited.parent_id, new),
                posted(T, new, edited.parent_id),
                _classified(new, tier),
            ]
        if op == "retry" and users:
            return [replied(T, self._new("r"), users[pick % len(users)])]
        if op == "feedback":
            return [feedback(T, tip)]
        if op == "reclassify" and users:
            return [_classified(users[pick % len(users)], tier)]
        if op == "classify_early":
            return [_classified(f"m{self.counter + 1}", tier)]  # the next message posted
        # Anything else is the next turn on the active branch, whatever it is.
        if at is None or (at.role == "assistant" and at.kind != "pending"):
            message = self._new("m")
            return [posted(T, message, tip), _classified(message, tier)]
        if at.kind == "pending":
            if op == "fail":
                return [failed(T, at.id, at.parent_id or "")]
            return [replied(T, at.id, at.parent_id or "")]
        reply = self._new("r")
        match op:
            case "redirect":
                return [redirected(T, reply, at.id)]
            case "warn":
                return [warned(T, reply, at.id)]
            case "start":
                return [reply_started(T, reply, at.id)]
            case "confirm":
                return [replace(replied(T, reply, at.id), kind="end_confirmation")]
            case _:
                return [replied(T, reply, at.id)]


def _classified(message: str, tier: Tier) -> MessageClassified:
    return MessageClassified(
        thread_id=T,
        actor="classifier",
        message_id=message,
        classifier="rules",
        classifier_version="1",
        tier=tier,
    )


def drive(history: list[tuple[Op, Tier, Actor, int]]) -> list[AnyEvent]:
    """Run the steps against a fresh store; the events it accepted, in order."""

    async def run() -> list[AnyEvent]:
        client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
        try:
            driver = Driver(RedisEventStore(client, Keyspace(prefix="prop"), SEAL_KEY))
            await driver.start()
            for op, tier, actor, pick in history:
                await driver.step(op, tier, actor, pick)
            stored = [e.event for e in await driver.store.read(T, limit=10_000)]
            assert stored == driver.events
            # What the store's meta says of the ends is what the fold says.
            head, state = await driver.store.head(T), fold(stored)
            assert head.ended == {leaf: end.version for leaf, end in state.ends.items()}
            assert head.thread_end == (state.thread_end.version if state.thread_end else None)
            assert head.version == state.version
            return stored
        finally:
            await client.aclose()

    return asyncio.run(run())


PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(steps)
def test_nothing_ever_hangs_below_an_ended_tip(history: list[tuple[Op, Tier, Actor, int]]) -> None:
    state = fold(drive(history))
    for leaf, end in state.ends.items():
        if end.scope == "branch":
            assert state.messages[leaf].children == ()
            assert leaf in tips(state)
    if state.thread_end is not None:
        assert all(m.version < state.thread_end.version for m in state.messages.values())


def reference(path: tuple[Message, ...], policy: Policy, actor: Actor) -> bool:
    """The end rules of docs/projections.md, written out as plainly as possible."""

    def tier(message: Message) -> str | None:
        tiers = [c.tier for c in message.classifications if c.tier != "unknown" and not c.error]
        return "crisis" if "crisis" in tiers else (tiers[-1] if tiers else None)

    if actor == "moderator":
        return True
    if any(tier(m) == "crisis" for m in path):
        return False
    if actor == "user":
        asked = False
        for m in path:
            if m.kind == "end_confirmation":
                asked = True
            elif asked and m.role == "user":
                return True
        return False
    redirects, warned, persisting = 0, not policy.warning_required, False
    parents = {m.id: m for m in path}
    for m in path:
        enough = redirects >= policy.redirects_before_warning
        if m.kind == "redirect" and tier(parents[m.parent_id or ""]) == "terminable":
            redirects += 1
        elif m.kind == "warning" and enough:
            warned = True
        elif m.role == "user":  # the latest user turn decides: harmful, after the warning
            persisting = tier(m) == "terminable" and enough and warned
    return persisting


LADDER_THEN_END: list[tuple[Op, Tier, Actor, int]] = [
    ("say", "terminable", "model", 0),
    ("redirect", "benign", "model", 0),
    ("say", "terminable", "model", 0),
    ("redirect", "benign", "model", 0),
    ("say", "terminable", "model", 0),
    ("warn", "benign", "model", 0),
    ("say", "terminable", "model", 0),
    ("end", "benign", "model", 0),
]


@PROPERTY
@given(steps)
@example(LADDER_THEN_END)  # allowed
@example(LADDER_THEN_END[:5] + LADDER_THEN_END[6:])  # no warning: refused
@example([*LADDER_THEN_END[:6], ("end", "benign", "model", 0)])  # no harm after the warning
# m5, whose reply was the warning, flagged as a crisis afterwards: refused
@example([*LADDER_THEN_END[:6], ("reclassify", "crisis", "model", 2), *LADDER_THEN_END[6:]])
def test_may_end_agrees_with_a_plain_reading_of_the_rules(
    history: list[tuple[Op, Tier, Actor, int]],
) -> None:
    events = drive(history)
    final = fold(events)
    policy = Policy.from_ref(final.started.policy) if final.started else Policy()
    for end in (*final.ends.values(), *([final.thread_end] if final.thread_end else [])):
        before = fold(events[: end.version - 1])
        branch = path(before, end.leaf_id)
        verdict = may_end(branch, policy, end.actor)  # type: ignore[arg-type]
        assert verdict.allowed == reference(branch, policy, end.actor), verdict.reason  # type: ignore[arg-type]


@PROPERTY
@given(steps, st.integers(0, 100))
def test_a_snapshot_taken_anywhere_resumes_the_same_fold(
    history: list[tuple[Op, Tier, Actor, int]], split: int
) -> None:
    events = drive(history)
    k = split % (len(events) + 1)
    restored = load(dump(fold(events[:k]), b"\x00" * 32))
    assert restored is not None
    assert fold(events[k:], restored[0]) == fold(events)


@PROPERTY
@given(steps, st.integers(0, 100))
def test_a_tally_counts_what_the_events_count_one_by_one(
    history: list[tuple[Op, Tier, Actor, int]], split: int
) -> None:
    events = drive(history)
    k = split % (len(events) + 1)
    before = fold(events[:k])
    state, one_by_one = before, defaultdict(Counter)
    for event in events[k:]:
        one_by_one[day_of(event)] += increments(state, event)  # += keeps what is positive
        state = apply(state, event)

    after, by_day = tally(before, events[k:])

    assert after == state
    # Compared as plain dicts: a Counter compares a zero equal to a missing field.
    assert {d: dict(c) for d, c in by_day.items()} == {
        d: dict(c) for d, c in one_by_one.items() if c
    }


def test_the_generator_reaches_ends_edits_and_pending_generations() -> None:
    """A property that never meets an end would prove nothing: this history must make one."""
    history: list[tuple[Op, Tier, Actor, int]] = [
        *LADDER_THEN_END,
        ("edit", "benign", "user", 1),
        ("start", "benign", "model", 0),
    ]
    state = fold(drive(history))
    assert len(state.ends) == 1
    assert any(m.edited_from for m in state.messages.values())
    assert state.messages[active_tip(state) or ""].kind == "pending"
