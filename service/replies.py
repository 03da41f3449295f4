"""How a reply ends: the events of its last append, and how the turn reads once it is recorded.

Pure functions over a thread's state; the runner (`service.generation`) does the I/O. The reply
is one event, followed in the same append by the end of the branch when the directive is an end,
or by `end.rejected` when the model asked to end and the policy refuses.
"""

from __future__ import annotations

import hashlib
from typing import Final, Literal, TypeAlias, TypedDict

import msgspec

from events.schema import (
    AnyEvent,
    EndRejected,
    ReplyCompleted,
    ReplyFailed,
    ReplyKind,
    ReplyRedirected,
    ReplyWarned,
    ThreadEnded,
)
from projections.branches import path
from projections.policy import Policy, may_end
from projections.state import End, Message, Rejection, ThreadState
from service.ladder import Decision
from service.model import END_TOOL, Finished, ModelRequest, ToolCall

Status: TypeAlias = Literal["completed", "redirected", "warned", "failed", "ended", "lost"]
Reason: TypeAlias = Literal["error", "cancelled", "timeout"]  # why this process stopped one

_KINDS: Final[dict[str, ReplyKind]] = {
    "answer": "answer",
    "crisis_support": "crisis_support",
    "confirm_end": "end_confirmation",
    "end": "farewell",
    "end_by_user": "farewell",
}


class Job(msgspec.Struct, frozen=True, kw_only=True):
    """A generation to run: where its reply goes, what it must do, and who asked."""

    thread_id: str
    message_id: str
    reply_id: str
    decision: Decision
    request: ModelRequest
    model: str
    user_id: str | None = None


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """How a turn ended: the reply as recorded, the end it brought, and refused end requests."""

    thread_id: str
    message_id: str
    reply_id: str
    reply: Message | None
    ended: End | None
    rejections: tuple[Rejection, ...]

    @property
    def status(self) -> Status:
        if self.ended is not None:
            return "ended"
        if self.reply is None or self.reply.kind == "pending":
            return "lost"
        kind = self.reply.kind
        if kind == "redirect":
            return "redirected"
        if kind == "warning":
            return "warned"
        return "failed" if kind == "failed" else "completed"


class _ReplyIds(TypedDict):
    thread_id: str
    message_id: str
    parent_id: str


def closing_events(
    job: Job,
    state: ThreadState,
    text: str,
    calls: list[ToolCall],
    finish: Finished,
    failure: tuple[Reason, str] | None,
) -> list[AnyEvent]:
    """The events that end the generation: the reply, then an end or a refused end."""
    if failure is not None:
        reason, detail = failure
        failed: list[AnyEvent] = [
            ReplyFailed(
                **_ids(job), actor="model", reason=reason, partial_content=text, detail=detail
            )
        ]
        if any(call.name == END_TOOL for call in calls):  # every refusal to end is recorded
            failed.append(
                EndRejected(
                    thread_id=job.thread_id,
                    actor="model",
                    leaf_id=job.reply_id,
                    reason=f"the reply asking to end failed ({reason})",
                    category=job.decision.category,
                )
            )
        return failed
    decision = job.decision
    events: list[AnyEvent] = [_reply(job, decision, text, finish)]
    assert state.started is not None
    policy = Policy.from_ref(state.started.policy)
    asked = [call for call in calls if call.name == END_TOOL]
    if decision.directive not in ("end", "end_by_user") and not asked:
        return events
    if decision.directive == "end_by_user":
        actor: Literal["user", "model", "policy"] = "user"
    else:
        actor = "model" if asked else "policy"
    verdict = may_end(path(state, job.message_id), policy, actor)
    if not verdict.allowed:
        events.append(
            EndRejected(
                thread_id=job.thread_id,
                actor=actor,
                actor_id=job.user_id if actor == "user" else None,
                leaf_id=job.reply_id,
                reason=verdict.reason,
                category=decision.category,
            )
        )
        return events
    stated = asked[0].arguments.get("reason") if asked else None
    events.append(
        ThreadEnded(
            thread_id=job.thread_id,
            actor=actor,
            actor_id=job.user_id if actor == "user" else None,
            leaf_id=job.reply_id,
            scope=policy.end_scope,
            reason=stated if isinstance(stated, str) and stated else verdict.reason,
            policy_version=policy.version,
            category=decision.category,
            evidence=decision.evidence,
        )
    )
    return events


def outcome_of(state: ThreadState, message_id: str, reply_id: str) -> Outcome:
    """The turn of `message_id` answered by `reply_id`, as `state` has it."""
    end = state.ends.get(reply_id)
    if end is None and state.thread_end is not None and state.thread_end.leaf_id == reply_id:
        end = state.thread_end
    return Outcome(
        thread_id=state.thread_id,
        message_id=message_id,
        reply_id=reply_id,
        reply=state.messages.get(reply_id),
        ended=end,
        rejections=tuple(r for r in state.rejections if r.leaf_id in (reply_id, message_id)),
    )


def _ids(job: Job) -> _ReplyIds:
    return {"thread_id": job.thread_id, "message_id": job.reply_id, "parent_id": job.message_id}


def _reply(job: Job, decision: Decision, text: str, finish: Finished) -> AnyEvent:
    match decision.directive:
        case "redirect":
            return ReplyRedirected(
                **_ids(job),
                actor="model",
                content=text,
                attempt=decision.attempt,
                category=decision.category or "",
            )
        case "warn":
            return ReplyWarned(
                **_ids(job), actor="model", content=text, category=decision.category or ""
            )
        case _:
            return ReplyCompleted(
                **_ids(job),
                actor="model",
                content=text,
                kind=_KINDS[decision.directive],
                content_sha256=hashlib.sha256(text.encode()).hexdigest(),
                finish_reason=finish.finish_reason,
                model=job.model,
                usage=finish.usage,
            )
