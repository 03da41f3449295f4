"""Every Redis key coda uses, and the partition rule that keeps a thread's keys in one slot.

All keys of a thread, and the feed of its partition, carry the hash tag `{p}` where
`p = crc32(thread_id) mod partitions`. Redis Cluster hashes only the text between the first
braces, so everything one append script touches lives in one slot (and on one node).
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import Final

from events.errors import InvalidNameError

DEFAULT_PREFIX: Final = "coda"
DEFAULT_PARTITIONS: Final = 64
MAX_PARTITIONS: Final = 16384  # one slot each at most; more would only share slots

_PREFIX_RE: Final = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_THREAD_ID_RE: Final = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_VIEW_RE: Final = re.compile(r"[a-z0-9-]{1,32}")


def check_view(view: str) -> str:
    """The view name, if it is 1-32 characters of a-z 0-9 and -."""
    if not _VIEW_RE.fullmatch(view):
        raise InvalidNameError(f"invalid view name {view!r}: use 1-32 characters of a-z 0-9 -")
    return view


def check_thread_id(thread_id: str) -> str:
    """The thread id, if it is 1-128 characters of letters, digits and `_ . : -`."""
    if not _THREAD_ID_RE.fullmatch(thread_id):
        raise InvalidNameError(
            f"invalid thread id {thread_id!r}: use 1-128 characters of A-Z a-z 0-9 _ . : -"
        )
    return thread_id


@dataclass(frozen=True, slots=True)
class Keyspace:
    """Key names under one prefix, for a deployment with a fixed number of partitions."""

    prefix: str = DEFAULT_PREFIX
    partitions: int = DEFAULT_PARTITIONS

    def __post_init__(self) -> None:
        if not _PREFIX_RE.fullmatch(self.prefix):
            raise InvalidNameError(
                f"invalid key prefix {self.prefix!r}: use 1-64 characters of A-Z a-z 0-9 _ . : -"
            )
        if not 1 <= self.partitions <= MAX_PARTITIONS:
            raise InvalidNameError(f"partitions must be 1..{MAX_PARTITIONS}, not {self.partitions}")

    def partition(self, thread_id: str) -> int:
        return zlib.crc32(thread_id.encode()) % self.partitions

    def stream(self, thread_id: str) -> str:
        """The thread's events; entry id `<version>-0`."""
        return f"{self._tag(thread_id)}:stream:{thread_id}"

    def meta(self, thread_id: str) -> str:
        """A hash: version, head, ended leaves, thread end, seals."""
        return f"{self._tag(thread_id)}:meta:{thread_id}"

    def index(self, thread_id: str) -> str:
        """A hash: event ids (for idempotent appends) and the message tree (for the lock)."""
        return f"{self._tag(thread_id)}:index:{thread_id}"

    def view_thread(self, view: str, thread_id: str) -> str:
        """A hash: the thread's summary in a view, with the version it was taken at."""
        return f"{self._tag(check_thread_id(thread_id))}:view:{check_view(view)}:thread:{thread_id}"

    def view_analytics(self, view: str, partition: int, tenant: str, day: str) -> str:
        """A hash: a view's analytics counters for one tenant and day, from one partition."""
        return f"{self._partition_tag(partition)}:view:{check_view(view)}:analytics:{tenant}:{day}"

    def view_owner(self, view: str, tenant: str, owner: str) -> str:
        """A sorted set: an owner's threads in a view, by last update (no hash tag: any slot)."""
        return f"{self.prefix}:view:{check_view(view)}:owner:{tenant}:{owner}"

    def dead_letters(self, view: str, partition: int) -> str:
        """A stream: feed entries a view's projector gave up on, with the error."""
        return f"{self._partition_tag(partition)}:dead:{check_view(view)}"

    def snapshot(self, thread_id: str) -> str:
        """A string: the thread's folded state at some version, a cache the projections keep."""
        return f"{self._tag(check_thread_id(thread_id))}:snapshot:{thread_id}"

    def live(self, thread_id: str, reply_id: str) -> str:
        """A stream: a generation's text deltas as they come, for any process to relay (expires)."""
        return f"{self._tag(check_thread_id(thread_id))}:live:{thread_id}:{reply_id}"

    def lease(self, thread_id: str, reply_id: str) -> str:
        """A string: the owner of a running generation, expiring unless the owner renews it."""
        return f"{self._tag(check_thread_id(thread_id))}:lease:{thread_id}:{reply_id}"

    def cancel(self, thread_id: str, reply_id: str) -> str:
        """A string: set when a generation is to be cancelled, read by whichever process owns it."""
        return f"{self._tag(check_thread_id(thread_id))}:cancel:{thread_id}:{reply_id}"

    def feed(self, partition: int) -> str:
        """The partition's feed: every event of its threads, in append order, for consumers."""
        return f"{self._partition_tag(partition)}:feed"

    def append_keys(self, thread_id: str) -> tuple[str, str, str, str]:
        """KEYS of the append script, in its order: stream, meta, index, feed."""
        check_thread_id(thread_id)
        return (
            self.stream(thread_id),
            self.meta(thread_id),
            self.index(thread_id),
            self.feed(self.partition(thread_id)),
        )

    def api_key(self, digest: str) -> str:
        """A hash: the tenant, user and roles of the API key whose SHA-256 is `digest` (no hash
        tag: keys are looked up one at a time, from any slot)."""
        return f"{self.prefix}:apikey:{digest}"

    def idempotency(self, digest: str) -> str:
        """A string: the request an Idempotency-Key was first used for, and its answer (expires;
        `digest` hashes the caller and the key; no hash tag: any slot)."""
        return f"{self.prefix}:idem:{digest}"

    def turn_rate(self, key_id: str) -> str:
        """A string: when the API key `key_id` (its SHA-256) may take its next turn (expires;
        hash-tagged by the key, for its `turn_counted` marks to share its slot)."""
        return f"{self.prefix}:limit:turns:{{{key_id}}}"

    def turn_counted(self, key_id: str, count_id: str) -> str:
        """A string: set when the count `count_id` of a turn was taken, so that the count sent
        again (a reply lost on the wire) is not taken twice (expires)."""
        return f"{self.prefix}:limit:turns:{{{key_id}}}:{count_id}"

    def open_streams(self, key_id: str) -> str:
        """A sorted set: the event streams the API key `key_id` has open, by expiry."""
        return f"{self.prefix}:limit:streams:{key_id}"

    def wake(self, tag: str, token: str) -> str:
        """A stream: wakes the blocked read of process `token` on hash tag `tag` ("" on a
        single Redis), when a new waiter needs a key that read does not cover (expires)."""
        return f"{self.prefix}:{{{tag}}}:hub:{token}" if tag else f"{self.prefix}:hub:{token}"

    @property
    def config(self) -> str:
        """A hash holding deployment settings fixed for its life (the partition count)."""
        return f"{self.prefix}:config"

    def _tag(self, thread_id: str) -> str:
        return f"{self.prefix}:{{{self.partition(thread_id)}}}"

    def _partition_tag(self, partition: int) -> str:
        if not 0 <= partition < self.partitions:
            raise InvalidNameError(f"partition must be 0..{self.partitions - 1}, not {partition}")
        return f"{self.prefix}:{{{partition}}}"
