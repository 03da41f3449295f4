"""Re-verify a stored thread: its hash chain, its seals, its meta and its index.

`check` is pure: it takes the raw entries, the meta hash and the index hash as Redis holds them,
recomputes everything from the entries, and lists every disagreement with its version.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final, Literal, TypeAlias

import msgspec

from events.chain import GENESIS, Sealer, SealKind, chain_hash
from events.records import StoredEntry
from events.schema import AnyEvent, ReplyStarted, ThreadEnded, decode, placement, tag_of

Area: TypeAlias = Literal["chain", "seal", "meta"]

_DIGITS: Final = re.compile(r"[0-9]+")
_BATCH: Final = re.compile(r"([0-9]+):([0-9]+):([0-9]+)")


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


def check(
    thread_id: str,
    entries: Iterable[StoredEntry],
    meta: dict[bytes, bytes],
    index: dict[bytes, bytes],
    seal_key: bytes,
    *,
    stream_last: str | None = None,
) -> VerifyReport:
    """Recompute the chain from `entries` and compare it with the seals, the meta and the index.

    `stream_last` is the id of the stream's last entry, read together with the meta: an entry
    beyond the meta's version is reported even when the entries were only read up to it.
    """
    walk = _Walk(thread_id, seal_key)
    for entry in entries:
        walk.entry(entry)
    walk.compare_meta(meta, stream_last)
    walk.compare_index(index)
    return VerifyReport(
        thread_id=thread_id,
        version=walk.last,
        head=walk.hashes.get(walk.last, GENESIS),
        seals_checked=walk.seals_checked,
        problems=tuple(sorted(walk.problems, key=lambda p: p.version)),
    )


class _Walk:
    """One pass over the entries: recomputed hashes, the tree, ends, the index, problems."""

    def __init__(self, thread_id: str, seal_key: bytes) -> None:
        self.thread_id = thread_id
        self.sealer = Sealer(seal_key)
        self.problems: list[Problem] = []
        self.hashes: dict[int, bytes] = {}
        self.ends: dict[str, int] = {}
        self.end_versions: list[int] = []
        self.thread_end: int | None = None
        self.index: dict[str, str] = {}
        self.seals_checked = 0
        self.last = 0
        self._prev = GENESIS

    def add(self, version: int, area: Area, reason: str) -> None:
        self.problems.append(Problem(version=version, area=area, reason=reason))

    def entry(self, entry: StoredEntry) -> None:
        version, _, seq = entry.entry_id.partition("-")
        if _int(version) is None or seq != "0":
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
        if f"e:{event.event_id}" in self.index:
            self.add(v, "chain", f"event id {event.event_id} was stored before")
        else:
            self.index[f"e:{event.event_id}"] = str(v)
        if isinstance(event, ThreadEnded):
            self._end(v, event)
        elif placement(event).guard is not None:
            self._attach(v, event)

    def _attach(self, v: int, event: AnyEvent) -> None:
        guard, message, role, _ = placement(event)
        assert guard is not None
        for blocked in (guard, message if role == "a" else ""):
            if self.thread_end is not None:
                self.add(v, "chain", f"the event follows the thread's end at {self.thread_end}")
                break
            if blocked and blocked in self.ends:
                self.add(v, "chain", f"the event continues a branch ended at {self.ends[blocked]}")
                break
        parent = self.index.get(f"m:{guard}") if guard else None
        if guard and parent is None:
            self.add(v, "chain", f"the event hangs below {guard!r}, not a message here")
        elif parent is not None and parent[:1] == role:
            self.add(v, "chain", f"the event hangs below {guard!r}, a message of the same role")
        self.index[f"c:{guard}"] = "1"
        if role and f"m:{message}" not in self.index:
            self.index[f"m:{message}"] = role + guard
        if role == "a" and not isinstance(event, ReplyStarted):
            if f"f:{message}" in self.index:
                self.add(v, "chain", f"the generation of {message!r} was over")
            self.index[f"f:{message}"] = "1"

    def _end(self, v: int, event: ThreadEnded) -> None:
        leaf = event.leaf_id
        if self.thread_end is not None:
            self.add(v, "chain", f"the event follows the thread's end at {self.thread_end}")
        elif event.scope == "branch" and leaf in self.ends:
            self.add(v, "chain", f"the branch was ended before, at {self.ends[leaf]}")
        if f"m:{leaf}" not in self.index:
            self.add(v, "chain", f"the end names {leaf!r}, not a message here")
        elif event.scope == "branch" and f"c:{leaf}" in self.index:
            self.add(v, "chain", f"the end names {leaf!r}, not the tip of a branch")
        self.ends.setdefault(leaf, v)
        self.end_versions.append(v)
        if event.scope == "thread" and self.thread_end is None:
            self.thread_end = v

    def compare_meta(self, raw: dict[bytes, bytes], stream_last: str | None) -> None:
        meta = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in raw.items()}
        version = _int(meta.get("version", "0"))
        if version is None:
            self.add(self.last, "meta", f"the meta's version {meta['version']!r} is not a number")
            return
        last_id = _int((stream_last or "0-0").partition("-")[0]) or 0
        if version > self.last:
            self.add(self.last + 1, "chain", f"versions {self.last + 1}..{version} are missing")
        elif version < max(self.last, last_id):
            self.add(version + 1, "meta", f"the stream goes on past the meta's version {version}")
        head = raw.get(b"head", GENESIS)
        if head != self.hashes.get(version, GENESIS):
            self.add(version, "meta", "the meta head differs from the recomputed chain")
        elif version and not self._sealed("head", version, head, meta.get("head_seal", "")):
            self.add(version, "seal", "the head seal does not match the head")
        self._compare_ends(meta)
        self._compare_seals(meta)

    def _compare_ends(self, meta: dict[str, str]) -> None:
        stored = {k[4:]: _int(v) for k, v in meta.items() if k.startswith("end:")}
        for leaf in stored.keys() | self.ends.keys():
            if stored.get(leaf) != self.ends.get(leaf):
                version = self.ends.get(leaf) or stored.get(leaf) or self.last
                self.add(version, "meta", f"the meta's end of {leaf!r} differs from the events")
        if _int(meta.get("thread_end", "")) != self.thread_end:
            version = self.thread_end or _int(meta.get("thread_end", "")) or self.last
            self.add(version, "meta", "the meta's thread end differs from the events")

    def _compare_seals(self, meta: dict[str, str]) -> None:
        seals = {_int(k[5:]): v for k, v in meta.items() if k.startswith("seal:")}
        for version in sorted(v for v in seals.keys() | set(self.end_versions) if v is not None):
            stored = seals.get(version)
            computed = self.hashes.get(version)
            if stored is None:
                self.add(version, "seal", "the end at this version has no seal")
            elif computed is None or version not in self.end_versions:
                self.add(version, "seal", "a seal for a version with no end")
            elif not self._sealed("end", version, computed, stored):
                self.add(version, "seal", "the seal does not match the history it closes")
            self.seals_checked += stored is not None
        if None in seals:
            self.add(self.last, "seal", "a seal field that names no version")

    def _sealed(self, kind: SealKind, version: int, head: bytes, stored_hex: str) -> bool:
        try:
            stored = bytes.fromhex(stored_hex)
        except ValueError:
            return False
        return self.sealer.ok(kind, self.thread_id, version, head, stored)

    def compare_index(self, raw: dict[bytes, bytes]) -> None:
        stored = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in raw.items()}
        for field in stored.keys() | self.index.keys():
            want, got = self.index.get(field), stored.get(field)
            if field.startswith("e:") and got is not None and want is not None:
                got = _batch_version(got, want)
            if got != want:
                version = _int(want or stored[field].partition(":")[0]) if field[:2] == "e:" else 0
                self.add(version or self.last, "meta", f"the index differs at {field!r}")


def _batch_version(value: str, want: str) -> str | None:
    """The version in an index value `<version>:<first>:<last>`, if the value is consistent."""
    match = _BATCH.fullmatch(value)
    if match is None:
        return None
    version, first, last = (int(p) for p in match.groups())
    return str(version) if first <= version <= last else None


def _int(text: str) -> int | None:
    """A number written in ASCII digits, as the store writes them; None for anything else."""
    return int(text) if _DIGITS.fullmatch(text) else None
