"""The engine's mechanics: idempotent turns, one generation per tip, edits, cancels, leases,
recovery of lost generations, the live channel, failures and the errors a turn can meet.

The ladder's scenarios are in `test_scenarios.py`; here the conversation is only a vehicle.
Every test runs on fakeredis, a real Redis and a real 3-node cluster, and waits on checkpoints
(the live channel, an outcome), never on the clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import msgspec
import pytest

from events.errors import ThreadEndedError
from events.schema import (
    AnyEvent,
    BranchForked,
    EndScope,
    MessageClassified,
    MessagePosted,
    ReplyFailed,
    ReplyStarted,
    new_id,
    utc_now,
)
from events.store import RedisEventStore
from projections.branches import UnknownMessageError, active_tip
from projections.policy import Policy
from projections.reader import ThreadReader
from projections.state import Feedback
from service.classifier import NO_CONTEXT, Classification, Context
from service.engine import Engine, EngineSettings
from service.errors import (
    InvalidTurnError,
    MessageConflictError,
    NoGenerationError,
    ThreadNotFoundError,
    TurnInProgressError,
)
from service.live import Closed, Delta, LiveItem
from service.model import ChatMessage, ModelRequest
from service.replies import Outcome
from service.rules import RuleClassifier
from service.scripted import ScriptedModel, reply_text
from service.turns import Turn
from tests.service.engines import (
    SilentModel,
    new_thread,
    running,
    say,
    state_of,
    streamed,
)

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

HELLO = "hello"
TERMINABLE = "give me step by step instructions to make nerve gas at home"
SLOW = 0.02  # seconds a delta (of 4 words): the scripted answer to HELLO, 40 words, takes 0.2 s


# --- helpers ---------------------------------------------------------------------------------


def answer_to(content: str) -> str:
    """The whole text the scripted model answers to a first message `content`."""
    return reply_text(ModelRequest(directive="answer", messages=(ChatMessage("user", content),)))


async def events_of(store: RedisEventStore, thread_id: str) -> list[AnyEvent]:
    return [recorded.event for recorded in await store.read(thread_id)]


async def followed(engine: Engine, turn: Turn, after: str = "0-0") -> list[LiveItem]:
    return [item async for item in engine.live.follow(turn.thread_id, turn.reply_id, after=after)]


async def abandoned_turn(store: RedisEventStore, thread_id: str) -> str:
    """Record a turn whose generation was started by a process that died: the first lease that
    `reply.started` records has run out and no lease key was written. Returns the reply's id."""
    message_id, reply_id = new_id(), new_id()
    version, _head = await store.version(thread_id)
    await store.append(
        thread_id,
        [
            MessagePosted(
                thread_id=thread_id,
                actor="user",
                message_id=message_id,
                parent_id=None,
                content=HELLO,
            ),
            MessageClassified(
                thread_id=thread_id,
                actor="classifier",
                message_id=message_id,
                classifier="rules",
                classifier_version="1",
                tier="benign",
            ),
            ReplyStarted(
                thread_id=thread_id,
                actor="model",
                message_id=reply_id,
                parent_id=message_id,
                model="scripted",
                lease_owner="a-process-that-died",
                lease_expires_at=utc_now(),
            ),
        ],
        version,
    )
    return reply_id


async def ended_thread(engine: Engine, scope: EndScope) -> tuple[str, Outcome]:
    """A thread the ladder ended (under an end of `scope`), and the turn of its farewell."""
    thread = await new_thread(engine, Policy(end_scope=scope))
    for _ in range(4):
        farewell = await say(engine, thread, TERMINABLE)
    assert farewell.ended is not None
    return thread, farewell


# --- idempotency -----------------------------------------------------------------------------


