"""One event to thousands of SSE subscribers on one `coda serve` process, against a bare fan-out.

    python bench/fanout.py [--subscribers N] [--workers K] [--connect C] [--rounds R]
    python bench/fanout.py --subscribers 200            # a smoke run, in about a minute

Starts one `coda serve --no-projector` on a free port (REDIS_URL if set, else the embedded
Redis; its keys under a prefix of this run's own), creates a thread, and opens N subscribers to
`GET /v1/threads/{id}/stream`, spread over K client processes, C connecting at once. Each reads
until the thread's first frame (`thread.started`): it is caught up and waiting. Then, R times a
few seconds apart, one event (`POST .../feedback`, one `feedback.given`) goes to the thread and
every subscriber notes when its frame arrives. Measured, one JSON line each:

- delivery p50 and p99, in ms from just before the POST to the frame's arrival, a subscriber
  that never got it counting as infinitely late; of the R rounds, the one with the median p99
  (`rounds_p99_ms` lists them all). Goal: p99 <= 1 s;
- the Redis connections the server holds with N idle subscribers, and the most it held during
  the rounds and the quiet seconds after them (every client of the Redis but this bench's own
  and those there before the server started). Goal: <= 8; the baseline is the server with no
  subscriber;
- the server's memory per idle subscriber: the growth of its VmRSS (/proc/<pid>/status) over N.

The baseline, run the same way right after, is a bare Starlette SSE endpoint under the same
uvicorn, in a Python process of its own, that fans an in-memory event out to the same clients
(an asyncio.Event per round; no Redis, no key, the frame encoded once): what any SSE server on
this stack pays to hold N streams and write to each, so the ratio isolates what coda adds (the
hub's XREAD, each stream's own reads, per-stream encoding, stream slots). On every line the
ratio is baseline / coda: 1.0 is "as cheap as the bare fan-out", 0.5 "twice the cost".

The client processes read the sockets with a bare asyncio.Protocol (no HTTP client) and stamp
arrivals with time.monotonic(), one clock for every process on Linux; they share the machine's
cores with the server, for coda and the baseline alike. A Python server holding N streams pays
for a full garbage collection of them (~0.35 s at 5,000 on the reference machine) whenever one
falls in a round, baseline included: hence several rounds and the median.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import multiprocessing
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final

import httpx
from common import emit, run_with_redis

from events.connect import client_for
from events.store import Redis

ROOT: Final = Path(__file__).parents[1]
READY: Final = b"event: thread.started"
EVENT: Final = b"event: feedback.given"
ERROR: Final = b"event: error"
# Bytes kept from one read to the next: a marker split across two reads is still seen, and one
# kept whole cannot be counted twice.
KEEP: Final = max(len(READY), len(EVENT), len(ERROR)) - 1
OPEN_TIMEOUT: Final = 120.0  # seconds for one subscriber to connect and see its first frame
START_TIMEOUT: Final = 60.0
SETTLE: Final = 2.0  # seconds idle before RSS and connections are read
GAP: Final = 3.0  # seconds between rounds
COLLECT_EVERY: Final = 0.01  # seconds between a client process's checks that a round is in
SAMPLE_EVERY: Final = 0.005  # seconds between counts of Redis connections during a broadcast
GOAL_P99_MS: Final = 1000.0
GOAL_CONNECTIONS: Final = 8
BENCH_CLIENT: Final = "coda-bench-fanout"  # the name of this bench's own Redis connections


@dataclass
class Target:
    """A server under test: how to subscribe to it and how to send it the one event."""

    name: str
    port: int
    pid: int
    path: str
    headers: dict[str, str]
    broadcast: Callable[[], Awaitable[None]]
    connections: Callable[[], Awaitable[int]] | None = None  # the server's Redis connections
    log: Path | None = None


@dataclass
class Status:
    """The subscribers still streaming, those that failed, and why (counted by reason)."""

    alive: int
    failed: int
    failures: Counter[str]
    failed_at: list[float]  # time.monotonic() of each failure

    @classmethod
    def of(cls, replies: list[dict[str, Any]]) -> Status:
        return cls(
            alive=sum(r["alive"] for r in replies),
            failed=sum(r["failed"] for r in replies),
            failures=sum((Counter(r["failures"]) for r in replies), Counter[str]()),
            failed_at=sorted(t for r in replies for t in r["failed_at"]),
        )


@dataclass
class Fanout:
    """What one run over one target measured."""

    subscribers: int
    opened: int
    open_failures: Counter[str]
    open_seconds: float
    rss_before: int  # bytes
    rss_idle: int
    idle: Status  # just before the first event was sent
    rounds: list[list[float]]  # per round, seconds to each opened subscriber (inf: never came)
    after: Status  # once the streams had been watched for a while after the last round
    t0: float  # time.monotonic() just before the first event was sent
    connections: dict[str, int] = field(default_factory=dict)
    commands: dict[str, int] = field(default_factory=dict)  # Redis calls in the first round

    def percentile(self, q: float, latencies: list[float] | None = None) -> float:
        """Nearest rank over every subscriber asked for, a missing one counting as infinite."""
        given = self.median_round if latencies is None else latencies
        ranked = sorted(given + [math.inf] * (self.subscribers - len(given)))
        return ranked[max(0, math.ceil(q * len(ranked)) - 1)]

    @property
    def median_round(self) -> list[float]:
        ordered = sorted(self.rounds, key=lambda r: self.percentile(0.99, r))
        return ordered[len(ordered) // 2]

    @property
    def per_client(self) -> float:
        """Bytes of RSS per subscriber opened (RSS rarely shrinks when some have failed since)."""
        return (self.rss_idle - self.rss_before) / max(1, self.opened)

    @property
    def delivered(self) -> list[float]:
        return [t for t in self.median_round if not math.isinf(t)]


async def run(url: str, args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="coda-fanout-") as tmp:
        client = client_for(url, client_name=BENCH_CLIENT)
        try:
            async with coda_server(url, Path(tmp), client, args.subscribers) as target:
                coda = await fanout(target, args, client)
        finally:
            await client.aclose()
        async with baseline_server(Path(tmp)) as target:
            bare = await fanout(target, args, None)
    report(coda, bare, args)


async def fanout(target: Target, args: argparse.Namespace, redis: Redis | None) -> Fanout:
    """Open the subscribers, read the idle server, send the events, collect the arrivals."""
    n, k = args.subscribers, min(args.workers, args.subscribers)
    count = target.connections or _nothing
    rss_before, before = _rss(target.pid), await count()
    with _workers(k) as pipes:
        start = time.monotonic()
        for i, pipe in enumerate(pipes):
            share = n // k + (i < n % k)
            pipe.send(("open", (target.port, _request(target), share, max(1, args.connect // k))))
        opened = await _replies(pipes)
        open_seconds = time.monotonic() - start
        _say(target, f"{sum(r['opened'] for r in opened)} of {n} open in {open_seconds:.1f} s")
        await asyncio.sleep(SETTLE)
        rss_idle, idle = _rss(target.pid), await count()
        idle_status = await _status(pipes)
        stats = await _redis_stats(redis) if redis else {}
        rounds, starts, commands, until_delivered = [], [], {}, 0
        async with _peak(count) as peak:
            for r in range(1, args.rounds + 1):
                if r > 1:
                    await asyncio.sleep(GAP)
                starts.append(time.monotonic())
                await target.broadcast()
                for pipe in pipes:
                    pipe.send(("collect", (r, starts[-1] + args.timeout)))
                rounds.append([t - starts[-1] for reply in await _replies(pipes) for t in reply])
                if r == 1:
                    until_delivered = peak[0]
                    commands = _delta(stats, await _redis_stats(redis)) if redis else {}
                _say(target, f"round {r}: {sum(not math.isinf(t) for t in rounds[-1])} delivered")
            await asyncio.sleep(args.linger)  # the idle waits, now expiring in step
        after = await _status(pipes)
    _log_tail(target, after.failures)
    return Fanout(
        subscribers=n,
        opened=sum(r["opened"] for r in opened),
        open_failures=sum((Counter(r["failures"]) for r in opened), Counter[str]()),
        open_seconds=open_seconds,
        rss_before=rss_before,
        rss_idle=rss_idle,
        idle=idle_status,
        rounds=rounds,
        after=after,
        t0=starts[0],
        connections={
            "before": before,
            "idle": idle,
            "until_delivered": until_delivered,
            "most": peak[0],
        },
        commands=commands,
    )


def report(coda: Fanout, bare: Fanout, args: argparse.Namespace) -> None:
    n = args.subscribers
    common = {"subscribers": n, "workers": args.workers, "connect": args.connect}
    common |= {"rounds": args.rounds}
    for q, goal in ((0.5, None), (0.99, GOAL_P99_MS)):
        value, baseline = coda.percentile(q) * 1000, bare.percentile(q) * 1000
        notes: dict[str, Any] = {
            "rounds_ms": [_num(coda.percentile(q, r) * 1000) for r in coda.rounds],
            "baseline_rounds_ms": [_num(bare.percentile(q, r) * 1000) for r in bare.rounds],
        }
        if goal is not None:
            notes |= {
                "max_delivered_ms": _num(max(coda.delivered, default=math.inf) * 1000),
                "open_failures": _top(coda.open_failures),
                "failed_while_idle": coda.idle.failed,
                "failures": _top(coda.after.failures),
                "failed_at_s": _spread(coda.after.failed_at, coda.t0),
                "baseline_delivered": len(bare.delivered),
            }
        emit(
            bench="fanout",
            case=f"delivery p{round(q * 100)}, {n} subscribers",
            value=_num(value),
            baseline=_num(baseline),
            unit="ms",
            ratio=_ratio(baseline, value),
            goal=None if goal is None else f"<= {goal:.0f}",
            met=None if goal is None else value <= goal,
            delivered=len(coda.delivered),
            opened=coda.opened,
            **notes,
            **common,
        )
    connections = coda.connections
    for case, value, notes in (
        ("idle", connections["idle"], {}),
        (
            "during and after the events",
            connections["most"],
            {
                "until_delivered": connections["until_delivered"],
                "commands_first_round": coda.commands,
                "alive_after": coda.after.alive,
                "watched_s": args.linger,
            },
        ),
    ):
        emit(
            bench="fanout",
            case=f"redis connections, {n} subscribers, {case}",
            value=value,
            baseline=connections["before"],
            unit="connections",
            ratio=_ratio(connections["before"], value),
            goal=f"<= {GOAL_CONNECTIONS}",
            met=value <= GOAL_CONNECTIONS,
            **notes,
            **common,
        )
    emit(
        bench="fanout",
        case=f"memory per idle subscriber, {n} subscribers",
        value=round(coda.per_client / 1024, 1),
        baseline=round(bare.per_client / 1024, 1),
        unit="KiB",
        ratio=_ratio(bare.per_client, coda.per_client),
        goal=None,
        rss_mib=[round(coda.rss_before / 2**20, 1), round(coda.rss_idle / 2**20, 1)],
        baseline_rss_mib=[round(bare.rss_before / 2**20, 1), round(bare.rss_idle / 2**20, 1)],
        open_seconds=[round(coda.open_seconds, 1), round(bare.open_seconds, 1)],
        streaming_when_read=coda.idle.alive,
        **common,
    )


# --- the servers ---------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def coda_server(url: str, tmp: Path, redis: Redis, n: int) -> AsyncIterator[Target]:
    """`coda serve` on its own prefix of `url`, with a key that may hold N streams."""
    prefix = f"bench-fanout-{os.getpid()}"
    clean = {k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.startswith("CODA_")}
    env = {
        **clean,
        "REDIS_URL": url,
        "CODA_DATA_DIR": str(tmp / "coda"),
        "CODA_KEY_PREFIX": prefix,
        "CODA_LIMIT_STREAMS": str(max(10_000, 2 * n)),
    }
    others = await _clients(redis)  # every client but ours, before the server starts
    key = await _key(env)
    port = _free_port()
    log = tmp / "coda.log"
    command = [sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--no-projector"]
    try:
        with _process(command, env, log) as process:
            headers = {"Authorization": f"Bearer {key}"}
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=60
            ) as http:
                await _healthy(http, process, log)
                made = await http.post("/v1/threads", json={"title": "fanout"})
                made.raise_for_status()
                thread = made.json()["id"]

                async def broadcast() -> None:
                    sent = await http.post(f"/v1/threads/{thread}/feedback", json={"rating": "up"})
                    sent.raise_for_status()

                async def connections() -> int:
                    return await _clients(redis) - others

                yield Target(
                    name="coda",
                    port=port,
                    pid=process.pid,
                    path=f"/v1/threads/{thread}/stream",
                    headers=headers,
                    broadcast=broadcast,
                    connections=connections,
                    log=log,
                )
    finally:
        async for name in redis.scan_iter(match=f"{prefix}:*", count=1000):
            await redis.delete(name)


@contextlib.asynccontextmanager
async def baseline_server(tmp: Path) -> AsyncIterator[Target]:
    """This file's bare SSE app (`--serve-baseline`) under uvicorn, in a process of its own."""
    port = _free_port()
    log = tmp / "baseline.log"
    command = [sys.executable, __file__, "--serve-baseline", str(port)]
    with _process(command, dict(os.environ), log) as process:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            await _healthy(http, process, log)

            async def broadcast() -> None:
                (await http.post("/broadcast")).raise_for_status()

            yield Target("baseline", port, process.pid, "/stream", {}, broadcast, log=log)


