"""Commands issued in the same turn of the event loop, sent to Redis in one pipeline.

A server has many appends in flight at once (one per turn being taken); each sent on its own
pays a round trip and the client's per-command work. A command here waits only until the loop
next runs its ready callbacks: a lone command goes out at once, and commands issued together
share one write and one read (as ioredis's auto-pipelining does). The pipeline is not a
transaction: each command stays what it was (an append is still one atomic script) and a failed
command fails alone.

A pipeline's callers all wait for its last reply, so one holds at most `MAX_CALLS` calls, and
more go out in further pipelines at once: Redis runs one while the client reads another.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from redis.exceptions import NoScriptError

if TYPE_CHECKING:
    from events.store import Redis, Script


MAX_CALLS: Final = 8  # measured with bench/turn.py: 2 and 16 do worse, 4 to 8 alike


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
        loop = asyncio.get_running_loop()
        if not self._waiting or len(self._waiting) == MAX_CALLS:
            self._waiting = []  # the next pipeline's, sent by a task of its own
            task = loop.create_task(self._send(self._waiting))
            self._sending.add(task)  # the loop keeps only a weak reference
            task.add_done_callback(self._sending.discard)
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
        if not commands:
            return
        try:
            if len(commands) == 1:
                replies: list[Any] = [await self._client.execute_command(*commands[0])]
            else:
                pipe = self._client.pipeline(transaction=False)
                for command in commands:
                    pipe.execute_command(*command)
                replies = await pipe.execute(raise_on_error=False)
        except asyncio.CancelledError:
            for w in waiting:
                w.answer.cancel()
            raise
        except Exception as exc:
            replies = [exc] * len(commands)
        start = 0
        for w in waiting:
            mine = replies[start : start + len(w.commands)]
            start += len(w.commands)
            if w.answer.done():
                continue
            error = next((r for r in mine if isinstance(r, Exception)), None)
            if error is not None:
                w.answer.set_exception(error)
            else:
                w.answer.set_result(mine)
