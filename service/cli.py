"""The `coda` command line.

    coda verify THREAD [--json]      recompute a thread's hash chain and seals; exit 1 if broken
    coda events THREAD [--after N] [--limit N]
                                     print a thread's events as NDJSON

Where the events live comes from the environment (REDIS_URL, CODA_DATA_DIR, ...; see
docs/storage.md). Errors are one line on stderr, with exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import msgspec

from events.connect import RedisSettings, open_store
from events.errors import EventStoreError
from events.records import RecordedEvent
from events.verify import VerifyReport

_json = msgspec.json.Encoder()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command: Callable[[argparse.Namespace], Coroutine[Any, Any, int]] = args.run
    try:
        return asyncio.run(command(args))
    except EventStoreError as exc:
        print(f"coda: {exc}", file=sys.stderr)
        return 2


async def verify(args: argparse.Namespace) -> int:
    async with open_store(RedisSettings.from_env()) as store:
        report = await store.verify(args.thread)
    if args.json:
        print(_json.encode(_report_json(report)).decode())
    else:
        print(_report_text(report))
    return 0 if report.ok else 1


async def events(args: argparse.Namespace) -> int:
    async with open_store(RedisSettings.from_env()) as store:
        for event in await store.read(args.thread, after=args.after, limit=args.limit):
            sys.stdout.write(_json.encode(_event_json(event)).decode() + "\n")
    return 0


def _report_json(report: VerifyReport) -> dict[str, Any]:
    return {
        "thread_id": report.thread_id,
        "ok": report.ok,
        "version": report.version,
        "head": report.head.hex(),
        "chain_ok": report.chain_ok,
        "seal_ok": report.seal_ok,
        "meta_ok": report.meta_ok,
        "seals_checked": report.seals_checked,
        "first_bad_version": report.first_bad_version,
        "problems": msgspec.to_builtins(report.problems),
    }


def _report_text(report: VerifyReport) -> str:
    if report.ok:
        return (
            f"{report.thread_id}: ok, {report.version} events, "
            f"{report.seals_checked} seal(s), head {report.head.hex()}"
        )
    lines = [f"{report.thread_id}: BROKEN at version {report.first_bad_version}"]
    lines += [f"  version {p.version} [{p.area}]: {p.reason}" for p in report.problems]
    return "\n".join(lines)


def _event_json(recorded: RecordedEvent) -> dict[str, Any]:
    event: dict[str, Any] = msgspec.to_builtins(recorded.event)
    return {"version": recorded.version, "hash": recorded.hash.hex(), **event}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coda", description="coda, the conversation store")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    cmd = commands.add_parser("verify", help="recompute a thread's hash chain and seals")
    cmd.add_argument("thread")
    cmd.add_argument("--json", action="store_true", help="print the report as JSON")
    cmd.set_defaults(run=verify)

    cmd = commands.add_parser("events", help="print a thread's events as NDJSON")
    cmd.add_argument("thread")
    cmd.add_argument("--after", type=_whole, default=0, help="only versions above this")
    cmd.add_argument("--limit", type=_positive, default=1000, help="at most this many")
    cmd.set_defaults(run=events)
    return parser


def _whole(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, not {value}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, not {value}")
    return value


if __name__ == "__main__":
    sys.exit(main())
