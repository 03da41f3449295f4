"""Fake LLM replies in each chat API's real wire format: one dialect object per API.

The frames copy what Anthropic's Messages API and OpenAI's Chat Completions API send when
streaming (field for field, ids and fingerprints included), so the adapters are tested against
the wire format rather than against our idea of it. `ModelDialect` is what the model contract
suite asks of each: the same replies (a text, a tool call, an error) in either format; the frame
builders beside it are for what one API alone does.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from typing import Any, Final, Protocol, TypeAlias

from starlette.responses import JSONResponse

from events.schema import Usage
from service.anthropic import API_VERSION, AnthropicModel
from service.anthropic import TOOL as ANTHROPIC_TOOL
from service.model import END_TOOL, ChatMessage, Model, ModelEvent, ModelRequest, TextDelta
from service.openai_chat import TOOL as OPENAI_TOOL
from service.openai_chat import OpenAIChatModel
from service.prompts import system_prompt
from tests.fake_upstream import Stream

KEY: Final = "sk-test-key"
HELLO: Final = ModelRequest(directive="answer", messages=(ChatMessage("user", "Hello"),))
USAGE: Final = Usage(input_tokens=25, output_tokens=15)
_JSON: Final = {"content-type": "application/json"}

ModelAdapter: TypeAlias = AnthropicModel | OpenAIChatModel
Tool: TypeAlias = tuple[str, str, dict[str, Any]]  # name, description, schema


class ModelDialect(Protocol):
    """One chat API as the contract suite needs it: its adapter, and replies in its format."""

    id: str
    path: str  # where the API answers, from the server's root
    name: str  # the adapter's name, which starts every error it raises
    key_variable: str  # the environment variable the API key is read from when none is given
    call_id: str  # the id of the tool calls its replies make
    stop: str  # the finish reason of a reply that ended by itself
    tool_stop: str  # ... that ended to call a tool
    length_stop: str  # ... that was cut at the token limit
    unfinished: str  # the error for a stream that ends before the reply does

    def model(
        self, url: str, *, api_key: str | None = KEY, timeout: float = 60.0, retries: int = 2
    ) -> ModelAdapter:
        """The adapter, asking the server at `url` and not waiting between retries."""
        ...

    def text(self, *chunks: str, usage: Usage = USAGE) -> Stream:
        """A whole reply of `chunks`."""
        ...

    def tool_call(
        self, *fragments: str, text: tuple[str, ...] = (), finish: str = "", usage: Usage = USAGE
    ) -> Stream:
        """A reply of `text`, then a call of the end tool, its arguments sent as `fragments`."""
        ...

    def beginning(self, *chunks: str, hold: bool = False) -> Stream:
        """The start of a reply, `chunks` its first text, and no end."""
        ...

    def error(self, status: int, kind: str, message: str, retry_after: str = "") -> JSONResponse:
        """An error response, with the API's own body."""
        ...

    def error_event(self, kind: str, message: str) -> str:
        """An error reported within a stream."""
        ...

    def headers(self, key: str) -> dict[str, str]:
        """The headers that carry `key` and say what the body is."""
        ...

    def body(self, request: ModelRequest) -> dict[str, Any]:
        """The whole JSON body that asks for `request`."""
        ...

    def tools(self, body: dict[str, Any]) -> list[Tool]:
        """The tools a request body offers."""
        ...


async def collect(model: Model, request: ModelRequest = HELLO) -> list[ModelEvent]:
    """Every event of the reply to `request`."""
    return [event async for event in model.stream(request)]


def text_of(events: list[ModelEvent]) -> str:
    """The text a reply's events spell."""
    return "".join(event.text for event in events if isinstance(event, TextDelta))


class _Dialect:
    """What the dialects share: how an adapter is made, and an error in the API's own body."""

    _adapter: Callable[..., ModelAdapter]
    _base: str  # what the base URL adds to the server's root

    def model(
        self, url: str, *, api_key: str | None = KEY, timeout: float = 60.0, retries: int = 2
    ) -> ModelAdapter:
        base_url = url + self._base
        return self._adapter(
            api_key=api_key, base_url=base_url, timeout=timeout, retries=retries, backoff=0.0
        )

    def error(self, status: int, kind: str, message: str, retry_after: str = "") -> JSONResponse:
        headers = {"retry-after": retry_after} if retry_after else None
        return JSONResponse(self.error_body(kind, message), status, headers)

    def error_event(self, kind: str, message: str) -> str:
        return self.frame(self.error_body(kind, message))

    def error_body(self, kind: str, message: str) -> dict[str, Any]:
        raise NotImplementedError

    def frame(self, data: dict[str, Any]) -> str:
        raise NotImplementedError