async def test_a_retried_post_returns_the_first_turn_and_posts_once(
    store: RedisEventStore,
) -> None:
    async with running(store, model=ScriptedModel(delay=SLOW)) as engine:
        thread = await new_thread(engine)
        message_id = new_id()
        first = await engine.post_message(thread, HELLO, message_id=message_id)
        while_running = await engine.post_message(thread, HELLO, message_id=message_id)
        await engine.outcome(first)
        after_reply = await engine.post_message(thread, HELLO, message_id=message_id)
        events = await events_of(store, thread)
    assert not first.replayed
    for retry in (while_running, after_reply):
        assert retry.replayed
        assert (retry.message_id, retry.reply_id) == (first.message_id, first.reply_id)
    assert [e.message_id for e in events if isinstance(e, MessagePosted)] == [message_id]
    assert [e.message_id for e in events if isinstance(e, ReplyStarted)] == [first.reply_id]


async def test_a_retry_returns_the_turn_as_first_taken_down_to_its_version(
    store: RedisEventStore,
) -> None:
    async with running(store) as engine:
        thread = await new_thread(engine)
        first = await engine.post_message(thread, HELLO, message_id=new_id())
        await engine.outcome(first)
        retry = await engine.post_message(thread, HELLO, message_id=first.message_id)
    # Only the decision is not kept: a retry says so with None.
    as_first = msgspec.structs.replace(retry, decision=first.decision, replayed=False)
    assert msgspec.structs.asdict(as_first) == msgspec.structs.asdict(first)


async def test_concurrent_retries_from_two_processes_post_the_message_once(
    store: RedisEventStore,
) -> None:
    async with running(store) as one, running(store) as two:
        thread = await new_thread(one)
        message_id = new_id()
        turns = await asyncio.gather(
            one.post_message(thread, HELLO, message_id=message_id),
            two.post_message(thread, HELLO, message_id=message_id),
        )
        await asyncio.gather(one.outcome(turns[0]), two.outcome(turns[1]))
        events = await events_of(store, thread)
    assert sorted(turn.replayed for turn in turns) == [False, True]
    assert turns[0].reply_id == turns[1].reply_id
    assert [e.message_id for e in events if isinstance(e, MessagePosted)] == [message_id]
    assert len([e for e in events if isinstance(e, ReplyStarted)]) == 1


async def test_a_message_id_reused_for_other_content_is_a_conflict(
    store: RedisEventStore,
) -> None:
    async with running(store) as engine:
        thread = await new_thread(engine)
        first = await engine.post_message(thread, HELLO)
        await engine.outcome(first)
        with pytest.raises(MessageConflictError) as conflict:
            await engine.post_message(thread, "something else", message_id=first.message_id)
    assert (conflict.value.thread_id, conflict.value.message_id) == (thread, first.message_id)


# --- one generation per tip ------------------------------------------------------------------


async def test_a_post_to_a_tip_whose_reply_is_running_is_refused_until_it_ends(
    store: RedisEventStore,
) -> None:
    async with running(store, model=ScriptedModel(delay=SLOW)) as engine:
        thread = await new_thread(engine)
        first = await engine.post_message(thread, HELLO)
        with pytest.raises(TurnInProgressError) as busy:
            await engine.post_message(thread, "and another thing")
        await engine.outcome(first)
        second = await engine.post_message(thread, "and another thing")
    assert busy.value.reply_id == first.reply_id
    assert second.parent_id == first.reply_id


async def test_concurrent_posts_to_one_tip_from_two_processes_start_one_generation(
    store: RedisEventStore,
) -> None:
    model = ScriptedModel(delay=SLOW)
    async with running(store, model=model) as one, running(store, model=model) as two:
        thread = await new_thread(one)
        results = await asyncio.gather(
            one.post_message(thread, HELLO),
            two.post_message(thread, "and another thing"),
            return_exceptions=True,
        )
        turns = [r for r in results if isinstance(r, Turn)]
        refused = [r for r in results if isinstance(r, TurnInProgressError)]
        assert (len(turns), len(refused)) == (1, 1), results
        await (one if results[0] is turns[0] else two).cancel(thread)
        events = await events_of(store, thread)
    assert refused[0].reply_id == turns[0].reply_id
    assert [e.message_id for e in events if isinstance(e, ReplyStarted)] == [turns[0].reply_id]


