"""On Redis Cluster, a key list that spans slots is refused, by the client and by the server."""

from __future__ import annotations

import msgspec
import pytest
import redis.asyncio
from redis.exceptions import ResponseError

from events.chain import GENESIS
from events.errors import EventStoreError
from events.keys import Keyspace
from events.schema import encode
from events.store import APPEND, RedisEventStore
from tests.factories import started

pytestmark = pytest.mark.anyio


@pytest.fixture
def backend() -> str:
    return "cluster"


def cross_slot_keys(keys: Keyspace) -> list[str]:
    """Thread a's stream, meta and index with the feed of thread b's (other) partition."""
    a, b = "a", "z"
    assert keys.partition(a) != keys.partition(b)
    return [*keys.append_keys(a)[:3], keys.feed(keys.partition(b))]


async def test_the_client_refuses_a_script_call_across_slots(
    store: RedisEventStore, keys: Keyspace
) -> None:
    with pytest.raises(EventStoreError, match="hash to the same slot"):
        await store.run_script(cross_slot_keys(keys), [b'["a", 0, [], ""]', GENESIS, b""])


async def test_the_server_refuses_a_script_call_across_slots_and_writes_nothing(
    store: RedisEventStore, keys: Keyspace
) -> None:
    wrong = cross_slot_keys(keys)
    await store.redis.ping()  # learn the slot map
    node = store.redis.get_node_from_key(wrong[0])  # type: ignore[union-attr]
    event = started("a")
    data = encode(event)
    control = [[event.event_id, "thread.started", False, "", "", "", "", "", len(data)]]
    args = [msgspec.json.encode(["a", 0, control, ""]), GENESIS * 2, data]
    direct = redis.asyncio.Redis(host=node.host, port=node.port)
    try:
        with pytest.raises(ResponseError, match="hash to the same slot"):
            await direct.eval(APPEND.body, len(wrong), *wrong, *args)
    finally:
        await direct.aclose()
    assert await store.read("a") == []
    assert await store.read_feed(keys.partition("z")) == []
