"""The OpenAPI document: valid OpenAPI 3.1, one operation for every route and no other, every
problem type the code can produce in its enum, and real answers of the app that it describes.

The answers are held to the document strictly: a shape written by hand in openapi.py may carry
no field it does not name. The schemas msgspec writes are taken as it writes them.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_schema_validator import OAS31Validator
from openapi_schema_validator import validate as validate_schema
from openapi_spec_validator import validate as validate_spec

from service.http import openapi, problems
from service.http.app import create_app
from tests.service.test_http import TERMINABLE, Api, api, parse_sse  # noqa: F401 (fixture)

pytestmark = pytest.mark.anyio

HTTP_PACKAGE = Path(openapi.__file__).parent
OPEN = {"/healthz", "/readyz", "/metrics", "/openapi.json"}
FORMATS = {"cls": OAS31Validator, "format_checker": OAS31Validator.FORMAT_CHECKER}


@pytest.fixture
def backend() -> str:
    return "fakeredis"  # what the answers look like does not depend on the store


# --- the document itself ---------------------------------------------------------------------


def test_the_document_is_valid_openapi_3_1() -> None:
    doc = openapi.document()
    validate_spec(doc)
    assert doc["openapi"].startswith("3.1")


def test_every_route_of_the_app_is_documented() -> None:
    missing = served_operations() - documented_operations()
    assert not missing, f"routes the document does not describe: {sorted(missing)}"


def test_every_documented_operation_is_a_route_of_the_app() -> None:
    extra = documented_operations() - served_operations()
    assert not extra, f"operations the app does not serve: {sorted(extra)}"


def test_the_problem_types_are_exactly_those_the_code_can_produce() -> None:
    documented = openapi.document()["components"]["schemas"]["Problem"]["properties"]["type"]
    assert set(documented["enum"]) == produced_problem_types()


def test_every_v1_operation_needs_a_key_and_the_others_none() -> None:
    for path, method, operation in operations():
        expected = [{"bearer": []}] if path.startswith("/v1/") else []
        assert operation["security"] == expected, (method, path)
        assert path.startswith("/v1/") or path in OPEN, path


def test_posts_take_an_idempotency_key_and_posts_in_a_thread_if_match() -> None:
    for path, method, operation in operations():
        headers = {p.get("$ref", "").rpartition("/")[2] for p in operation.get("parameters", [])}
        in_thread = path.startswith("/v1/threads/{thread_id}")
        if method == "post":
            assert "Idempotency-Key" in headers, path
            assert ("If-Match" in headers) == in_thread == ("412" in operation["responses"]), path
        else:
            assert not headers & {"Idempotency-Key", "If-Match"}, path


def test_the_stream_description_names_every_event() -> None:
    names = [
        *("message.posted", "message.classified", "reply.started", "reply.delta"),
        *("reply.completed", "reply.redirected", "reply.warned", "reply.failed"),
        *("end.rejected", "thread.ended", "branch.forked", "feedback.given"),
        *("thread.started", "error"),
    ]
    assert all(f"`{name}`" in openapi.SSE_DESCRIPTION for name in names)


# --- the document over HTTP, and real answers held against it -------------------------------


async def test_openapi_json_is_served_without_a_key() -> None:
    app = create_app()  # no services: the document needs none
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://coda") as client:
        response = await client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == openapi.document()


async def test_a_new_thread_its_reading_and_the_list_are_as_documented(api: Api) -> None:
    created = await api.call("POST", "/v1/threads", body={"title": "trip"})
    thread = created.json()["id"]
    read = await api.call("GET", f"/v1/threads/{thread}")
    listed = await api.call("GET", "/v1/threads?limit=5")
    assert_documented(created, "/v1/threads", {"title": "trip"})
    assert_documented(read, "/v1/threads/{thread_id}")
    assert_documented(listed, "/v1/threads")
    assert created.headers["etag"] == read.headers["etag"]


async def test_a_turn_its_events_and_feedback_are_as_documented(api: Api) -> None:
    thread = await api.thread()
    sent = {"content": "how do I kill a python process?"}
    turn = await api.call("POST", f"/v1/threads/{thread}/messages", body=sent)
    reply = turn.json()["reply"]["id"]
    rated = {"rating": "up", "message_id": reply, "comment": "thanks"}
    feedback = await api.call("POST", f"/v1/threads/{thread}/feedback", body=rated)
    events = await api.call("GET", f"/v1/threads/{thread}/events?limit=3")
    assert_documented(turn, "/v1/threads/{thread_id}/messages", sent)
    assert_documented(feedback, "/v1/threads/{thread_id}/feedback", rated)
    assert_documented(events, "/v1/threads/{thread_id}/events")
    assert events.json()["next"] == 3


async def test_a_streamed_turn_is_as_documented_frame_by_frame(api: Api) -> None:
    thread = await api.thread()
    sent = {"content": "hello there"}
    streamed = await api.call(
        "POST",
        f"/v1/threads/{thread}/messages",
        body=sent,
        headers={"Accept": "text/event-stream"},
    )
    frames = parse_sse(streamed.text)
    assert_documented(streamed, "/v1/threads/{thread_id}/messages", sent)
    assert {name for _, name, _ in frames} >= {"message.posted", "reply.delta", "reply.completed"}
    for _, name, data in frames:
        assert name in openapi.EVENT_NAMES
        schema = "Delta" if name == "reply.delta" else "Event"
        validate_schema(data, strict({"$ref": f"#/components/schemas/{schema}"}), **FORMATS)


async def test_an_edit_is_as_documented(api: Api) -> None:
    thread = await api.thread()
    first = (await api.say(thread, "hello")).json()["message"]["id"]
    sent = {"content": "hello again"}
    edited = await api.call("POST", f"/v1/threads/{thread}/messages/{first}/edit", body=sent)
    assert_documented(edited, "/v1/threads/{thread_id}/messages/{message_id}/edit", sent)
    assert edited.json()["message"]["sibling_ids"] == [first]


@pytest.mark.parametrize(
    ("method", "path", "who", "body", "status"),
    [
        pytest.param("GET", "/v1/threads/nope", "ann", None, 404, id="not-found"),
        pytest.param("POST", "/v1/threads", "ann", {"titel": "x"}, 422, id="validation"),
        pytest.param("GET", "/v1/threads?limit=0", "ann", None, 422, id="bad-parameter"),
        pytest.param("GET", "/v1/threads", "", None, 401, id="unauthorized"),
        pytest.param("POST", "/v1/threads", "auditor", {}, 403, id="forbidden"),
    ],
)
async def test_a_problem_is_as_documented(
    api: Api, method: str, path: str, who: str, body: Any, status: int
) -> None:
    response = await api.call(method, path, who, body)
    assert response.status_code == status
    assert_documented(response, "/v1/threads/{thread_id}" if "nope" in path else "/v1/threads")


async def test_cancelling_with_nothing_running_is_a_documented_409(api: Api) -> None:
    thread = await api.thread()
    response = await api.call("POST", f"/v1/threads/{thread}/cancel")
    assert response.status_code == 409
    assert_documented(response, "/v1/threads/{thread_id}/cancel")


async def test_a_stale_if_match_is_a_documented_412(api: Api) -> None:
    thread = await api.thread()
    await api.say(thread, "hello")
    sent = {"content": "again"}
    stale = await api.call(
        "POST", f"/v1/threads/{thread}/messages", body=sent, headers={"If-Match": '"1"'}
    )
    assert stale.status_code == 412
    assert_documented(stale, "/v1/threads/{thread_id}/messages", sent)


async def test_a_post_to_an_ended_branch_is_a_documented_409_carrying_the_end(api: Api) -> None:
    thread = await api.thread()
    for _ in range(4):
        await api.say(thread, TERMINABLE)
    refused = await api.say(thread, "hello?")
    assert refused.json()["type"] == "thread-ended"
    assert_documented(refused, "/v1/threads/{thread_id}/messages", {"content": "hello?"})
    shown = await api.call("GET", f"/v1/threads/{thread}")
    assert_documented(shown, "/v1/threads/{thread_id}")


async def test_an_end_its_audit_and_the_analytics_are_as_documented(api: Api) -> None:
    thread = await api.thread()
    await api.say(thread, "hello")
    sent = {"confirm": True}
    ended = await api.call("POST", f"/v1/threads/{thread}/end", body=sent)
    audited = await api.call("GET", f"/v1/threads/{thread}/audit", who="auditor")
    summary = await api.call(
        "GET", "/v1/analytics/summary?from=2026-01-01&to=2026-01-03", "auditor"
    )
    assert_documented(ended, "/v1/threads/{thread_id}/end", sent)
    assert_documented(audited, "/v1/threads/{thread_id}/audit")
    assert_documented(summary, "/v1/analytics/summary")
    assert ended.json()["ended"]["actor"] == "user"
    assert [end["actor"] for end in audited.json()["ends"]] == ["user"]


async def test_oversight_without_the_role_is_a_documented_403(api: Api) -> None:
    thread = await api.thread()
    refused = await api.call("GET", f"/v1/threads/{thread}/audit")
    assert refused.status_code == 403
    assert_documented(refused, "/v1/threads/{thread_id}/audit")


# --- helpers -----------------------------------------------------------------------------------


def assert_documented(
    response: httpx.Response, template: str, sent: dict[str, Any] | None = None
) -> None:
    """The document gives this operation this status and media type, and the body its schema;
    the body sent, if any, is one the operation's request schema takes."""
    operation = openapi.document()["paths"][template][response.request.method.lower()]
    declared = operation["responses"].get(str(response.status_code))
    assert declared is not None, f"{response.status_code} is not documented for {template}"
    media = response.headers["content-type"].partition(";")[0]
    assert media in declared["content"], f"{media} is not documented for {template}"
    body = response.text if media == "text/event-stream" else response.json()
    validate_schema(body, strict(declared["content"][media]["schema"]), **FORMATS)
    for name in declared.get("headers", {}):
        if name == "ETag" and media == "application/json":
            assert response.headers[name].strip('"').isdigit()
    if sent is not None:
        taken = operation["requestBody"]["content"]["application/json"]["schema"]
        validate_schema(sent, strict(taken), **FORMATS)


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema`, resolved against the document, where a shape written by hand (one with no
    `title`: msgspec titles its own) allows no property it does not name."""
    components = json.loads(json.dumps(openapi.document()["components"]))
    for written in components["schemas"].values():
        if "title" not in written:
            _close(written)
    return {**schema, "components": components}


def _close(schema: Any, within_all_of: bool = False) -> None:
    if isinstance(schema, list):
        for item in schema:
            _close(item, within_all_of)
        return
    if not isinstance(schema, dict):
        return
    # At an `allOf`, not within it: a part sees only its own properties.
    if ("properties" in schema or "allOf" in schema) and not within_all_of:
        schema.setdefault("unevaluatedProperties", False)
    for key, value in schema.items():
        _close(value, within_all_of=key == "allOf")


def operations() -> list[tuple[str, str, dict[str, Any]]]:
    paths = openapi.document()["paths"]
    return [(path, method, op) for path, ops in paths.items() for method, op in ops.items()]


def documented_operations() -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, method, _ in operations()}


def served_operations() -> set[tuple[str, str]]:
    served = set()
    for route in create_app().routes:
        for method in getattr(route, "methods", None) or ():
            if method != "HEAD":  # Starlette answers HEAD wherever it answers GET
                served.add((method, getattr(route, "path", "")))
    return served


def produced_problem_types() -> set[str]:
    """The `type` of every problem in the table, and of every `Problem(...)` raised and
    `problem_response(...)` given in service/http/*.py, as the source spells it."""
    types = {type_ for _, type_, _ in problems.TABLE.values()}
    for source in HTTP_PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Call) and _name(node.func) in {"Problem", "problem_response"}:
                given = [*node.args[1:2], *(k.value for k in node.keywords if k.arg == "type_")]
                types |= {a.value for a in given if isinstance(a, ast.Constant)}
    return types


def _name(func: ast.expr) -> str:
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""
