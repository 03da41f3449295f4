"""The conversation engine: a user turn goes classifier → ladder → model, all of it recorded.

A turn is two appends. The first records the user message, its classification and the start
of the reply (with its lease), after the ladder has decided what the reply must do; the second,
made by the generation when it is over, records the reply, and with it any end. The generation
runs as its own task: it goes on if the client leaves, and any process can relay its text from
the live channel.

The policy is enforced here, on the server: the ladder decides, and `may_end` gates every end,
whether the ladder, the model or the user asks for it.
"""

from __future__ import annotations

import asyncio
import os
import socket

import msgspec

from events.errors import ConcurrencyError, ThreadEndedError
from events.hub import StreamHub
from events.schema import (
    EndRejected,
    FeedbackGiven,
    Rating,
    ThreadEnded,
    ThreadStarted,
    new_id,
)
from events.store import RedisEventStore
from projections.branches import UnknownMessageError, active_tip, path
from projections.policy import Policy, may_end
from projections.reader import ThreadReader
from projections.state import EMPTY, End, ThreadState, fold
from service.classifier import Classifier
from service.errors import (
    EndRefusedError,
    EngineError,
    InvalidTurnError,
    NoGenerationError,
    ThreadExistsError,
    ThreadNotFoundError,
    VersionConflictError,
)
from service.generation import Runner
from service.leases import Leases
from service.live import Closed, LiveChannel
from service.model import Model
from service.replies import Outcome, outcome_of
from service.taking import MAX_ATTEMPTS, TurnTaker
from service.turns import (
    Turn,
)


class EngineSettings(msgspec.Struct, frozen=True, kw_only=True):
    lease_seconds: float = 30.0
    generation_timeout: float = 300.0
    shutdown_grace: float = 10.0
    owner: str = ""  # this process, as leases name it; default host:pid:random


