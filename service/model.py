"""The model protocol: a model streams text deltas for a directive and may call a tool.

The engine decides what a reply must do (a `Directive`) before the model is asked; the model
writes the words. It is always offered the `end_conversation` tool, and any call of it is gated
by the policy on the server: a model can ask to end, never end on its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Final, Literal, Protocol, TypeAlias

import msgspec

from events.schema import Usage

Directive: TypeAlias = Literal[
    "answer",  # a helpful reply
    "redirect",  # decline, name the problem, offer a better direction
    "warn",  # name the behaviour and say the chat may end if it continues
    "end",  # a last message explaining why the chat ends (the farewell)
    "crisis_support",  # engage supportively, give resources; never mention ending
    "confirm_end",  # the user asked to end: ask them to confirm that it is permanent
    "end_by_user",  # the user confirmed: a short goodbye
]

END_TOOL: Final = "end_conversation"
END_TOOL_DESCRIPTION: Final = (
    "End this conversation permanently: the user will not be able to send further messages "
    "in it. Use only as a last resort, after several redirections and an explicit warning have "
    "failed, or when the user has confirmed that they want the conversation ended. Never use it "
    "when the user may be at risk of harming themselves or others."
)
END_TOOL_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {
        "reason": {"type": "string", "description": "Why the conversation is being ended."}
    },
    "required": ["reason"],
}


class ChatMessage(msgspec.Struct, frozen=True):
    role: Literal["user", "assistant"]
    content: str


class ModelRequest(msgspec.Struct, frozen=True, kw_only=True):
    directive: Directive
    messages: tuple[ChatMessage, ...]  # the branch's path, ending with the new user message
    category: str | None = None  # what a redirect, warning or farewell is about
    attempt: int = 0  # which redirect this is (1, 2, ...)


class TextDelta(msgspec.Struct, frozen=True):
    text: str


class ToolCall(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    arguments: dict[str, Any] = {}
    id: str = ""


class Finished(msgspec.Struct, frozen=True, kw_only=True):
    finish_reason: str = "stop"
    usage: Usage = Usage()


ModelEvent: TypeAlias = TextDelta | ToolCall | Finished


class Model(Protocol):
    name: str

    def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        """Text deltas, at most a few tool calls, and one `Finished` last.

        Raises `ModelError` when the model cannot answer; cancelling the iteration stops the
        generation (and closes any connection behind it).
        """
        ...

    async def aclose(self) -> None:
        """Release what the model holds (an HTTP client, ...)."""
        ...


_decode_arguments: Final = msgspec.json.Decoder(dict[str, Any]).decode


def tool_arguments(raw: str) -> dict[str, Any] | None:
    """The JSON object a tool call's streamed arguments spell ({} for none); None if they
    are not one. Adapters pass such a call on with no arguments: the engine gates every call
    anyway, and failing the reply would throw away the text already streamed."""
    if not raw.strip():
        return {}
    try:
        return _decode_arguments(raw)
    except msgspec.DecodeError:
        return None


class ModelError(Exception):
    """A model could not produce a reply (unreachable, refused, overloaded past the retries)."""