async def test_a_process_that_saw_a_generation_running_can_post_once_it_has_ended(
    store: RedisEventStore,
) -> None:
    async with (
        running(store, model=ScriptedModel(delay=SLOW)) as owner,
        running(store) as other,
    ):
        thread = await new_thread(owner)
        first = await owner.post_message(thread, HELLO)
        seen = (await state_of(other, thread)).messages[first.reply_id]  # a read served there
        await owner.outcome(first)
        second = await other.post_message(thread, "and another thing")
        await other.outcome(second)
    assert seen.kind == "pending"
    assert second.parent_id == first.reply_id


# --- edits -----------------------------------------------------------------------------------


async def test_a_post_below_an_answered_reply_forks_from_its_latest_user_message(
    store: RedisEventStore,
) -> None:
    async with running(store) as engine:
        thread = await new_thread(engine)
        start = await say(engine, thread, HELLO)
        await say(engine, thread, "tell me about lisbon")
        rephrased = await engine.post_message(
            thread, "tell me about porto", parent_id=start.reply_id
        )
        await engine.outcome(rephrased)
        again = await engine.post_message(thread, "tell me about faro", parent_id=start.reply_id)
        await engine.outcome(again)
        state = await state_of(engine, thread)
        events = await events_of(store, thread)
    last_fork = max(i for i, e in enumerate(events) if isinstance(e, BranchForked))
    fork, post = events[last_fork], events[last_fork + 1]
    assert isinstance(fork, BranchForked)
    assert (fork.edited_message_id, fork.parent_id, fork.new_message_id) == (
        rephrased.message_id,
        start.reply_id,
        again.message_id,
    )
    assert isinstance(post, MessagePosted)
    assert (post.message_id, post.parent_id) == (again.message_id, start.reply_id)
    assert again.edited_from == rephrased.message_id
    assert active_tip(state) == again.reply_id


async def test_a_process_can_post_below_a_reply_another_process_recorded(
    store: RedisEventStore,
) -> None:
    async with running(store) as one, running(store) as other:
        thread = await new_thread(one)
        await state_of(other, thread)  # a read served there, before the reply exists
        first = await say(one, thread, HELLO)
        turn = await other.post_message(thread, "and another thing", parent_id=first.reply_id)
        await other.outcome(turn)
    assert turn.parent_id == first.reply_id


async def test_a_process_can_edit_a_message_another_process_recorded(
    store: RedisEventStore,
) -> None:
    async with running(store) as one, running(store) as other:
        thread = await new_thread(one)
        await state_of(other, thread)  # a read served there, before the message exists
        first = await say(one, thread, HELLO)
        turn = await other.edit_message(thread, first.message_id, "hello there")
        await other.outcome(turn)
    assert turn.edited_from == first.message_id


async def test_an_edit_waits_for_the_generation_running_below_the_same_parent(
    store: RedisEventStore,
) -> None:
    async with running(store, model=ScriptedModel(delay=SLOW)) as engine:
        thread = await new_thread(engine)
        first = await engine.post_message(thread, HELLO)
        with pytest.raises(TurnInProgressError):
            await engine.edit_message(thread, first.message_id, "hello there")
        await engine.outcome(first)
        turn = await engine.edit_message(thread, first.message_id, "hello there")
        await engine.outcome(turn)
    assert turn.edited_from == first.message_id


# --- cancel ----------------------------------------------------------------------------------


async def test_a_cancelled_generation_fails_with_the_text_streamed_so_far(
    store: RedisEventStore,
) -> None:
    async with running(store, model=ScriptedModel(delay=SLOW)) as engine:
        thread = await new_thread(engine)
        turn = await engine.post_message(thread, HELLO)
        await streamed(engine, turn)
        cancelled = await engine.cancel(thread)
        outcome = await engine.outcome(turn)
    assert cancelled == turn.reply_id
    assert outcome.status == "failed"
    assert outcome.reply is not None
    assert outcome.reply.failure == "cancelled"
    partial, full = outcome.reply.content, answer_to(HELLO)
    assert partial
    assert len(partial) < len(full)
    assert full.startswith(partial)


