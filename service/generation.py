"""One generation, from the model's first word to the one append that records its end.

The runner streams the model's deltas to the live channel (coalesced: whatever came while the
previous write was in flight goes in the next), renews the lease, and watches for a cancel.
Then it appends the events `service.replies` makes of it: the reply, and in the same append the
end or the refused end. Nothing is written below a farewell: the end closes the branch there.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Final

import msgspec

from events.errors import (
    ConcurrencyError,
    EventStoreError,
    InvalidBatchError,
    ThreadEndedError,
    redis_errors,
)
from events.schema import ReplyFailed
from events.store import RedisEventStore
from projections.reader import ThreadReader
from projections.state import ThreadState
from service.errors import EngineError
from service.leases import Leases
from service.live import Closed, LiveChannel
from service.model import (
    Finished,
    Model,
    ModelError,
    ModelEvent,
    TextDelta,
    ToolCall,
)
from service.replies import Job, Outcome, Reason, closing_events, outcome_of

log = logging.getLogger(__name__)

MAX_ATTEMPTS: Final = 50


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
        self.tasks: dict[str, asyncio.Task[Outcome]] = {}  # generations running in this process
        self._generating: dict[str, asyncio.Task[Outcome]] = {}
        self._stopping: dict[str, tuple[Reason, str]] = {}

    def start(self, job: Job) -> None:
        """Run `job` in a task of its own, kept until it is done."""
        task = asyncio.create_task(self.run(job), name=f"reply {job.reply_id}")
        self.tasks[job.reply_id] = task

        def forget(done: asyncio.Task[Outcome]) -> None:
            self.tasks.pop(job.reply_id, None)
            if not done.cancelled() and done.exception() is not None:
                log.error("generation %s failed", job.reply_id, exc_info=done.exception())

        task.add_done_callback(forget)

    async def recover(self, thread_id: str) -> list[str]:
        """Close the thread's generations whose owner is gone: see `Engine.recover`."""
        closed: list[str] = []
        for _ in range(MAX_ATTEMPTS):
            state = await self.reader.state(thread_id)
            lost = [
                m
                for m in state.messages.values()
                if m.kind == "pending"
                and m.id not in self.tasks
                and not await self.leases.alive(thread_id, m.id, m.lease_expires_at)
            ]
            if not lost:
                return closed
            message = lost[0]
            partial = await self._partial(thread_id, message.id)
            event = ReplyFailed(
                thread_id=thread_id,
                actor="system",
                actor_id=self.leases.owner,
                message_id=message.id,
                parent_id=message.parent_id or "",
                reason="owner_lost",
                partial_content=partial,
                detail="the generation's lease expired",
            )
            try:
                await self.store.append(thread_id, [event], state.version)
            except (ConcurrencyError, InvalidBatchError, ThreadEndedError):
                continue  # someone else wrote first; the next read tells
            await self.live.close(thread_id, message.id, "failed")
            closed.append(message.id)
        raise EngineError(f"thread {thread_id!r}: too many concurrent writes")

    async def stop_all(self, grace: float) -> None:
        """Let this process's generations finish for `grace` seconds, then stop the rest,
        recorded as failed; cancel what cannot even be recorded."""
        tasks = dict(self.tasks)
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks.values(), timeout=grace)
        for reply_id, task in tasks.items():
            if task in pending:
                self.cancel(reply_id, ("error", "the server shut down"))
        if pending:
            _done, pending = await asyncio.wait(pending, timeout=max(grace, 1.0))
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _partial(self, thread_id: str, reply_id: str) -> str:
        items = await self.live.read(thread_id, reply_id)
        return "".join(item.text for item in items if not isinstance(item, Closed))

    async def run(self, job: Job) -> Outcome:
        # Most generations end before their first lease does: only a longer one renews it,
        # until its reply is recorded.
        renewing: list[asyncio.Task[None]] = []
        first_renewal = asyncio.get_running_loop().call_later(
            self.renew_every, lambda: renewing.append(asyncio.create_task(self._renew(job)))
        )
        try:
            result = await self._generate(job)
            outcome, ours, recorded = await self._record(job, result)
            # The text not relayed yet, the outcome and the lease's release: one round trip,
            # shared with other writes. A generation another process closed (it thought the
            # owner lost) was closed there.
            closing: list[tuple[object, ...]] = []
            if ours:
                closing += self.live.close_commands(
                    job.thread_id, job.reply_id, outcome.status, result.tail
                )
            if renewing:
                # A generation that never renewed wrote no lease key, and a cancel key asked
                # for it lapses by itself: the release is for the keys of a long one.
                closing += self.leases.release_commands(job.thread_id, job.reply_id)
            if closing:
                with redis_errors():
                    await self.store.coalescer.execute_many(*closing)
            if ours and outcome.ended is not None and outcome.ended.scope == "thread":
                await self.stop_cut_off(recorded)
            return outcome
        finally:
            first_renewal.cancel()
            for renewer in renewing:
                renewer.cancel()
            await asyncio.gather(*renewing, return_exceptions=True)

    async def stop_cut_off(self, state: ThreadState) -> None:
        """Stop the generations a thread-wide end cut off, here or in another process: their
        replies can no longer be recorded (the thread shows them failed), and the model's work
        would be for nothing."""
        try:
            for reply in state.messages.values():
                if reply.failure != "ended" or self.cancel(reply.id, ("cancelled", "ended")):
                    continue
                if await self.leases.alive(state.thread_id, reply.id, reply.lease_expires_at):
                    await self.leases.request_cancel(state.thread_id, reply.id)
        except EventStoreError as exc:  # the end is recorded: a stop missed costs only work
            log.warning("thread %s: generations cut off not stopped: %s", state.thread_id, exc)

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

        def start_relay() -> None:
            if not done:
                relaying.append(asyncio.create_task(relay()))

        relay_asked = False
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
                            if not relay_asked:
                                # Once the model lets the loop run: a model that wrote it all
                                # at once needs no relay, its text goes with the close.
                                relay_asked = True
                                asyncio.get_running_loop().call_soon(start_relay)
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
            if relaying:
                wake.set()
                await asyncio.gather(*relaying, return_exceptions=True)
        result.text = "".join(parts)
        result.tail = "".join(queued)
        return result

    async def _record(self, job: Job, result: _Result) -> tuple[Outcome, bool, ThreadState]:
        """Append the reply (with an end or a refused end), retried over concurrent writes;
        whether this append closed the generation (False: another process had), and the
        thread as it then stood."""
        cached = self.reader.cached(job.thread_id)
        for _ in range(MAX_ATTEMPTS):
            # The state this process holds is used first; the version check catches a stale one.
            state = cached if cached is not None else await self.reader.state(job.thread_id)
            reply = state.messages.get(job.reply_id)
            if reply is None or reply.kind != "pending":
                if cached is not None:
                    cached = None  # perhaps only behind: look at the stored thread
                    continue
                # Closed meanwhile: ended, or lost.
                return outcome_of(state, job.message_id, job.reply_id), False, state
            cached = None
            events = closing_events(
                job, state, result.text, result.calls, result.finish, result.failure
            )
            try:
                appended = await self.store.append(job.thread_id, events, state.version)
            except (ConcurrencyError, ThreadEndedError, InvalidBatchError):
                continue  # the next read shows what changed, or what closed the generation
            after = self.reader.advance(state, events, appended)
            state = after or await self.reader.state(job.thread_id)
            return outcome_of(state, job.message_id, job.reply_id), True, state
        raise EngineError(f"thread {job.thread_id!r}: could not record reply {job.reply_id!r}")