def serve_baseline(port: int) -> None:
    """A bare SSE fan-out: every stream waits on the round's asyncio.Event; POST /broadcast sets
    it and makes the next round's."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    sent = [asyncio.Event()]  # sent[i] is set once event i + 1 has gone out
    first = b'id: 1\nevent: thread.started\ndata: {"type":"thread.started","thread_id":"t"}\n\n'
    event = (
        b'id: 2\nevent: feedback.given\ndata: {"type":"feedback.given","thread_id":"%s",'
        b'"actor":"user","actor_id":"bench","rating":"up","message_id":null,"comment":""}\n\n'
    ) % (b"0" * 26)

    async def frames() -> AsyncIterator[bytes]:
        yield first
        i = len(sent) - 1
        while True:
            await sent[i].wait()
            yield event
            i += 1

    async def stream(request: Request) -> Response:
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(frames(), media_type="text/event-stream", headers=headers)

    async def broadcast(request: Request) -> Response:
        sent.append(asyncio.Event())
        sent[-2].set()
        return JSONResponse({"sent": True}, 201)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    app = Starlette(
        routes=[
            Route("/stream", stream, methods=["GET"]),
            Route("/broadcast", broadcast, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="info")  # as `coda serve` runs it


@contextlib.contextmanager
def _process(
    command: list[str], env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A server process logging to `log` (a pipe nobody reads would stall it), then stopped."""
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


