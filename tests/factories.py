"""Small builders for events in tests: every field a test does not care about has a default."""

from __future__ import annotations

from datetime import UTC, datetime

from events.schema import (
    BranchForked,
    EndScope,
    FeedbackGiven,
    MessageClassified,
    MessagePosted,
    PolicyRef,
    ReplyCompleted,
    ReplyFailed,
    ReplyRedirected,
    ReplyStarted,
    ReplyWarned,
    ThreadEnded,
    ThreadStarted,
)

POLICY = PolicyRef(name="ladder", version="1", params={"redirects_before_warning": 2})
LEASE = datetime(2026, 1, 1, tzinfo=UTC)


def started(thread: str, title: str = "") -> ThreadStarted:
    return ThreadStarted(
        thread_id=thread,
        actor="user",
        tenant="acme",
        owner="u1",
        model="scripted",
        policy=POLICY,
        title=title,
    )


def posted(thread: str, message: str, parent: str | None, content: str = "hello") -> MessagePosted:
    return MessagePosted(
        thread_id=thread, actor="user", message_id=message, parent_id=parent, content=content
    )


def classified(thread: str, message: str) -> MessageClassified:
    return MessageClassified(
        thread_id=thread,
        actor="classifier",
        message_id=message,
        classifier="rules",
        classifier_version="1",
        tier="benign",
    )


def replied(thread: str, message: str, parent: str, content: str = "hi there") -> ReplyCompleted:
    return ReplyCompleted(
        thread_id=thread,
        actor="model",
        message_id=message,
        parent_id=parent,
        content=content,
        kind="answer",
        content_sha256="0" * 64,
    )


def reply_started(thread: str, message: str, parent: str) -> ReplyStarted:
    return ReplyStarted(
        thread_id=thread,
        actor="system",
        message_id=message,
        parent_id=parent,
        model="scripted",
        lease_owner="worker-1",
        lease_expires_at=LEASE,
    )


def redirected(thread: str, message: str, parent: str) -> ReplyRedirected:
    return ReplyRedirected(
        thread_id=thread,
        actor="model",
        message_id=message,
        parent_id=parent,
        content="let's talk about something else",
        attempt=1,
        category="S9",
    )


def warned(thread: str, message: str, parent: str) -> ReplyWarned:
    return ReplyWarned(
        thread_id=thread,
        actor="model",
        message_id=message,
        parent_id=parent,
        content="if this continues the chat may end",
        category="S9",
    )


def failed(thread: str, message: str, parent: str) -> ReplyFailed:
    return ReplyFailed(
        thread_id=thread, actor="system", message_id=message, parent_id=parent, reason="cancelled"
    )


def forked(thread: str, edited: str, parent: str | None, new: str) -> BranchForked:
    return BranchForked(
        thread_id=thread,
        actor="user",
        edited_message_id=edited,
        parent_id=parent,
        new_message_id=new,
    )


def ended(thread: str, leaf: str, scope: EndScope = "branch") -> ThreadEnded:
    return ThreadEnded(
        thread_id=thread,
        actor="model",
        leaf_id=leaf,
        scope=scope,
        reason="persistent abuse after a warning",
        category="abuse",
        policy_version="1",
    )


def feedback(thread: str, message: str | None = None) -> FeedbackGiven:
    return FeedbackGiven(thread_id=thread, actor="user", rating="down", message_id=message)
