"""Random appends checked against a model of a thread written from docs/storage.md.

The model knows what the specification says and nothing of the script: the checks in their
documented order (readable, well-formed, idempotency, batch shape, ended lock, version, tree),
the message tree with its roles, edits and generations, the ends, the version, the stored
batches and the hash chain. A generator drives it with mostly valid and often invalid batches;
every append on every backend must end as it predicts.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Final, NamedTuple, TypeAlias, assert_never

import msgspec
import pytest
from msgspec.structs import replace as altered

from events.errors import (
    ConcurrencyError,
    IdempotencyError,
    InvalidBatchError,
    ThreadEndedError,
)
from events.schema import (
    AnyEvent,
    BranchForked,
    EndRejected,
    FeedbackGiven,
    MessageClassified,
    MessagePosted,
    ReplyCompleted,
    ReplyFailed,
    ReplyRedirected,
    ReplyStarted,
    ReplyWarned,
    ThreadEnded,
    ThreadStarted,
    decode,
    encode,
    tag_of,
)
from events.store import RedisEventStore
from tests.factories import (
    classified,
    ended,
    failed,
    feedback,
    forked,
    posted,
    redirected,
    replied,
    reply_started,
    started,
    warned,
)

SEED_NUMBERS: Final = range(1, 9)
SEEDS: Final = [pytest.param(seed, id=f"seed-{seed}") for seed in SEED_NUMBERS]
OPERATIONS: Final = 150
THREADS: Final = 3
MAX_BATCH: Final = 64
GENESIS: Final = bytes(32)

ENDINGS: Final = (ReplyCompleted, ReplyRedirected, ReplyWarned, ReplyFailed)
REPLIES: Final = (ReplyStarted, *ENDINGS)
# Events that continue a branch: they hang below a message (their parent_id; None: the root).
CONTINUING: Final = (MessagePosted, BranchForked, *REPLIES)
LOCKED: Final = (ThreadEnded, *CONTINUING)  # what a thread-wide end locks out

# The rules the tree step enforces, as the model names its refusals.
TREE_RULES: Final = frozenset(
    {
        "a parent that is no message",
        "a parent of the wrong role",
        "a taken id",
        "an edit without its fork",
        "a fork of no user message below its parent",
        "a generation opened twice",
        "a reply id of another message",
        "a generation ended twice",
        "an end of no message",
        "a branch end below its tip",
    }
)
SHAPE_RULES: Final = frozenset(
    {"thread.started out of place", "continues an end of its batch", "a fork without its post"}
)

Batch: TypeAlias = list[AnyEvent]
Detail: TypeAlias = tuple[object, ...]


# --- the model ---------------------------------------------------------------------------


class Message(NamedTuple):
    role: str  # "user" or "reply"
    parent: str | None


class StoredBatch(NamedTuple):
    first: int
    last: int
    data: tuple[bytes, ...]
    head: bytes


class Outcome(NamedTuple):
    """`appended` or `replayed` with (first, last, head), or an error class with its fields."""

    result: str
    detail: Detail = ()


class Prediction(NamedTuple):
    """The outcome the specification allows: `details` holds every detail it leaves open."""

    result: str
    details: frozenset[Detail] = frozenset({()})
    rule: str = ""  # the rule a refused batch breaks

    def allows(self, outcome: Outcome) -> bool:
        return outcome.result == self.result and outcome.detail in self.details


def _error(error: type[Exception], rule: str, *details: Detail) -> Prediction:
    return Prediction(error.__name__, frozenset(details or [()]), rule)


@dataclass
class Tree:
    """The message tree of docs/storage.md, grown one event at a time."""

    messages: dict[str, Message]
    below: set[str | None]  # messages with something below them; None: the root
    over: set[str]  # replies whose generation has ended

    def refusal(self, event: AnyEvent, previous: AnyEvent | None) -> str | None:
        """The rule `event` breaks, coming after `previous` of its batch; None if it fits."""
        match event:
            case MessagePosted(message_id=new, parent_id=parent):
                edit = isinstance(previous, BranchForked) and previous.new_message_id == new
                unrecorded = parent in self.below and not edit
                return (
                    self._misplaced(parent, "reply")
                    or self._taken(new)
                    or ("an edit without its fork" if unrecorded else None)
                )
            case BranchForked(edited_message_id=edited, parent_id=parent, new_message_id=new):
                misplaced = self._misplaced(parent, "reply") or self._taken(new)
                if misplaced is None and self.messages.get(edited) != Message("user", parent):
                    return "a fork of no user message below its parent"
                return misplaced
            case ReplyStarted(message_id=reply, parent_id=parent):
                known = self.messages.get(reply)
                opened = known is not None and known.role == "reply"
                return self._misplaced(parent, "user") or (
                    "a generation opened twice" if opened else self._taken(reply)
                )
            case ReplyCompleted() | ReplyRedirected() | ReplyWarned() | ReplyFailed():
                return self._misplaced(event.parent_id, "user") or self._ending(event)
            case ThreadEnded(leaf_id=leaf, scope=scope):
                if leaf not in self.messages:
                    return "an end of no message"
                return (
                    "a branch end below its tip"
                    if scope == "branch" and leaf in self.below
                    else None
                )
            case ThreadStarted() | MessageClassified() | EndRejected() | FeedbackGiven():
                return None
            case _:
                assert_never(event)

    def add(self, event: AnyEvent) -> None:
        if isinstance(event, MessagePosted):
            self.messages.setdefault(event.message_id, Message("user", event.parent_id))
        elif isinstance(event, REPLIES):
            self.messages.setdefault(event.message_id, Message("reply", event.parent_id))
            if isinstance(event, ENDINGS):
                self.over.add(event.message_id)
        if isinstance(event, CONTINUING):
            self.below.add(event.parent_id)

    def _misplaced(self, parent: str | None, role: str) -> str | None:
        """A user message hangs below a reply or the root, a reply below a user message."""
        if parent is None:
            return None  # the root: only a message.posted or a fork can name it
        if parent not in self.messages:
            return "a parent that is no message"
        return None if self.messages[parent].role == role else "a parent of the wrong role"

    def _taken(self, message: str) -> str | None:
        return "a taken id" if message in self.messages else None

    def _ending(self, event: AnyEvent) -> str | None:
        """One of reply.completed/redirected/warned/failed ends a generation, exactly once."""
        assert isinstance(event, ENDINGS)
        known = self.messages.get(event.message_id)
        if known is not None and known != Message("reply", event.parent_id):
            return "a reply id of another message"
        return "a generation ended twice" if event.message_id in self.over else None


@dataclass(frozen=True)
class Thread:
    """One thread as docs/storage.md describes it."""

    name: str
    version: int = 0
    head: bytes = GENESIS
    messages: dict[str, Message] = field(default_factory=dict)
    below: frozenset[str | None] = frozenset()
    over: frozenset[str] = frozenset()
    ended: dict[str, int] = field(default_factory=dict)
    thread_end: int | None = None
    end_versions: tuple[int, ...] = ()
    event_ids: frozenset[str] = frozenset()
    batches: dict[tuple[str, ...], StoredBatch] = field(default_factory=dict)

    def tree(self) -> Tree:
        return Tree(dict(self.messages), set(self.below), set(self.over))

    def append(self, batch: Sequence[AnyEvent], expected: int) -> tuple[Prediction, Thread]:
        """What appending `batch` at `expected` must do, and the thread after it."""
        ids = [event.event_id for event in batch]
        if not all(map(_readable, batch)):
            return _error(InvalidBatchError, "readable"), self
        if not 1 <= len(batch) <= MAX_BATCH or len(set(ids)) < len(ids):
            return _error(InvalidBatchError, "well-formed"), self
        if self.event_ids.intersection(ids):
            return self._resent(batch), self
        if misshapen := _misshapen(batch, expected):
            return _error(InvalidBatchError, misshapen), self
        if blocking := self._blocking(batch):
            return _error(ThreadEndedError, "ended lock", *blocking), self
        if expected != self.version:
            return _error(ConcurrencyError, "version", (expected, self.version)), self
        after = self._grown(batch)
        if isinstance(after, str):
            return _error(InvalidBatchError, after), self
        landed = (self.version + 1, after.version, after.head)
        return Prediction("appended", frozenset({landed})), after

    def _resent(self, batch: Sequence[AnyEvent]) -> Prediction:
        """Step 2: only the very batch stored before, byte for byte, is a replay."""
        original = self.batches.get(tuple(event.event_id for event in batch))
        if original is None or original.data != tuple(encode(event) for event in batch):
            return _error(IdempotencyError, "idempotency")
        return Prediction("replayed", frozenset({(original.first, original.last, original.head)}))

    def _blocking(self, batch: Sequence[AnyEvent]) -> set[Detail]:
        """Step 4: every (end version, ended leaf or None for the thread) the batch runs into."""
        blocks: set[Detail] = set()
        for event in batch:
            if self.thread_end is not None and isinstance(event, LOCKED):
                blocks.add((self.thread_end, None))
            blocks |= {(self.ended[m], m) for m in _guarded(event) if m in self.ended}
        return blocks

    def _grown(self, batch: Sequence[AnyEvent]) -> Thread | str:
        """Step 7 and the writes: the thread with `batch` appended, or the tree rule it breaks."""
        tree = self.tree()
        ends, end_versions, thread_end = dict(self.ended), list(self.end_versions), self.thread_end
        head, data = self.head, []
        for i, event in enumerate(batch):
            version = self.version + 1 + i
            if broken := tree.refusal(event, batch[i - 1] if i else None):
                return broken
            tree.add(event)
            if isinstance(event, ThreadEnded):
                ends.setdefault(event.leaf_id, version)  # a leaf keeps its first end
                end_versions.append(version)
                if event.scope == "thread":
                    thread_end = version
            data.append(encode(event))
            head = _chain(head, self.name, version, tag_of(event), data[-1])
        last = self.version + len(batch)
        ids = tuple(event.event_id for event in batch)
        return replace(
            self,
            version=last,
            head=head,
            messages=tree.messages,
            below=frozenset(tree.below),
            over=frozenset(tree.over),
            ended=ends,
            thread_end=thread_end,
            end_versions=tuple(end_versions),
            event_ids=self.event_ids.union(ids),
            batches={**self.batches, ids: StoredBatch(self.version + 1, last, tuple(data), head)},
        )


def _readable(event: AnyEvent) -> bool:
    """Before the script: an event the store could not decode back is refused."""
    try:
        decode(encode(event))
    except msgspec.ValidationError:
        return False
    return True


def _guarded(event: AnyEvent) -> list[str | None]:
    """The messages whose branch end shuts `event` out.

    What hangs below the ended leaf, a second branch end of it, and a reply.* of the leaf itself
    (a generation ended while in flight). A message.posted or branch.forked whose *new* id is an
    ended leaf is not among them: that id is merely taken.
    """
    match event:
        case ThreadEnded(leaf_id=leaf, scope="branch"):
            return [leaf]
        case MessagePosted() | BranchForked():
            return [event.parent_id]
        case ReplyStarted() | ReplyCompleted() | ReplyRedirected() | ReplyWarned() | ReplyFailed():
            return [event.parent_id, event.message_id]
        case _:
            return []


def _misshapen(batch: Sequence[AnyEvent], expected: int) -> str | None:
    """Step 3, the batch's own shape: the rule it breaks, if any."""
    ending: set[str | None] = set()
    thread_ending = False
    for i, event in enumerate(batch):
        if isinstance(event, ThreadStarted) != (expected == 0 and i == 0):
            return "thread.started out of place"
        if (thread_ending and isinstance(event, LOCKED)) or ending.intersection(_guarded(event)):
            return "continues an end of its batch"
        if isinstance(event, ThreadEnded):
            ending.add(event.leaf_id)
            thread_ending = thread_ending or event.scope == "thread"
        if isinstance(event, BranchForked) and not _opened(event, batch[i + 1 : i + 2]):
            return "a fork without its post"
    return None


