"""`OpenAIChatModel` against a fake Chat Completions API on a real uvicorn, in its wire format."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing

import anyio
import anyio.to_thread
import pytest

from events.schema import Usage
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
from service.openai_chat import TOOL, OpenAIChatModel
from service.prompts import system_prompt
from tests.fake_llm import (
    OPENAI_DONE,
    Failure,
    FakeLLM,
    Stream,
    openai_arguments,
    openai_chunk,
    openai_error,
    openai_frame,
    openai_text,
    openai_tool_call,
    openai_usage,
    serve_fake,
)

pytestmark = pytest.mark.anyio

KEY = "sk-test-key"
MODEL = "gpt-4o"
CALL_ID = "call_DdmO9pD3xa9XTPNJ32zg2hcA"
REQUEST = ModelRequest(
    directive="end",
    messages=(
        ChatMessage("user", "You are useless."),
        ChatMessage("assistant", "I'm sorry you feel that way. How can I help?"),
        ChatMessage("user", "More abuse."),
    ),
    category="hate",
)
# the arguments split mid-token, as the API does
FRAGMENTS = ('{"', "reason", '":"', "persist", "ent abuse", '"}')


def ending(finish_reason: str = "tool_calls") -> Stream:
    """A farewell, then the call of the end tool, then `finish_reason`."""
    return Stream(
        (
            openai_chunk({"role": "assistant", "content": "", "refusal": None}),
            openai_chunk({"content": "Goodbye."}),
            openai_tool_call(0, CALL_ID, END_TOOL),
            *(openai_arguments(0, fragment) for fragment in FRAGMENTS),
            openai_chunk({}, finish_reason),
            openai_usage(310, 42),
            OPENAI_DONE,
        )
    )


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[FakeLLM, str]]:
    with serve_fake("/v1/chat/completions") as served:
        yield served


@pytest.fixture
def fake(served: tuple[FakeLLM, str]) -> FakeLLM:
    served[0].reset()
    return served[0]


@pytest.fixture
def url(served: tuple[FakeLLM, str]) -> str:
    return f"{served[1]}/v1"


@pytest.fixture
async def model(url: str) -> AsyncIterator[OpenAIChatModel]:
    async with OpenAIChatModel(MODEL, base_url=url, api_key=KEY, retries=2, backoff=0.0) as model:
        yield model


async def collect(model: OpenAIChatModel) -> list[ModelEvent]:
    return [event async for event in model.stream(REQUEST)]


def text_of(events: list[ModelEvent]) -> str:
    return "".join(event.text for event in events if isinstance(event, TextDelta))


async def test_text_deltas_arrive_in_order_and_assemble_into_the_reply(
    fake: FakeLLM, model: OpenAIChatModel
) -> None:
    fake.script(openai_text("This conversation", " ends here", ", and you can start a new one."))

    events = await collect(model)

    assert events[:3] == [
        TextDelta("This conversation"),
        TextDelta(" ends here"),
        TextDelta(", and you can start a new one."),
    ]
    assert text_of(events) == "This conversation ends here, and you can start a new one."


async def test_the_stream_ends_with_one_finished_carrying_finish_reason_and_usage(
    fake: FakeLLM, model: OpenAIChatModel
) -> None:
    fake.script(openai_text("Hi", prompt_tokens=19, completion_tokens=7))

    events = await collect(model)

    assert events[1:] == [
        Finished(finish_reason="stop", usage=Usage(input_tokens=19, output_tokens=7))
    ]


@pytest.mark.parametrize(
    "finish_reason",
    [pytest.param("tool_calls", id="openai"), pytest.param("stop", id="ollama-style-stop")],
)
async def test_tool_call_fragments_become_one_tool_call_when_the_choice_finishes(
    fake: FakeLLM, model: OpenAIChatModel, finish_reason: str
) -> None:
    fake.script(ending(finish_reason))

    events = await collect(model)

    assert events == [
        TextDelta("Goodbye."),
        ToolCall(name=END_TOOL, arguments={"reason": "persistent abuse"}, id=CALL_ID),
        Finished(finish_reason=finish_reason, usage=Usage(input_tokens=310, output_tokens=42)),
    ]


async def test_interleaved_calls_are_kept_apart_by_index_and_yielded_in_index_order(
    fake: FakeLLM, model: OpenAIChatModel
) -> None:
    fake.script(
        Stream(
            (
                openai_tool_call(0, "call_a", END_TOOL),
                openai_tool_call(1, "call_b", END_TOOL),
                openai_arguments(1, '{"reason": '),
                openai_arguments(0, '{"reason": "a"}'),
                openai_arguments(1, '"b"}'),
                openai_chunk({}, "tool_calls"),
                OPENAI_DONE,
            )
        )
    )

    events = await collect(model)

    assert events[:2] == [
        ToolCall(name=END_TOOL, arguments={"reason": "a"}, id="call_a"),
        ToolCall(name=END_TOOL, arguments={"reason": "b"}, id="call_b"),
    ]


async def test_arguments_that_do_not_parse_give_a_call_without_arguments(
    fake: FakeLLM, model: OpenAIChatModel
) -> None:
    fake.script(
        Stream(
            (
                openai_tool_call(0, CALL_ID, END_TOOL),
                openai_arguments(0, '{"reason": "cut'),
                openai_chunk({}, "length"),
                OPENAI_DONE,
            )
        )
    )

    events = await collect(model)

    assert events[0] == ToolCall(name=END_TOOL, arguments={}, id=CALL_ID)


async def test_the_request_carries_the_directive_prompt_the_messages_and_the_tool(
    fake: FakeLLM, model: OpenAIChatModel
) -> None:
    fake.script(openai_text("Hi"))

    await collect(model)

    assert fake.requests[0].body == {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": system_prompt(REQUEST)},
            {"role": "user", "content": "You are useless."},
            {"role": "assistant", "content": "I'm sorry you feel that way. How can I help?"},
            {"role": "user", "content": "More abuse."},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
        "tools": [TOOL],
    }


async def test_the_tool_offered_is_end_conversation_with_its_schema(
    fake: FakeLLM, model: OpenAIChatModel
) -> None:
    fake.script(openai_text("Hi"))

    await collect(model)

    function = fake.requests[0].body["tools"][0]["function"]
    assert (function["name"], function["parameters"]["required"]) == (
        "end_conversation",
        ["reason"],
    )


async def test_the_request_carries_the_api_key_as_a_bearer_token(
    fake: FakeLLM, model: OpenAIChatModel
) -> None:
    fake.script(openai_text("Hi"))

    await collect(model)

    headers = fake.requests[0].headers
    assert (headers["authorization"], headers["content-type"]) == (
        f"Bearer {KEY}",
        "application/json",
    )


async def test_the_api_key_comes_from_the_environment_when_none_is_given(
    fake: FakeLLM, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    fake.script(openai_text("Hi"))

    async with OpenAIChatModel(MODEL, base_url=url) as model:
        await collect(model)

    assert fake.requests[0].headers["authorization"] == "Bearer sk-from-env"


async def test_without_any_api_key_no_authorization_is_sent(
    fake: FakeLLM, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    fake.script(openai_text("Hi"))

    async with OpenAIChatModel("llama3.1", base_url=url) as model:
        events = await collect(model)

    assert (text_of(events), "authorization" in fake.requests[0].headers) == ("Hi", False)


async def test_a_429_with_retry_after_is_retried_after_the_wait(
    fake: FakeLLM, model: OpenAIChatModel
) -> None:
    limited = Failure(429, openai_error("Rate limit reached", "requests"), {"retry-after": "0"})
    fake.script(limited, openai_text("Hi"))

    events = await collect(model)

    assert (text_of(events), len(fake.requests)) == ("Hi", 2)


async def test_a_503_is_retried_and_the_retry_streams(
    fake: FakeLLM, model: OpenAIChatModel
) -> None:
    fake.script(Failure(503, openai_error("The engine is currently overloaded")), openai_text("Hi"))

    events = await collect(model)

    assert (text_of(events), len(fake.requests)) == ("Hi", 2)


async def test_a_persistent_500_is_a_model_error_with_the_status_and_the_apis_words(
    fake: FakeLLM, url: str, model: OpenAIChatModel
) -> None:
    fake.script(Failure(500, openai_error("The server had an error")))

    with pytest.raises(ModelError) as raised:
        await collect(model)

    assert str(raised.value) == (
        f"openai:gpt-4o: HTTP 500 Internal Server Error from POST {url}/chat/completions "
        "after 3 attempts: server_error: The server had an error"
    )
    assert len(fake.requests) == 3


async def test_a_401_is_not_retried(fake: FakeLLM, model: OpenAIChatModel) -> None:
    fake.script(Failure(401, openai_error("Incorrect API key provided", "invalid_request_error")))

    with pytest.raises(ModelError, match=r"invalid_request_error: Incorrect API key provided$"):
        await collect(model)

    assert len(fake.requests) == 1


async def test_an_error_chunk_mid_stream_is_a_model_error(
    fake: FakeLLM, model: OpenAIChatModel
) -> None:
    error = openai_frame(openai_error("The model produced invalid content"))
    fake.script(Stream((openai_chunk({"content": "Hel"}), error)))

    with pytest.raises(
        ModelError, match=r"^openai:gpt-4o: server_error: The model produced invalid content$"
    ):
        await collect(model)


async def test_a_stream_cut_before_a_finish_reason_is_a_model_error(
    fake: FakeLLM, model: OpenAIChatModel
) -> None:
    fake.script(Stream((openai_chunk({"content": "Hel"}),)))

    with pytest.raises(ModelError, match=r"the stream ended before a finish_reason$"):
        await collect(model)


async def test_a_stream_that_finished_but_never_said_done_still_finishes(
    fake: FakeLLM, model: OpenAIChatModel
) -> None:
    fake.script(Stream((openai_chunk({"content": "Hi"}), openai_chunk({}, "stop"))))

    events = await collect(model)

    assert events == [TextDelta("Hi"), Finished(finish_reason="stop")]


async def test_a_success_that_is_not_an_event_stream_is_a_model_error(
    fake: FakeLLM, model: OpenAIChatModel
) -> None:
    fake.script(Failure(200, {"choices": []}))

    with pytest.raises(ModelError, match=r"got 'application/json'$"):
        await collect(model)


async def test_a_stalled_stream_times_out_as_a_model_error(fake: FakeLLM, url: str) -> None:
    fake.script(Stream((openai_chunk({"content": "Hel"}),), hold=True))

    async with OpenAIChatModel(MODEL, base_url=url, api_key=KEY, timeout=0.2) as model:
        with pytest.raises(ModelError) as raised:
            await collect(model)

    assert str(raised.value) == f"openai:gpt-4o: ReadTimeout on POST {url}/chat/completions"


async def test_an_unreachable_server_is_a_model_error() -> None:
    url = f"http://127.0.0.1:{closed_port()}/v1"

    async with OpenAIChatModel(MODEL, base_url=url, api_key=KEY, retries=1, backoff=0.0) as model:
        with pytest.raises(ModelError) as raised:
            await collect(model)

    assert str(raised.value).startswith(
        f"openai:gpt-4o: ConnectError on POST {url}/chat/completions: "
    )


async def test_closing_the_stream_early_disconnects_from_the_server(
    fake: FakeLLM, model: OpenAIChatModel
) -> None:
    fake.script(Stream((openai_chunk({"content": "Hel"}),), hold=True))

    async with aclosing(model.stream(REQUEST)) as events:
        assert await anext(events) == TextDelta("Hel")

    assert await anyio.to_thread.run_sync(fake.disconnected.wait, 10.0)


async def test_cancelling_the_consumer_disconnects_from_the_server(
    fake: FakeLLM, model: OpenAIChatModel
) -> None:
    fake.script(Stream((openai_chunk({"content": "Hel"}),), hold=True))

    with anyio.CancelScope() as scope:
        async for _ in model.stream(REQUEST):
            scope.cancel()  # the generator is cancelled at its next wait for the server

    assert await anyio.to_thread.run_sync(fake.disconnected.wait, 10.0)


def closed_port() -> int:
    """A port nothing listens on (free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