class Engine:
    def __init__(
        self,
        store: RedisEventStore,
        *,
        model: Model,
        classifier: Classifier,
        policy: Policy | None = None,
        reader: ThreadReader | None = None,
        settings: EngineSettings | None = None,
    ) -> None:
        self.store = store
        self.model = model
        self.classifier = classifier
        self.policy = policy or Policy()
        self.reader = reader or ThreadReader(store)
        self.settings = settings or EngineSettings()
        owner = self.settings.owner or f"{socket.gethostname()}:{os.getpid()}:{new_id()[-12:]}"
        self.hub = StreamHub(store.redis, store.keys)
        self.live = LiveChannel(store.redis, store.keys, hub=self.hub)
        self.leases = Leases(
            store.redis, store.keys, owner=owner, seconds=self.settings.lease_seconds
        )
        self.runner = Runner(
            store,
            self.reader,
            self.live,
            self.leases,
            model,
            renew_every=self.settings.lease_seconds / 3,
            timeout=self.settings.generation_timeout,
        )
        self.taking = TurnTaker(
            store, self.reader, classifier, self.leases, self.runner, model.name
        )

    # --- commands ----------------------------------------------------------------------------

    async def start_thread(
        self,
        *,
        tenant: str,
        owner: str,
        title: str = "",
        thread_id: str | None = None,
        policy: Policy | None = None,
        metadata: dict[str, str] | None = None,
    ) -> str:
        """A new thread under `policy` (default: the engine's), recorded in `thread.started`."""
        thread_id = thread_id or new_id()
        started = ThreadStarted(
            thread_id=thread_id,
            actor="user",
            actor_id=owner,
            tenant=tenant,
            owner=owner,
            model=self.model.name,
            policy=(policy or self.policy).ref(),
            title=title,
            metadata=metadata or {},
        )
        try:
            result = await self.store.append(thread_id, [started], 0)
            self.reader.advance(EMPTY, [started], result)  # its first turn need not read it
        except ConcurrencyError:
            # A retry of a start that landed returns the thread; any other thread is a conflict.
            state = await self._state(thread_id)
            first = state.started
            assert first is not None
            if (first.tenant, first.owner, first.title) != (tenant, owner, title):
                raise ThreadExistsError(thread_id) from None
        return thread_id

    async def post_message(
        self,
        thread_id: str,
        content: str,
        *,
        parent_id: str | None = None,
        message_id: str | None = None,
        user_id: str | None = None,
        expected_version: int | None = None,
    ) -> Turn:
        """Continue the active branch (or the branch at `parent_id`; below a reply that already
        has an answer, that is an edit). A retry with the same `message_id` returns the turn
        taken the first time. With `expected_version`, the thread must still be at it."""
        return await self.taking.take(
            thread_id,
            content,
            message_id or new_id(),
            user_id,
            parent=parent_id,
            edit=None,
            expected=expected_version,
        )

    async def edit_message(
        self,
        thread_id: str,
        message_id: str,
        content: str,
        *,
        new_message_id: str | None = None,
        user_id: str | None = None,
        expected_version: int | None = None,
    ) -> Turn:
        """A new sibling of user message `message_id`: a new branch, allowed beside an ended one
        unless the policy ends whole threads."""
        return await self.taking.take(
            thread_id,
            content,
            new_message_id or new_id(),
            user_id,
            parent=None,
            edit=message_id,
            expected=expected_version,
        )

    async def outcome(self, turn: Turn) -> Outcome:
        """Wait for the turn's generation to be recorded (wherever it runs) and say how it ended."""
        task = self.runner.tasks.get(turn.reply_id)
        if task is not None:
            try:
                return await asyncio.shield(task)
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # the waiter itself was cancelled
                raise EngineError(
                    f"reply {turn.reply_id!r}: the engine stopped before it was recorded"
                ) from None
        while True:
            state = await self.reader.state(turn.thread_id)
            reply = state.messages.get(turn.reply_id)
            if reply is None or reply.kind != "pending":
                return outcome_of(state, turn.message_id, turn.reply_id)
            closed = False
            async for item in self.live.follow(turn.thread_id, turn.reply_id):
                closed = isinstance(item, Closed)
            if not closed:
                await self.recover(turn.thread_id)

    async def give_feedback(
        self,
        thread_id: str,
        rating: Rating,
        *,
        message_id: str | None = None,
        comment: str = "",
        user_id: str | None = None,
        expected_version: int | None = None,
    ) -> int:
        """Record feedback (ended threads take it too); returns its version."""
        for _ in range(MAX_ATTEMPTS):
            state = await self._state(thread_id, expected_version)
            if message_id is not None and message_id not in state.messages:
                raise UnknownMessageError(f"no message {message_id!r} in thread {thread_id!r}")
            event = FeedbackGiven(
                thread_id=thread_id,
                actor="user",
                actor_id=user_id,
                rating=rating,
                message_id=message_id,
                comment=comment,
            )
            try:
                return (await self.store.append(thread_id, [event], state.version)).last_version
            except ConcurrencyError as exc:
                _conflict(exc, expected_version)
        raise EngineError(f"thread {thread_id!r}: too many concurrent writes")

    async def end(
        self,
        thread_id: str,
        *,
        user_id: str | None = None,
        expected_version: int | None = None,
    ) -> End:
        """The user ends the active branch themselves, having confirmed it outside the
        conversation: `thread.ended` (actor user, `direct`) if `may_end` allows it; otherwise
        the refusal is recorded (`end.rejected`) and raised (`EndRefusedError`)."""
        for _ in range(MAX_ATTEMPTS):
            state = await self._state(thread_id, expected_version)
            tip = active_tip(state)
            if tip is None:
                raise InvalidTurnError(f"thread {thread_id!r} has no message to end yet")
            end = state.thread_end or state.ends.get(tip)
            if end is not None:
                raise ThreadEndedError(thread_id, end.version, end.leaf_id)
            leaf = state.messages[tip]
            if leaf.kind == "pending" and await self.taking.running(state, [leaf]):
                continue  # its owner was gone, and it is closed now: look again
            assert state.started is not None
            policy = Policy.from_ref(state.started.policy)
            verdict = may_end(path(state, tip), policy, "user", direct=True)
            event: ThreadEnded | EndRejected
            if verdict.allowed:
                event = ThreadEnded(
                    thread_id=thread_id,
                    actor="user",
                    actor_id=user_id,
                    leaf_id=tip,
                    scope=policy.end_scope,
                    reason=verdict.reason,
                    policy_version=policy.version,
                    direct=True,
                )
            else:
                event = EndRejected(
                    thread_id=thread_id,
                    actor="user",
                    actor_id=user_id,
                    leaf_id=tip,
                    reason=verdict.reason,
                )
            try:
                result = await self.store.append(thread_id, [event], state.version)
            except ConcurrencyError as exc:
                _conflict(exc, expected_version)
                continue
            if isinstance(event, EndRejected):
                raise EndRefusedError(thread_id, tip, verdict.reason)
            after = self.reader.advance(state, [event], result) or fold([event], state)
            if event.scope == "thread":
                await self.runner.stop_cut_off(after)
            return after.ends[tip]
        raise EngineError(f"thread {thread_id!r}: too many concurrent writes")

    async def cancel(
        self, thread_id: str, reply_id: str | None = None, *, expected_version: int | None = None
    ) -> str:
        """Stop a running generation (by default the one on the active branch); it is recorded
        as `reply.failed` with reason `cancelled` and the text so far."""
        state = await self._state(thread_id, expected_version)
        if reply_id is None:
            tip = active_tip(state)
            reply_id = tip if tip is not None and state.messages[tip].kind == "pending" else None
        if reply_id is None or reply_id not in state.messages:
            raise NoGenerationError(f"thread {thread_id!r}: no generation is running")
        if state.messages[reply_id].kind != "pending":
            raise NoGenerationError(f"thread {thread_id!r}: reply {reply_id!r} is not running")
        running = state.messages[reply_id]
        if self.runner.cancel(reply_id):
            pass
        elif await self.leases.alive(thread_id, reply_id, running.lease_expires_at):
            await self.leases.request_cancel(thread_id, reply_id)
        else:
            await self.recover(thread_id)
        return reply_id

    async def recover(self, thread_id: str) -> list[str]:
        """Close the generations of the thread whose owner is gone (`reply.failed`, reason
        `owner_lost`). Safe to call from any number of processes: each closes once."""
        await self._state(thread_id)
        return await self.runner.recover(thread_id)

    async def aclose(self) -> None:
        """Let running generations finish (up to the grace period), then stop the rest and
        record them as failed (reason `error`, "shut down"). One that cannot even be recorded
        (Redis is gone) is cancelled: its lease lapses and `recover` closes it later."""
        await self.runner.stop_all(self.settings.shutdown_grace)
        await self.hub.aclose()

    async def _state(self, thread_id: str, expected: int | None = None) -> ThreadState:
        state = await self.reader.state(thread_id)
        if state.started is None:
            raise ThreadNotFoundError(thread_id)
        if expected is not None and state.version != expected:
            raise VersionConflictError(thread_id, expected, state.version)
        return state


def _conflict(exc: ConcurrencyError, expected: int | None) -> None:
    """A lost race is retried, unless the client named the version it acted on."""
    if expected is not None:
        raise VersionConflictError(exc.thread_id, expected, exc.actual) from exc