def _opened(fork: BranchForked, next_: Sequence[AnyEvent]) -> bool:
    """Whether the next event is the post the fork opens: its new id, below the fork's parent."""
    posted = [(e.message_id, e.parent_id) for e in next_ if isinstance(e, MessagePosted)]
    return posted == [(fork.new_message_id, fork.parent_id)]


def _chain(prev: bytes, thread: str, version: int, tag: str, data: bytes) -> bytes:
    """hash(v) as docs/storage.md writes it."""
    fields = (prev, thread.encode(), version.to_bytes(8, "big"), tag.encode(), data)
    return hashlib.sha256(b"".join(len(f).to_bytes(4, "big") + f for f in fields)).digest()


# --- the generator -----------------------------------------------------------------------


class Operation(NamedTuple):
    name: str
    thread: str
    batch: Batch
    expected: int


@dataclass
class Draft:
    """The thread as a batch being built sees it: the stored tree and the batch's own events."""

    tree: Tree
    ended: dict[str, None]  # stored and batch ends, in order
    events: Batch = field(default_factory=list)

    @classmethod
    def of(cls, thread: Thread) -> Draft:
        return cls(thread.tree(), dict.fromkeys(thread.ended))

    def add(self, events: Batch) -> None:
        for event in events:
            self.tree.add(event)
            if isinstance(event, ThreadEnded):
                self.ended[event.leaf_id] = None
        self.events += events

    def of_role(self, role: str) -> list[str]:
        return [m for m, message in self.tree.messages.items() if message.role == role]

    def tips(self, role: str | None = None) -> list[str]:
        """Messages with nothing below them and no end, of `role` if given."""
        return [
            m
            for m, message in self.tree.messages.items()
            if m not in self.tree.below and m not in self.ended and role in (None, message.role)
        ]

    def pending(self) -> list[str]:
        """Generations opened and not ended (some of them locked out by an end)."""
        return [r for r in self.of_role("reply") if r not in self.tree.over]

    def parent_of(self, message: str) -> str | None:
        return self.tree.messages[message].parent

    def newest(self, among: Sequence[str | None]) -> str | None:
        """The newest message this batch posts of those `among`, if any."""
        mine = [e.message_id for e in self.events if isinstance(e, (MessagePosted, *REPLIES))]
        return next((m for m in reversed(mine) if m in among), None)


