"""One generation, from the model's first word to the one append that records its end.

The runner streams the model's deltas to the live channel (coalesced: whatever came while the
previous write was in flight goes in the next), renews the lease, and watches for a cancel.
Then it appends the reply as one event, and with it, in the same append, the end of the
branch when the directive is an end, or `end.rejected` when the model asked to end and the
policy refuses. Nothing is written below a farewell: the end closes the branch at the reply.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Final, Literal, TypeAlias, TypedDict

import msgspec

from events.errors import (
    ConcurrencyError,
    EventStoreError,
    InvalidBatchError,
    ThreadEndedError,
    redis_errors,
)
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
from events.store import RedisEventStore
from projections.branches import path
from projections.policy import Policy, may_end
from projections.reader import ThreadReader
from projections.state import End, Message, Rejection, ThreadState
from service.errors import EngineError
from service.ladder import Decision
from service.leases import Leases
from service.live import LiveChannel
from service.model import (
    END_TOOL,
    Finished,
    Model,
    ModelError,
    ModelEvent,
    ModelRequest,
    TextDelta,
    ToolCall,
)

log = logging.getLogger(__name__)

MAX_ATTEMPTS: Final = 50
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


class _Result(msgspec.Struct, kw_only=True):
    text: str = ""
    tail: str = ""  # the end of the text, not relayed yet
    calls: list[ToolCall] = []
    finish: Finished = Finished()
    failure: tuple[Reason, str] | None = None


class Runner:
    def __init__(
        self,
        store: RedisEventStore,
        reader: ThreadReader,
        live: LiveChannel,
        leases: Leases,
        model: Model,
        *,
        renew_every: float,
        timeout: float,
    ) -> None:
        self.store = store
        self.reader = reader
        self.live = live
        self.leases = leases
        self.model = model
        self.renew_every = renew_every
        self.timeout = timeout
        self._generating: dict[str, asyncio.Task[Outcome]] = {}
        self._stopping: dict[str, tuple[Reason, str]] = {}

    async def run(self, job: Job) -> Outcome:
        # Most generations end before their first lease does: only a longer one renews it,
        # until its reply is recorded.
        renewing: list[asyncio.Task[None]] = []
        first_renewal = asyncio.get_running_loop().call_later(
            self.renew_every, lambda: renewing.append(asyncio.create_task(self._renew(job)))
        )
        try:
            result = await self._generate(job)
            outcome, ours = await self._record(job, result)
            # The text not relayed yet, the outcome and the lease's release: one round trip. A
            # generation another process closed (it thought the owner lost) was closed there.
            with redis_errors():
                pipe = self.live.redis.pipeline(transaction=False)
                if ours:
                    self.live.queue_close(
                        pipe, job.thread_id, job.reply_id, outcome.status, result.tail
                    )
                self.leases.queue_release(pipe, job.thread_id, job.reply_id)
                await pipe.execute()
            return outcome
        finally:
            first_renewal.cancel()
            for renewer in renewing:
                renewer.cancel()
            await asyncio.gather(*renewing, return_exceptions=True)

    def cancel(self, reply_id: str, why: tuple[Reason, str] = ("cancelled", "cancelled")) -> bool:
        """Stop a generation running in this process, to be recorded as failed for `why`;
        False if none is generating here."""
        task = self._generating.get(reply_id)
        if task is None:
            return False
        self._stopping.setdefault(reply_id, why)
        task.cancel()
        return True

    async def _renew(self, job: Job) -> None:
        while True:
            try:
                if await self.leases.renew(job.thread_id, job.reply_id):
                    self.cancel(job.reply_id)  # another process asked
                pause = self.renew_every
            except EventStoreError as exc:
                # One failed renewal must not lose a live generation: try again soon.
                log.warning("lease of reply %s not renewed: %s", job.reply_id, exc)
                pause = self.renew_every / 4
            await asyncio.sleep(pause)

    async def _generate(self, job: Job) -> _Result:
        """Stream the model's reply. It runs in the generation's own task (no task per stream):
        `cancel` cancels that task while it is here, and the cancellation is caught below."""
        result = _Result()
        parts: list[str] = []
        queued: list[str] = []
        wake = asyncio.Event()
        done = False
        relaying: list[asyncio.Task[None]] = []

        async def relay() -> None:
            # Whatever came while a write was in flight goes in the next one; what is left
            # when the generation is over goes with its close.
            while True:
                await wake.wait()
                wake.clear()
                if done:
                    return
                chunk = "".join(queued)
                queued.clear()
                try:
                    if chunk and await self.live.publish(job.thread_id, job.reply_id, chunk):
                        self.cancel(job.reply_id)  # another process asked
                except EventStoreError as exc:
                    # The relay is best effort: the text is kept, and lands with the reply.
                    log.warning("live text of reply %s not relayed: %s", job.reply_id, exc)

        task = asyncio.current_task()
        assert task is not None
        self._generating[job.reply_id] = task
        events: AsyncIterator[ModelEvent] | None = None
        try:
            async with asyncio.timeout(self.timeout):
                events = self.model.stream(job.request)
                async for event in events:
                    match event:
                        case TextDelta(text=text):
                            parts.append(text)
                            queued.append(text)
                            if not relaying:
                                relaying.append(asyncio.create_task(relay()))
                            wake.set()
                        case ToolCall():
                            result.calls.append(event)
                        case Finished():
                            result.finish = event
        except asyncio.CancelledError:
            why = self._stopping.get(job.reply_id)
            if why is None:
                raise  # cancelled from outside: the lease will lapse
            task.uncancel()
            result.failure = why
        except TimeoutError:
            result.failure = ("timeout", f"timed out after {self.timeout:g}s")
        except ModelError as exc:
            result.failure = ("error", str(exc) or type(exc).__name__)
        except Exception as exc:
            # A bug in an adapter must still close the generation; the trace is logged.
            log.error("model %s failed", self.model.name, exc_info=exc)
            result.failure = ("error", f"{type(exc).__name__}: {exc}")
        finally:
            del self._generating[job.reply_id]
            self._stopping.pop(job.reply_id, None)
            if isinstance(events, AsyncGenerator):  # closes the model's connection at once
                await events.aclose()
            done = True
            wake.set()
            await asyncio.gather(*relaying, return_exceptions=True)
        result.text = "".join(parts)
        result.tail = "".join(queued)
        return result

    async def _record(self, job: Job, result: _Result) -> tuple[Outcome, bool]:
        """Append the reply (with an end or a refused end), retried over concurrent writes;
        and whether this append closed the generation (False: another process had)."""
        cached = self.reader.cached(job.thread_id)
        for _ in range(MAX_ATTEMPTS):
            # The state this process holds is used first; the version check catches a stale one.
            state = cached if cached is not None else await self.reader.state(job.thread_id)
            reply = state.messages.get(job.reply_id)
            if reply is None or reply.kind != "pending":
                if cached is not None:
                    cached = None  # perhaps only behind: look at the stored thread
                    continue
                return outcome_of(state, job), False  # closed meanwhile: ended, or lost
            cached = None
            events = closing_events(
                job, state, result.text, result.calls, result.finish, result.failure
            )
            try:
                appended = await self.store.append(job.thread_id, events, state.version)
            except (ConcurrencyError, ThreadEndedError, InvalidBatchError):
                continue  # the next read shows what changed, or what closed the generation
            after = self.reader.advance(state, events, appended)
            return outcome_of(after or await self.reader.state(job.thread_id), job), True
        raise EngineError(f"thread {job.thread_id!r}: could not record reply {job.reply_id!r}")


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


def outcome_of(state: ThreadState, job: Job) -> Outcome:
    end = state.ends.get(job.reply_id)
    if end is None and state.thread_end is not None and state.thread_end.leaf_id == job.reply_id:
        end = state.thread_end
    return Outcome(
        thread_id=job.thread_id,
        message_id=job.message_id,
        reply_id=job.reply_id,
        reply=state.messages.get(job.reply_id),
        ended=end,
        rejections=tuple(
            r for r in state.rejections if r.leaf_id in (job.reply_id, job.message_id)
        ),
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