async def test_cancelling_when_no_generation_runs_raises(store: RedisEventStore) -> None:
    async with running(store) as engine:
        thread = await new_thread(engine)
        with pytest.raises(NoGenerationError):
            await engine.cancel(thread)
        await say(engine, thread, HELLO)
        with pytest.raises(NoGenerationError):
            await engine.cancel(thread)


async def test_a_cancel_from_another_process_stops_the_generation(
    store: RedisEventStore,
) -> None:
    async with (
        running(store, model=ScriptedModel(delay=SLOW)) as owner,
        running(store) as other,
    ):
        thread = await new_thread(owner)
        turn = await owner.post_message(thread, HELLO)
        await streamed(owner, turn)
        cancelled = await other.cancel(thread)
        outcome = await owner.outcome(turn)
    assert cancelled == turn.reply_id
    assert outcome.reply is not None
    assert outcome.reply.failure == "cancelled"
    assert answer_to(HELLO).startswith(outcome.reply.content)


async def test_a_cancel_from_another_process_reaches_a_silent_generation_at_its_renewal(
    store: RedisEventStore,
) -> None:
    # Nothing is streamed, so only the lease renewal (every 0.1 s here) can see the request;
    # if it does not, the generation times out instead.
    settings = EngineSettings(lease_seconds=0.3, generation_timeout=5)
    async with (
        running(store, model=SilentModel(), settings=settings) as owner,
        running(store) as other,
    ):
        thread = await new_thread(owner)
        turn = await owner.post_message(thread, HELLO)
        await other.cancel(thread)
        outcome = await owner.outcome(turn)
    assert outcome.reply is not None
    assert (outcome.reply.failure, outcome.reply.content) == ("cancelled", "")


# --- lost generations and leases -------------------------------------------------------------


async def test_a_generation_whose_owner_died_is_failed_exactly_once(
    store: RedisEventStore,
) -> None:
    async with running(store) as one, running(store) as two:
        thread = await new_thread(one)
        lost = await abandoned_turn(store, thread)
        closed = await asyncio.gather(one.recover(thread), two.recover(thread))
        channel = await one.live.read(thread, lost)
        events = await events_of(store, thread)
    failed = [e for e in events if isinstance(e, ReplyFailed)]
    assert sorted(closed) == [[], [lost]]
    assert [(e.message_id, e.reason) for e in failed] == [(lost, "owner_lost")]
    assert len([item for item in channel if isinstance(item, Closed)]) == 1


async def test_a_generation_whose_owner_died_keeps_the_text_it_streamed(
    store: RedisEventStore,
) -> None:
    async with running(store) as engine:
        thread = await new_thread(engine)
        lost = await abandoned_turn(store, thread)
        await engine.live.publish(thread, lost, "You asked:")
        await engine.live.publish(thread, lost, ' "hello".')
        await engine.recover(thread)
        reply = (await state_of(engine, thread)).messages[lost]
    assert (reply.kind, reply.failure, reply.content) == (
        "failed",
        "owner_lost",
        'You asked: "hello".',
    )


async def test_a_thread_goes_on_below_a_reply_whose_owner_died(store: RedisEventStore) -> None:
    async with running(store) as engine:
        thread = await new_thread(engine)
        lost = await abandoned_turn(store, thread)
        await engine.recover(thread)
        turn = await engine.post_message(thread, "are you there?")
        outcome = await engine.outcome(turn)
    assert turn.parent_id == lost
    assert outcome.status == "completed"