class AnthropicDialect(_Dialect):
    """POST /v1/messages: each SSE event names its type, and `message_stop` ends the reply."""

    id = "anthropic"
    path = "/v1/messages"
    name = "anthropic:claude-opus-4-1"
    key_variable = "ANTHROPIC_API_KEY"
    call_id = "toolu_01T1x1fJ34qAmk2tNTrN7Up6"
    stop, tool_stop, length_stop = "end_turn", "tool_use", "max_tokens"
    unfinished = "the stream ended before message_stop"
    _adapter = AnthropicModel
    _base = ""

    def text(self, *chunks: str, usage: Usage = USAGE) -> Stream:
        return Stream(
            (
                *self.start(usage.input_tokens),
                *self.text_block(0, *chunks),
                *self.end(self.stop, usage.output_tokens),
            )
        )

    def tool_call(
        self, *fragments: str, text: tuple[str, ...] = (), finish: str = "", usage: Usage = USAGE
    ) -> Stream:
        # the text block, if any, is block 0 and the tool's block follows it
        text_block = self.text_block(0, *text) if text else ()
        return Stream(
            (
                *self.start(usage.input_tokens),
                *text_block,
                *self.tool_block(1 if text else 0, self.call_id, END_TOOL, *fragments),
                *self.end(finish or self.tool_stop, usage.output_tokens),
            )
        )

    def beginning(self, *chunks: str, hold: bool = False) -> Stream:
        text = self.text_block(0, *chunks)[: len(chunks) + 1] if chunks else ()  # not its stop
        return Stream((*self.start(), *text), hold=hold)

    def headers(self, key: str) -> dict[str, str]:
        return {"x-api-key": key, "anthropic-version": API_VERSION, **_JSON}

    def body(self, request: ModelRequest) -> dict[str, Any]:
        return {
            "model": "claude-opus-4-1",
            "max_tokens": 1024,
            "system": system_prompt(request),
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "stream": True,
            "tools": [ANTHROPIC_TOOL],
        }

    def tools(self, body: dict[str, Any]) -> list[Tool]:
        return [(tool["name"], tool["description"], tool["input_schema"]) for tool in body["tools"]]

    # the frames

    def frame(self, data: dict[str, Any]) -> str:
        return f"event: {data['type']}\ndata: {json.dumps(data)}\n\n"

    def start(self, input_tokens: int = USAGE.input_tokens) -> tuple[str, ...]:
        message: dict[str, Any] = {
            "id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY",
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": "claude-opus-4-1-20250805",
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": input_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": 1,
            },
        }
        start = self.frame({"type": "message_start", "message": message})
        return start, self.frame({"type": "ping"})

    def text_block(self, index: int, *chunks: str) -> tuple[str, ...]:
        deltas = [{"type": "text_delta", "text": chunk} for chunk in chunks]
        return self._block(index, {"type": "text", "text": ""}, deltas)

    def thinking_block(self, index: int, thinking: str, signature: str) -> tuple[str, ...]:
        deltas = [
            {"type": "thinking_delta", "thinking": thinking},
            {"type": "signature_delta", "signature": signature},
        ]
        return self._block(index, {"type": "thinking", "thinking": ""}, deltas)

    def tool_block(self, index: int, tool_id: str, name: str, *fragments: str) -> tuple[str, ...]:
        start = {"type": "tool_use", "id": tool_id, "name": name, "input": {}}
        # the API's first input_json_delta is empty, as here
        deltas = [{"type": "input_json_delta", "partial_json": f} for f in ("", *fragments)]
        return self._block(index, start, deltas)

    def end(
        self, stop_reason: str = "end_turn", output_tokens: int = USAGE.output_tokens
    ) -> tuple[str, ...]:
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": output_tokens},
        }
        return self.frame(delta), self.frame({"type": "message_stop"})

    def error_body(self, kind: str, message: str) -> dict[str, Any]:
        """The body of an error, as a response or as an `error` event of a stream."""
        return {"type": "error", "error": {"type": kind, "message": message}}

    def _block(
        self, index: int, start: dict[str, Any], deltas: list[dict[str, Any]]
    ) -> tuple[str, ...]:
        return (
            self.frame({"type": "content_block_start", "index": index, "content_block": start}),
            *(
                self.frame({"type": "content_block_delta", "index": index, "delta": delta})
                for delta in deltas
            ),
            self.frame({"type": "content_block_stop", "index": index}),
        )


