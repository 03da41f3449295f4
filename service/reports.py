"""How the command line shows reports, states and events: as text for people, JSON for tools."""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec

from events.records import RecordedEvent
from events.verify import VerifyReport
from projections.audit import AuditReport
from projections.branches import end_of, path, status
from projections.state import ThreadState


def verify_json(report: VerifyReport) -> dict[str, Any]:
    return {
        "thread_id": report.thread_id,
        "ok": report.ok,
        "version": report.version,
        "head": report.head.hex(),
        "chain_ok": report.chain_ok,
        "seal_ok": report.seal_ok,
        "meta_ok": report.meta_ok,
        "seals_checked": report.seals_checked,
        "first_bad_version": report.first_bad_version,
        "problems": msgspec.to_builtins(report.problems),
    }


def verify_text(report: VerifyReport) -> str:
    if report.ok:
        return (
            f"{report.thread_id}: ok, {report.version} events, "
            f"{report.seals_checked} seal(s), head {report.head.hex()}"
        )
    lines = [f"{report.thread_id}: BROKEN at version {report.first_bad_version}"]
    lines += [f"  version {p.version} [{p.area}]: {p.reason}" for p in report.problems]
    return "\n".join(lines)


def event_json(recorded: RecordedEvent) -> dict[str, Any]:
    event: dict[str, Any] = msgspec.to_builtins(recorded.event)
    return {"version": recorded.version, "hash": recorded.hash.hex(), **event}


def audit_json(report: AuditReport) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(report)
    out["ok"] = report.ok
    out["first_bad_version"] = report.first_bad_version
    return out


def audit_line(report: AuditReport) -> str:
    """One line a thread, for audits of many."""
    if report.ok:
        return f"{report.thread_id}: ok, {report.version} events, {len(report.ends)} end(s)"
    return f"{report.thread_id}: FAILED at version {report.first_bad_version}"


def audit_text(report: AuditReport) -> str:
    verdict = "ok" if report.ok else f"FAILED at version {report.first_bad_version}"
    lines = [
        f"{report.thread_id}: {verdict} ({report.version} events; chain "
        f"{_ok(report.chain_ok)}, seals {_ok(report.seal_ok)}, meta {_ok(report.meta_ok)})"
    ]
    lines += [f"  version {p.version} [{p.area}]: {p.reason}" for p in report.problems]
    for end in report.ends:
        judged = "justified" if end.justified else "NOT JUSTIFIED"
        lines.append(
            f"  end at version {end.version} ({end.scope}, leaf {end.leaf_id}) by {end.actor}"
            f" under policy {end.policy_version}: {judged} — {end.verdict}"
        )
        lines.append(
            f"    reason given: {end.reason}" + (f" [{end.category}]" if end.category else "")
        )
        for m in end.path:
            tier = f" [{m.tier}]" if m.tier else ""
            lines.append(f"    {m.version:>5} {m.role:<9} {m.kind:<16}{tier} {_short(m.content)}")
    return "\n".join(lines)


def replay_json(state: ThreadState, tip: str | None) -> dict[str, Any]:
    branch = path(state, tip) if tip else ()
    end = end_of(state, tip) if tip else None
    return {
        "thread_id": state.thread_id,
        "version": state.version,
        "tip": tip,
        "status": status(state, tip),
        "messages": [
            {
                "id": m.id,
                "role": m.role,
                "kind": m.kind,
                "parent_id": m.parent_id,
                "content": m.content,
                "tier": m.tier,
                "version": m.version,
                "created_at": m.created_at.isoformat(),
            }
            for m in branch
        ],
        "ended": msgspec.to_builtins(end) if end else None,
    }


def replay_text(state: ThreadState, tip: str | None) -> str:
    lines = [
        f"{state.thread_id} at version {state.version}, branch {tip or '(empty)'}: "
        f"{status(state, tip)}"
    ]
    for m in path(state, tip) if tip else ():
        label = m.role if m.role == "user" else f"assistant ({m.kind})"
        lines.append(f"{m.version:>5} {label}: {m.content}")
    end = end_of(state, tip) if tip else None
    if end is not None:
        lines.append(f"      ended by {end.actor} at version {end.version}: {end.reason}")
    return "\n".join(lines)


def analytics_json(tenant: str, counters: dict[str, Counter[str]]) -> dict[str, Any]:
    total: Counter[str] = Counter()
    for day in counters.values():
        total += day
    return {
        "tenant": tenant,
        "days": {day: dict(sorted(c.items())) for day, c in counters.items()},
        "total": dict(sorted(total.items())),
    }


def analytics_text(counters: dict[str, Counter[str]]) -> str:
    """A table: a row a counter, a column a day, and the total."""
    names = sorted({name for day in counters.values() for name in day})
    if not names:
        return "no analytics for these days"
    days = list(counters)
    width = max(len(n) for n in names)
    head = f"{'':<{width}}  " + "  ".join(f"{d[5:]:>6}" for d in days) + f"  {'total':>7}"
    rows = [head]
    for name in names:
        values = [counters[d][name] for d in days]
        cells = "  ".join(f"{v:>6}" for v in values)
        rows.append(f"{name:<{width}}  {cells}  {sum(values):>7}")
    return "\n".join(rows)


def _ok(flag: bool) -> str:
    return "ok" if flag else "BROKEN"


def _short(text: str, width: int = 72) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
