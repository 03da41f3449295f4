"""When a branch may be ended: the policy's precondition, a pure function over its path.

The engine asks it before it ends a branch; the audit asks it again, at the end's version, to
say whether an end was justified. The thresholds come from the policy recorded in the thread's
`thread.started`, so a thread is always judged by the rules it ran under.

A moderator may end any branch (moderators may override, and their ends are recorded as
such). Anyone else may end only when no message on the path was ever classified `crisis` (a
user who may be at risk is never cut off), and either
- the model (or the policy) ends it: at least `redirects_before_warning` redirects of harmful
  (`terminable`) turns, then a warning (if `warning_required`), then harmful turns after the
  warning up to the latest one: a user who has stopped is not ended; or
- the user asked for it: the assistant asked them to confirm (a reply of kind
  `end_confirmation`) and they answered on this path, or they ended it themselves with an
  explicit confirmation (the API's end: `direct`).
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec

from events.schema import Actor, EndScope, PolicyRef
from projections.state import Message

DEFAULT_REDIRECTS: Final = 2
LADDER: Final = "ladder"  # the one policy this version of coda knows


class Policy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The versioned thresholds a thread runs under."""

    name: str = LADDER
    version: str = "1"
    redirects_before_warning: Annotated[int, msgspec.Meta(ge=0)] = DEFAULT_REDIRECTS
    warning_required: bool = True
    end_scope: EndScope = "branch"

    @classmethod
    def from_ref(cls, ref: PolicyRef) -> Policy:
        """The policy as `thread.started` recorded it; parameters it does not know are errors."""
        if ref.name != LADDER:
            raise PolicyError(f"policy {ref.name} {ref.version}: coda knows only {LADDER!r}")
        if {"name", "version"} & ref.params.keys():
            raise PolicyError(f"policy {ref.name} {ref.version}: name and version are not params")
        try:
            return msgspec.convert(
                {"name": ref.name, "version": ref.version, **ref.params}, cls, strict=True
            )
        except msgspec.ValidationError as exc:
            raise PolicyError(f"policy {ref.name} {ref.version}: {exc}") from exc

    def ref(self) -> PolicyRef:
        params = msgspec.structs.asdict(self)
        del params["name"], params["version"]
        return PolicyRef(name=self.name, version=self.version, params=params)


class PolicyError(ValueError):
    """A recorded policy this version of coda cannot apply."""


class Verdict(msgspec.Struct, frozen=True, kw_only=True):
    allowed: bool
    reason: str


def may_end(
    path: tuple[Message, ...], policy: Policy, actor: Actor, *, direct: bool = False
) -> Verdict:
    """Whether `actor` may end the branch that reads as `path` under `policy`; `direct`: the
    user asks themselves, with an explicit confirmation, outside the conversation."""
    if actor == "moderator":
        return Verdict(allowed=True, reason="a moderator may end any branch")
    if any(m.tier == "crisis" for m in path):
        return Verdict(allowed=False, reason="a message on this branch was flagged as a crisis")
    if actor == "user":
        return _user_request(path, direct)
    if actor in ("model", "policy"):
        return _ladder(path, policy)
    return Verdict(allowed=False, reason=f"{actor} may not end a conversation")


def _user_request(path: tuple[Message, ...], direct: bool) -> Verdict:
    if direct:
        if not path:
            return Verdict(allowed=False, reason="there is no message to end the branch at")
        return Verdict(allowed=True, reason="the user ended the conversation and confirmed it")
    asked = [i for i, m in enumerate(path) if m.kind == "end_confirmation"]
    if not asked:
        return Verdict(allowed=False, reason="the user was not asked to confirm the end")
    if not any(m.role == "user" for m in path[asked[-1] + 1 :]):
        return Verdict(allowed=False, reason="the user has not answered the confirmation")
    return Verdict(allowed=True, reason="the user confirmed that the conversation should end")


def _ladder(path: tuple[Message, ...], policy: Policy) -> Verdict:
    by_id = {m.id: m for m in path}
    redirects = [
        i
        for i, m in enumerate(path)
        if m.kind == "redirect" and _harmful(by_id.get(m.parent_id or ""))
    ]
    if len(redirects) < policy.redirects_before_warning:
        return Verdict(
            allowed=False,
            reason=f"{len(redirects)} of {policy.redirects_before_warning} redirections given",
        )
    needed = policy.redirects_before_warning
    after = redirects[needed - 1] if needed else -1
    warnings = [i for i, m in enumerate(path) if m.kind == "warning" and i > after]
    if policy.warning_required and not warnings:
        return Verdict(allowed=False, reason="no warning was given after the redirections")
    since = warnings[0] if warnings else after
    if not any(m.role == "user" and _harmful(m) for m in path[since + 1 :]):
        return Verdict(allowed=False, reason="no harmful turn followed the warning")
    latest = next(m for m in reversed(path) if m.role == "user")
    if not _harmful(latest):
        return Verdict(allowed=False, reason="the user's latest turn is not harmful")
    return Verdict(
        allowed=True,
        reason="harmful turns persisted after redirection and a warning",
    )


def _harmful(message: Message | None) -> bool:
    """A user turn classified `terminable`: the only tier that can lead to an end."""
    return message is not None and message.role == "user" and message.tier == "terminable"
