"""Re-verify a stored thread: its hash chain, the seals of its ends, and its meta.

`check` is pure: it takes the raw entries, the meta hash and the event-id index as Redis holds
them, recomputes everything from the entries, and lists every disagreement with its version.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, TypeAlias

import msgspec

from events.chain import GENESIS, chain_hash, seal_ok
from events.records import StoredEntry, parse_meta
from events.schema import AnyEvent, ThreadEnded, attach_point, decode, tag_of

Area: TypeAlias = Literal["chain", "seal", "meta"]


class Problem(msgspec.Struct, frozen=True, kw_only=True):
    version: int
    area: Area
    reason: str


class VerifyReport(msgspec.Struct, frozen=True, kw_only=True):
    thread_id: str
    version: int
    head: bytes
    seals_checked: int
    problems: tuple[Problem, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def chain_ok(self) -> bool:
        return not any(p.area == "chain" for p in self.problems)

    @property
    def seal_ok(self) -> bool:
        return not any(p.area == "seal" for p in self.problems)

    @property
    def meta_ok(self) -> bool:
        return not any(p.area == "meta" for p in self.problems)

    @property
    def first_bad(self) -> Problem | None:
        return min(self.problems, key=lambda p: p.version, default=None)

    @property
    def first_bad_version(self) -> int | None:
        first = self.first_bad
        return first.version if first else None


class _Walk:
    """What one pass over the entries learns: recomputed hashes, ends, ids and problems."""

    def __init__(self, thread_id: str) -> None:
        self.thread_id = thread_id
        self.problems: list[Problem] = []
        self.hashes: dict[int, bytes] = {}
        self.ends: dict[str, int] = {}
        self.thread_end: int | None = None
        self.ids: dict[str, int] = {}
        self.last = 0
        self._prev = GENESIS

    def add(self, version: int, area: Area, reason: str) -> None:
        self.problems.append(Problem(version=version, area=area, reason=reason))

    def entry(self, entry: StoredEntry) -> None:
        version, _, seq = entry.entry_id.partition("-")
        if not version.isdigit() or seq != "0":
            self.add(self.last + 1, "chain", f"entry {entry.entry_id} was inserted")
            return
        v = int(version)
        if v != self.last + 1:
            self.add(self.last + 1, "chain", f"versions {self.last + 1}..{v - 1} are missing")
        computed = chain_hash(self._prev, self.thread_id, v, entry.type, entry.data)
        if computed != entry.hash:
            self.add(v, "chain", "hash mismatch: payload, tag, position or thread altered")
        self.hashes[v] = computed
        # Chain on from the stored hash, so one altered entry is reported once, not onwards.
        self._prev = entry.hash
        self.last = v
        try:
            event = decode(entry.data)
        except msgspec.DecodeError as exc:
            self.add(v, "chain", f"undecodable event: {exc}")
            return
        self._event(v, entry, event)

    def _event(self, v: int, entry: StoredEntry, event: AnyEvent) -> None:
        if event.thread_id != self.thread_id:
            self.add(v, "chain", f"the event belongs to thread {event.thread_id!r}")
        if tag_of(event) != entry.type:
            self.add(v, "chain", f"stored as {entry.type!r} but the event is {tag_of(event)!r}")
        if event.event_id in self.ids:
            self.add(v, "chain", f"event id {event.event_id} was stored before")
        self.ids.setdefault(event.event_id, v)
        attaches, parent = attach_point(event)
        below = parent if attaches else event.leaf_id if isinstance(event, ThreadEnded) else None
        if (attaches or isinstance(event, ThreadEnded)) and self.thread_end is not None:
            self.add(v, "chain", f"the event follows the thread's end at {self.thread_end}")
        elif below is not None and below in self.ends:
            self.add(v, "chain", f"the event continues a branch ended at {self.ends[below]}")
        if isinstance(event, ThreadEnded):
            self.ends.setdefault(event.leaf_id, v)
            if event.scope == "thread" and self.thread_end is None:
                self.thread_end = v


def check(
    thread_id: str,
    entries: Iterable[StoredEntry],
    meta: dict[bytes, bytes],
    ids: dict[str, int],
    seal_key: bytes,
) -> VerifyReport:
    """Recompute the chain from `entries` and compare it with the seals, the meta and the index."""
    walk = _Walk(thread_id)
    for entry in entries:
        walk.entry(entry)
    _check_meta(walk, meta, ids)
    checked = _check_seals(walk, meta, seal_key)
    return VerifyReport(
        thread_id=thread_id,
        version=walk.last,
        head=walk.hashes.get(walk.last, GENESIS),
        seals_checked=checked,
        problems=tuple(sorted(walk.problems, key=lambda p: p.version)),
    )


def _check_meta(walk: _Walk, meta: dict[bytes, bytes], ids: dict[str, int]) -> None:
    head = parse_meta(meta)
    if head.version > walk.last:
        walk.add(walk.last + 1, "chain", f"versions {walk.last + 1}..{head.version} are missing")
    elif head.version < walk.last:
        walk.add(head.version + 1, "meta", f"the meta stops at version {head.version}")
    elif head.hash != walk.hashes.get(walk.last, GENESIS):
        walk.add(walk.last, "meta", "the meta head differs from the recomputed chain")
    if head.ended != walk.ends:
        version = _first_difference(head.ended, walk.ends)
        walk.add(version, "meta", "the meta's ended leaves differ from the thread.ended events")
    if head.thread_end != walk.thread_end:
        version = min(v for v in (head.thread_end, walk.thread_end) if v is not None)
        walk.add(version, "meta", "the meta's thread end differs from the events")
    if ids != walk.ids:
        walk.add(_first_difference(ids, walk.ids), "meta", "the event-id index differs")


def _check_seals(walk: _Walk, meta: dict[bytes, bytes], key: bytes) -> int:
    seals = parse_meta(meta).seals
    for version in sorted(set(walk.ends.values()) | set(seals)):
        stored = seals.get(version)
        computed = walk.hashes.get(version)
        if stored is None:
            walk.add(version, "seal", "the end at this version has no seal")
        elif computed is None or version not in walk.ends.values():
            walk.add(version, "seal", "a seal for a version with no end")
        elif not seal_ok(key, walk.thread_id, version, computed, stored):
            walk.add(version, "seal", "the seal does not match the history it closes")
    return len(seals)


def _first_difference(stored: dict[str, int], derived: dict[str, int]) -> int:
    keys = (stored.keys() ^ derived.keys()) | {k for k in stored if stored[k] != derived.get(k)}
    return min((stored.get(k) or derived.get(k) or 0) for k in keys)
