"""What `AnthropicModel` alone does, against a fake Messages API; the rest is the model contract."""

from __future__ import annotations

import anyio.to_thread
import pytest

from events.schema import Usage
from service.anthropic import AnthropicModel
from service.model import Finished, ModelError, TextDelta
from tests.fake_llm import ANTHROPIC, collect
from tests.fake_upstream import FakeUpstream, Stream, fake_fixture

pytestmark = pytest.mark.anyio

fake = fake_fixture(ANTHROPIC.path)


async def test_thinking_blocks_and_unknown_events_are_skipped(fake: FakeUpstream) -> None:
    fake.script(
        Stream(
            (
                *ANTHROPIC.start(),
                *ANTHROPIC.thinking_block(0, "Hmm.", signature="EqQB"),
                ANTHROPIC.frame({"type": "a_type_added_later", "index": 0}),
                *ANTHROPIC.text_block(1, "Hi"),
                *ANTHROPIC.end(),
            )
        )
    )

    async with ANTHROPIC.model(fake.url) as model:
        events = await collect(model)

    assert [type(event) for event in events] == [TextDelta, Finished]


async def test_message_stop_ends_the_reply_though_the_connection_stays_open(
    fake: FakeUpstream,
) -> None:
    usage = Usage(input_tokens=7, output_tokens=2)
    fake.script(Stream(ANTHROPIC.text("Hi", usage=usage).frames, hold=True))

    async with ANTHROPIC.model(fake.url) as model:
        events = await collect(model)

    assert events == [TextDelta("Hi"), Finished(finish_reason="end_turn", usage=usage)]
    assert await anyio.to_thread.run_sync(fake.disconnected.wait, 10.0)


def test_no_api_key_at_all_is_a_model_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)

    with pytest.raises(
        ModelError, match=r"^anthropic: no API key: pass api_key or set ANTHROPIC_API_KEY$"
    ):
        AnthropicModel()
