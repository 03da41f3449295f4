"""The audit of a thread: is its history intact, and was each of its ends justified?

It verifies the chain and the seals, checks that the stored meta says what the fold of the
events says, and for every end re-evaluates the policy's precondition on the branch as it
stood just before the end, under the policy the thread recorded when it started.
"""

from __future__ import annotations

import msgspec

from events.records import StoredEntry, parse_meta
from events.schema import AnyEvent, decode
from events.store import RedisEventStore
from events.verify import Problem
from projections.branches import path
from projections.policy import Policy, PolicyError, may_end
from projections.state import End, Message, ThreadState, fold


class PathEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One message of an ended branch, as the audit shows it."""

    id: str
    role: str
    kind: str
    content: str
    tier: str | None
    version: int


class AuditedEnd(msgspec.Struct, frozen=True, kw_only=True):
    leaf_id: str
    version: int
    scope: str
    actor: str
    actor_id: str | None
    reason: str
    category: str | None
    policy_version: str
    justified: bool
    verdict: str
    path: tuple[PathEntry, ...]


class AuditReport(msgspec.Struct, frozen=True, kw_only=True):
    thread_id: str
    version: int
    chain_ok: bool
    seal_ok: bool
    meta_ok: bool
    problems: tuple[Problem, ...]
    ends: tuple[AuditedEnd, ...]

    @property
    def ok(self) -> bool:
        return not self.problems and all(end.justified for end in self.ends)

    @property
    def first_bad_version(self) -> int | None:
        """The earliest version with a problem, or of an end that was not justified."""
        bad = [p.version for p in self.problems]
        bad += [end.version for end in self.ends if not end.justified]
        return min(bad, default=None)


async def audit(store: RedisEventStore, thread_id: str) -> AuditReport:
    """Verify the thread, compare its meta with the fold, and judge each of its ends."""
    snapshot = await store.snapshot(thread_id)  # read once: the verifier and the fold share it
    report = store.check(snapshot)
    events = _events(snapshot.entries)
    state = fold(events)
    problems = list(report.problems)
    try:
        head = parse_meta(snapshot.meta)
    except ValueError:
        head = None  # the verifier has reported what is wrong with it
    if head is not None and head.version == state.version and head.ended != _ended(state):
        problems.append(
            Problem(version=state.version, area="meta", reason="the meta's ends are not the fold's")
        )
    try:
        policy = Policy.from_ref(state.started.policy) if state.started else Policy()
    except PolicyError as exc:
        problems.append(Problem(version=1, area="chain", reason=str(exc)))
        policy = Policy()
    return AuditReport(
        thread_id=thread_id,
        version=report.version,
        chain_ok=report.chain_ok,
        seal_ok=report.seal_ok,
        meta_ok=report.meta_ok and all(p.area != "meta" for p in problems),
        problems=tuple(sorted(problems, key=lambda p: p.version)),
        ends=tuple(_audited(events, end, policy) for end in _all_ends(state)),
    )


def _events(entries: list[StoredEntry]) -> list[AnyEvent]:
    """The events of the entries at their versions, leaving out what the verifier reports."""
    events = []
    for entry in entries:
        if not entry.entry_id.endswith("-0"):
            continue
        try:
            events.append(decode(entry.data))
        except msgspec.DecodeError:
            continue
    return events


def _audited(events: list[AnyEvent], end: End, policy: Policy) -> AuditedEnd:
    before = fold(events[: end.version - 1])
    branch = path(before, end.leaf_id) if end.leaf_id in before.messages else ()
    verdict = may_end(branch, policy, end.actor, direct=end.direct)  # type: ignore[arg-type]
    return AuditedEnd(
        leaf_id=end.leaf_id,
        version=end.version,
        scope=end.scope,
        actor=end.actor,
        actor_id=end.actor_id,
        reason=end.reason,
        category=end.category,
        policy_version=end.policy_version,
        justified=bool(branch) and verdict.allowed,
        verdict=verdict.reason if branch else "the end names no message of the thread",
        path=tuple(_entry(m) for m in branch),
    )


def _all_ends(state: ThreadState) -> list[End]:
    ends = list(state.ends.values())
    if state.thread_end is not None and state.thread_end not in ends:
        ends.append(state.thread_end)
    return sorted(ends, key=lambda end: end.version)


def _ended(state: ThreadState) -> dict[str, int]:
    return {leaf: end.version for leaf, end in state.ends.items()}


def _entry(message: Message) -> PathEntry:
    return PathEntry(
        id=message.id,
        role=message.role,
        kind=message.kind,
        content=message.content,
        tier=message.tier,
        version=message.version,
    )