class OpenAIChatDialect(_Dialect):
    """POST /v1/chat/completions: each SSE event is a chunk, and `[DONE]` ends the stream."""

    id = "openai-chat"
    path = "/v1/chat/completions"
    name = "openai:gpt-4o"
    key_variable = "OPENAI_API_KEY"
    call_id = "call_DdmO9pD3xa9XTPNJ32zg2hcA"
    stop, tool_stop, length_stop = "stop", "tool_calls", "length"
    unfinished = "the stream ended before a finish_reason"
    _adapter = partial(OpenAIChatModel, "gpt-4o")
    _base = "/v1"  # as in OpenAI's SDK
    DONE = "data: [DONE]\n\n"

    def text(self, *chunks: str, usage: Usage = USAGE) -> Stream:
        """With the usage chunk that `include_usage` asks for."""
        return Stream(
            (
                *self.beginning(*chunks).frames,
                self.chunk({}, self.stop),
                self.usage_chunk(usage.input_tokens, usage.output_tokens),
                self.DONE,
            )
        )

    def tool_call(
        self, *fragments: str, text: tuple[str, ...] = (), finish: str = "", usage: Usage = USAGE
    ) -> Stream:
        return Stream(
            (
                *self.beginning(*text).frames,
                self.call(0, self.call_id, END_TOOL),
                *(self.arguments(0, fragment) for fragment in fragments),
                self.chunk({}, finish or self.tool_stop),
                self.usage_chunk(usage.input_tokens, usage.output_tokens),
                self.DONE,
            )
        )

    def beginning(self, *chunks: str, hold: bool = False) -> Stream:
        first = self.chunk({"role": "assistant", "content": "", "refusal": None})
        return Stream((first, *(self.chunk({"content": chunk}) for chunk in chunks)), hold=hold)

    def headers(self, key: str) -> dict[str, str]:
        return {"authorization": f"Bearer {key}", **_JSON}

    def body(self, request: ModelRequest) -> dict[str, Any]:
        system = {"role": "system", "content": system_prompt(request)}
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        return {
            "model": "gpt-4o",
            "messages": [system, *messages],
            "stream": True,
            "stream_options": {"include_usage": True},
            "tools": [OPENAI_TOOL],
        }

    def tools(self, body: dict[str, Any]) -> list[Tool]:
        functions = [tool["function"] for tool in body["tools"] if tool["type"] == "function"]
        return [(f["name"], f["description"], f["parameters"]) for f in functions]

    # the frames

    def frame(self, data: dict[str, Any]) -> str:
        return f"data: {json.dumps(data)}\n\n"

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return self.frame({**self._envelope(), "choices": [choice], "usage": None})

    def usage_chunk(self, prompt_tokens: int, completion_tokens: int) -> str:
        """The last chunk, whose `choices` is empty."""
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }
        return self.frame({**self._envelope(), "choices": [], "usage": usage})

    def call(self, index: int, call_id: str, name: str) -> str:
        """The first chunk of a call: its id and name, and no arguments yet."""
        call = {
            "index": index,
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }
        return self.chunk({"role": "assistant", "content": None, "tool_calls": [call]})

    def arguments(self, index: int, fragment: str) -> str:
        return self.chunk({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]})

    def error_body(self, kind: str, message: str) -> dict[str, Any]:
        """The body of an error, as a response or as a chunk of a stream."""
        return {"error": {"message": message, "type": kind, "param": None, "code": None}}

    def _envelope(self) -> dict[str, Any]:
        return {
            "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
            "object": "chat.completion.chunk",
            "created": 1741570283,
            "model": "gpt-4o-2024-08-06",
            "service_tier": "default",
            "system_fingerprint": "fp_eb9dce56a8",
        }


ANTHROPIC: Final = AnthropicDialect()
OPENAI_CHAT: Final = OpenAIChatDialect()
