"""A model behind OpenAI's Chat Completions API, streamed as server-sent events.

The server may be OpenAI's or a local one that speaks the same API (vLLM, llama.cpp, Ollama).
Every SSE event is a `data: {chunk}` line and `data: [DONE]` ends the stream. A tool call
arrives as fragments keyed by `index` (the id and name first, then pieces of the JSON
arguments) and is complete once the choice has a `finish_reason`. With `include_usage`, the
token counts come in one last chunk whose `choices` is empty.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from events.schema import Usage
from service.http_client import Upstream, http_client
from service.model import (
    END_TOOL,
    END_TOOL_DESCRIPTION,
    END_TOOL_SCHEMA,
    Finished,
    ModelError,
    ModelEvent,
    ModelRequest,
    TextDelta,
    ToolCall,
    tool_arguments,
)
from service.prompts import system_prompt

DEFAULT_BASE_URL: Final = "https://api.openai.com/v1"
DONE: Final = "[DONE]"
TOOL: Final[dict[str, Any]] = {
    "type": "function",
    "function": {
        "name": END_TOOL,
        "description": END_TOOL_DESCRIPTION,
        "parameters": END_TOOL_SCHEMA,
    },
}

log = logging.getLogger(__name__)


# Servers send null for absent fields as often as they leave them out, so every field is optional.
class _Function(msgspec.Struct, frozen=True):
    name: str | None = None
    arguments: str | None = None


class _ToolCallDelta(msgspec.Struct, frozen=True):
    index: int = 0
    id: str | None = None
    function: _Function | None = None


class _Delta(msgspec.Struct, frozen=True):
    content: str | None = None
    tool_calls: list[_ToolCallDelta] | None = None


class _Choice(msgspec.Struct, frozen=True):
    delta: _Delta | None = None
    finish_reason: str | None = None


class _Usage(msgspec.Struct, frozen=True):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class _ErrorDetail(msgspec.Struct, frozen=True):
    message: str = ""
    type: str | None = None

    def __str__(self) -> str:
        return f"{self.type}: {self.message}" if self.type else self.message


class _Chunk(msgspec.Struct, frozen=True):
    choices: list[_Choice] | None = None
    usage: _Usage | None = None
    error: _ErrorDetail | None = None


_encode: Final = msgspec.json.Encoder().encode
_decode_chunk: Final = msgspec.json.Decoder(_Chunk).decode


class OpenAIChatModel(Upstream):
    """Streams replies from POST {base_url}/chat/completions, offering the `end_conversation` tool.

    `base_url` ends in /v1, as in OpenAI's SDK. The API key is `api_key`, else the environment's
    OPENAI_API_KEY; with neither, no Authorization header is sent (a local server may need none).
    """

    failure = ModelError

    def __init__(
        self,
        model: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str | None = None,
        timeout: float = 60.0,
        retries: int = 2,
        backoff: float = 0.5,
    ) -> None:
        self.name = f"openai:{model}"
        self._prefix = f"{self.name}: "
        self.model = model
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = http_client(
            base_url, headers=headers, timeout=timeout, retries=retries, backoff=backoff
        )

    async def stream(self, request: ModelRequest) -> AsyncGenerator[ModelEvent, None]:
        """Text deltas, any tool calls, then `Finished`; closing the iteration closes the stream."""
        reader = _Reader(self.name)
        body = _encode(self._body(request))
        try:
            async with contextlib.aclosing(self._events("chat/completions", body)) as events:
                async for sse in events:
                    if sse.data == DONE:
                        break
                    for event in reader.read(sse.data):
                        yield event
        except msgspec.DecodeError as exc:
            raise ModelError(f"{self.name}: invalid stream chunk: {exc}") from exc
        for event in reader.finish():
            yield event

    def _body(self, request: ModelRequest) -> dict[str, Any]:
        system = {"role": "system", "content": system_prompt(request)}
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        return {
            "model": self.model,
            "messages": [system, *messages],
            "stream": True,
            "stream_options": {"include_usage": True},
            "tools": [TOOL],
        }


@dataclass
class _PendingCall:
    """A tool call whose fragments are still arriving."""

    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class _Reader:
    """Turns the stream's chunks into model events, keeping what spans several of them."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._tools: dict[int, _PendingCall] = {}
        self._finish_reason: str | None = None
        self._usage = Usage()

    def read(self, data: str) -> list[ModelEvent]:
        """The model events one chunk gives; raises `ModelError` for an error chunk."""
        chunk = _decode_chunk(data)
        if chunk.error is not None:
            raise ModelError(f"{self.name}: {chunk.error}")
        if chunk.usage is not None:
            self._usage = Usage(
                input_tokens=chunk.usage.prompt_tokens or 0,
                output_tokens=chunk.usage.completion_tokens or 0,
            )
        events: list[ModelEvent] = []
        for choice in chunk.choices or ():  # we ask for one choice, so any is the first
            if choice.delta is not None:
                events.extend(self._delta(choice.delta))
            if choice.finish_reason is not None:
                self._finish_reason = choice.finish_reason
                events.extend(self._calls())
        return events

    def finish(self) -> list[ModelEvent]:
        """The events that end a stream; raises `ModelError` if the reply never finished."""
        if self._finish_reason is None:
            raise ModelError(f"{self.name}: the stream ended before a finish_reason")
        return [Finished(finish_reason=self._finish_reason, usage=self._usage)]

    def _delta(self, delta: _Delta) -> list[ModelEvent]:
        for part in delta.tool_calls or ():
            call = self._tools.setdefault(part.index, _PendingCall())
            call.id = part.id or call.id
            if part.function is not None:
                # concatenated as OpenAI's SDK does, though servers send the name in one piece
                call.name += part.function.name or ""
                call.arguments.append(part.function.arguments or "")
        return [TextDelta(delta.content)] if delta.content else []

    def _calls(self) -> list[ModelEvent]:
        calls: list[ModelEvent] = [
            ToolCall(name=call.name, arguments=self._arguments("".join(call.arguments)), id=call.id)
            for _, call in sorted(self._tools.items())
        ]
        self._tools.clear()
        return calls

    def _arguments(self, raw: str) -> dict[str, Any]:
        arguments = tool_arguments(raw)
        if arguments is None:
            # What the model wrote is conversation content: logged only when debugging.
            log.warning(
                "%s: tool arguments are not a JSON object (%d characters)", self.name, len(raw)
            )
            log.debug("%s: tool arguments: %.200r", self.name, raw)
        return arguments or {}