async def _healthy(http: httpx.AsyncClient, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        with contextlib.suppress(httpx.TransportError):
            if (await http.get("/healthz")).status_code == 200:
                return
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{process.args!r} did not start:\n{_text(log)[-2000:]}")
        await asyncio.sleep(0.1)


async def _key(env: dict[str, str]) -> str:
    """A new API key, from `coda keys create` as an operator makes one."""
    made = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "service.cli", "keys", "create", "--tenant", "bench"),
        *("--user", "bench"),
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await made.communicate()
    if made.returncode:
        raise RuntimeError(f"coda keys create failed: {err.decode(errors='replace')}")
    return out.decode().strip()


def _text(log: Path) -> str:
    return log.read_text(errors="replace")


def _say(target: Target, what: str) -> None:
    print(f"fanout: {target.name}: {what}", file=sys.stderr, flush=True)


def _log_tail(target: Target, failures: Counter[str]) -> None:
    """The server's error lines on stderr when a subscriber failed: the evidence, if any."""
    if failures and target.log is not None:
        lines = _text(target.log).splitlines()
        problems = [line for line in lines if "Error" in line or "Traceback" in line]
        failed = sum(failures.values())
        _say(target, f"{failed} subscribers failed; {len(problems)} error lines in its log")
        for line in problems[-10:]:
            print(f"  | {line}", file=sys.stderr)


