"""Export and import of threads, on every backend."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import pytest

from events.keys import Keyspace
from events.store import Redis, RedisEventStore
from events.transfer import TransferError, export_thread, import_thread
from tests.conftest import delete_prefix
from tests.events.test_verify import build

pytestmark = pytest.mark.anyio

T = "audited"
Lines = list[bytes]


@pytest.fixture
async def elsewhere(client: Redis) -> RedisEventStore:
    """Another deployment on the same Redis: its own prefix, its own seal key."""
    keys = Keyspace(prefix=f"{T}-elsewhere")
    yield RedisEventStore(client, keys, b"another-deployments-key-0123456789")  # type: ignore[misc]
    await delete_prefix(client, keys.prefix)


async def exported(store: RedisEventStore) -> Lines:
    await build(store)
    return list(await export_thread(store, T))


async def test_an_import_recreates_the_thread_event_for_event(
    store: RedisEventStore, elsewhere: RedisEventStore
) -> None:
    lines = await exported(store)

    result = await import_thread(elsewhere, lines)

    assert result is not None
    assert (result.last_version, result.replayed) == (9, False)
    assert [e.event for e in await elsewhere.read(T)] == [e.event for e in await store.read(T)]
    assert (await elsewhere.head(T)).hash == (await store.head(T)).hash
    assert (await elsewhere.verify(T)).ok


async def test_importing_the_same_export_twice_changes_nothing(
    store: RedisEventStore, elsewhere: RedisEventStore
) -> None:
    lines = await exported(store)
    await import_thread(elsewhere, lines)
    again = await import_thread(elsewhere, lines)
    assert again is not None
    assert again.replayed
    assert len(await elsewhere.read(T)) == 9


async def test_an_import_over_a_different_thread_of_the_same_id_is_refused(
    store: RedisEventStore, elsewhere: RedisEventStore
) -> None:
    lines = await exported(store)
    await build(elsewhere)  # same ids and shape, other event ids
    with pytest.raises(TransferError, match="already holds another history"):
        await import_thread(elsewhere, lines)


def tamper_data(lines: Lines) -> Lines:
    row = json.loads(lines[3])
    data = bytearray(base64.b64decode(row["data"]))
    data[-1] ^= 1
    row["data"] = base64.b64encode(bytes(data)).decode()
    return [*lines[:3], json.dumps(row).encode(), *lines[4:]]


def field(index: int, name: str, value: object) -> Callable[[Lines], Lines]:
    def change(lines: Lines) -> Lines:
        row = json.loads(lines[index])
        target = row["manifest"] if index == 0 else row
        target[name] = value
        return [*lines[:index], json.dumps(row).encode(), *lines[index + 1 :]]

    return change


BROKEN = [
    pytest.param(tamper_data, "the chain breaks at version 3", id="edited-bytes"),
    pytest.param(lambda ls: ls[:-1], "manifest counts 9 events, the file has 8", id="missing-line"),
    pytest.param(lambda ls: [ls[0], *ls[2:]], "counts 9", id="missing-first"),
    pytest.param(field(0, "head", "00" * 32), "do not end at the manifest's head", id="head"),
    pytest.param(field(0, "format", 7), "export format 7", id="format"),
    pytest.param(field(4, "batch", [4, 9]), "the batch of version 5 starts nowhere", id="batch"),
    pytest.param(lambda ls: [b"{}", *ls[1:]], "not a coda export", id="no-manifest"),
    pytest.param(lambda ls: [], "the export is empty", id="empty"),
]


@pytest.mark.parametrize(("damage", "message"), BROKEN)
async def test_a_damaged_export_is_refused_whole_and_writes_nothing(
    store: RedisEventStore,
    elsewhere: RedisEventStore,
    client: Redis,
    damage: Callable[[Lines], Lines],
    message: str,
) -> None:
    lines = damage(await exported(store))
    with pytest.raises(TransferError, match=message):
        await import_thread(elsewhere, lines)
    assert await client.keys(f"{T}-elsewhere:*") == []
