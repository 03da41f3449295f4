"""Reading a view's analytics: counters per tenant and day, summed over the partitions."""

from __future__ import annotations

from collections import Counter
from datetime import date, timedelta
from typing import Final, cast

from events.errors import redis_errors
from events.store import RedisEventStore

MAX_DAYS: Final = 366


class AnalyticsRangeError(ValueError):
    """A day range that is reversed or too long to read."""


def days(first: date, last: date) -> list[str]:
    if last < first:
        raise AnalyticsRangeError(f"the range ends ({last}) before it starts ({first})")
    if (last - first).days >= MAX_DAYS:
        raise AnalyticsRangeError(f"read at most {MAX_DAYS} days at a time")
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


async def read_analytics(
    store: RedisEventStore, tenant: str, first: date, last: date, *, view: str = "live"
) -> dict[str, Counter[str]]:
    """Day -> counters for `tenant` in the view, every day from `first` to `last` included."""
    keys = store.keys
    out: dict[str, Counter[str]] = {}
    for day in days(first, last):
        total: Counter[str] = Counter()
        names = [keys.view_analytics(view, p, tenant, day) for p in range(keys.partitions)]
        with redis_errors():
            pipe = store.redis.pipeline(transaction=False)
            for name in names:
                pipe.hgetall(name)
            replies = cast(list[dict[bytes, bytes]], await pipe.execute())
        for counters in replies:
            for field, value in counters.items():
                total[field.decode()] += int(value)
        out[day] = total
    return out