# --- the clients ---------------------------------------------------------------------------


class _Subscriber(asyncio.Protocol):
    """One SSE client that only looks for the first frame, and then for the events."""

    def __init__(self, request: bytes) -> None:
        loop = asyncio.get_running_loop()
        self.request = request
        self.ready: asyncio.Future[None] = loop.create_future()
        self.arrivals: list[float] = []  # time.monotonic() of each event frame
        self.failure: str | None = None
        self.failed_at = math.inf
        self.transport: asyncio.Transport | None = None
        self._head = True
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        text = self._tail + data
        if self._head:
            if b"\r\n" not in text:
                self._tail = text
                return
            if not text.startswith(b"HTTP/1.1 200"):
                status, _, rest = text.partition(b"\r\n")
                body = rest.partition(b"\r\n\r\n")[2]  # the headers vary (Date)
                self._fail(f"answer {_show(status)} {_show(body[:200])}")
                return
            self._head = False
        if not self.ready.done():
            if READY in text:
                self.ready.set_result(None)
        else:
            self.arrivals += [now] * text.count(EVENT)
        if ERROR in text:
            data = text[text.index(ERROR) :].partition(b"data: ")[2].partition(b"\n")[0]
            self._fail(f"error frame {_show(data[:200])}")
        self._tail = text[-KEEP:]

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(f"closed by the server ({exc!r})")

    def _fail(self, reason: str) -> None:
        if self.failure is None:
            self.failure, self.failed_at = reason, time.monotonic()
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(reason))
        if self.transport is not None:
            self.transport.close()


