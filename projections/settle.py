"""Bringing threads' views up to date, many at a time, each exactly once.

A thread's view carries the version it was taken at (its checkpoint). To settle a set of
threads of one partition, the writer reads their checkpoints in one pipeline, the events after
them in another, folds each thread on from the state it holds, and writes every thread's
summary, checkpoint and analytics increments in one script call — which leaves alone any thread
whose view moved since it was read (another projector got there first); those are read again.
A thread already at or past the version asked for is only re-listed under its owner.
"""

from __future__ import annotations

from collections import Counter, OrderedDict, defaultdict
from datetime import datetime
from typing import Final, NamedTuple

import msgspec

from events.errors import EventStoreError, redis_errors
from events.schema import AnyEvent, decode
from events.store import RedisEventStore, Script
from projections.state import EMPTY, ThreadState, fold
from projections.views import summary, tally, tenant_of

VIEW_SCRIPT: Final = Script.load("view.lua", "projections")
_json: Final = msgspec.json.Encoder()
SETTLE_ATTEMPTS: Final = 8
KEPT_STATES: Final = 10_000


class ProjectorError(EventStoreError):
    """A thread whose view could not be brought up to date."""


class Settled(NamedTuple):
    applied: set[str]  # threads whose view this call moved forward
    skipped: set[str]  # threads whose view was already there
    failed: dict[str, Exception]  # threads that could not be settled, and why


class _Plan(NamedTuple):
    thread_id: str
    at: int
    state: ThreadState
    by_day: dict[str, Counter[str]]
    summary: dict[str, str]


