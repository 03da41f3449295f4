"""The counting scripts of the limits may be sent twice and count once: redis-py sends a
command again, or a whole shared pipeline, when a reply is lost on the wire."""

from __future__ import annotations

import pytest

from events.coalesce import Coalescer
from events.keys import Keyspace
from events.store import Redis
from service.http.limits import _GCRA, _TAKE_SLOT, COUNTED_MS, SLOT_MS

pytestmark = pytest.mark.anyio


async def test_a_turn_count_sent_again_is_taken_once(client: Redis, keys: Keyspace) -> None:
    scripts = Coalescer(client)
    rate = keys.turn_rate("k")
    count = [rate, keys.turn_counted("k", "count-1")]
    minute = [60_000, 0, COUNTED_MS]  # one turn a minute, no burst

    first = await scripts.run_script(_GCRA, count, minute)
    after_first = await client.get(rate)
    again = await scripts.run_script(_GCRA, count, minute)  # the same count, resent
    other = await scripts.run_script(_GCRA, [rate, keys.turn_counted("k", "count-2")], minute)

    assert (first, again) == (0, 0)
    assert await client.get(rate) == after_first  # not moved by the resent count
    assert other > 0  # a second turn within the minute still waits


async def test_a_stream_slot_taken_and_sent_again_at_the_limit_is_still_taken(
    client: Redis, keys: Keyspace
) -> None:
    scripts = Coalescer(client)
    name = keys.open_streams("k")

    first = await scripts.run_script(_TAKE_SLOT, [name], ["slot-1", 1, SLOT_MS])
    again = await scripts.run_script(_TAKE_SLOT, [name], ["slot-1", 1, SLOT_MS])
    other = await scripts.run_script(_TAKE_SLOT, [name], ["slot-2", 1, SLOT_MS])

    assert (first, again, other) == (1, 1, 0)
    assert await client.zcard(name) == 1
