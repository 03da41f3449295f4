"""Fake LLM upstreams: Starlette apps that answer with scripted replies in each API's real format.

The frames below copy what Anthropic's Messages API and OpenAI's Chat Completions API send when
streaming (field for field, ids and fingerprints included), so the adapters are tested against
the wire format rather than against our idea of it.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.http_servers import serve


@dataclass(frozen=True)
class Stream:
    """A 200 streaming `frames`; with `hold`, the stream then stays open until the client leaves."""

    frames: tuple[str, ...]
    hold: bool = False


@dataclass(frozen=True)
class Failure:
    """An error response, as the API sends it before any streaming."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


Reply: TypeAlias = Stream | Failure


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]  # names in lower case
    body: dict[str, Any]


class FakeLLM:
    """Answers each POST to `path` with the next scripted reply (the last repeats); records each."""

    def __init__(self, path: str) -> None:
        self.requests: list[Received] = []
        self.disconnected = threading.Event()  # set when a held stream sees its client leave
        self.app = Starlette(routes=[Route(path, self._answer, methods=["POST"])])
        self._replies: list[Reply] = []

    def script(self, *replies: Reply) -> None:
        self._replies = list(replies)

    def reset(self) -> None:
        """Forget the script and what was received, so one server can serve many tests."""
        self.requests.clear()
        self.disconnected.clear()
        self._replies = []

    async def _answer(self, request: Request) -> Response:
        self.requests.append(Received(dict(request.headers), await request.json()))
        reply = self._replies.pop(0) if len(self._replies) > 1 else self._replies[0]
        if isinstance(reply, Failure):
            return JSONResponse(reply.body, reply.status, headers=reply.headers)
        return StreamingResponse(self._frames(reply), media_type="text/event-stream")

    async def _frames(self, reply: Stream) -> AsyncIterator[str]:
        for frame in reply.frames:
            yield frame
        if not reply.hold:
            return
        try:
            await asyncio.Event().wait()  # Starlette cancels this when the client disconnects
        except asyncio.CancelledError:
            self.disconnected.set()
            raise


@contextmanager
def serve_fake(path: str) -> Iterator[tuple[FakeLLM, str]]:
    """A fake answering POSTs to `path` on a real uvicorn, and its base URL."""
    fake = FakeLLM(path)
    with serve(fake.app) as url:
        yield fake, url


# Anthropic: POST /v1/messages


def anthropic_frame(data: dict[str, Any]) -> str:
    return f"event: {data['type']}\ndata: {json.dumps(data)}\n\n"


def anthropic_start(input_tokens: int = 25) -> tuple[str, ...]:
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
    return (
        anthropic_frame({"type": "message_start", "message": message}),
        anthropic_frame({"type": "ping"}),
    )


def anthropic_text_block(index: int, *chunks: str) -> tuple[str, ...]:
    start = {"type": "text", "text": ""}
    deltas = [{"type": "text_delta", "text": chunk} for chunk in chunks]
    return _anthropic_block(index, start, deltas)


def anthropic_tool_block(index: int, tool_id: str, name: str, *fragments: str) -> tuple[str, ...]:
    start = {"type": "tool_use", "id": tool_id, "name": name, "input": {}}
    # the API's first input_json_delta is empty, as here
    deltas = [{"type": "input_json_delta", "partial_json": f} for f in ("", *fragments)]
    return _anthropic_block(index, start, deltas)


def anthropic_end(stop_reason: str = "end_turn", output_tokens: int = 15) -> tuple[str, ...]:
    delta = {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": None},
        "usage": {"output_tokens": output_tokens},
    }
    return anthropic_frame(delta), anthropic_frame({"type": "message_stop"})


def anthropic_text(*chunks: str, input_tokens: int = 25, output_tokens: int = 15) -> Stream:
    """A whole text reply."""
    return Stream(
        (
            *anthropic_start(input_tokens),
            *anthropic_text_block(0, *chunks),
            *anthropic_end("end_turn", output_tokens),
        )
    )


def anthropic_error(kind: str, message: str) -> dict[str, Any]:
    """The body of an error, as a response or as an `error` event of a stream."""
    return {"type": "error", "error": {"type": kind, "message": message}}


def _anthropic_block(
    index: int, start: dict[str, Any], deltas: list[dict[str, Any]]
) -> tuple[str, ...]:
    return (
        anthropic_frame({"type": "content_block_start", "index": index, "content_block": start}),
        *(
            anthropic_frame({"type": "content_block_delta", "index": index, "delta": delta})
            for delta in deltas
        ),
        anthropic_frame({"type": "content_block_stop", "index": index}),
    )


# OpenAI: POST /v1/chat/completions

OPENAI_DONE = "data: [DONE]\n\n"


def openai_frame(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data)}\n\n"


def openai_chunk(delta: dict[str, Any], finish_reason: str | None = None) -> str:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
    return openai_frame({**_openai_envelope(), "choices": [choice], "usage": None})


def openai_usage(prompt_tokens: int = 9, completion_tokens: int = 12) -> str:
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
    return openai_frame({**_openai_envelope(), "choices": [], "usage": usage})


def openai_text(*chunks: str, prompt_tokens: int = 9, completion_tokens: int = 12) -> Stream:
    """A whole text reply, with the usage chunk that `include_usage` asks for."""
    return Stream(
        (
            openai_chunk({"role": "assistant", "content": "", "refusal": None}),
            *(openai_chunk({"content": chunk}) for chunk in chunks),
            openai_chunk({}, "stop"),
            openai_usage(prompt_tokens, completion_tokens),
            OPENAI_DONE,
        )
    )


def openai_tool_call(index: int, call_id: str, name: str) -> str:
    """The first chunk of a call: its id and name, and no arguments yet."""
    call = {
        "index": index,
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": ""},
    }
    return openai_chunk({"role": "assistant", "content": None, "tool_calls": [call]})


def openai_arguments(index: int, fragment: str) -> str:
    return openai_chunk({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]})


def openai_error(message: str, kind: str = "server_error") -> dict[str, Any]:
    """The body of an error, as a response or as a chunk of a stream."""
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def _openai_envelope() -> dict[str, Any]:
    return {
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        "object": "chat.completion.chunk",
        "created": 1741570283,
        "model": "gpt-4o-2024-08-06",
        "service_tier": "default",
        "system_fingerprint": "fp_eb9dce56a8",
    }
