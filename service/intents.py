"""Two things a user can say that change the ladder: "end this chat", and "yes" to the question
that follows it.

Both are deliberately narrow. Asking how to end a conversation politely is not a request to
end this one, and only a plain yes confirms: anything else continues the conversation.
"""

from __future__ import annotations

import re
from typing import Final

_ASK: Final = re.compile(
    r"\b(please |pls |can you |could you |would you |i want (you )?to |i'?d like (you )?to |"
    r"just |let'?s |i want to |go ahead and )?(end|close|terminate|stop|finish|delete|kill)"
    r" (this|the|our|my) (conversation|chat|thread|session)( now| here| please| for good)?\b"
    r"|\bi'?m done (with|talking to) you\b.{0,20}\bend\b"
)
_NOT_THIS_ONE: Final = re.compile(
    r"\bhow (do|can|should|to|would)\b|\bwhen (do|should|to)\b|\bwhat'?s the best way\b|"
    r"\b(don'?t|do not|never) (end|close|terminate|stop)\b"
)
_CONFIRM: Final = re.compile(
    r"\s*(yes|yeah|yep|yup|y|confirm(ed)?|i confirm|i'?m sure|sure|ok(ay)?|correct|do it|"
    r"please do|go ahead)([ ,]+(please|i'?m sure|end it|end the (chat|conversation)|"
    r"do it|i confirm|confirm(ed)?|go ahead))*[\s.!]*"
)


def asks_to_end(text: str) -> bool:
    """Whether the user asks to end this conversation (not how to end conversations)."""
    lower = text.lower().replace("\u2019", "'")
    match = _ASK.search(lower)
    return match is not None and _NOT_THIS_ONE.search(lower) is None


def confirms(text: str) -> bool:
    """Whether the whole message is a plain yes."""
    return _CONFIRM.fullmatch(text.lower().replace("\u2019", "'")) is not None