def _worker(pipe: Connection) -> None:
    _raise_nofile()
    asyncio.run(_work(pipe))


async def _work(pipe: Connection) -> None:
    """Serve the parent's requests: open, collect, status, close."""
    subscribers: list[_Subscriber] = []
    while True:
        command, arg = await _recv(pipe)
        if command == "open":
            pipe.send(await _open(subscribers, *arg))
        elif command == "collect":
            pipe.send(await _collect(subscribers, *arg))
        elif command == "status":
            failed = [s for s in subscribers if s.failure is not None]
            pipe.send(
                {
                    "alive": len(subscribers) - len(failed),
                    "failed": len(failed),
                    "failures": Counter(s.failure for s in failed),
                    "failed_at": [s.failed_at for s in failed],
                }
            )
        else:
            for s in subscribers:
                if s.transport is not None:
                    s.transport.close()
            pipe.send(None)
            return


async def _collect(subscribers: list[_Subscriber], n: int, deadline: float) -> list[float]:
    """When each subscriber got event `n` (inf if it did not by `deadline`, or failed)."""
    while time.monotonic() < deadline:
        if all(len(s.arrivals) >= n or s.failure for s in subscribers):
            break
        await asyncio.sleep(COLLECT_EVERY)  # the times are taken on arrival: this only waits
    return [s.arrivals[n - 1] if len(s.arrivals) >= n else math.inf for s in subscribers]


async def _open(
    subscribers: list[_Subscriber], port: int, request: bytes, count: int, at_once: int
) -> dict[str, Any]:
    """Open `count` subscribers, `at_once` at a time, each until it has seen its first frame."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(at_once)
    failures: Counter[str] = Counter()

    async def one() -> None:
        sub = _Subscriber(request)
        async with gate:
            try:
                await loop.create_connection(lambda: sub, "127.0.0.1", port)
                await asyncio.wait_for(asyncio.shield(sub.ready), OPEN_TIMEOUT)
            except (OSError, TimeoutError) as exc:
                failures[(sub.failure or repr(exc))[:240]] += 1
                if sub.transport is not None:
                    sub.transport.close()
                return
        subscribers.append(sub)

    await asyncio.gather(*(one() for _ in range(count)))
    return {"opened": len(subscribers), "failures": failures}


@contextlib.contextmanager
def _workers(k: int) -> Iterator[list[Connection]]:
    """K client processes (spawned: the parent runs an event loop), closed and reaped at the end."""
    context = multiprocessing.get_context("spawn")
    pipes, processes = [], []
    try:
        for _ in range(k):
            ours, theirs = context.Pipe()
            process = context.Process(target=_worker, args=(theirs,), daemon=True)
            process.start()
            pipes.append(ours)
            processes.append(process)
        yield pipes
    finally:
        for pipe in pipes:
            with contextlib.suppress(OSError):
                pipe.send(("close", None))
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join()


async def _status(pipes: list[Connection]) -> Status:
    for pipe in pipes:
        pipe.send(("status", None))
    return Status.of(await _replies(pipes))


async def _replies(pipes: list[Connection]) -> list[Any]:
    return list(await asyncio.gather(*(_recv(pipe) for pipe in pipes)))


async def _recv(pipe: Connection) -> Any:
    """The next message on `pipe`, waited for by the event loop (no thread left blocked in
    `recv` if the run fails)."""
    loop = asyncio.get_running_loop()
    while not pipe.poll():
        readable = loop.create_future()
        loop.add_reader(pipe.fileno(), _wake, readable)
        try:
            await readable
        finally:
            loop.remove_reader(pipe.fileno())
    return pipe.recv()


def _request(target: Target) -> bytes:
    lines = [f"GET {target.path} HTTP/1.1", f"Host: 127.0.0.1:{target.port}"]
    lines += ["Accept: text/event-stream", *(f"{k}: {v}" for k, v in target.headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# --- what the server holds ---------------------------------------------------------------------


async def _clients(redis: Redis) -> int:
    """Clients of the Redis, this bench's own (named BENCH_CLIENT) left out."""
    return sum(c.get("name") != BENCH_CLIENT for c in await redis.client_list())


