"""What the store returns: results of appends, recorded events, raw entries and thread heads."""

from __future__ import annotations

import msgspec

from events.chain import GENESIS
from events.schema import AnyEvent, decode


class AppendResult(msgspec.Struct, frozen=True, kw_only=True):
    """Where a batch landed; `replayed` is True when it had been stored before."""

    thread_id: str
    first_version: int
    last_version: int
    head: bytes
    replayed: bool = False


class RecordedEvent(msgspec.Struct, frozen=True, kw_only=True):
    version: int
    hash: bytes
    event: AnyEvent


class StoredEntry(msgspec.Struct, frozen=True, kw_only=True):
    """A thread stream entry as Redis holds it, undecoded (what the verifier reads).

    `version` reads the entry id; an id not of the form `<version>-0` was not written by coda.
    """

    entry_id: str
    type: str
    data: bytes
    hash: bytes

    @property
    def version(self) -> int:
        return int(self.entry_id.partition("-")[0])


def stored_entry(entry_id: bytes | str, fields: dict[bytes, bytes]) -> StoredEntry:
    """A stream entry as XRANGE or XREAD returns it."""
    return StoredEntry(
        entry_id=entry_id.decode() if isinstance(entry_id, bytes) else entry_id,
        type=fields.get(b"type", b"").decode(),
        data=fields.get(b"data", b""),
        hash=fields.get(b"hash", b""),
    )


def recorded(entry: StoredEntry) -> RecordedEvent:
    return RecordedEvent(version=entry.version, hash=entry.hash, event=decode(entry.data))


class ThreadSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """A thread as Redis holds it, read consistently: what the verifier and the audit read."""

    thread_id: str
    meta: dict[bytes, bytes]
    index: dict[bytes, bytes]
    stream_last: str  # the stream's last-generated id
    entries: list[StoredEntry]  # up to the meta's version


class Head(msgspec.Struct, frozen=True, kw_only=True):
    """A thread's meta: version, head hash, ended leaves (leaf -> version) and seals."""

    version: int
    hash: bytes
    ended: dict[str, int]
    thread_end: int | None
    seals: dict[int, bytes]


class FeedEntry(msgspec.Struct, frozen=True, kw_only=True):
    entry_id: str
    thread_id: str
    version: int
    type: str
    data: bytes

    @property
    def event(self) -> AnyEvent:
        return decode(self.data)


def parse_meta(meta: dict[bytes, bytes]) -> Head:
    """A Head from the meta hash as Redis holds it."""
    ended: dict[str, int] = {}
    seals: dict[int, bytes] = {}
    for field, value in meta.items():
        if field.startswith(b"end:"):
            ended[field[4:].decode()] = int(value)
        elif field.startswith(b"seal:"):
            seals[int(field[5:])] = _unhex(value)
    thread_end = meta.get(b"thread_end")
    return Head(
        version=int(meta.get(b"version", 0)),
        hash=meta.get(b"head", GENESIS),
        ended=ended,
        thread_end=int(thread_end) if thread_end is not None else None,
        seals=seals,
    )


def _unhex(value: bytes) -> bytes:
    """A seal as stored (hex); anything else is kept as it is, and will not verify."""
    try:
        return bytes.fromhex(value.decode())
    except ValueError:
        return value
