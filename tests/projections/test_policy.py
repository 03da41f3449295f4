"""The end precondition over literal paths."""

from __future__ import annotations

import pytest
from msgspec.structs import replace

from events.schema import AnyEvent, MessageClassified, PolicyRef, Tier
from projections.branches import path
from projections.policy import Policy, PolicyError, Verdict, may_end
from projections.state import Message, fold
from tests.factories import posted, redirected, replied, started, warned

T = "t1"
LADDER = Policy()


def said(i: int, tier: Tier, reply: str = "answer") -> list[AnyEvent]:
    """User turn m{i} below r{i-1}, classified `tier`, and the reply r{i} of the given kind."""
    parent = f"r{i - 1}" if i > 1 else None
    turn: list[AnyEvent] = [
        posted(T, f"m{i}", parent),
        MessageClassified(
            thread_id=T,
            actor="classifier",
            message_id=f"m{i}",
            classifier="rules",
            classifier_version="1",
            tier=tier,
        ),
    ]
    m, r = f"m{i}", f"r{i}"
    if reply == "redirect":
        return [*turn, redirected(T, r, m)]
    if reply == "warning":
        return [*turn, warned(T, r, m)]
    if reply == "none":
        return turn
    return [*turn, replace(replied(T, r, m), kind=reply)]


def branch(*turns: list[AnyEvent]) -> tuple[Message, ...]:
    """The path to the newest message of the conversation made of `turns`."""
    state = fold([started(T), *(e for turn in turns for e in turn)])
    newest = max(state.messages.values(), key=lambda m: m.version)
    return path(state, newest.id)


FULL_LADDER = [
    said(1, "terminable", "redirect"),
    said(2, "terminable", "redirect"),
    said(3, "terminable", "warning"),
    said(4, "terminable", "none"),
]


def test_the_full_ladder_allows_the_model_to_end() -> None:
    verdict = may_end(branch(*FULL_LADDER), LADDER, "model")
    assert verdict == Verdict(
        allowed=True, reason="harmful turns persisted after redirection and a warning"
    )


def test_the_ladder_still_holds_once_the_farewell_is_written() -> None:
    ladder = [*FULL_LADDER[:3], said(4, "terminable", "farewell")]
    assert may_end(branch(*ladder), LADDER, "model").allowed


def harmful(i: int, reply: str) -> list[AnyEvent]:
    return said(i, "terminable", reply)


@pytest.mark.parametrize(
    ("turns", "reason"),
    [
        pytest.param(
            [harmful(1, "redirect"), harmful(2, "warning"), harmful(3, "none")],
            "1 of 2 redirections given",
            id="one-redirect-short",
        ),
        pytest.param(
            [harmful(1, "redirect"), harmful(2, "redirect"), harmful(3, "none")],
            "no warning was given after the redirections",
            id="no-warning",
        ),
        pytest.param(FULL_LADDER[:3], "no harmful turn followed the warning", id="nothing-after"),
        pytest.param(
            [*FULL_LADDER[:3], said(4, "benign", "none")],
            "no harmful turn followed the warning",
            id="benign-after",
        ),
        pytest.param(
            [*FULL_LADDER[:3], said(4, "terminable", "answer"), said(5, "benign", "none")],
            "the user's latest turn is not harmful",
            id="stopped-after-persisting",
        ),
        pytest.param(
            [
                said(1, "redirect", "redirect"),
                said(2, "redirect", "redirect"),
                harmful(3, "warning"),
                harmful(4, "none"),
            ],
            "0 of 2 redirections given",
            id="redirect-tier-redirects-do-not-count",
        ),
    ],
)
def test_the_model_may_not_end_before_the_ladder_is_complete(
    turns: list[list[AnyEvent]], reason: str
) -> None:
    assert may_end(branch(*turns), LADDER, "model") == Verdict(allowed=False, reason=reason)