@contextlib.asynccontextmanager
async def _peak(count: Callable[[], Awaitable[int]]) -> AsyncIterator[list[int]]:
    """The most `count()` said while the block ran, in `peak[0]`, sampled every few ms."""
    peak, done = [0], asyncio.Event()

    async def sample() -> None:
        while not done.is_set():  # not cancelled: redis-py may swallow a cancellation
            peak[0] = max(peak[0], await count())
            await asyncio.sleep(SAMPLE_EVERY)

    task = asyncio.create_task(sample())
    try:
        yield peak
    finally:
        done.set()
        await task
        peak[0] = max(peak[0], await count())


async def _redis_stats(redis: Redis) -> dict[str, int]:
    """Calls per command and connections received so far, from INFO."""
    stats = {k: int(v["calls"]) for k, v in (await redis.info("commandstats")).items()}
    received = (await redis.info("stats"))["total_connections_received"]
    return {**stats, "connections_received": int(received)}


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    grown = {k.removeprefix("cmdstat_"): v - before.get(k, 0) for k, v in after.items()}
    return {k: v for k, v in sorted(grown.items()) if v > 0 and k not in ("client", "info")}


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def _raise_nofile() -> None:
    """Open files up to the hard limit: every subscriber is a socket here and in the server."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wake(readable: asyncio.Future[None]) -> None:
    if not readable.done():
        readable.set_result(None)


async def _nothing() -> int:
    return 0


def _spread(times: list[float], t0: float) -> list[float]:
    """First, median and last of `times` (sorted), in seconds after `t0`."""
    if not times:
        return []
    return [round(times[i] - t0, 3) for i in (0, len(times) // 2, -1)]


def _top(failures: Counter[str]) -> dict[str, int]:
    return dict(failures.most_common(3))


def _show(data: bytes) -> str:
    return data.decode(errors="replace")


def _num(value: float) -> float | None:
    return None if math.isinf(value) else round(value, 1)


def _ratio(baseline: float, value: float) -> float | None:
    if math.isinf(value) or math.isinf(baseline) or value <= 0:
        return None
    return round(baseline / value, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=2, help="client processes")
    parser.add_argument("--connect", type=int, default=32, help="subscribers connecting at once")
    parser.add_argument("--rounds", type=int, default=3, help="events sent, one at a time")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for delivery")
    parser.add_argument(
        "--linger",
        type=float,
        default=12.0,
        help="seconds to watch the streams after the last round",
    )
    parser.add_argument("--serve-baseline", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if min(args.subscribers, args.workers, args.connect, args.rounds) < 1:
        parser.error("--subscribers, --workers, --connect and --rounds take 1 or more")
    _raise_nofile()  # the servers and the client processes inherit it
    if args.serve_baseline:
        serve_baseline(args.serve_baseline)
        return
    run_with_redis(lambda url: run(url, args))


if __name__ == "__main__":
    main()
