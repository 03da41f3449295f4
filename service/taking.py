"""Taking a turn: where the new message goes, its classification, the ladder's decision, and
the first append, which starts the reply's generation.

Optimistic: the state this process holds is used first, and a stale one fails the append's
version check; every refusal made on a cached state is checked again on the stored one. A
retry with the same message id is the turn taken the first time.
"""

from __future__ import annotations

import asyncio
from typing import Final

from events.errors import ConcurrencyError, InvalidBatchError, ThreadEndedError
from events.records import AppendResult
from events.schema import AnyEvent, EndRejected, ReplyStarted, new_id
from events.store import RedisEventStore
from projections.branches import UnknownMessageError, active_tip, path
from projections.policy import Policy
from projections.reader import ThreadReader
from projections.state import Message, ThreadState, fold
from service.classifier import Classification, Classifier
from service.errors import (
    EngineError,
    InvalidTurnError,
    ThreadNotFoundError,
    TurnInProgressError,
    VersionConflictError,
)
from service.generation import Runner
from service.ladder import decide
from service.leases import Leases
from service.replies import Job
from service.turns import (
    Turn,
    context_for,
    message_of,
    model_request,
    opening_events,
    replayed_turn,
    running_below,
)

MAX_ATTEMPTS: Final = 50
MAX_CONTENT: Final = 256 * 1024  # characters: a guard; the API's per-key limit is lower


