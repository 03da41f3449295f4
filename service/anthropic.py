"""Claude through Anthropic's Messages API, streamed as server-sent events.

Each SSE event names its type (`message_start`, `content_block_delta`, ...). Text deltas are
yielded as they arrive; a `tool_use` block's input arrives as JSON fragments that only parse once
the block stops; `message_stop` ends the reply. Event types this module does not know (`ping`,
thinking blocks, types added later) are skipped, as Anthropic asks of clients.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncGenerator
from typing import Any, Final

import msgspec

from events.schema import Usage
from service.http_client import Upstream, error_words, http_client
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

DEFAULT_BASE_URL: Final = "https://api.anthropic.com"
DEFAULT_MODEL: Final = "claude-opus-4-1"
API_VERSION: Final = "2023-06-01"
TOOL: Final[dict[str, Any]] = {
    "name": END_TOOL,
    "description": END_TOOL_DESCRIPTION,
    "input_schema": END_TOOL_SCHEMA,
}

log = logging.getLogger(__name__)


class _Usage(msgspec.Struct, frozen=True):
    input_tokens: int | None = None
    output_tokens: int | None = None


class _Message(msgspec.Struct, frozen=True):
    usage: _Usage = _Usage()


class _MessageStart(msgspec.Struct, frozen=True):
    message: _Message


class _Block(msgspec.Struct, frozen=True):
    type: str
    id: str = ""
    name: str = ""


class _BlockStart(msgspec.Struct, frozen=True):
    index: int
    content_block: _Block


class _Delta(msgspec.Struct, frozen=True):
    type: str
    text: str = ""
    partial_json: str = ""


class _BlockDelta(msgspec.Struct, frozen=True):
    index: int
    delta: _Delta


class _BlockStop(msgspec.Struct, frozen=True):
    index: int


class _Stop(msgspec.Struct, frozen=True):
    stop_reason: str | None = None


class _MessageDelta(msgspec.Struct, frozen=True):
    delta: _Stop = _Stop()
    usage: _Usage = _Usage()


_encode: Final = msgspec.json.Encoder().encode
_decode_start: Final = msgspec.json.Decoder(_MessageStart).decode
_decode_block_start: Final = msgspec.json.Decoder(_BlockStart).decode
_decode_block_delta: Final = msgspec.json.Decoder(_BlockDelta).decode
_decode_block_stop: Final = msgspec.json.Decoder(_BlockStop).decode
_decode_message_delta: Final = msgspec.json.Decoder(_MessageDelta).decode


class AnthropicModel(Upstream):
    """Streams replies from POST {base_url}/v1/messages, offering the `end_conversation` tool.

    The API key is `api_key`, else the environment's ANTHROPIC_API_KEY; with neither, the
    constructor raises `ModelError`, since the API refuses every request without one.
    """

    failure = ModelError

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        api_key: str | None = None,
        base_url: str = DEFAULT_BASE_URL,
        max_tokens: int = 1024,
        timeout: float = 60.0,
        retries: int = 2,
        backoff: float = 0.5,
    ) -> None:
        key = api_key if api_key is not None else os.environ.get("ANTHROPIC_API_KEY")
        if not key:
            raise ModelError("anthropic: no API key: pass api_key or set ANTHROPIC_API_KEY")
        self.name = f"anthropic:{model}"
        self._prefix = f"{self.name}: "
        self.model = model
        self.max_tokens = max_tokens
        headers = {"x-api-key": key, "anthropic-version": API_VERSION}
        self._client = http_client(
            base_url, headers=headers, timeout=timeout, retries=retries, backoff=backoff
        )

    async def stream(self, request: ModelRequest) -> AsyncGenerator[ModelEvent, None]:
        """Text deltas, any tool calls, then `Finished`; closing the iteration closes the stream."""
        reader = _Reader(self.name)
        body = _encode(self._body(request))
        try:
            async with contextlib.aclosing(self._events("v1/messages", body)) as events:
                async for sse in events:
                    for event in reader.read(sse.event, sse.data):
                        yield event
                    if reader.finished:
                        return
        except msgspec.DecodeError as exc:
            raise ModelError(f"{self.name}: invalid stream event: {exc}") from exc
        raise ModelError(f"{self.name}: the stream ended before message_stop")

    def _body(self, request: ModelRequest) -> dict[str, Any]:
        return {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "system": system_prompt(request),
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "stream": True,
            "tools": [TOOL],
        }


class _Reader:
    """Turns the stream's events into model events, keeping what spans several of them."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.finished = False
        self._tools: dict[int, tuple[ToolCall, list[str]]] = {}  # by block index
        self._stop_reason = "end_turn"
        self._input_tokens = 0
        self._output_tokens = 0

    def read(self, event: str, data: str) -> list[ModelEvent]:
        """The model events one SSE event gives; raises `ModelError` for an `error` event."""
        match event:
            case "message_start":
                self._input_tokens = _decode_start(data).message.usage.input_tokens or 0
            case "content_block_start":
                self._start_block(_decode_block_start(data))
            case "content_block_delta":
                return self._delta(_decode_block_delta(data))
            case "content_block_stop":
                return self._stop_block(_decode_block_stop(data).index)
            case "message_delta":
                self._message_delta(_decode_message_delta(data))
            case "message_stop":
                self.finished = True
                usage = Usage(input_tokens=self._input_tokens, output_tokens=self._output_tokens)
                return [Finished(finish_reason=self._stop_reason, usage=usage)]
            case "error":
                raise ModelError(f"{self.name}: {error_words(data.encode())}")
        return []

    def _start_block(self, start: _BlockStart) -> None:
        block = start.content_block
        if block.type == "tool_use":
            self._tools[start.index] = (ToolCall(name=block.name, id=block.id), [])

    def _delta(self, delta: _BlockDelta) -> list[ModelEvent]:
        if delta.delta.type == "text_delta" and delta.delta.text:
            return [TextDelta(delta.delta.text)]
        if delta.delta.type == "input_json_delta" and delta.index in self._tools:
            self._tools[delta.index][1].append(delta.delta.partial_json)
        return []

    def _stop_block(self, index: int) -> list[ModelEvent]:
        if index not in self._tools:
            return []
        call, fragments = self._tools.pop(index)
        return [msgspec.structs.replace(call, arguments=self._arguments("".join(fragments)))]

    def _message_delta(self, delta: _MessageDelta) -> None:
        self._stop_reason = delta.delta.stop_reason or self._stop_reason
        # message_delta's counts are cumulative, and input_tokens appears in newer versions only
        self._input_tokens = delta.usage.input_tokens or self._input_tokens
        self._output_tokens = delta.usage.output_tokens or self._output_tokens

    def _arguments(self, raw: str) -> dict[str, Any]:
        arguments = tool_arguments(raw)
        if arguments is None:
            # What the model wrote is conversation content: logged only when debugging.
            log.warning("%s: tool input is not a JSON object (%d characters)", self.name, len(raw))
            log.debug("%s: tool input: %.200r", self.name, raw)
        return arguments or {}
