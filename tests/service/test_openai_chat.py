"""What `OpenAIChatModel` alone does, against a fake Chat Completions API; the rest is the model
contract."""

from __future__ import annotations

import pytest

from events.schema import Usage
from service.model import END_TOOL, Finished, TextDelta, ToolCall
from tests.fake_llm import OPENAI_CHAT, collect
from tests.fake_upstream import FakeUpstream, Stream, fake_fixture

pytestmark = pytest.mark.anyio

fake = fake_fixture(OPENAI_CHAT.path)


async def test_a_tool_call_finished_with_stop_is_still_a_tool_call(fake: FakeUpstream) -> None:
    """Ollama ends a reply that calls a tool with "stop" where OpenAI says "tool_calls"."""
    usage = Usage(input_tokens=310, output_tokens=42)
    fake.script(OPENAI_CHAT.tool_call('{"reason": "abuse"}', finish="stop", usage=usage))

    async with OPENAI_CHAT.model(fake.url) as model:
        events = await collect(model)

    assert events == [
        ToolCall(name=END_TOOL, arguments={"reason": "abuse"}, id=OPENAI_CHAT.call_id),
        Finished(finish_reason="stop", usage=usage),
    ]


async def test_interleaved_calls_are_kept_apart_by_index_and_yielded_in_index_order(
    fake: FakeUpstream,
) -> None:
    fake.script(
        Stream(
            (
                OPENAI_CHAT.call(0, "call_a", END_TOOL),
                OPENAI_CHAT.call(1, "call_b", END_TOOL),
                OPENAI_CHAT.arguments(1, '{"reason": '),
                OPENAI_CHAT.arguments(0, '{"reason": "a"}'),
                OPENAI_CHAT.arguments(1, '"b"}'),
                OPENAI_CHAT.chunk({}, "tool_calls"),
                OPENAI_CHAT.DONE,
            )
        )
    )

    async with OPENAI_CHAT.model(fake.url) as model:
        events = await collect(model)

    assert events[:2] == [
        ToolCall(name=END_TOOL, arguments={"reason": "a"}, id="call_a"),
        ToolCall(name=END_TOOL, arguments={"reason": "b"}, id="call_b"),
    ]


async def test_a_stream_that_finished_but_never_said_done_still_finishes(
    fake: FakeUpstream,
) -> None:
    """Without [DONE], and without the usage chunk: the usage is then zero."""
    fake.script(Stream((OPENAI_CHAT.chunk({"content": "Hi"}), OPENAI_CHAT.chunk({}, "stop"))))

    async with OPENAI_CHAT.model(fake.url) as model:
        events = await collect(model)

    assert events == [TextDelta("Hi"), Finished(finish_reason="stop")]


async def test_without_any_api_key_no_authorization_is_sent(
    fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As a local server (vLLM, llama.cpp, Ollama) needs none."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    fake.script(OPENAI_CHAT.text("Hi"))

    async with OPENAI_CHAT.model(fake.url, api_key=None) as model:
        events = await collect(model)

    assert (events[0], "authorization" in fake.requests[0].headers) == (TextDelta("Hi"), False)
