"""The engine's exceptions (the store's own, such as `ThreadEndedError`, pass through as they are).

EngineError
├── ThreadNotFoundError     no thread with that id
├── ThreadExistsError       a new thread's id is taken by another thread
├── TurnInProgressError     a generation is running on the branch the turn would continue
├── InvalidTurnError        the turn cannot be taken: an empty message, an edit of a reply, ...
├── MessageConflictError    a client message id that was used before for other content
└── NoGenerationError       nothing to cancel
"""

from __future__ import annotations


class EngineError(Exception):
    """Base of every error the engine raises itself."""


class ThreadNotFoundError(EngineError, LookupError):
    def __init__(self, thread_id: str) -> None:
        super().__init__(f"no thread {thread_id!r}")
        self.thread_id = thread_id


class ThreadExistsError(EngineError):
    def __init__(self, thread_id: str) -> None:
        super().__init__(f"thread {thread_id!r} exists already")
        self.thread_id = thread_id


class TurnInProgressError(EngineError):
    def __init__(self, thread_id: str, reply_id: str) -> None:
        super().__init__(f"thread {thread_id!r}: reply {reply_id!r} is still being generated")
        self.thread_id = thread_id
        self.reply_id = reply_id


class InvalidTurnError(EngineError, ValueError):
    pass


class MessageConflictError(EngineError):
    def __init__(self, thread_id: str, message_id: str) -> None:
        super().__init__(
            f"thread {thread_id!r}: message id {message_id!r} was already used for another message"
        )
        self.thread_id = thread_id
        self.message_id = message_id


class NoGenerationError(EngineError, LookupError):
    pass


class VersionConflictError(EngineError):
    """The client acted on a version of the thread (`If-Match`) that is no longer current."""

    def __init__(self, thread_id: str, expected: int, actual: int) -> None:
        super().__init__(
            f"thread {thread_id!r}: you acted on version {expected}, it is at version {actual}"
        )
        self.thread_id = thread_id
        self.expected = expected
        self.actual = actual


class EndRefusedError(EngineError):
    """The user asked to end a branch the policy keeps open (recorded as `end.rejected`)."""

    def __init__(self, thread_id: str, leaf_id: str, reason: str) -> None:
        super().__init__(f"thread {thread_id!r}: the branch at {leaf_id!r} stays open: {reason}")
        self.thread_id = thread_id
        self.leaf_id = leaf_id
        self.reason = reason
