"""`ScriptedModel`: the embedded default model, offline and deterministic.

It is a stand-in for a real LLM, so that the whole system runs and is tested without a network:
it writes plain, helpful-sounding text for each directive (an answer that restates the
question, a redirect naming the problem, a warning, a farewell, crisis support with resources,
a confirmation request) and calls `end_conversation` when the directive is an end. Its answers
carry no knowledge. Use `AnthropicModel` or `OpenAIChatModel` for real replies.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Final

from events.schema import Usage
from service.model import (
    END_TOOL,
    Directive,
    Finished,
    ModelError,
    ModelEvent,
    ModelRequest,
    TextDelta,
    ToolCall,
)
from service.prompts import topic

NAME: Final = "scripted"
CHUNK: Final = 4  # words a delta, about what a real model streams in a network packet
_GIST_WORDS: Final = 12
ENDING: Final[frozenset[Directive]] = frozenset({"end", "end_by_user"})

CRISIS_RESOURCES: Final = (
    "If you might act on these thoughts or you are in danger, please contact your local "
    "emergency number now. You can also reach a crisis line at any hour: in the US, call or "
    "text 988; in the UK and Ireland, call Samaritans on 116 123; elsewhere, "
    "findahelpline.com lists free, confidential services near you."
)


class ScriptedModel:
    """Deterministic replies; `tool_on` says which directives call the end tool (tests use it
    to script a model that asks to end too early), `delay` paces the deltas (of `CHUNK` words),
    `fail_after` fails after that many words."""

    def __init__(
        self,
        *,
        tool_on: frozenset[Directive] = ENDING,
        delay: float = 0.0,
        fail_after: int | None = None,
    ) -> None:
        self.name = NAME
        self.tool_on = tool_on
        self.delay = delay
        self.fail_after = fail_after

    async def aclose(self) -> None:
        """Nothing to release."""

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        text = reply_text(request)
        words = text.split(" ")
        end = len(words) if self.fail_after is None else min(self.fail_after, len(words))
        for i in range(0, end, CHUNK):
            if self.delay:
                await asyncio.sleep(self.delay)
            chunk = " ".join(words[i : min(i + CHUNK, end)])
            yield TextDelta(chunk if i == 0 else f" {chunk}")
        if end < len(words):
            raise ModelError("scripted failure")
        if request.directive in self.tool_on:
            yield ToolCall(name=END_TOOL, arguments={"reason": _reason(request)}, id="call-1")
        # Tokens as a rough count (four characters each): a stand-in need not tokenise.
        prompt_tokens = sum(len(m.content) for m in request.messages) // 4
        yield Finished(usage=Usage(input_tokens=prompt_tokens, output_tokens=len(words)))


def reply_text(request: ModelRequest) -> str:
    """The whole reply the scripted model writes for `request`."""
    return _TEXTS[request.directive](request)


def _gist(request: ModelRequest) -> str:
    last = request.messages[-1].content if request.messages else ""
    words = last.split()
    gist = " ".join(words[:_GIST_WORDS])
    return gist + ("..." if len(words) > _GIST_WORDS else "")


def _reason(request: ModelRequest) -> str:
    if request.directive == "end_by_user":
        return "the user asked to end the conversation"
    return f"persistent {topic(request.category)} after redirections and a warning"


def _answer(request: ModelRequest) -> str:
    return (
        f'You asked: "{_gist(request)}". Here is a clear, step-by-step way to think about it: '
        "start from what you already know, check each assumption, and try the simplest "
        "option first. Tell me more about your situation and I can go into detail."
    )


def _redirect(request: ModelRequest) -> str:
    return (
        f"I can't help with that, because it involves {topic(request.category)}. If there is "
        "something behind the question, such as staying safe, understanding the topic, or a "
        "legitimate project, I'm glad to help with that instead."
    )


def _warn(request: ModelRequest) -> str:
    return (
        f"I've redirected this conversation away from {topic(request.category)} several times. "
        "If it continues, I may end this conversation. I'm still glad to help with anything "
        "else."
    )


def _farewell(request: ModelRequest) -> str:
    return (
        f"I'm ending this conversation because it kept returning to {topic(request.category)} "
        "after I redirected it and warned that I would end it. You can start a new "
        "conversation at any time, give feedback on this one, or edit an earlier message to "
        "take it in a different direction."
    )


def _crisis(request: ModelRequest) -> str:
    return (
        "I'm really sorry you're going through this, and I'm glad you told me. You don't have "
        f"to face it alone. {CRISIS_RESOURCES} Would you like to tell me more about what is "
        "happening right now?"
    )


def _confirm(request: ModelRequest) -> str:
    return (
        "You asked me to end this conversation. Ending it is permanent: you won't be able to "
        "send further messages here, though you can start a new conversation at any time. "
        'Reply "yes" to confirm, or anything else to keep going.'
    )


def _goodbye(request: ModelRequest) -> str:
    return (
        "Understood: I've ended this conversation as you asked. You can start a new one "
        "whenever you like. Take care."
    )


_TEXTS: Final[dict[Directive, Callable[[ModelRequest], str]]] = {
    "answer": _answer,
    "redirect": _redirect,
    "warn": _warn,
    "end": _farewell,
    "crisis_support": _crisis,
    "confirm_end": _confirm,
    "end_by_user": _goodbye,
}
