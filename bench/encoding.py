"""Why events are stored as msgpack: size and encode+decode speed against JSON, same events.

    python bench/encoding.py

Both codecs are msgspec's, over the same mix of events a conversation writes. Prints one JSON
line per comparison; ratio = JSON / msgpack, so above 1 means msgpack is smaller or faster.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Final

import msgspec
from common import emit

from events.schema import (
    AnyEvent,
    MessageClassified,
    MessagePosted,
    ReplyCompleted,
    ReplyStarted,
    Usage,
)

ROUNDS: Final = 5
AT: Final = datetime(2026, 8, 15, 12, 0, tzinfo=UTC)


def conversation(turns: int = 200) -> list[AnyEvent]:
    """Per turn: a user message, its classification, a generation's start and its reply."""
    events: list[AnyEvent] = []
    for i in range(turns):
        m, r = f"m{i:04d}", f"r{i:04d}"
        common = {"thread_id": "01a218bb-6cc1-723d-831a-ee60d178d5d8", "occurred_at": AT}
        events += [
            MessagePosted(
                actor="user",
                message_id=m,
                parent_id=f"r{i - 1:04d}" if i else None,
                content="How do I keep a long conversation coherent across sessions? " * 2,
                **common,  # type: ignore[arg-type]
            ),
            MessageClassified(
                actor="classifier",
                message_id=m,
                classifier="rules",
                classifier_version="1",
                tier="benign",
                score=0.02,
                **common,  # type: ignore[arg-type]
            ),
            ReplyStarted(
                actor="system",
                message_id=r,
                parent_id=m,
                model="claude-opus-4-1",
                lease_owner="api-1:4242",
                lease_expires_at=AT,
                **common,  # type: ignore[arg-type]
            ),
            ReplyCompleted(
                actor="model",
                message_id=r,
                parent_id=m,
                content="Keep a running summary, and restate the goal when the topic shifts. " * 8,
                kind="answer",
                content_sha256="0" * 64,
                usage=Usage(input_tokens=1200, output_tokens=140),
                **common,  # type: ignore[arg-type]
            ),
        ]
    return events


def timed(work: object) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        start = time.perf_counter()
        work()  # type: ignore[operator]
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    events = conversation()
    codecs = {
        "msgpack": (msgspec.msgpack.Encoder(), msgspec.msgpack.Decoder(AnyEvent)),
        "json": (msgspec.json.Encoder(), msgspec.json.Decoder(AnyEvent)),
    }
    size: dict[str, int] = {}
    speed: dict[str, float] = {}
    for name, (encoder, decoder) in codecs.items():
        blobs = [encoder.encode(e) for e in events]
        assert [decoder.decode(b) for b in blobs] == events
        size[name] = sum(map(len, blobs))
        secs = timed(lambda: [decoder.decode(encoder.encode(e)) for e in events])  # noqa: B023
        speed[name] = len(events) / secs
    for case, unit, value, baseline in [
        ("stored bytes, msgpack vs json", "bytes", size["msgpack"], size["json"]),
        ("encode+decode, msgpack vs json", "events/s", speed["msgpack"], speed["json"]),
    ]:
        ratio = baseline / value if unit == "bytes" else value / baseline
        emit(
            bench="encoding",
            case=case,
            value=round(value),
            baseline=round(baseline),
            unit=unit,
            ratio=round(ratio, 3),
            goal=">= 1",
        )


if __name__ == "__main__":
    main()
