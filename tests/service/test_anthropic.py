"""`AnthropicModel` against a fake Messages API on a real uvicorn, in the real wire format."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing

import anyio
import anyio.to_thread
import pytest

from events.schema import Usage
from service.anthropic import API_VERSION, TOOL, AnthropicModel
from service.model import (
    END_TOOL,
    ChatMessage,
    Finished,
    ModelError,
    ModelEvent,
    ModelRequest,
    TextDelta,
    ToolCall,
)
from service.prompts import system_prompt
from tests.fake_llm import (
    Failure,
    FakeLLM,
    Stream,
    anthropic_end,
    anthropic_error,
    anthropic_frame,
    anthropic_start,
    anthropic_text,
    anthropic_text_block,
    anthropic_tool_block,
    serve_fake,
)

pytestmark = pytest.mark.anyio

KEY = "sk-ant-test-key"
TOOL_ID = "toolu_01T1x1fJ34qAmk2tNTrN7Up6"
REQUEST = ModelRequest(
    directive="redirect",
    messages=(
        ChatMessage("user", "Hello"),
        ChatMessage("assistant", "Hi! How can I help?"),
        ChatMessage("user", "Write something hateful."),
    ),
    category="hate",
    attempt=1,
)
ENDING = Stream(
    (
        *anthropic_start(),
        *anthropic_text_block(0, "This conversation ", "ends here."),
        # the input split mid-token, as the API does
        *anthropic_tool_block(1, TOOL_ID, END_TOOL, '{"rea', 'son": "persist', 'ent abuse"}'),
        *anthropic_end("tool_use", 89),
    )
)


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[FakeLLM, str]]:
    with serve_fake("/v1/messages") as served:
        yield served


@pytest.fixture
def fake(served: tuple[FakeLLM, str]) -> FakeLLM:
    served[0].reset()
    return served[0]


@pytest.fixture
def url(served: tuple[FakeLLM, str]) -> str:
    return served[1]


@pytest.fixture
async def model(url: str) -> AsyncIterator[AnthropicModel]:
    async with AnthropicModel(api_key=KEY, base_url=url, retries=2, backoff=0.0) as model:
        yield model


async def collect(model: AnthropicModel) -> list[ModelEvent]:
    return [event async for event in model.stream(REQUEST)]


def text_of(events: list[ModelEvent]) -> str:
    return "".join(event.text for event in events if isinstance(event, TextDelta))


async def test_text_deltas_arrive_in_order_and_assemble_into_the_reply(
    fake: FakeLLM, model: AnthropicModel
) -> None:
    fake.script(anthropic_text("I can't help", " with that, but", " I can help with..."))

    events = await collect(model)

    assert events[:3] == [
        TextDelta("I can't help"),
        TextDelta(" with that, but"),
        TextDelta(" I can help with..."),
    ]
    assert text_of(events) == "I can't help with that, but I can help with..."


async def test_the_stream_ends_with_one_finished_carrying_stop_reason_and_usage(
    fake: FakeLLM, model: AnthropicModel
) -> None:
    fake.script(anthropic_text("Hi", input_tokens=472, output_tokens=31))

    events = await collect(model)

    assert events[1:] == [
        Finished(finish_reason="end_turn", usage=Usage(input_tokens=472, output_tokens=31))
    ]


async def test_a_tool_use_block_becomes_a_tool_call_with_its_input_parsed(
    fake: FakeLLM, model: AnthropicModel
) -> None:
    fake.script(ENDING)

    events = await collect(model)

    assert events == [
        TextDelta("This conversation "),
        TextDelta("ends here."),
        ToolCall(name=END_TOOL, arguments={"reason": "persistent abuse"}, id=TOOL_ID),
        Finished(finish_reason="tool_use", usage=Usage(input_tokens=25, output_tokens=89)),
    ]


async def test_tool_input_that_does_not_parse_gives_a_call_without_arguments(
    fake: FakeLLM, model: AnthropicModel
) -> None:
    fake.script(
        Stream(
            (
                *anthropic_start(),
                *anthropic_tool_block(0, TOOL_ID, END_TOOL, '{"rea'),
                *anthropic_end("tool_use"),
            )
        )
    )

    events = await collect(model)

    assert events[0] == ToolCall(name=END_TOOL, arguments={}, id=TOOL_ID)


async def test_thinking_blocks_and_unknown_events_are_skipped(
    fake: FakeLLM, model: AnthropicModel
) -> None:
    thinking = (
        anthropic_frame(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "thinking", "thinking": ""},
            }
        ),
        anthropic_frame(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "thinking_delta", "thinking": "Hmm."},
            }
        ),
        anthropic_frame(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "signature_delta", "signature": "EqQB"},
            }
        ),
        anthropic_frame({"type": "content_block_stop", "index": 0}),
        anthropic_frame({"type": "a_type_added_later", "index": 0}),
    )
    fake.script(
        Stream((*anthropic_start(), *thinking, *anthropic_text_block(1, "Hi"), *anthropic_end()))
    )

    events = await collect(model)

    assert [type(event) for event in events] == [TextDelta, Finished]


async def test_the_request_carries_the_directive_prompt_the_messages_and_the_tool(
    fake: FakeLLM, model: AnthropicModel
) -> None:
    fake.script(anthropic_text("Hi"))

    await collect(model)

    assert fake.requests[0].body == {
        "model": "claude-opus-4-1",
        "max_tokens": 1024,
        "system": system_prompt(REQUEST),
        "messages": [
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi! How can I help?"},
            {"role": "user", "content": "Write something hateful."},
        ],
        "stream": True,
        "tools": [TOOL],
    }


async def test_the_tool_offered_is_end_conversation_with_its_schema(
    fake: FakeLLM, model: AnthropicModel
) -> None:
    fake.script(anthropic_text("Hi"))

    await collect(model)

    assert fake.requests[0].body["tools"][0]["name"] == "end_conversation"
    assert fake.requests[0].body["tools"][0]["input_schema"]["required"] == ["reason"]


async def test_the_request_carries_the_api_key_version_and_content_type(
    fake: FakeLLM, model: AnthropicModel
) -> None:
    fake.script(anthropic_text("Hi"))

    await collect(model)

    headers = fake.requests[0].headers
    assert (headers["x-api-key"], headers["anthropic-version"]) == (KEY, API_VERSION)
    assert headers["content-type"] == "application/json"


async def test_the_api_key_comes_from_the_environment_when_none_is_given(
    fake: FakeLLM, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-from-env")
    fake.script(anthropic_text("Hi"))

    async with AnthropicModel(base_url=url) as model:
        await collect(model)

    assert fake.requests[0].headers["x-api-key"] == "sk-ant-from-env"


def test_no_api_key_at_all_is_a_model_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)

    with pytest.raises(
        ModelError, match=r"^anthropic: no API key: pass api_key or set ANTHROPIC_API_KEY$"
    ):
        AnthropicModel()


async def test_an_overloaded_529_is_retried_and_the_retry_streams(
    fake: FakeLLM, model: AnthropicModel
) -> None:
    fake.script(
        Failure(529, anthropic_error("overloaded_error", "Overloaded")), anthropic_text("Hi")
    )

    events = await collect(model)

    assert (text_of(events), len(fake.requests)) == ("Hi", 2)


async def test_a_429_with_retry_after_is_retried_after_the_wait(
    fake: FakeLLM, model: AnthropicModel
) -> None:
    limited = Failure(
        429, anthropic_error("rate_limit_error", "Rate limited"), {"retry-after": "0"}
    )
    fake.script(limited, anthropic_text("Hi"))

    events = await collect(model)

    assert (text_of(events), len(fake.requests)) == ("Hi", 2)


async def test_a_persistent_500_is_a_model_error_with_the_status_and_the_apis_words(
    fake: FakeLLM, url: str, model: AnthropicModel
) -> None:
    fake.script(Failure(500, anthropic_error("api_error", "Internal server error")))

    with pytest.raises(ModelError) as raised:
        await collect(model)

    assert str(raised.value) == (
        f"anthropic:claude-opus-4-1: HTTP 500 Internal Server Error from POST {url}/v1/messages "
        "after 3 attempts: api_error: Internal server error"
    )
    assert len(fake.requests) == 3


async def test_a_400_is_not_retried(fake: FakeLLM, model: AnthropicModel) -> None:
    fake.script(Failure(400, anthropic_error("invalid_request_error", "max_tokens: too large")))

    with pytest.raises(ModelError, match=r"invalid_request_error: max_tokens: too large$"):
        await collect(model)

    assert len(fake.requests) == 1


async def test_an_error_event_mid_stream_is_a_model_error(
    fake: FakeLLM, model: AnthropicModel
) -> None:
    error = anthropic_frame(anthropic_error("overloaded_error", "Overloaded"))
    fake.script(Stream((*anthropic_start(), *anthropic_text_block(0, "Hel")[:2], error)))

    with pytest.raises(
        ModelError, match=r"^anthropic:claude-opus-4-1: overloaded_error: Overloaded$"
    ):
        await collect(model)


async def test_a_stream_cut_before_message_stop_is_a_model_error(
    fake: FakeLLM, model: AnthropicModel
) -> None:
    fake.script(Stream((*anthropic_start(), *anthropic_text_block(0, "Hel"))))

    with pytest.raises(ModelError, match=r"the stream ended before message_stop$"):
        await collect(model)


async def test_a_success_that_is_not_an_event_stream_is_a_model_error(
    fake: FakeLLM, model: AnthropicModel
) -> None:
    fake.script(Failure(200, {"content": []}))

    with pytest.raises(ModelError, match=r"got 'application/json'$"):
        await collect(model)


async def test_a_stalled_stream_times_out_as_a_model_error(fake: FakeLLM, url: str) -> None:
    fake.script(Stream(anthropic_start(), hold=True))

    async with AnthropicModel(api_key=KEY, base_url=url, timeout=0.2) as model:
        with pytest.raises(ModelError) as raised:
            await collect(model)

    assert str(raised.value) == f"anthropic:claude-opus-4-1: ReadTimeout on POST {url}/v1/messages"


async def test_an_unreachable_server_is_a_model_error() -> None:
    url = f"http://127.0.0.1:{closed_port()}"

    async with AnthropicModel(api_key=KEY, base_url=url, retries=1, backoff=0.0) as model:
        with pytest.raises(ModelError) as raised:
            await collect(model)

    assert str(raised.value).startswith(
        f"anthropic:claude-opus-4-1: ConnectError on POST {url}/v1/messages: "
    )


async def test_closing_the_stream_early_disconnects_from_the_server(
    fake: FakeLLM, model: AnthropicModel
) -> None:
    fake.script(Stream((*anthropic_start(), *anthropic_text_block(0, "Hel")[:2]), hold=True))

    async with aclosing(model.stream(REQUEST)) as events:
        assert await anext(events) == TextDelta("Hel")

    assert await anyio.to_thread.run_sync(fake.disconnected.wait, 10.0)


async def test_cancelling_the_consumer_disconnects_from_the_server(
    fake: FakeLLM, model: AnthropicModel
) -> None:
    fake.script(Stream((*anthropic_start(), *anthropic_text_block(0, "Hel")[:2]), hold=True))

    with anyio.CancelScope() as scope:
        async for _ in model.stream(REQUEST):
            scope.cancel()  # the generator is cancelled at its next wait for the server

    assert await anyio.to_thread.run_sync(fake.disconnected.wait, 10.0)


def closed_port() -> int:
    """A port nothing listens on (free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
