"""The `coda` command line.

    coda verify THREAD [--json]      recompute a thread's hash chain and seals; exit 1 if broken
    coda audit THREAD [--json]       verify, and judge every end of the thread; exit 1 if either
                                     fails, naming the first bad version
    coda audit --all [--json]        the same for every thread, a line each, progress on stderr
    coda replay THREAD [--tip ID] [--at VERSION] [--json]
                                     print the conversation on a branch as it stood at a version
    coda events THREAD [--after N] [--limit N]
                                     print a thread's events as NDJSON
    coda export THREAD [-o FILE]     write a thread as NDJSON with a manifest (stdout by default)
    coda import [FILE]               check an export whole, then append it (stdin by default)
    coda project [--view NAME] [--once]
                                     keep a view (thread summaries, analytics) up to date
    coda analytics --tenant T [--from DAY] [--to DAY] [--view NAME] [--json]
                                     print a view's analytics, a column a day
    coda classify [TEXT...] [--classifier NAME] [--classifier-url URL]
                                     classify each TEXT (or each line of stdin): a JSON line each
    coda serve [--host H] [--port P] [--workers N] [--no-projector] [--no-access-log]
                                     run the HTTP API (docs/api.md)
    coda keys create --tenant T --user U [--role R]... [--turns-per-minute N] [--streams N]
                     [--message-bytes N] [--body-bytes N]
                                     print a new API key alone on stdout (its hash is kept)
    coda keys revoke KEY             forget an API key

Where the events live comes from the environment (REDIS_URL, CODA_DATA_DIR, ...; see
docs/storage.md); which classifier runs, from CODA_CLASSIFIER and the flags (docs/policy.md).
Errors are one line on stderr, with exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import sys
from collections.abc import Callable, Coroutine, Iterable, Sequence
from contextlib import nullcontext
from datetime import UTC, date, datetime, timedelta
from typing import Any

import msgspec

from events.connect import RedisSettings, open_store
from events.errors import EventStoreError
from events.store import RedisEventStore
from events.transfer import export_thread, import_thread
from projections.analytics import AnalyticsRangeError, read_analytics
from projections.audit import audit as audit_thread
from projections.branches import active_tip
from projections.projector import DEFAULT_VIEW, Projector
from projections.reader import ThreadReader
from service import reports, serve
from service.classifier import Classification
from service.config import CLASSIFIERS, ConfigError, Settings, build_classifier
from service.http.limits import LimitsError
from service.http.principals import LIMIT_NAMES, ROLES, ApiKeyError

_json = msgspec.json.Encoder()


class CommandError(Exception):
    """A command that cannot be carried out as asked: one line on stderr, exit status 2."""


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command: Callable[[argparse.Namespace], Coroutine[Any, Any, int] | int] = args.run
    try:
        result = command(args)
        if isinstance(result, int):  # `coda serve` runs its own loops
            return result
        return asyncio.run(result)
    except (EventStoreError, CommandError, ConfigError, ApiKeyError, LimitsError) as exc:
        print(f"coda: {exc}", file=sys.stderr)
        return 2


async def verify(args: argparse.Namespace) -> int:
    async with open_store(RedisSettings.from_env()) as store:
        report = await store.verify(args.thread)
    _show(args, reports.verify_json(report), reports.verify_text(report))
    return 0 if report.ok else 1


async def audit(args: argparse.Namespace) -> int:
    if args.all == (args.thread is not None):
        raise CommandError("name a thread, or give --all")
    async with open_store(RedisSettings.from_env()) as store:
        if args.thread is None:
            return await _audit_all(store, as_json=args.json)
        report = await audit_thread(store, args.thread)
    _show(args, reports.audit_json(report), reports.audit_text(report))
    return 0 if report.ok else 1


async def _audit_all(store: RedisEventStore, *, as_json: bool) -> int:
    audited = failed = 0
    async for thread in store.thread_ids():
        report = await audit_thread(store, thread)
        audited += 1
        failed += not report.ok
        line = reports.audit_json(report) if as_json else reports.audit_line(report)
        print(_json.encode(line).decode() if as_json else line)
        if audited % 100 == 0:
            print(f"audited {audited} threads, {failed} failed", file=sys.stderr, flush=True)
    print(f"audited {audited} threads, {failed} failed", file=sys.stderr, flush=True)
    return 1 if failed else 0


async def replay(args: argparse.Namespace) -> int:
    async with open_store(RedisSettings.from_env()) as store:
        try:
            state = await ThreadReader(store).state(args.thread, at=args.at)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
    tip = args.tip or active_tip(state)
    if tip is not None and tip not in state.messages:
        raise CommandError(
            f"thread {args.thread!r} has no message {tip!r} at version {state.version}"
        )
    _show(args, reports.replay_json(state, tip), reports.replay_text(state, tip))
    return 0


async def events(args: argparse.Namespace) -> int:
    async with open_store(RedisSettings.from_env()) as store:
        for event in await store.read(args.thread, after=args.after, limit=args.limit):
            sys.stdout.write(_json.encode(reports.event_json(event)).decode() + "\n")
    return 0


async def export(args: argparse.Namespace) -> int:
    async with open_store(RedisSettings.from_env()) as store:
        version, _ = await store.version(args.thread)
        if version == 0:
            raise CommandError(f"there is no thread {args.thread!r}")
        lines = await export_thread(store, args.thread)
    _write(args.output, lines)
    return 0


async def import_(args: argparse.Namespace) -> int:
    lines = _read(args.file)
    async with open_store(RedisSettings.from_env()) as store:
        result = await import_thread(store, lines)
    if result is not None:
        done = "already imported" if result.replayed else "imported"
        print(f"{result.thread_id}: {done}, {result.last_version} events")
    return 0


async def project(args: argparse.Namespace) -> int:
    async with open_store(RedisSettings.from_env()) as store:
        projector = Projector(store, view=args.view, consumer=args.consumer)
        if args.once:
            total = 0
            while (stats := await projector.run_once()).handled or stats.failed:
                total += stats.handled
                print(f"view {args.view}: {total} entries so far", file=sys.stderr, flush=True)
            print(f"view {args.view}: up to date, {total} entries handled")
            return 0
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await projector.run(stop)
    return 0


async def analytics(args: argparse.Namespace) -> int:
    today = datetime.now(UTC).date()
    first, last = args.first or today - timedelta(days=6), args.last or today
    async with open_store(RedisSettings.from_env()) as store:
        try:
            counters = await read_analytics(store, args.tenant, first, last, view=args.view)
        except AnalyticsRangeError as exc:
            raise CommandError(str(exc)) from exc
    _show(args, reports.analytics_json(args.tenant, counters), reports.analytics_text(counters))
    return 0


async def classify(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    overrides = {
        "classifier": args.classifier,
        "classifier_url": args.classifier_url,
        "classifier_model": args.classifier_model,
        "classifier_timeout": args.timeout,
    }
    settings = msgspec.structs.replace(
        settings, **{k: v for k, v in overrides.items() if v is not None}
    )
    classifier = build_classifier(settings)
    texts: Iterable[str] = args.texts or (line.rstrip("\n") for line in sys.stdin)
    try:
        for text in texts:
            if not text.strip():
                continue
            result = await classifier.classify(text)
            sys.stdout.buffer.write(_json.encode(_classified(text, result)) + b"\n")
            sys.stdout.flush()
    finally:
        await classifier.aclose()
    return 0


def _classified(text: str, result: Classification) -> dict[str, Any]:
    line: dict[str, Any] = {
        "text": text,
        "tier": result.tier,
        "categories": list(result.categories),
        "score": result.score,
        "classifier": result.classifier,
        "version": result.version,
    }
    if result.error is not None:
        line["error"] = result.error
    return line


def _write(path: str | None, lines: Iterable[bytes]) -> None:
    try:
        with open(path, "wb") if path else nullcontext(sys.stdout.buffer) as out:
            out.writelines(lines)
    except OSError as exc:
        raise CommandError(f"cannot write {path}: {exc.strerror}") from exc


def _read(path: str | None) -> list[bytes]:
    try:
        with open(path, "rb") if path else nullcontext(sys.stdin.buffer) as source:
            return source.read().splitlines()
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror}") from exc


def _show(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    print(_json.encode(data).decode() if args.json else text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coda", description="coda, the conversation store")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    cmd = commands.add_parser("verify", help="recompute a thread's hash chain and seals")
    cmd.add_argument("thread")
    cmd.add_argument("--json", action="store_true", help="print the report as JSON")
    cmd.set_defaults(run=verify)

    cmd = commands.add_parser("audit", help="verify a thread and judge each of its ends")
    cmd.add_argument("thread", nargs="?")
    cmd.add_argument("--all", action="store_true", help="audit every thread")
    cmd.add_argument("--json", action="store_true", help="print the report as JSON")
    cmd.set_defaults(run=audit)

    cmd = commands.add_parser("replay", help="print the conversation on a branch")
    cmd.add_argument("thread")
    cmd.add_argument("--tip", help="the branch's tip (default: the newest)")
    cmd.add_argument("--at", type=_whole, help="as it stood at this version (default: now)")
    cmd.add_argument("--json", action="store_true", help="print it as JSON")
    cmd.set_defaults(run=replay)

    cmd = commands.add_parser("export", help="write a thread as NDJSON with a manifest")
    cmd.add_argument("thread")
    cmd.add_argument("-o", "--output", help="the file to write (default: stdout)")
    cmd.set_defaults(run=export)

    cmd = commands.add_parser("import", help="check an export, then append it")
    cmd.add_argument("file", nargs="?", help="the export to read (default: stdin)")
    cmd.set_defaults(run=import_)

    cmd = commands.add_parser("project", help="keep a view up to date from the feed")
    cmd.add_argument("--view", default=DEFAULT_VIEW, help="the view (default: live)")
    cmd.add_argument("--once", action="store_true", help="catch up, then exit")
    cmd.add_argument(
        "--consumer",
        default=socket.gethostname(),
        help="this projector's name in the group (default: the host's name); a restart under "
        "the same name takes up what the last run left unacknowledged at once",
    )
    cmd.set_defaults(run=project)

    cmd = commands.add_parser("analytics", help="print a view's analytics for a tenant")
    cmd.add_argument("--tenant", required=True)
    cmd.add_argument("--from", dest="first", type=_day, help="first day (default: 6 days ago)")
    cmd.add_argument("--to", dest="last", type=_day, help="last day (default: today, UTC)")
    cmd.add_argument("--view", default=DEFAULT_VIEW, help="the view (default: live)")
    cmd.add_argument("--json", action="store_true", help="print them as JSON")
    cmd.set_defaults(run=analytics)

    cmd = commands.add_parser("classify", help="classify texts (or stdin lines) as JSON lines")
    cmd.add_argument("texts", nargs="*", metavar="TEXT")
    cmd.add_argument("--classifier", choices=CLASSIFIERS, help="default: CODA_CLASSIFIER or rules")
    cmd.add_argument("--classifier-url", help="the classifier service's base URL (/v1)")
    cmd.add_argument("--classifier-model", help="the classifier service's model")
    cmd.add_argument("--timeout", type=_seconds, help="seconds before a text counts as unknown")
    cmd.set_defaults(run=classify)
    cmd = commands.add_parser("serve", help="run the HTTP API (uvicorn)")
    cmd.add_argument("--host", default="127.0.0.1")
    cmd.add_argument("--port", type=int, default=8000)
    cmd.add_argument("--workers", type=_positive, default=1)
    cmd.add_argument(
        "--no-projector", action="store_true", help="projectors run elsewhere (coda project)"
    )
    cmd.add_argument(
        "--no-access-log", action="store_true", help="no line per request (a proxy logs them)"
    )
    cmd.set_defaults(run=serve.serve)
    cmd = commands.add_parser("keys", help="create or revoke API keys")
    keys = cmd.add_subparsers(dest="keys_command", required=True)
    cmd = keys.add_parser("create", help="print a new key alone on stdout (only its hash is kept)")
    cmd.add_argument("--tenant", required=True)
    cmd.add_argument("--user", required=True)
    cmd.add_argument(
        "--role", action="append", choices=ROLES, help="repeat for more (default user)"
    )
    for limit in LIMIT_NAMES:
        cmd.add_argument(
            f"--{limit.replace('_', '-')}",
            dest=f"limit_{limit}",
            type=_positive,
            metavar="N",
            help=f"this key's own {limit.replace('_', ' ')} (default: CODA_LIMIT_{limit.upper()})",
        )
    cmd.set_defaults(run=serve.keys_create)
    cmd = keys.add_parser("revoke", help="forget a key (give it whole, or its SHA-256)")
    cmd.add_argument("key")
    cmd.set_defaults(run=serve.keys_revoke)
    cmd = commands.add_parser("events", help="print a thread's events as NDJSON")
    cmd.add_argument("thread")
    cmd.add_argument("--after", type=_whole, default=0, help="only versions above this")
    cmd.add_argument("--limit", type=_positive, default=1000, help="at most this many")
    cmd.set_defaults(run=events)
    return parser


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a day (YYYY-MM-DD): {text!r}") from exc


def _whole(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, not {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, not {value}")
    return value


if __name__ == "__main__":
    sys.exit(main())
