"""Moving a thread between deployments: NDJSON out, verified NDJSON in.

An export is one manifest line, then one line per event:

    {"manifest": {"format": 1, "thread_id": ..., "count": n, "head": hex, "head_seal": hex,
                  "seals": {"<version>": hex}}}
    {"version": 1, "type": "thread.started", "hash": hex, "batch": [1, 1],
     "data": base64 of the stored bytes, "event": {... the event as JSON, for people ...}}

`data` is what counts: the chain is recomputed over those exact bytes. An import checks the
whole file before it writes anything (every hash, the head, the count, the batches, and that
the events encode back to the same bytes), then appends the batches as they were first
appended, so importing the same file twice changes nothing. Seals travel in the manifest but
are the exporting deployment's: they verify only where its key is.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator
from typing import Any, Final

import msgspec

from events.chain import GENESIS, chain_hash
from events.errors import ConcurrencyError, EventStoreError, IdempotencyError
from events.records import AppendResult, parse_meta
from events.schema import AnyEvent, decode, encode
from events.store import RedisEventStore

FORMAT: Final = 1


class TransferError(EventStoreError):
    """An export that cannot be imported as it is; nothing was written."""


class Manifest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    format: int
    thread_id: str
    count: int
    head: str
    head_seal: str = ""
    seals: dict[str, str] = {}


class Line(msgspec.Struct, frozen=True, kw_only=True):
    version: int
    type: str
    hash: str
    batch: tuple[int, int]
    data: str
    event: dict[str, Any] = {}


_json: Final = msgspec.json.Encoder()


async def export_thread(store: RedisEventStore, thread_id: str) -> Iterator[bytes]:
    """The export of a thread, line by line (each line ends with a newline)."""
    meta = await store.meta(thread_id)
    head = parse_meta(meta)
    index = await store.index(thread_id)
    entries = [e async for e in store.entries(thread_id, end=f"{head.version}-0")]
    batches = _batches(index)
    manifest = Manifest(
        format=FORMAT,
        thread_id=thread_id,
        count=len(entries),
        head=head.hash.hex(),
        head_seal=meta.get(b"head_seal", b"").decode(),
        seals={str(v): s.hex() for v, s in sorted(head.seals.items())},
    )
    lines = [_json.encode({"manifest": manifest}) + b"\n"]
    for entry in entries:
        event = decode(entry.data)
        line = Line(
            version=entry.version,
            type=entry.type,
            hash=entry.hash.hex(),
            batch=batches.get(event.event_id, (entry.version, entry.version)),
            data=base64.b64encode(entry.data).decode(),
            event=msgspec.to_builtins(event),
        )
        lines.append(_json.encode(line) + b"\n")
    return iter(lines)


async def import_thread(store: RedisEventStore, lines: Iterable[bytes]) -> AppendResult | None:
    """Check an export whole, then append its batches; the last append's result."""
    manifest, batches = check_export(lines)
    result = None
    for first, events in batches:
        try:
            result = await store.append(manifest.thread_id, events, first - 1)
        except (ConcurrencyError, IdempotencyError) as exc:
            raise TransferError(
                f"thread {manifest.thread_id!r} already holds another history ({exc})"
            ) from exc
    return result


def check_export(lines: Iterable[bytes]) -> tuple[Manifest, list[tuple[int, list[AnyEvent]]]]:
    """The manifest and the batches of an export, if every line of it holds; else TransferError."""
    rows = [row for row in lines if row.strip()]
    if not rows:
        raise TransferError("the export is empty")
    try:
        manifest = msgspec.json.decode(rows[0], type=dict[str, Manifest])["manifest"]
        parsed = [msgspec.json.decode(row, type=Line) for row in rows[1:]]
    except (msgspec.DecodeError, KeyError) as exc:
        raise TransferError(f"not a coda export: {exc}") from exc
    if manifest.format != FORMAT:
        raise TransferError(f"export format {manifest.format}; this coda reads {FORMAT}")
    if manifest.count != len(parsed):
        raise TransferError(
            f"the manifest counts {manifest.count} events, the file has {len(parsed)}"
        )
    events = _checked_chain(manifest, parsed)
    return manifest, _grouped(parsed, events)


def _checked_chain(manifest: Manifest, parsed: list[Line]) -> list[AnyEvent]:
    prev, events = GENESIS, []
    for expected, line in enumerate(parsed, start=1):
        if line.version != expected:
            raise TransferError(f"version {expected} is missing (found {line.version})")
        data = base64.b64decode(line.data, validate=True)
        computed = chain_hash(prev, manifest.thread_id, line.version, line.type, data)
        if computed.hex() != line.hash:
            raise TransferError(f"the chain breaks at version {line.version}")
        try:
            event = decode(data)
        except msgspec.DecodeError as exc:
            raise TransferError(f"version {line.version} does not decode: {exc}") from exc
        if encode(event) != data:
            raise TransferError(f"version {line.version} would not be stored as it was")
        events.append(event)
        prev = computed
    if prev.hex() != manifest.head:
        raise TransferError("the events do not end at the manifest's head")
    return events


def _grouped(parsed: list[Line], events: list[AnyEvent]) -> list[tuple[int, list[AnyEvent]]]:
    """The events in the batches they were first appended in, each batch whole."""
    batches: list[tuple[int, int, list[AnyEvent]]] = []
    for line, event in zip(parsed, events, strict=True):
        first, last = line.batch
        if not first <= line.version <= last:
            raise TransferError(f"version {line.version} lies outside its batch {line.batch}")
        if line.version == first:
            batches.append((first, last, []))
        elif not batches or batches[-1][:2] != (first, last):
            raise TransferError(f"the batch of version {line.version} starts nowhere")
        batches[-1][2].append(event)
    for first, last, members in batches:
        if len(members) != last - first + 1:
            raise TransferError(f"the batch {first}..{last} is not whole")
    return [(first, members) for first, _, members in batches]


def _batches(index: dict[bytes, bytes]) -> dict[str, tuple[int, int]]:
    """Event id -> (first, last) version of the batch it came in, from the thread's index."""
    out: dict[str, tuple[int, int]] = {}
    for field, value in index.items():
        if field.startswith(b"e:"):
            _, first, last = value.decode().split(":")
            out[field[2:].decode()] = (int(first), int(last))
    return out
