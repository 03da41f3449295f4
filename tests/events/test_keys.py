"""Key names: the partition rule, golden values, and one slot per script call."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from events.errors import InvalidNameError
from events.keys import Keyspace, check_thread_id

GOLDEN_PARTITIONS = [
    pytest.param("thread-1", 57, 15572, id="thread-1"),
    pytest.param("01a218bb-6cc1-723d-831a-ee60d178d5d8", 50, 3123, id="uuid"),
    pytest.param("a", 3, 1584, id="a"),
    pytest.param("z", 47, 4069, id="z"),
]


@pytest.mark.parametrize(("thread", "partition", "slot"), GOLDEN_PARTITIONS)
def test_partition_and_slot_are_stable(thread: str, partition: int, slot: int) -> None:
    keys = Keyspace()
    assert keys.partition(thread) == partition
    assert {key_slot(k.encode()) for k in keys.append_keys(thread)} == {slot}


@pytest.mark.parametrize("prefix", ["coda", "test-x", "a.b:c"])
@pytest.mark.parametrize("partitions", [1, 7, 64, 16384])
def test_every_append_key_list_maps_to_one_slot(prefix: str, partitions: int) -> None:
    keys = Keyspace(prefix=prefix, partitions=partitions)
    for i in range(500):
        thread = f"t-{i}"
        slots = {key_slot(k.encode()) for k in keys.append_keys(thread)}
        assert slots == {key_slot(keys.feed(keys.partition(thread)).encode())}


def test_the_key_layout_is_as_documented() -> None:
    keys = Keyspace(prefix="coda", partitions=64)
    assert keys.append_keys("thread-1") == (
        "coda:{57}:stream:thread-1",
        "coda:{57}:meta:thread-1",
        "coda:{57}:index:thread-1",
        "coda:{57}:feed",
    )
    assert keys.config == "coda:config"


@pytest.mark.parametrize("thread", ["", "a b", "x{1}", "é", "a" * 129])
def test_a_thread_id_that_cannot_name_keys_is_refused(thread: str) -> None:
    with pytest.raises(InvalidNameError, match="invalid thread id"):
        check_thread_id(thread)


@pytest.mark.parametrize("prefix", ["", "a{b}", "x y"])
def test_a_prefix_with_braces_or_spaces_is_refused(prefix: str) -> None:
    with pytest.raises(InvalidNameError, match="invalid key prefix"):
        Keyspace(prefix=prefix)


@pytest.mark.parametrize("partitions", [0, 16385])
def test_a_partition_count_out_of_range_is_refused(partitions: int) -> None:
    with pytest.raises(InvalidNameError, match="partitions must be"):
        Keyspace(partitions=partitions)


def test_generation_keys_share_the_thread_slot() -> None:
    keys = Keyspace(prefix="coda", partitions=64)
    assert keys.live("thread-1", "r1") == "coda:{57}:live:thread-1:r1"
    assert keys.lease("thread-1", "r1") == "coda:{57}:lease:thread-1:r1"
    assert keys.cancel("thread-1", "r1") == "coda:{57}:cancel:thread-1:r1"
    slots = {key_slot(k.encode()) for k in keys.append_keys("thread-1")}
    for key in (keys.live("thread-1", "r1"), keys.lease("thread-1", "r1")):
        assert {key_slot(key.encode())} == slots
