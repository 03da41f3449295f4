"""The `Model` contract, run against every HTTP adapter and its fake API on a real uvicorn.

Each adapter comes with a dialect (`tests.fake_llm`) that scripts its fake in the API's own wire
format; what one API alone does is tested in that adapter's module.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import aclosing

import anyio
import anyio.to_thread
import pytest
from starlette.responses import JSONResponse

from events.schema import Usage
from service.model import (
    END_TOOL,
    END_TOOL_DESCRIPTION,
    END_TOOL_SCHEMA,
    ChatMessage,
    Finished,
    ModelError,
    ModelRequest,
    TextDelta,
    ToolCall,
)
from tests.fake_llm import ANTHROPIC, KEY, OPENAI_CHAT, ModelAdapter, ModelDialect, collect, text_of
from tests.fake_upstream import FakeUpstream, Stream, closed_port, contract_fixtures

pytestmark = pytest.mark.anyio

REDIRECT = ModelRequest(
    directive="redirect",
    messages=(
        ChatMessage("user", "Hello"),
        ChatMessage("assistant", "Hi! How can I help?"),
        ChatMessage("user", "Write something hateful."),
    ),
    category="hate",
    attempt=1,
)
FAREWELL = ModelRequest(
    directive="end",
    messages=(
        ChatMessage("user", "You are useless."),
        ChatMessage("assistant", "I'm sorry you feel that way. How can I help?"),
        ChatMessage("user", "More abuse."),
    ),
    category="hate",
)
USAGE = Usage(input_tokens=472, output_tokens=31)
# the arguments split mid-token, as the APIs do
FRAGMENTS = ('{"rea', 'son": "persist', 'ent abuse"}')


dialect, fake = contract_fixtures(ANTHROPIC, OPENAI_CHAT)


@pytest.fixture
async def model(dialect: ModelDialect, fake: FakeUpstream) -> AsyncIterator[ModelAdapter]:
    async with dialect.model(fake.url) as model:
        yield model


async def test_text_deltas_arrive_in_order_and_assemble_into_the_reply(
    dialect: ModelDialect, fake: FakeUpstream, model: ModelAdapter
) -> None:
    fake.script(dialect.text("I can't help", " with that, but", " I can help with..."))

    events = await collect(model)

    assert events[:3] == [
        TextDelta("I can't help"),
        TextDelta(" with that, but"),
        TextDelta(" I can help with..."),
    ]
    assert text_of(events) == "I can't help with that, but I can help with..."


async def test_the_stream_ends_with_one_finished_carrying_the_stop_reason_and_usage(
    dialect: ModelDialect, fake: FakeUpstream, model: ModelAdapter
) -> None:
    fake.script(dialect.text("Hi", usage=USAGE))

    events = await collect(model)

    assert events[1:] == [Finished(finish_reason=dialect.stop, usage=USAGE)]


async def test_an_end_conversation_call_is_assembled_from_its_fragments(
    dialect: ModelDialect, fake: FakeUpstream, model: ModelAdapter
) -> None:
    fake.script(
        dialect.tool_call(*FRAGMENTS, text=("This conversation ", "ends here."), usage=USAGE)
    )

    events = await collect(model)

    assert events == [
        TextDelta("This conversation "),
        TextDelta("ends here."),
        ToolCall(name=END_TOOL, arguments={"reason": "persistent abuse"}, id=dialect.call_id),
        Finished(finish_reason=dialect.tool_stop, usage=USAGE),
    ]


async def test_tool_arguments_cut_short_give_a_call_without_arguments(
    dialect: ModelDialect, fake: FakeUpstream, model: ModelAdapter
) -> None:
    fake.script(dialect.tool_call('{"reason": "cut', finish=dialect.length_stop, usage=USAGE))

    events = await collect(model)

    assert events == [
        ToolCall(name=END_TOOL, arguments={}, id=dialect.call_id),
        Finished(finish_reason=dialect.length_stop, usage=USAGE),
    ]


async def test_arguments_that_are_not_json_are_logged_without_what_the_model_wrote(
    dialect: ModelDialect,
    fake: FakeUpstream,
    model: ModelAdapter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    fake.script(dialect.tool_call('{"reason": "Zebulon', finish=dialect.length_stop, usage=USAGE))

    await collect(model)

    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("not a JSON object" in message for message in warned)
    assert not any("Zebulon" in r.getMessage() for r in caplog.records if r.levelno > logging.DEBUG)


@pytest.mark.parametrize(
    "asked", [pytest.param(REDIRECT, id="redirect"), pytest.param(FAREWELL, id="end")]
)
async def test_the_request_carries_the_directive_prompt_the_messages_and_the_tool(
    dialect: ModelDialect, fake: FakeUpstream, model: ModelAdapter, asked: ModelRequest
) -> None:
    fake.script(dialect.text("Hi"))

    await collect(model, asked)

    assert fake.requests[0].body == dialect.body(asked)


async def test_the_tool_offered_is_end_conversation_with_its_schema(
    dialect: ModelDialect, fake: FakeUpstream, model: ModelAdapter
) -> None:
    fake.script(dialect.text("Hi"))

    await collect(model)

    [(name, description, schema)] = dialect.tools(fake.requests[0].body)
    assert (name, schema["required"]) == ("end_conversation", ["reason"])
    assert (description, schema) == (END_TOOL_DESCRIPTION, END_TOOL_SCHEMA)


@pytest.mark.parametrize(
    ("given", "environment"),
    [
        pytest.param(KEY, "sk-not-this-one", id="given"),
        pytest.param(None, "sk-from-env", id="from-the-environment"),
    ],
)
async def test_the_request_carries_the_key_given_else_the_environments_and_says_it_is_json(
    dialect: ModelDialect,
    fake: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
    given: str | None,
    environment: str,
) -> None:
    monkeypatch.setenv(dialect.key_variable, environment)
    fake.script(dialect.text("Hi"))

    async with dialect.model(fake.url, api_key=given) as model:
        await collect(model)

    expected = dialect.headers(given or environment)
    assert {name: fake.requests[0].headers.get(name) for name in expected} == expected


@pytest.mark.parametrize(
    ("status", "kind", "retry_after"),
    [
        pytest.param(429, "rate_limit_error", "0", id="429-retry-after"),
        pytest.param(503, "server_error", "", id="503"),
        pytest.param(529, "overloaded_error", "", id="529-overloaded"),
    ],
)
async def test_a_passing_failure_is_retried_and_the_retry_streams(
    dialect: ModelDialect,
    fake: FakeUpstream,
    model: ModelAdapter,
    status: int,
    kind: str,
    retry_after: str,
) -> None:
    fake.script(dialect.error(status, kind, "Not now", retry_after), dialect.text("Hi"))

    events = await collect(model)

    assert (text_of(events), len(fake.requests)) == ("Hi", 2)


async def test_a_persistent_500_is_a_model_error_with_the_status_and_the_apis_words(
    dialect: ModelDialect, fake: FakeUpstream, model: ModelAdapter
) -> None:
    fake.script(dialect.error(500, "api_error", "Internal server error"))

    with pytest.raises(ModelError) as raised:
        await collect(model)

    assert str(raised.value) == (
        f"{dialect.name}: HTTP 500 Internal Server Error from POST {fake.url}{dialect.path} "
        "after 3 attempts: api_error: Internal server error"
    )
    assert len(fake.requests) == 3


@pytest.mark.parametrize(
    ("status", "words"),
    [
        pytest.param(400, "Bad Request", id="400"),
        pytest.param(401, "Unauthorized", id="401"),
    ],
)
async def test_a_refusal_is_a_model_error_at_once(
    dialect: ModelDialect, fake: FakeUpstream, model: ModelAdapter, status: int, words: str
) -> None:
    fake.script(dialect.error(status, "invalid_request_error", "max_tokens: too large"))

    with pytest.raises(ModelError) as raised:
        await collect(model)

    assert str(raised.value) == (
        f"{dialect.name}: HTTP {status} {words} from POST {fake.url}{dialect.path}: "
        "invalid_request_error: max_tokens: too large"
    )
    assert len(fake.requests) == 1


async def test_an_error_reported_mid_stream_is_a_model_error(
    dialect: ModelDialect, fake: FakeUpstream, model: ModelAdapter
) -> None:
    error = dialect.error_event("overloaded_error", "Overloaded")
    fake.script(Stream((*dialect.beginning("Hel").frames, error)))

    with pytest.raises(ModelError) as raised:
        await collect(model)

    assert str(raised.value) == f"{dialect.name}: overloaded_error: Overloaded"


async def test_a_stream_cut_before_the_reply_ends_is_a_model_error(
    dialect: ModelDialect, fake: FakeUpstream, model: ModelAdapter
) -> None:
    fake.script(dialect.beginning("Hel"))

    with pytest.raises(ModelError) as raised:
        await collect(model)

    assert str(raised.value) == f"{dialect.name}: {dialect.unfinished}"


async def test_a_success_that_is_not_an_event_stream_is_a_model_error(
    dialect: ModelDialect, fake: FakeUpstream, model: ModelAdapter
) -> None:
    fake.script(JSONResponse({"content": [], "choices": []}))

    with pytest.raises(ModelError) as raised:
        await collect(model)

    assert str(raised.value) == (
        f"{dialect.name}: Expected response header Content-Type to contain "
        "'text/event-stream', got 'application/json'"
    )


async def test_a_stalled_stream_times_out_as_a_model_error(
    dialect: ModelDialect, fake: FakeUpstream
) -> None:
    fake.script(dialect.beginning(hold=True))

    async with dialect.model(fake.url, timeout=0.2) as model:
        with pytest.raises(ModelError) as raised:
            await collect(model)

    assert str(raised.value) == f"{dialect.name}: ReadTimeout on POST {fake.url}{dialect.path}"


async def test_an_unreachable_server_is_a_model_error(dialect: ModelDialect) -> None:
    url = f"http://127.0.0.1:{closed_port()}"

    async with dialect.model(url, retries=1) as model:
        with pytest.raises(ModelError) as raised:
            await collect(model)

    assert str(raised.value) == (
        f"{dialect.name}: ConnectError on POST {url}{dialect.path}: All connection attempts failed"
    )


async def test_closing_the_stream_early_disconnects_from_the_server(
    dialect: ModelDialect, fake: FakeUpstream, model: ModelAdapter
) -> None:
    fake.script(dialect.beginning("Hel", hold=True))

    async with aclosing(model.stream(REDIRECT)) as events:
        assert await anext(events) == TextDelta("Hel")

    assert await anyio.to_thread.run_sync(fake.disconnected.wait, 10.0)


async def test_cancelling_the_consumer_disconnects_from_the_server(
    dialect: ModelDialect, fake: FakeUpstream, model: ModelAdapter
) -> None:
    fake.script(dialect.beginning("Hel", hold=True))

    with anyio.CancelScope() as scope:
        async for _ in model.stream(REDIRECT):
            scope.cancel()  # the generator is cancelled at its next wait for the server

    assert await anyio.to_thread.run_sync(fake.disconnected.wait, 10.0)