@pytest.mark.parametrize("where", [0, 2, 3])
def test_a_crisis_anywhere_on_the_branch_forbids_an_end(where: int) -> None:
    turns = list(FULL_LADDER)
    turns[where] = said(where + 1, "crisis", ["redirect", "redirect", "warning", "none"][where])
    for actor in ("model", "policy", "user"):
        verdict = may_end(branch(*turns), LADDER, actor)  # type: ignore[arg-type]
        assert verdict == Verdict(
            allowed=False, reason="a message on this branch was flagged as a crisis"
        )


def test_a_user_who_confirmed_may_end() -> None:
    turns = [said(1, "benign", "end_confirmation"), said(2, "benign", "none")]
    assert may_end(branch(*turns), LADDER, "user").allowed


def test_a_user_who_was_not_asked_to_confirm_may_not_end_yet() -> None:
    verdict = may_end(branch(said(1, "benign", "none")), LADDER, "user")
    assert verdict == Verdict(allowed=False, reason="the user was not asked to confirm the end")
    asked = branch(said(1, "benign", "end_confirmation"))
    assert may_end(asked, LADDER, "user").reason == "the user has not answered the confirmation"


def test_a_user_who_ends_it_directly_may_end_unless_the_branch_had_a_crisis() -> None:
    assert may_end(branch(said(1, "terminable", "none")), LADDER, "user", direct=True).allowed
    assert not may_end((), LADDER, "user", direct=True).allowed
    crisis = may_end(branch(said(1, "crisis", "none")), LADDER, "user", direct=True)
    assert crisis == Verdict(
        allowed=False, reason="a message on this branch was flagged as a crisis"
    )
    # Only the user's own end may be direct: the model's is judged by the ladder.
    assert not may_end(branch(said(1, "benign", "none")), LADDER, "model", direct=True).allowed


def test_a_moderator_may_end_any_branch() -> None:
    assert may_end(branch(said(1, "crisis", "none")), LADDER, "moderator").allowed


def test_a_policy_without_a_required_warning_ends_after_the_redirections() -> None:
    policy = Policy(redirects_before_warning=2, warning_required=False)
    turns = [said(1, "terminable", "redirect"), said(2, "terminable", "redirect")]
    assert not may_end(branch(*turns), policy, "model").allowed
    assert may_end(branch(*turns, said(3, "terminable", "none")), policy, "model").allowed


def test_the_policy_comes_from_thread_started() -> None:
    ref = PolicyRef(name="ladder", version="3", params={"redirects_before_warning": 3})
    policy = Policy.from_ref(ref)
    assert policy == Policy(version="3", redirects_before_warning=3)
    assert Policy.from_ref(policy.ref()) == policy


@pytest.mark.parametrize(
    "params",
    [{"redirects_before_warnings": 3}, {"warning_required": "yes"}, {"end_scope": "all"}],
)
def test_a_policy_coda_cannot_apply_is_an_error(params: dict[str, object]) -> None:
    with pytest.raises(PolicyError, match="policy ladder 1"):
        Policy.from_ref(PolicyRef(name="ladder", version="1", params=params))  # type: ignore[arg-type]


def test_with_no_redirects_required_a_warning_then_harm_suffices_whatever_came_between() -> None:
    policy = Policy(redirects_before_warning=0)
    turns = [harmful(1, "warning"), harmful(2, "redirect"), harmful(3, "none")]
    assert may_end(branch(*turns), policy, "model").allowed


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        pytest.param(
            PolicyRef(name="zero-tolerance", version="7"),
            "coda knows only 'ladder'",
            id="unknown-name",
        ),
        pytest.param(
            PolicyRef(name="ladder", version="1", params={"version": "9"}),
            "name and version are not params",
            id="version-in-params",
        ),
        pytest.param(
            PolicyRef(name="ladder", version="1", params={"redirects_before_warning": -1}),
            "Expected `int` >= 0",
            id="negative-threshold",
        ),
    ],
)
def test_a_recorded_policy_coda_cannot_apply_is_refused(ref: PolicyRef, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        Policy.from_ref(ref)