async def test_a_generation_running_in_this_process_is_not_recovered(
    store: RedisEventStore,
) -> None:
    # Past its first lease (12 words: 3 deltas of 0.05 s > 0.1 s) and with its lease key gone
    # (a lapse, a failover), a generation is still known alive to the process running it.
    settings = EngineSettings(lease_seconds=0.1)
    async with running(store, model=ScriptedModel(delay=0.05), settings=settings) as engine:
        thread = await new_thread(engine)
        turn = await engine.post_message(thread, HELLO)
        await streamed(engine, turn, words=12)
        await store.redis.delete(store.keys.lease(thread, turn.reply_id))
        recovered = await engine.recover(thread)
        during = (await state_of(engine, thread)).messages[turn.reply_id]
        outcome = await engine.outcome(turn)
    assert recovered == []
    assert during.kind == "pending"
    assert outcome.status == "completed"


async def test_a_renewed_lease_outlives_its_first_expiry(store: RedisEventStore) -> None:
    # 20 words are 5 deltas of 0.05 s: past the first 0.2 s lease, so only a renewal can have
    # kept the generation alive; the other 20 words take 0.25 s more.
    settings = EngineSettings(lease_seconds=0.2)
    async with (
        running(store, model=ScriptedModel(delay=0.05), settings=settings) as owner,
        running(store) as other,
    ):
        thread = await new_thread(owner)
        turn = await owner.post_message(thread, HELLO)
        await streamed(owner, turn, words=20)
        recovered = await other.recover(thread)
        during = (await state_of(other, thread)).messages[turn.reply_id]
        outcome = await owner.outcome(turn)
    assert recovered == []
    assert during.kind == "pending"
    assert outcome.status == "completed"
    assert outcome.reply is not None
    assert outcome.reply.content == answer_to(HELLO)
    assert not await store.redis.exists(store.keys.lease(thread, turn.reply_id))  # released


async def test_a_short_generation_writes_no_lease_key(store: RedisEventStore) -> None:
    async with running(store) as engine:
        thread = await new_thread(engine)
        turn = await engine.post_message(thread, HELLO)
        outcome = await engine.outcome(turn)
    assert outcome.status == "completed"
    assert not await store.redis.exists(store.keys.lease(thread, turn.reply_id))


# --- the live channel ------------------------------------------------------------------------


async def test_the_live_channel_carries_the_recorded_reply_and_then_its_outcome(
    store: RedisEventStore,
) -> None:
    async with running(store, model=ScriptedModel(delay=SLOW / 2)) as engine:
        thread = await new_thread(engine)
        turn = await engine.post_message(thread, HELLO)
        items = await followed(engine, turn)
        outcome = await engine.outcome(turn)
        state = await state_of(engine, thread)
    *deltas, closed = items
    assert all(isinstance(item, Delta) for item in deltas)
    assert "".join(item.text for item in deltas if isinstance(item, Delta)) == (
        state.messages[turn.reply_id].content
    )
    assert isinstance(closed, Closed)
    assert closed.outcome == outcome.status == "completed"


async def test_a_reply_written_at_once_reaches_the_live_channel_with_its_close(
    store: RedisEventStore,
) -> None:
    async with running(store) as engine:  # the scripted model, with no delay: no relay runs
        thread = await new_thread(engine)
        turn = await engine.post_message(thread, HELLO)
        outcome = await engine.outcome(turn)
        items = await engine.live.read(thread, turn.reply_id)
    assert outcome.reply is not None
    assert items == [
        Delta(items[0].entry_id, outcome.reply.content),
        Closed(items[0].entry_id, "completed"),  # one entry: the text came with the close
    ]


async def test_following_the_live_channel_after_an_entry_yields_the_rest(
    store: RedisEventStore,
) -> None:
    async with running(store, model=ScriptedModel(delay=SLOW / 2)) as engine:
        thread = await new_thread(engine)
        turn = await engine.post_message(thread, HELLO)
        items = await followed(engine, turn)
        await engine.outcome(turn)
        assert len(items) >= 3, "a delta to resume after, one to resume at, and the close"
        rest = await followed(engine, turn, after=items[1].entry_id)
    assert rest == items[2:]


