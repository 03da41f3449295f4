"""Commands issued in the same turn of the event loop, sent to Redis in one pipeline.

A server has many appends in flight at once (one per turn being taken); each sent on its own
pays a round trip and the client's per-command work. A command here waits only until the loop
next runs its ready callbacks: a lone command goes out at once, and commands issued together
share one write and one read (as ioredis's auto-pipelining does). The pipeline is not a
transaction: each command stays what it was (an append is still one atomic script) and a failed
command fails alone.

A pipeline's callers all wait for its last reply, so one holds at most `MAX_CALLS` calls, and
more go out in further pipelines at once: Redis runs one while the client reads another.

What may share a pipeline: commands that can run twice without harm. When a reply is lost on
the wire, redis-py sends the whole pipeline again (a cluster's, the commands of the connection
cut), so a command whose own reply had arrived may run a second time: an append is then a
replay that writes nothing, a turn's count finds the mark it left, a generation's close adds a
second close that readers, stopping at the first, never see.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence, Set
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError

if TYPE_CHECKING:
    from events.store import Redis, Script


MAX_CALLS: Final = 8  # measured with bench/turn.py: 2 and 16 do worse, 4 to 8 alike
_PLAIN: Final = frozenset({bytes, str, int, float, memoryview})  # what redis-py encodes


class _Waiting(NamedTuple):
    commands: tuple[tuple[Any, ...], ...]
    answer: asyncio.Future[list[Any]]


class Coalescer:
    """Sends the commands issued while the loop is busy elsewhere together."""

    def __init__(self, client: Redis) -> None:
        self._client = client
        self._waiting: list[_Waiting] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def execute(self, *args: Any) -> Any:
        """The command's reply, or its error, as `execute_command` would give them."""
        return (await self.execute_many(args))[0]

    async def execute_many(self, *commands: tuple[Any, ...]) -> list[Any]:
        """The replies of commands sent in order, one after another; the first error, if any
        failed (the others still ran)."""
        if not commands:
            return []
        if not all(type(arg) in _PLAIN for command in commands for arg in command):
            # redis-py may refuse it (DataError), and in a cluster's pipeline only once other
            # nodes' commands are sent: it goes alone, to fail alone.
            replies = [await self._alone(command) for command in commands]
            return _answer(replies)
        loop = asyncio.get_running_loop()
        if not self._waiting or len(self._waiting) == MAX_CALLS:
            self._waiting = []  # the next pipeline's, sent by a task of its own
            task = loop.create_task(self._send(self._waiting))
            self._sending.add(task)  # the loop keeps only a weak reference
            task.add_done_callback(functools.partial(self._sent, self._waiting))
        answer: asyncio.Future[list[Any]] = loop.create_future()
        self._waiting.append(_Waiting(commands, answer))
        return await answer

    async def run_script(
        self, script: Script, keys: Sequence[str | bytes], args: Sequence[Any]
    ) -> Any:
        """EVALSHA a script, sending it again if Redis lost it (a restart, SCRIPT FLUSH)."""
        try:  # the cluster client routes EVALSHA by its keys
            return await self.execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self.execute("EVAL", script.body, len(keys), *keys, *args)

    async def _send(self, calls: list[_Waiting]) -> None:
        if calls is self._waiting:
            self._waiting = []
        waiting = [w for w in calls if not w.answer.done()]  # not cancelled meanwhile
        commands = [command for w in waiting for command in w.commands]
        if len(commands) <= 1:
            _deliver(waiting, [await self._alone(command) for command in commands])
            return
        try:
            pipe = self._client.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            replies = await pipe.execute(raise_on_error=False)
        except Exception as exc:  # lost (redis-py's retries are spent), or unknown: all hear
            _deliver(waiting, [exc] * len(commands))
            return
        cut = {i for i, reply in enumerate(replies) if isinstance(reply, RedisConnectionError)}
        if cut:
            # A cluster pipeline hands a connection lost mid-reply to the commands it carried,
            # unretried. The other callers are answered now; each caller's cut commands go
            # again alone, in their order (callers at once), retried as a lone command is.
            _deliver(waiting, replies, holding=cut)
            await asyncio.gather(
                *(
                    self._again(commands, replies, [i for i in span if i in cut])
                    for span in _spans(waiting)
                )
            )
        _deliver(waiting, replies)

    async def _again(
        self, commands: list[tuple[Any, ...]], replies: list[Any], indexes: list[int]
    ) -> None:
        for i in indexes:
            replies[i] = await self._alone(commands[i])

    async def _alone(self, command: tuple[Any, ...]) -> Any:
        try:
            return await self._client.execute_command(*command)
        except Exception as exc:  # the caller hears of it
            return exc

    def _sent(self, calls: list[_Waiting], task: asyncio.Task[None]) -> None:
        """No caller is left waiting: a task cancelled before it ran (the loop closing), or
        ended by something other than an error of Redis, cancels what it did not answer."""
        self._sending.discard(task)
        if calls is self._waiting:
            self._waiting = []
        for w in calls:
            if not w.answer.done():
                w.answer.cancel()


def _spans(waiting: list[_Waiting]) -> list[range]:
    """The indexes of each caller's commands in the pipeline."""
    spans, start = [], 0
    for w in waiting:
        spans.append(range(start, start + len(w.commands)))
        start += len(w.commands)
    return spans


def _deliver(waiting: list[_Waiting], replies: list[Any], holding: Set[int] = frozenset()) -> None:
    """Answer each caller with its replies (or its first error), but those with a reply at an
    index in `holding`."""
    for w, span in zip(waiting, _spans(waiting), strict=True):
        if not w.answer.done() and not any(i in holding for i in span):
            mine = replies[span.start : span.stop]
            error = _first_error(mine)
            if error is not None:
                w.answer.set_exception(error)
            else:
                w.answer.set_result(mine)


def _answer(replies: list[Any]) -> list[Any]:
    """The replies, or the first error among them, raised."""
    error = _first_error(replies)
    if error is not None:
        raise error
    return replies


def _first_error(replies: list[Any]) -> Exception | None:
    return next((r for r in replies if isinstance(r, Exception)), None)