class TurnTaker:
    """The first half of every turn, for the engine (the runner does the second)."""

    def __init__(
        self,
        store: RedisEventStore,
        reader: ThreadReader,
        classifier: Classifier,
        leases: Leases,
        runner: Runner,
        model_name: str,
    ) -> None:
        self.store = store
        self.reader = reader
        self.classifier = classifier
        self.leases = leases
        self.runner = runner
        self.model_name = model_name

    async def take(
        self,
        thread_id: str,
        content: str,
        message_id: str,
        user_id: str | None,
        *,
        parent: str | None,
        edit: str | None,
        expected: int | None,
    ) -> Turn:
        if not content.strip():
            raise InvalidTurnError("a message needs some text")
        if len(content) > MAX_CONTENT:
            raise InvalidTurnError(f"a message holds at most {MAX_CONTENT} characters")
        classification: Classification | None = None
        # A client that names the version it acted on is answered from the stored thread.
        cached = self.reader.cached(thread_id) if expected is None else None
        for _ in range(MAX_ATTEMPTS):
            # Optimistic: the state this process holds, if any; a stale one fails the append's
            # version check, and the next attempt reads the stored thread.
            from_cache = cached is not None
            state = cached if cached is not None else await self._stored(thread_id)
            cached = None
            existing = state.messages.get(message_id)
            if existing is not None:
                return replayed_turn(state, existing, content)
            if expected is not None and state.version != expected:
                raise VersionConflictError(thread_id, expected, state.version)
            try:
                where = await self._place(state, parent=parent, edit=edit)
            except (TurnInProgressError, UnknownMessageError, InvalidTurnError):
                if not from_cache:
                    raise
                where = None  # perhaps only behind: look at the stored thread
            if where is None:
                continue  # behind, or a lost generation was closed: look again
            parent_id, edited = where
            if classification is None:
                classification = await self.classifier.classify(
                    content, context_for(state, parent_id)
                )
            opening = opening_events(
                thread_id, message_id, parent_id, edited, content, classification, user_id
            )
            preview = fold(opening, state)
            assert state.started is not None
            decision = decide(path(preview, message_id), Policy.from_ref(state.started.policy))
            reply_id = new_id()
            expires = self.leases.expiry()
            batch: list[AnyEvent] = [*opening]
            if decision.refused_end is not None:
                batch.append(
                    EndRejected(
                        thread_id=thread_id,
                        actor="user",
                        actor_id=user_id,
                        leaf_id=message_id,
                        reason=decision.refused_end,
                    )
                )
            batch.append(
                ReplyStarted(
                    thread_id=thread_id,
                    actor="model",
                    message_id=reply_id,
                    parent_id=message_id,
                    model=self.model_name,
                    lease_owner=self.leases.owner,
                    lease_expires_at=expires,
                )
            )
            job = Job(
                thread_id=thread_id,
                message_id=message_id,
                reply_id=reply_id,
                decision=decision,
                request=model_request(preview, message_id, decision),
                model=self.model_name,
                user_id=user_id,
            )
            try:
                # Shielded: a caller that goes away while the append is in flight must not
                # leave a started reply that nobody generates.
                result = await asyncio.shield(self._open(state, batch, job))
            except ConcurrencyError:
                # Look again: the winner may be this very message (a retry), then it is the
                # turn; with `expected`, anything else is a version conflict.
                continue
            except (ThreadEndedError, InvalidBatchError):
                # The lock and the tree are checked before the version: a refusal of a batch
                # made from a cached state may only mean the state was behind (the message is
                # stored already, or the branch ended): look at the stored thread first.
                if not from_cache:
                    raise
                continue
            return Turn(
                thread_id=thread_id,
                message_id=message_id,
                reply_id=reply_id,
                parent_id=parent_id,
                edited_from=edited,
                classification=classification,
                decision=decision,
                version=result.last_version,
            )
        raise EngineError(f"thread {thread_id!r}: too many concurrent writes")

    async def _place(
        self, state: ThreadState, *, parent: str | None, edit: str | None
    ) -> tuple[str | None, str | None] | None:
        """Where the new message goes: (parent id, the message it edits), or None after closing
        a lost generation that stood in the way. A fork waits, like a post, for the generation
        running below its parent: a client that wants to edit at once cancels it first."""
        if state.thread_end is not None:
            raise ThreadEndedError(state.thread_id, state.thread_end.version, None)
        if edit is not None:
            edited = message_of(state, edit)
            if edited.role != "user":
                raise InvalidTurnError(
                    f"message {edit!r} is a reply: only user messages are edited"
                )
            if await self.running(state, running_below(state, edited.parent_id)):
                return None
            return edited.parent_id, edited.id
        if parent is None:
            tip = active_tip(state)
            if tip is None:
                return None, None
            target = state.messages[tip]
        else:
            target = message_of(state, parent)
            if target.role != "assistant":
                raise InvalidTurnError(f"message {parent!r} is a user message: post below a reply")
        end = state.ends.get(target.id)
        if end is not None:
            raise ThreadEndedError(state.thread_id, end.version, target.id)
        running = [target] if target.kind == "pending" else running_below(state, target.id)
        if await self.running(state, running):
            return None
        if target.role == "user":
            raise InvalidTurnError(f"message {target.id!r} has no reply yet")
        edited_id = target.children[-1] if target.children else None
        return target.id, edited_id

    async def running(self, state: ThreadState, generations: list[Message]) -> bool:
        """`TurnInProgressError` if one of `generations` still runs; True if some had lost
        their owner and were closed (the caller looks again), False if there were none."""
        for reply in generations:
            if reply.id in self.runner.tasks or await self.leases.alive(
                state.thread_id, reply.id, reply.lease_expires_at
            ):
                raise TurnInProgressError(state.thread_id, reply.id)
        if generations:
            await self.runner.recover(state.thread_id)
            return True
        return False

    async def _open(self, state: ThreadState, batch: list[AnyEvent], job: Job) -> AppendResult:
        """Append a turn's first batch at `state`'s version, and start its generation."""
        result = await self.store.append(job.thread_id, batch, state.version)
        self.reader.advance(state, batch, result)
        self.runner.start(job)
        return result

    async def _stored(self, thread_id: str) -> ThreadState:
        state = await self.reader.state(thread_id)
        if state.started is None:
            raise ThreadNotFoundError(thread_id)
        return state