class ViewWriter:
    def __init__(self, store: RedisEventStore, view: str) -> None:
        self.store = store
        self.keys = store.keys
        self.view = view
        self._states: OrderedDict[str, ThreadState] = OrderedDict()

    async def checkpoint(self, thread_id: str) -> int:
        """The version of the thread the view holds (0: none)."""
        return (await self._checkpoints([thread_id]))[thread_id]

    async def settle(
        self, wanted: dict[str, int], known: dict[str, dict[int, bytes]] | None = None
    ) -> Settled:
        """Bring each thread's view to at least the version given for it.

        `known` holds stored bytes of events already at hand (thread -> version -> bytes, from
        the feed): a thread whose missing events are all there is not read again.
        """
        known = known or {}
        settled = Settled(set(), set(), {})
        pending = dict(wanted)
        for attempt in range(SETTLE_ATTEMPTS):
            if not pending:
                return settled
            # First the checkpoints this writer can tell (a wrong one leaves the thread alone in
            # the script, and it is read next time); the rest are read.
            at = self._guesses(pending, known) if attempt == 0 else {}
            unknown = [t for t in pending if t not in at]
            if unknown:
                at |= await self._checkpoints(unknown)
            there = [t for t in pending if pending[t] <= at[t]]
            settled.skipped.update(there)
            await self._relist(there)
            behind = {t: at[t] for t in pending if pending[t] > at[t]}
            plans = await self._plans(behind, pending, known, settled)
            left = await self._write(plans)
            written = [plan for plan in plans if plan.thread_id not in left]
            for plan in written:
                self._keep(plan.state)
            await self._list([plan.summary for plan in written])
            settled.applied.update(plan.thread_id for plan in written)
            pending = {t: pending[t] for t in left}
        for thread_id in pending:
            settled.failed[thread_id] = ProjectorError(
                f"thread {thread_id!r}: the view kept moving under the projector"
            )
        return settled

    def _guesses(
        self, wanted: dict[str, int], known: dict[str, dict[int, bytes]]
    ) -> dict[str, int]:
        """The checkpoints to expect without reading them: the version this writer last wrote
        for a thread, or 0 for a thread whose first event is at hand. Only those behind the
        version wanted: a thread said to be there already is checked on the view."""
        guesses = {}
        for thread_id, version in wanted.items():
            kept = self._states.get(thread_id)
            at = kept.version if kept is not None else 0 if 1 in known.get(thread_id, ()) else None
            if at is not None and at < version:
                guesses[thread_id] = at
        return guesses

    async def _checkpoints(self, threads: list[str]) -> dict[str, int]:
        with redis_errors():
            raw = await self.store.coalescer.execute_many(
                *(("HGET", self.keys.view_thread(self.view, t), "version") for t in threads)
            )
        return {t: int(v) if v else 0 for t, v in zip(threads, raw, strict=True)}

    async def _plans(
        self,
        behind: dict[str, int],
        wanted: dict[str, int],
        known: dict[str, dict[int, bytes]],
        settled: Settled,
    ) -> list[_Plan]:
        """For each thread, its state after the events past its checkpoint, and what they add.

        The feed's copies serve when they run from the checkpoint to the version wanted and
        decode; otherwise (a gap, a bad copy) the thread's own stream is read.
        """
        at_hand: dict[str, list[AnyEvent]] = {}
        to_read: dict[str, int] = {}
        for thread_id, at in behind.items():
            run = _run_after(known.get(thread_id, {}), at)
            events = _decoded(run) if at + len(run) >= wanted[thread_id] else None
            if events is None:
                to_read[thread_id] = at
            else:
                at_hand[thread_id] = events
        if to_read:
            with redis_errors():
                replies = await self.store.coalescer.execute_many(
                    *(
                        ("XRANGE", self.keys.stream(t), f"{at + 1}-0", "+")
                        for t, at in to_read.items()
                    )
                )
            for thread_id, rows in zip(to_read, replies, strict=True):
                events = _decoded([fields.get(b"data", b"") for _, fields in rows])
                if events is None:
                    settled.failed[thread_id] = ProjectorError(
                        f"thread {thread_id!r}: an event after version {to_read[thread_id]} "
                        "does not decode"
                    )
                else:
                    at_hand[thread_id] = events
        plans = []
        for thread_id, events in at_hand.items():
            try:
                plans.append(await self._plan(thread_id, behind[thread_id], events))
            except (EventStoreError, msgspec.DecodeError, KeyError, ValueError) as exc:
                settled.failed[thread_id] = exc
        return plans

    async def _plan(self, thread_id: str, at: int, events: list[AnyEvent]) -> _Plan:
        state, by_day = tally(await self._state_at(thread_id, at), events)
        return _Plan(thread_id, at, state, by_day, summary(state))

    def _keep(self, state: ThreadState) -> None:
        """Keep the newest states folded, a bounded number, to continue them next time."""
        self._states[state.thread_id] = state
        self._states.move_to_end(state.thread_id)
        if len(self._states) > KEPT_STATES:
            self._states.popitem(last=False)

    async def _state_at(self, thread_id: str, version: int) -> ThreadState:
        cached = self._states.get(thread_id)
        if cached is not None and cached.version == version:
            return cached
        if version == 0:
            return EMPTY
        return fold([e.event async for e in self.store.events(thread_id, until=version)])

    async def _write(self, plans: list[_Plan]) -> set[str]:
        """Write the plans, one script call per partition; the threads left alone."""
        by_partition: defaultdict[int, list[_Plan]] = defaultdict(list)
        for plan in plans:
            if plan.state.version > plan.at:
                by_partition[self.keys.partition(plan.thread_id)].append(plan)
        left: set[str] = set()
        for group in by_partition.values():
            left |= await self._write_partition(group)
        return left

    async def _write_partition(self, plans: list[_Plan]) -> set[str]:
        keys = [self.keys.view_thread(self.view, plan.thread_id) for plan in plans]
        slots: dict[str, int] = {}
        # One argument, JSON, whatever the number of threads and counters: each argument costs
        # the client more than the script spends taking the JSON apart.
        control: list[tuple[int, int, list[str], list[tuple[int, str, int]]]] = []
        for plan in plans:
            fields = [part for pair in plan.summary.items() for part in pair]
            counted: list[tuple[int, str, int]] = []
            for day, counts in sorted(plan.by_day.items()):
                key = self.keys.view_analytics(
                    self.view, self.keys.partition(plan.thread_id), tenant_of(plan.state), day
                )
                if key not in slots:
                    keys.append(key)
                    slots[key] = len(keys)
                counted += [(slots[key], name, amount) for name, amount in sorted(counts.items())]
            control.append((plan.at, plan.state.version, fields, counted))
        reply = await self.store.run_script(keys, [_json.encode(control)], VIEW_SCRIPT)
        return {plans[int(i) - 1].thread_id for i in reply}

    async def _list(self, rows: list[dict[str, str]]) -> None:
        """List threads under their owners (another slot: written after, and re-asserted)."""
        await self._zadd([(r["thread_id"], r["tenant"], r["owner"], r["updated_at"]) for r in rows])

    async def _relist(self, threads: list[str]) -> None:
        if not threads:
            return
        with redis_errors():
            replies = await self.store.coalescer.execute_many(
                *(
                    ("HMGET", self.keys.view_thread(self.view, t), "tenant", "owner", "updated_at")
                    for t in threads
                )
            )
        rows = []
        for thread_id, values in zip(threads, replies, strict=True):
            tenant, owner, updated = (v.decode() if v else "" for v in values)
            rows.append((thread_id, tenant, owner, updated))
        await self._zadd(rows)

    async def _zadd(self, rows: list[tuple[str, str, str, str]]) -> None:
        listed = [row for row in rows if row[2] and row[3]]
        if not listed:
            return
        # GT: a slower projector's older time never replaces a newer one.
        with redis_errors():
            await self.store.coalescer.execute_many(
                *(
                    (
                        "ZADD",
                        self.keys.view_owner(self.view, tenant, owner),
                        "GT",
                        datetime.fromisoformat(updated).timestamp(),
                        thread_id,
                    )
                    for thread_id, tenant, owner, updated in listed
                )
            )


def _decoded(stored: list[bytes]) -> list[AnyEvent] | None:
    """The events, or None if any of them does not decode."""
    try:
        return [decode(data) for data in stored]
    except msgspec.DecodeError:
        return None


def _run_after(versions: dict[int, bytes], at: int) -> list[bytes]:
    """The stored bytes of versions at+1, at+2, ... as far as they run without a gap."""
    run = []
    version = at + 1
    while version in versions:
        run.append(versions[version])
        version += 1
    return run
