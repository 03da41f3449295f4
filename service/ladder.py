"""The ladder: what the next reply on a branch must do, a pure decision over the branch's path.

The path ends with the new user message, already classified. In order:

1. A plain yes right after the assistant asked to confirm an end: the user's end, if `may_end`
   allows it (it refuses on a branch with a crisis, and the refusal is recorded).
2. A crisis anywhere on the path: supportive replies to anything that is not benign, never a
   warning and never a word about ending; a request to end is refused and recorded.
3. The user asks to end: ask them to confirm that it is permanent.
4. By the message's tier: benign and unknown are answered; `redirect` is always redirected;
   `terminable` is redirected `redirects_before_warning` times, then warned about (if the
   policy requires a warning), then ended when `may_end` allows it.

Counting is per path, so an edit branch inherits the counters of the messages it keeps.
"""

from __future__ import annotations

from typing import Final

import msgspec

from projections.policy import Policy, may_end
from projections.state import Message
from service.intents import asks_to_end, confirms
from service.model import Directive
from service.taxonomy import strongest

_NOT_BENIGN: Final = frozenset({"redirect", "terminable", "crisis"})


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    directive: Directive
    reason: str
    category: str | None = None
    attempt: int = 0  # which redirect this is on the path (1, 2, ...)
    refused_end: str | None = None  # the user asked to end and may not: why (an end.rejected)
    evidence: tuple[int, ...] = ()  # for an end: versions of the turns that justify it


def decide(path: tuple[Message, ...], policy: Policy) -> Decision:
    """The directive for the reply to `path[-1]`, the new user message."""
    new = path[-1]
    previous = path[-2] if len(path) > 1 else None
    crisis = any(m.tier == "crisis" for m in path)
    if previous is not None and previous.kind == "end_confirmation" and confirms(new.content):
        verdict = may_end(path, policy, "user")
        if verdict.allowed:
            return Decision(directive="end_by_user", reason=verdict.reason)
        return Decision(
            directive="crisis_support", reason=verdict.reason, refused_end=verdict.reason
        )
    if crisis:
        refused = may_end(path, policy, "user").reason if asks_to_end(new.content) else None
        if new.tier in _NOT_BENIGN or refused is not None:
            return Decision(
                directive="crisis_support",
                reason="a message on this branch was flagged as a crisis",
                category=category_of(new),
                refused_end=refused,
            )
        return Decision(directive="answer", reason="benign turn on a branch with a crisis")
    if asks_to_end(new.content):
        return Decision(directive="confirm_end", reason="the user asked to end the conversation")
    if new.tier == "redirect":
        return _redirect(path, "redirect-tier requests are redirected, never ended")
    if new.tier == "terminable":
        return _terminable(path, policy)
    return Decision(directive="answer", reason=f"{new.tier or 'unclassified'} turn")


def category_of(message: Message) -> str | None:
    """The category that gave the message its tier, from its latest decisive classification."""
    for classification in reversed(message.classifications):
        if classification.decisive:
            return strongest(classification.categories)
    return None


def _terminable(path: tuple[Message, ...], policy: Policy) -> Decision:
    new = path[-1]
    verdict = may_end(path, policy, "policy")
    if verdict.allowed:
        return Decision(
            directive="end",
            reason=verdict.reason,
            category=category_of(new),
            evidence=_evidence(path),
        )
    harmful_redirects = [m for m in path if m.kind == "redirect" and _answers_harm(path, m)]
    if len(harmful_redirects) < policy.redirects_before_warning or not policy.warning_required:
        return _redirect(path, verdict.reason)
    return Decision(directive="warn", reason=verdict.reason, category=category_of(new))


def _redirect(path: tuple[Message, ...], reason: str) -> Decision:
    attempt = 1 + sum(m.kind == "redirect" for m in path)
    return Decision(
        directive="redirect", reason=reason, category=category_of(path[-1]), attempt=attempt
    )


def _answers_harm(path: tuple[Message, ...], reply: Message) -> bool:
    return any(m.id == reply.parent_id and m.tier == "terminable" for m in path)


def _evidence(path: tuple[Message, ...]) -> tuple[int, ...]:
    """The harmful turns, and the redirects and warnings that answered them."""
    return tuple(
        m.version
        for m in path
        if (m.role == "user" and m.tier == "terminable")
        or (m.kind in ("redirect", "warning") and _answers_harm(path, m))
    )