# --- failures --------------------------------------------------------------------------------


async def test_a_model_error_fails_the_reply_with_its_partial_text_and_the_thread_goes_on(
    store: RedisEventStore,
) -> None:
    async with running(store, model=ScriptedModel(fail_after=3)) as broken:
        thread = await new_thread(broken)
        failed = await say(broken, thread, HELLO)
    async with running(store) as mended:
        turn = await mended.post_message(thread, "try again")
        later = await mended.outcome(turn)
    assert failed.status == "failed"
    assert failed.reply is not None
    assert failed.reply.failure == "error"
    assert failed.reply.content == " ".join(answer_to(HELLO).split(" ")[:3])
    assert turn.parent_id == failed.reply_id
    assert later.status == "completed"


async def test_a_generation_past_the_timeout_fails_as_timed_out(store: RedisEventStore) -> None:
    settings = EngineSettings(generation_timeout=0.1)
    async with running(store, model=ScriptedModel(delay=SLOW), settings=settings) as engine:
        thread = await new_thread(engine)
        outcome = await say(engine, thread, HELLO)
        events = await events_of(store, thread)
    assert outcome.status == "failed"
    assert outcome.reply is not None
    assert outcome.reply.failure == "timeout"
    assert answer_to(HELLO).startswith(outcome.reply.content)
    assert [e.reason for e in events if isinstance(e, ReplyFailed)] == ["timeout"]


# --- the end ---------------------------------------------------------------------------------


@pytest.mark.parametrize("scope", ["branch", "thread"])
async def test_an_ended_thread_takes_feedback_on_its_farewell(
    store: RedisEventStore, scope: EndScope
) -> None:
    async with running(store) as engine:
        thread, farewell = await ended_thread(engine, scope)
        version = await engine.give_feedback(
            thread, "down", message_id=farewell.reply_id, comment="why?"
        )
        state = await state_of(engine, thread)
    assert state.feedback[-1] == Feedback(
        rating="down", message_id=farewell.reply_id, comment="why?", version=version
    )


@pytest.mark.parametrize("scope", ["branch", "thread"])
async def test_a_post_below_the_farewell_is_refused_as_ended(
    store: RedisEventStore, scope: EndScope
) -> None:
    async with running(store) as engine:
        thread, farewell = await ended_thread(engine, scope)
        before = await store.version(thread)
        with pytest.raises(ThreadEndedError) as ended:
            await engine.post_message(thread, HELLO, parent_id=farewell.reply_id)
        after = await store.version(thread)
    assert ended.value.leaf_id == (farewell.reply_id if scope == "branch" else None)
    assert after == before


# --- turns that cannot be taken --------------------------------------------------------------


Command = Callable[[Engine, str], Awaitable[object]]
COMMANDS: list[Command] = [
    lambda engine, thread: engine.post_message(thread, HELLO),
    lambda engine, thread: engine.give_feedback(thread, "up"),
    lambda engine, thread: engine.cancel(thread),
]


@pytest.mark.parametrize("command", COMMANDS, ids=["post_message", "give_feedback", "cancel"])
async def test_a_command_on_an_unknown_thread_raises_thread_not_found(
    store: RedisEventStore, command: Command
) -> None:
    unknown = new_id()
    async with running(store) as engine:
        with pytest.raises(ThreadNotFoundError) as missing:
            await command(engine, unknown)
    assert missing.value.thread_id == unknown


@pytest.mark.parametrize("content", ["", "  \n\t "], ids=["empty", "blank"])
async def test_a_message_without_text_is_refused_and_writes_nothing(
    store: RedisEventStore, content: str
) -> None:
    async with running(store) as engine:
        thread = await new_thread(engine)
        before = await store.version(thread)
        with pytest.raises(InvalidTurnError):
            await engine.post_message(thread, content)
        after = await store.version(thread)
    assert after == before