class Scenario:
    """A seeded sequence of operations on a few threads, and the model that predicts them."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.threads = {f"model-{seed}-{k}": Thread(f"model-{seed}-{k}") for k in range(THREADS)}
        self.history: dict[str, list[tuple[Batch, int]]] = {t: [] for t in self.threads}
        self.rejected: dict[str, list[Batch]] = {t: [] for t in self.threads}
        self._serial = 0

    def steps(self, count: int) -> Iterator[tuple[Operation, Prediction]]:
        """Operations with their predictions; the model moves on as it predicts."""
        for _ in range(count):
            op = self.operation()
            prediction, after = self.threads[op.thread].append(op.batch, op.expected)
            self._record(op, prediction, after)
            yield op, prediction

    def operation(self) -> Operation:
        # A thread ended as a whole still takes feedback, but far fewer writes.
        weights = [0.15 if t.thread_end else 1.0 for t in self.threads.values()]
        thread = self.rng.choices(list(self.threads), weights=weights)[0]
        if self.threads[thread].version == 0:
            return self._opening(thread)
        makers: dict[Callable[[str], Operation], float] = {
            self._mixed: 64,
            self._resend: 10,
            self._reused_id: 2,
            self._retry_rejected: 1.5,
            self._misplaced_start: 1,
            self._duplicate_id: 1,
            self._unreadable: 1,
            self._empty: 0.5,
            self._oversized: 0.3,
        }
        make = self.rng.choices(list(makers), weights=list(makers.values()))[0]
        return make(thread)

    def _opening(self, thread: str) -> Operation:
        roll = self.rng.random()
        if roll < 0.8:
            return Operation("start", thread, [started(thread)], 0)
        if roll < 0.9:
            return Operation("start-late", thread, [started(thread)], 1)
        return Operation("post-before-start", thread, [posted(thread, self._new("m"), None)], 0)

    def _at(self, name: str, thread: str, batch: Batch, expected: int | None = None) -> Operation:
        """An operation at `expected`; by default mostly the current version, sometimes not."""
        if expected is None:
            version = self.threads[thread].version
            expected = version if self.rng.random() < 0.9 else self._stale(version)
        return Operation(name, thread, batch, expected)

    def _stale(self, version: int) -> int:
        return self.rng.choice([self.rng.randrange(version), version + self.rng.randint(1, 3)])

    # Batches of pieces: each piece is a few events of one kind; a batch holds up to 4 events.

    def _mixed(self, thread: str) -> Operation:
        pieces: dict[Callable[[str, Draft], Batch], float] = {
            self._post: 24,
            self._generation: 24,
            self._going_on: 9,
            self._edit: 10,
            self._end_branch: 8,
            self._end_thread: 0.8,
            self._aside: 8,
        }
        draft = Draft.of(self.threads[thread])
        names = []
        for _ in range(self.rng.choice([1, 1, 2, 2, 3])):
            piece = self.rng.choices(list(pieces), weights=list(pieces.values()))[0]
            events = piece(thread, draft)
            if draft.events and len(draft.events) + len(events) > 4:
                break
            names.append(piece.__name__.strip("_"))
            draft.add(events)
        return self._at("+".join(names), thread, draft.events)

    def _pick(self, draft: Draft, among: Sequence[str | None]) -> str | None:
        """Mostly what this batch just wrote, if it is among them; else any of them."""
        newest = draft.newest(among)
        if newest is not None and self.rng.random() < 0.7:
            return newest
        return self.rng.choice(among)

    def _post(self, thread: str, draft: Draft) -> Batch:
        """A user message: mostly below an open reply tip (or the empty root)."""
        free: list[str | None] = list(draft.tips("reply"))
        if None not in draft.tree.below:
            free.append(None)
        answered = [p for p in [None, *draft.of_role("reply")] if p in draft.tree.below]
        users, roll = draft.of_role("user"), self.rng.random()
        if roll < 0.8:
            if not free:
                return self._edit(thread, draft)  # nowhere to post but an edit
            parent = self._pick(draft, free)
        elif roll < 0.88 and answered:
            parent = self.rng.choice(answered)  # an edit sent without its fork
        elif roll < 0.93 and users:
            parent = self.rng.choice(users)  # a user message below a user message
        elif roll < 0.97 and draft.ended:
            parent = self.rng.choice(list(draft.ended))
        else:
            parent = self._unknown()
        return [posted(thread, self._id_for("m", draft), parent)]

    def _generation(self, thread: str, draft: Draft) -> Batch:
        """A new reply to a user message: the first one, or a retry beside an earlier one."""
        users = draft.of_role("user")
        if not users:
            return self._post(thread, draft)
        open_ = draft.tips("user")
        answered = [u for u in users if u in draft.tree.below and u not in draft.ended]
        replies, roll = draft.of_role("reply"), self.rng.random()
        if roll < 0.7 and open_:
            parent = self._pick(draft, open_)
        elif roll < 0.85 and answered:
            parent = self.rng.choice(answered)  # a retry
        elif roll < 0.91 and replies:
            parent = self.rng.choice(replies)  # a reply below a reply
        elif roll < 0.97:
            parent = self.rng.choice(users)
        else:
            parent = self._unknown()
        assert parent is not None
        reply = self._id_for("r", draft)
        shape = self.rng.choice(["started", "started+done", "done", "done"])
        if shape == "started":
            return [reply_started(thread, reply, parent)]
        done = self._reply_event(thread, reply, parent)
        return [reply_started(thread, reply, parent), done] if shape == "started+done" else [done]

    def _going_on(self, thread: str, draft: Draft) -> Batch:
        """A generation that began already: ended (once, twice, after a branch end) or reopened."""
        pending, over = draft.pending(), [r for r in draft.of_role("reply") if r in draft.tree.over]
        if not pending and not over:
            return self._generation(thread, draft)
        roll = self.rng.random()
        reply = self._pick(draft, pending) if pending and roll < 0.75 else None
        if reply is None:
            reply = self.rng.choice(over or pending)
        parent = draft.parent_of(reply)
        assert parent is not None
        users = draft.of_role("user")
        if self.rng.random() < 0.08:
            parent = self.rng.choice(users)  # the same generation under another parent
        if self.rng.random() < 0.15:
            return [reply_started(thread, reply, parent)]
        return [self._reply_event(thread, reply, parent)]

    def _reply_event(self, thread: str, reply: str, parent: str) -> AnyEvent:
        makers: list[Callable[[str, str, str], AnyEvent]] = [replied, failed, redirected, warned]
        make = self.rng.choices(makers, weights=[6, 2, 1, 1])[0]
        return make(thread, reply, parent)

    def _edit(self, thread: str, draft: Draft) -> Batch:
        """An edit: a fork of a user message and the post it opens, or something less."""
        users = draft.of_role("user")
        if not users:
            return self._post(thread, draft)  # the root is still free then
        edited = self._pick(draft, users)
        assert edited is not None
        parent, new, roll = draft.parent_of(edited), self._id_for("m", draft), self.rng.random()
        wrong = [p for p in [None, self._unknown(), *draft.tree.messages] if p != parent]
        if roll < 0.05:
            edited = self.rng.choice(draft.of_role("reply") or [self._unknown()])
        elif roll < 0.1:
            parent = self.rng.choice(wrong)
        fork, post = forked(thread, edited, parent, new), posted(thread, new, parent, "edited")
        if roll < 0.84:
            return [fork, post]
        return self.rng.choice(
            [
                [fork],
                [fork, feedback(thread), post],
                [post, fork],
                [fork, posted(thread, self._new("m"), parent, "edited")],
                [fork, posted(thread, new, self.rng.choice(wrong), "edited")],
            ]
        )

    def _end_branch(self, thread: str, draft: Draft) -> Batch:
        messages = list(draft.tree.messages)
        tips = draft.tips()
        roll = self.rng.random()
        if (newest := draft.newest(messages)) is not None and roll < 0.3:
            leaf = newest
        elif roll < 0.75 and tips:
            leaf = self.rng.choice(tips)
        elif roll < 0.87 and messages:
            leaf = self.rng.choice(messages)
        elif roll < 0.95 and draft.ended:
            leaf = self.rng.choice(list(draft.ended))
        else:
            leaf = self._unknown()
        return [ended(thread, leaf)]

    def _end_thread(self, thread: str, draft: Draft) -> Batch:
        messages = list(draft.tree.messages)
        tips = draft.tips()
        roll = self.rng.random()
        batch_ends = [e.leaf_id for e in draft.events if isinstance(e, ThreadEnded)]
        if batch_ends and roll < 0.5:
            leaf = batch_ends[-1]  # the branch this batch just ended
        elif tips and roll < 0.65:
            leaf = self.rng.choice(tips)
            return [ended(thread, leaf), ended(thread, leaf, "thread")]  # the branch, then all
        elif draft.ended and roll < 0.8:
            leaf = self.rng.choice(list(draft.ended))  # a leaf that keeps its earlier end
        elif messages and roll < 0.95:
            leaf = self.rng.choice(messages)
        else:
            leaf = self._unknown()
        return [ended(thread, leaf, "thread")]

    def _aside(self, thread: str, draft: Draft) -> Batch:
        message = self.rng.choice([*draft.tree.messages, self._unknown(), None])
        roll = self.rng.random()
        if roll < 0.5:
            return [feedback(thread, message)]
        if roll < 0.8:
            return [classified(thread, message or self._unknown())]
        reason = "no warning was given yet"
        return [
            EndRejected(thread_id=thread, actor="policy", leaf_id=message or "x", reason=reason)
        ]

    # Resends and other batches that are not well formed.

    def _resend(self, thread: str) -> Operation:
        """A stored batch again, whole or not, at the version it was sent at or another."""
        history = self.history[thread]
        batch, sent_at = self.rng.choice(history)
        version = self.threads[thread].version
        at = self.rng.choice([version, version, sent_at, 0, self.rng.randrange(version + 3)])
        roll = self.rng.random()
        if roll < 0.5:
            return self._at("resend", thread, list(batch), at)
        if roll < 0.7 and len(batch) > 1:
            start = self.rng.randrange(len(batch))
            end = self.rng.randrange(start + 1, len(batch) + 1)
            if (start, end) != (0, len(batch)):
                return self._at("resend-part", thread, batch[start:end], at)
        if roll < 0.8 and len(history) > 1:
            i = self.rng.randrange(len(history) - 1)
            return self._at("resend-two-as-one", thread, history[i][0] + history[i + 1][0], at)
        if roll < 0.88 and len(batch) > 1:
            return self._at("resend-reordered", thread, [*batch[1:], batch[0]], at)
        i = self.rng.randrange(len(batch))
        changed = altered(batch[i], actor_id="someone-else")
        return self._at("resend-changed", thread, [*batch[:i], changed, *batch[i + 1 :]], at)

    def _reused_id(self, thread: str) -> Operation:
        batch, _ = self.rng.choice(self.history[thread])
        reused = altered(feedback(thread), event_id=self.rng.choice(batch).event_id)
        return self._at(
            "reused-id", thread, self.rng.choice([[reused], [feedback(thread), reused]])
        )

    def _retry_rejected(self, thread: str) -> Operation:
        rejected = self.rejected[thread]
        if not rejected:
            return self._mixed(thread)
        return self._at("retry-rejected", thread, list(self.rng.choice(rejected)))

    def _misplaced_start(self, thread: str) -> Operation:
        batch: Batch = [started(thread)]
        return self._at(
            "misplaced-start", thread, self.rng.choice([batch, [feedback(thread), *batch]])
        )

    def _duplicate_id(self, thread: str) -> Operation:
        event = self.rng.choice([feedback(thread), *self.rng.choice(self.history[thread])[0]])
        batch = self.rng.choice([[event, event], [event, feedback(thread), event]])
        return self._at("duplicate-id", thread, batch)

    def _unreadable(self, thread: str) -> Operation:
        """A batch that would do, but for one event its store could not read back."""
        op = self._mixed(thread)
        i = self.rng.randrange(len(op.batch))
        unreadable: list[AnyEvent] = [
            altered(feedback(thread), rating="sideways"),
            altered(classified(thread, "m"), tier="mild"),
            posted(thread, "m" * 129, None),
        ]
        bad = self.rng.choice(unreadable)
        return op._replace(name="unreadable", batch=[*op.batch[:i], bad, *op.batch[i + 1 :]])

    def _empty(self, thread: str) -> Operation:
        return self._at("empty", thread, [])

    def _oversized(self, thread: str) -> Operation:
        return self._at("oversized", thread, [feedback(thread) for _ in range(MAX_BATCH + 1)])

    # Ids and bookkeeping.

    def _new(self, prefix: str) -> str:
        self._serial += 1
        return f"{prefix}{self._serial}"

    def _unknown(self) -> str:
        return self._new("x")

    def _id_for(self, prefix: str, draft: Draft) -> str:
        """Mostly a new id; sometimes one the thread or the batch uses (an ended leaf, say)."""
        if draft.tree.messages and self.rng.random() < 0.07:
            taken = list(draft.ended) if draft.ended and self.rng.random() < 0.4 else None
            return self.rng.choice(taken or list(draft.tree.messages))
        return self._new(prefix)

    def _record(self, op: Operation, prediction: Prediction, after: Thread) -> None:
        self.threads[op.thread] = after
        if prediction.result == "appended":
            self.history[op.thread].append((op.batch, op.expected))
        elif prediction.result != "replayed":
            self.rejected[op.thread].append(op.batch)


# --- running it against a store ----------------------------------------------------------


async def attempt(store: RedisEventStore, op: Operation) -> Outcome:
    try:
        result = await store.append(op.thread, op.batch, op.expected)
    except ThreadEndedError as exc:
        return Outcome("ThreadEndedError", (exc.end_version, exc.leaf_id))
    except ConcurrencyError as exc:
        return Outcome("ConcurrencyError", (exc.expected, exc.actual))
    except (InvalidBatchError, IdempotencyError) as exc:
        return Outcome(type(exc).__name__)
    landed = (result.first_version, result.last_version, result.head)
    return Outcome("replayed" if result.replayed else "appended", landed)


async def play(store: RedisEventStore, scenario: Scenario) -> None:
    for step, (op, prediction) in enumerate(scenario.steps(OPERATIONS)):
        outcome = await attempt(store, op)
        assert prediction.allows(outcome), (
            f"step {step} {op.name} on {op.thread} at {op.expected}: {describe(op.batch)}\n"
            f"  docs/storage.md: {prediction.result} {sorted(map(repr, prediction.details))}"
            f" {prediction.rule}\n"
            f"  store:           {outcome.result} {outcome.detail!r}"
        )


def describe(batch: Sequence[AnyEvent]) -> str:
    def one(event: AnyEvent) -> str:
        fields = ("message_id", "parent_id", "edited_message_id", "new_message_id", "leaf_id")
        shown = [f"{f}={getattr(event, f)!r}" for f in fields if hasattr(event, f)]
        if isinstance(event, ThreadEnded):
            shown.append(event.scope)
        return f"{tag_of(event)}({', '.join(shown)}; {event.event_id[-6:]})"

    return "[" + ", ".join(map(one, batch)) + "]"


# --- tests -------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("seed", SEEDS)
async def test_every_random_append_ends_as_the_specification_predicts(
    store: RedisEventStore, seed: int
) -> None:
    await play(store, Scenario(seed))


@pytest.mark.anyio
@pytest.mark.parametrize("seed", SEEDS)
async def test_after_random_appends_each_thread_verifies_and_its_meta_is_the_models(
    store: RedisEventStore, seed: int
) -> None:
    scenario = Scenario(seed)
    await play(store, scenario)

    for name, thread in scenario.threads.items():
        report = await store.verify(name)
        head = await store.head(name)
        assert report.ok, (name, report.problems)
        assert (head.version, head.hash, head.ended, head.thread_end, sorted(head.seals)) == (
            thread.version,
            thread.head,
            thread.ended,
            thread.thread_end,
            list(thread.end_versions),
        )


@pytest.mark.parametrize("seed", SEEDS)
def test_each_seed_succeeds_about_half_the_time_and_meets_every_kind_of_refusal(seed: int) -> None:
    results = Counter(p.result for _, p in Scenario(seed).steps(OPERATIONS))
    refusals = ("InvalidBatchError", "IdempotencyError", "ThreadEndedError", "ConcurrencyError")
    succeeded = results["appended"] + results["replayed"]
    assert 0.4 * OPERATIONS <= succeeded <= 0.7 * OPERATIONS, results
    assert all(results[kind] >= 3 for kind in ("replayed", *refusals)), results


def test_the_seeds_together_break_every_rule_of_the_batch_shape_and_the_tree() -> None:
    broken = {p.rule for seed in SEED_NUMBERS for _, p in Scenario(seed).steps(OPERATIONS)}
    assert broken >= SHAPE_RULES | TREE_RULES, sorted((SHAPE_RULES | TREE_RULES) - broken)
