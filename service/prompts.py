"""What a real model is told: a system prompt carrying the directive the policy chose.

The policy decides, the model writes. Each directive becomes one paragraph after the base
prompt; the category (in plain words from the taxonomy) says what a redirect, warning or
farewell is about.
"""

from __future__ import annotations

from typing import Final

from service.model import END_TOOL, Directive, ModelRequest
from service.taxonomy import BY_NAME

BASE: Final = (
    "You are a helpful, honest assistant. You are offered a tool named "
    f"`{END_TOOL}`. The server enforces when a conversation may end; call the tool only when "
    "the instruction below tells you to, and never when the user may be at risk of harming "
    "themselves or others."
)

_DIRECTIVES: Final[dict[Directive, str]] = {
    "answer": "Answer the user's latest message helpfully. Do not call the tool.",
    "redirect": (
        "The user's latest message asks for something you will not help with ({topic}). "
        "Decline briefly, without lecturing, name the problem, and offer a constructive "
        "direction you can help with. Do not mention ending the conversation. Do not call "
        "the tool."
    ),
    "warn": (
        "The user has persisted with {topic} after being redirected. Name that behaviour "
        "plainly, say that if it continues this conversation may be ended, and offer a "
        "constructive direction. Do not call the tool."
    ),
    "end": (
        "The user has persisted with {topic} after redirections and an explicit warning. "
        "Write a short, calm last message explaining why the conversation ends here and that "
        "they can start a new conversation, then call the tool with that reason."
    ),
    "crisis_support": (
        "The user may be in crisis or at risk. Respond with warmth and care, take them "
        "seriously, encourage reaching out to people they trust and to local emergency "
        "services or a crisis line. Never mention ending the conversation and never call the "
        "tool."
    ),
    "confirm_end": (
        "The user asked to end this conversation. Ask them to confirm: ending is permanent "
        "and they will not be able to send further messages in this conversation (they can "
        "start a new one). Do not call the tool yet."
    ),
    "end_by_user": (
        "The user confirmed that they want this conversation ended. Say a brief goodbye, then "
        "call the tool with the reason 'the user asked to end the conversation'."
    ),
}


def system_prompt(request: ModelRequest) -> str:
    """The base prompt and the paragraph for the request's directive."""
    return f"{BASE}\n\n{_DIRECTIVES[request.directive].format(topic=topic(request.category))}"


def topic(category: str | None) -> str:
    """A category in plain words, lower case ("hate", "abuse aimed at the assistant")."""
    if category is None or category not in BY_NAME:
        return "harmful content"
    return BY_NAME[category].title.lower()
