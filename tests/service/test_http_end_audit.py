"""Over HTTP: the user's own end, `If-Match`, the audit and the analytics summary."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from projections.projector import Projector
from tests.service.test_http import TERMINABLE, Api, api, backend  # noqa: F401 (fixtures)

pytestmark = pytest.mark.anyio

CRISIS = "i want to kill myself, nothing matters anymore"
END = {"confirm": True}


async def _version(api: Api, thread: str) -> int:
    return (await api.store.version(thread))[0]


async def test_the_user_ends_the_thread_and_may_still_edit_and_give_feedback(api: Api) -> None:
    thread = await api.thread()
    first = (await api.say(thread, "hello there")).json()
    ended = await api.call("POST", f"/v1/threads/{thread}/end", body=END)
    body = ended.json()
    assert ended.status_code == 200, ended.text
    assert body["status"] == "ended"
    assert body["ended"]["actor"] == "user"
    assert body["ended"]["leaf_id"] == first["reply"]["id"]
    assert body["ended"]["allowed_actions"] == ["new_thread", "edit", "feedback"]
    assert ended.headers["etag"] == f'"{body["version"]}"'
    refused = await api.say(thread, "one more thing")
    again = await api.call("POST", f"/v1/threads/{thread}/end", body=END)
    assert (refused.status_code, refused.json()["type"]) == (409, "thread-ended")
    assert refused.json()["ended"]["actor"] == "user"
    assert (again.status_code, again.json()["type"]) == (409, "thread-ended")
    edited = await api.call(
        "POST",
        f"/v1/threads/{thread}/messages/{first['message']['id']}/edit",
        body={"content": "hello again"},
    )
    feedback = await api.call("POST", f"/v1/threads/{thread}/feedback", body={"rating": "up"})
    assert edited.status_code == 200
    assert edited.json()["ended"] is None
    assert feedback.status_code == 201


@pytest.mark.parametrize(
    ("body", "words"),
    [
        pytest.param({"confirm": False}, "confirm must be true", id="not-confirmed"),
        pytest.param({}, "confirm", id="missing"),
        pytest.param({"confirm": True, "why": "x"}, "why", id="unknown-field"),
        pytest.param({"confirm": "yes"}, "confirm", id="wrong-type"),
    ],
)
async def test_an_end_not_confirmed_is_422_and_writes_nothing(
    api: Api, body: dict[str, object], words: str
) -> None:
    thread = await api.thread()
    await api.say(thread, "hello")
    before = await _version(api, thread)
    response = await api.call("POST", f"/v1/threads/{thread}/end", body=body)
    assert response.status_code == 422
    assert response.json()["type"] == "validation"
    assert words in response.json()["detail"]
    assert await _version(api, thread) == before


async def test_a_thread_with_no_message_has_nothing_to_end(api: Api) -> None:
    thread = await api.thread()
    response = await api.call("POST", f"/v1/threads/{thread}/end", body=END)
    assert response.status_code == 422
    assert await _version(api, thread) == 1


async def test_a_branch_with_a_crisis_stays_open_and_the_refusal_is_recorded(api: Api) -> None:
    thread = await api.thread()
    await api.say(thread, CRISIS)
    response = await api.call("POST", f"/v1/threads/{thread}/end", body=END)
    problem = response.json()
    events = (await api.call("GET", f"/v1/threads/{thread}/events")).json()["data"]
    assert response.status_code == 409
    assert problem["type"] == "end-refused"
    assert "crisis" in problem["reason"]
    assert events[-1]["type"] == "end.rejected"
    assert events[-1]["actor"] == "user"
    assert (await api.say(thread, "thank you")).status_code == 200


async def test_the_end_and_the_turns_need_the_user_and_their_own_thread(api: Api) -> None:
    thread = await api.thread()
    await api.say(thread, "hello")
    for who, status in [("auditor", 403), ("bob", 404), ("eve", 404)]:
        response = await api.call("POST", f"/v1/threads/{thread}/end", who, END)
        assert response.status_code == status, who
    assert (await api.call("GET", f"/v1/threads/{thread}")).json()["ended"] is None


@pytest.mark.parametrize("quoted", [True, False])
async def test_if_match_with_the_current_version_is_taken_and_a_stale_one_is_412(
    api: Api, quoted: bool
) -> None:
    thread = await api.thread()
    read = await api.call("GET", f"/v1/threads/{thread}")
    current = read.headers["etag"] if quoted else read.headers["etag"].strip('"')
    path = f"/v1/threads/{thread}/messages"
    taken = await api.call("POST", path, body={"content": "hello"}, headers={"If-Match": current})
    after = await _version(api, thread)
    stale = await api.call("POST", path, body={"content": "again"}, headers={"If-Match": current})
    assert taken.status_code == 200
    assert stale.status_code == 412
    assert stale.json()["type"] == "version-conflict"
    assert await _version(api, thread) == after
    for path, body in [
        (f"/v1/threads/{thread}/end", END),
        (f"/v1/threads/{thread}/feedback", {"rating": "up"}),
        (f"/v1/threads/{thread}/cancel", None),
    ]:
        refused = await api.call("POST", path, body=body, headers={"If-Match": current})
        assert refused.status_code == 412, path
    assert await _version(api, thread) == after


@pytest.mark.parametrize("value", ["abc", '"1', "-1", "1.0"])
async def test_an_if_match_that_is_no_version_is_422(api: Api, value: str) -> None:
    thread = await api.thread()
    response = await api.call(
        "POST", f"/v1/threads/{thread}/feedback", body={"rating": "up"}, headers={"If-Match": value}
    )
    assert response.status_code == 422
    assert "If-Match" in response.json()["detail"]


async def test_the_audit_judges_each_end_for_an_auditor(api: Api) -> None:
    laddered = await api.thread()
    for _ in range(4):
        await api.say(laddered, TERMINABLE)
    by_user = await api.thread()
    await api.say(by_user, "hello")
    await api.call("POST", f"/v1/threads/{by_user}/end", body=END)
    report = (await api.call("GET", f"/v1/threads/{laddered}/audit", "auditor")).json()
    assert report["ok"] is True
    assert (report["chain_ok"], report["seal_ok"], report["meta_ok"]) == (True, True, True)
    assert report["first_bad_version"] is None
    [end] = report["ends"]
    assert (end["actor"], end["justified"]) == ("model", True)
    assert len(end["path"]) == 8  # four harmful turns and their replies
    assert end["path"][-1]["id"] == end["leaf_id"]
    user_end = (await api.call("GET", f"/v1/threads/{by_user}/audit", "auditor")).json()
    assert [(e["actor"], e["justified"]) for e in user_end["ends"]] == [("user", True)]


async def test_the_audit_needs_an_auditor_of_the_tenant(api: Api) -> None:
    thread = await api.thread()
    mine = await api.call("GET", f"/v1/threads/{thread}/audit")
    other = await api.call("GET", f"/v1/threads/{thread}/audit", "eve")
    assert (mine.status_code, mine.json()["type"]) == (403, "forbidden")
    assert (other.status_code, other.json()["type"]) == (404, "not-found")


async def test_the_analytics_summary_counts_the_tenants_threads_per_day(api: Api) -> None:
    thread = await api.thread()
    for _ in range(4):
        await api.say(thread, TERMINABLE)
    await api.thread(who="eve")  # another tenant: not counted
    await Projector(api.store).run_once()
    today = datetime.now(UTC).date()
    query = f"from={(today - timedelta(days=1)).isoformat()}&to={today.isoformat()}"
    response = await api.call("GET", f"/v1/analytics/summary?{query}", "auditor")
    body = response.json()
    assert response.status_code == 200
    assert (body["tenant"], body["to"]) == ("acme", today.isoformat())
    assert [d["day"] for d in body["days"]] == [
        (today - timedelta(days=1)).isoformat(),
        today.isoformat(),
    ]
    totals = body["totals"]
    assert (totals["threads_started"], totals["user_turns"]) == (1, 4)
    assert (totals["redirects"], totals["warnings"], totals["ends"]) == (2, 1, 1)
    assert body["days"][-1]["counters"] == totals
    denied = await api.call("GET", "/v1/analytics/summary", "ann")
    assert denied.status_code == 403


@pytest.mark.parametrize(
    "query", ["from=2026-13-01", "to=20261101", "from=2026-11-02&to=2026-11-01", "from=2020-01-01"]
)
async def test_a_bad_analytics_range_is_422(api: Api, query: str) -> None:
    response = await api.call("GET", f"/v1/analytics/summary?{query}", "auditor")
    assert response.status_code == 422
    assert response.json()["type"] == "validation"
