"""What auditors and admins read: a thread's audit, and their tenant's analytics.

Both need the `auditor` or `admin` role (403 otherwise, before anything is looked up, so the
answer says nothing of which threads exist); a thread of another tenant is a 404 as anywhere.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from projections.analytics import AnalyticsRangeError, days, read_analytics
from projections.audit import audit
from service.http.context import caller, services, thread_for
from service.http.principals import Principal
from service.http.problems import Problem
from service.http.representations import JSONBody

DEFAULT_DAYS: Final = 30  # the summary's range when `from` is not given, ending at `to`


async def thread_audit(request: Request) -> Response:
    """The audit of a thread: its chain, seals and meta verified, and every end judged again
    under the policy the thread recorded."""
    principal = await _overseer(request)
    state = await thread_for(request, principal)
    report = await audit(services(request).store, state.thread_id)
    body = msgspec.to_builtins(report)
    body["ok"] = report.ok
    body["first_bad_version"] = report.first_bad_version
    return JSONBody(body)


async def analytics_summary(request: Request) -> Response:
    """The tenant's analytics counters, per UTC day from `from` to `to` (both included), and
    their totals: `to` defaults to today, `from` to 30 days before it."""
    principal = await _overseer(request)
    last = _day(request, "to") or datetime.now(UTC).date()
    first = _day(request, "from") or last - timedelta(days=DEFAULT_DAYS - 1)
    try:
        days(first, last)
    except AnalyticsRangeError as exc:
        raise Problem(422, "validation", "The request is not valid", str(exc)) from exc
    svc = services(request)
    counted = await read_analytics(svc.store, principal.tenant, first, last, view=svc.view)
    totals: dict[str, int] = {}
    for counters in counted.values():
        for name, value in counters.items():
            totals[name] = totals.get(name, 0) + value
    body: dict[str, Any] = {
        "tenant": principal.tenant,
        "from": first.isoformat(),
        "to": last.isoformat(),
        "totals": dict(sorted(totals.items())),
        "days": [{"day": day, "counters": dict(sorted(c.items()))} for day, c in counted.items()],
    }
    return JSONBody(body)


async def _overseer(request: Request) -> Principal:
    principal = await caller(request)
    if not principal.can("auditor", "admin"):
        raise Problem(403, "forbidden", "Forbidden", "this needs the auditor or admin role")
    return principal


def _day(request: Request, name: str) -> date | None:
    text = request.query_params.get(name)
    if text is None:
        return None
    try:
        day: date | None = date.fromisoformat(text)
    except ValueError:
        day = None
    if day is None or len(text) != len("YYYY-MM-DD"):  # not the compact forms ISO also allows
        raise Problem(
            422, "validation", "The request is not valid", f"{name} must be a day, YYYY-MM-DD"
        )
    return day
