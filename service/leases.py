"""Who owns a running generation: a Redis key per generation that expires unless renewed.

The first lease is the expiry `reply.started` records: no key is written for a generation
that ends before it (most do), which spares every turn a round trip. The owner writes the key
when it first renews, well before that expiry, and keeps renewing it while the generation runs.
A generation still pending in the event stream whose recorded expiry has passed and whose key
is gone has lost its owner: any process may then close it as `reply.failed` (`owner_lost`),
and the store's rule that a generation ends exactly once makes that happen once.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from events.errors import redis_errors
from events.keys import Keyspace
from events.store import Redis


class Leases:
    def __init__(self, client: Redis, keys: Keyspace, *, owner: str, seconds: float) -> None:
        self.redis = client
        self.keys = keys
        self.owner = owner
        self.ms = max(1, int(seconds * 1000))

    def expiry(self) -> datetime:
        """When the first lease of a generation starting now runs out, unless renewed."""
        return datetime.now(UTC) + timedelta(milliseconds=self.ms)

    async def renew(self, thread_id: str, reply_id: str) -> bool:
        """Extend the lease; True if the generation was asked to stop meanwhile."""
        with redis_errors():
            pipe = self.redis.pipeline(transaction=False)
            pipe.set(self.keys.lease(thread_id, reply_id), self.owner, px=self.ms)
            pipe.exists(self.keys.cancel(thread_id, reply_id))
            replies = await pipe.execute()
        return bool(replies[-1])

    def release_commands(self, thread_id: str, reply_id: str) -> list[tuple[Any, ...]]:
        """The commands that free a generation's lease and cancel keys, for a pipeline."""
        # One DEL: both keys carry the thread's hash tag, so they share a cluster slot.
        return [
            ("DEL", self.keys.lease(thread_id, reply_id), self.keys.cancel(thread_id, reply_id))
        ]

    async def alive(self, thread_id: str, reply_id: str, first_expiry: datetime | None) -> bool:
        """Whether the generation's owner still holds it: within the first lease recorded in
        `reply.started`, or as long as it renews the key."""
        if first_expiry is not None and first_expiry > datetime.now(UTC):
            return True
        with redis_errors():
            return bool(await self.redis.exists(self.keys.lease(thread_id, reply_id)))

    async def request_cancel(self, thread_id: str, reply_id: str) -> None:
        """Ask the owner, whichever process it is, to cancel the generation."""
        with redis_errors():
            await self.redis.set(self.keys.cancel(thread_id, reply_id), b"1", px=self.ms)