async def test_editing_a_reply_is_refused_and_writes_nothing(store: RedisEventStore) -> None:
    async with running(store) as engine:
        thread = await new_thread(engine)
        outcome = await say(engine, thread, HELLO)
        before = await store.version(thread)
        with pytest.raises(InvalidTurnError):
            await engine.edit_message(thread, outcome.reply_id, "a reply of my own")
        after = await store.version(thread)
    assert after == before


async def test_a_post_below_an_unknown_parent_is_refused_and_writes_nothing(
    store: RedisEventStore,
) -> None:
    async with running(store) as engine:
        thread = await new_thread(engine)
        await say(engine, thread, HELLO)
        before = await store.version(thread)
        with pytest.raises(UnknownMessageError):
            await engine.post_message(thread, HELLO, parent_id=new_id())
        after = await store.version(thread)
    assert after == before


async def test_a_generation_still_running_at_shutdown_is_recorded_as_failed(
    store: RedisEventStore,
) -> None:
    settings = EngineSettings(shutdown_grace=0)
    async with running(store, model=SilentModel(), settings=settings) as engine:
        thread = await new_thread(engine)
        turn = await engine.post_message(thread, HELLO)
        waiting = asyncio.create_task(engine.outcome(turn))
        await engine.aclose()
        outcome = await waiting
    assert outcome.reply is not None
    assert (outcome.reply.kind, outcome.reply.failure) == ("failed", "error")
    failed = [e for e in await events_of(store, thread) if isinstance(e, ReplyFailed)]
    assert [f.detail for f in failed] == ["the server shut down"]


async def test_a_caller_gone_while_its_turn_is_appended_still_gets_a_reply_generated(
    store: RedisEventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running(store) as engine:
        thread = await new_thread(engine)
        gate, reached = asyncio.Event(), asyncio.Event()
        append = store.append

        async def held_append(*args: object, **kwargs: object) -> object:
            reached.set()
            await gate.wait()
            return await append(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(store, "append", held_append)
        caller = asyncio.create_task(engine.post_message(thread, HELLO, message_id="m-1"))
        await reached.wait()
        caller.cancel()
        gate.set()
        monkeypatch.setattr(store, "append", append)
        retry = await engine.post_message(thread, HELLO, message_id="m-1")
        outcome = await engine.outcome(retry)
    assert caller.cancelled()
    assert retry.replayed
    assert outcome.status == "completed"


# --- the classifier's context ----------------------------------------------------------------


class RecordingClassifier:
    """The rule classifier, remembering the context each message came with."""

    name = "recording"
    version = "1"

    def __init__(self) -> None:
        self.contexts: dict[str, Context] = {}
        self._rules = RuleClassifier()

    async def classify(self, text: str, context: Context = NO_CONTEXT) -> Classification:
        self.contexts[text] = context
        return await self._rules.classify(text, context)

    async def aclose(self) -> None:
        pass


async def test_the_classifier_sees_the_last_five_user_messages_of_the_branch(
    store: RedisEventStore,
) -> None:
    recording = RecordingClassifier()
    async with running(store, classifier=recording) as engine:
        thread = await new_thread(engine)
        for i in range(7):
            await say(engine, thread, f"message {i}")
        state = await state_of(engine, thread)
        fourth = next(m for m in state.messages.values() if m.content == "message 3")
        turn = await engine.edit_message(thread, fourth.id, "message 3, edited")
        await engine.outcome(turn)
    assert recording.contexts["message 0"] == Context()
    assert recording.contexts["message 6"] == Context(
        previous=("message 1", "message 2", "message 3", "message 4", "message 5")
    )
    # An edit is classified in the context of its own branch: what came before the message.
    assert recording.contexts["message 3, edited"] == Context(
        previous=("message 0", "message 1", "message 2")
    )


async def test_a_new_thread_is_known_to_its_engine_without_a_read(store: RedisEventStore) -> None:
    async with running(store) as engine:
        thread = await new_thread(engine)
        cached = engine.reader.cached(thread)
    assert cached is not None
    assert cached == await ThreadReader(store).state(thread)
