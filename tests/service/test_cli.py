"""The `coda` command line, against the real Redis of the test session."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from events.connect import client_for
from events.keys import Keyspace
from events.store import RedisEventStore
from service.cli import main
from service.http.principals import ApiKeys
from tests.conftest import SEAL_KEY, delete_prefix
from tests.factories import ended, posted, replied, started

T = "cli-thread"


@pytest.fixture
def env(redis_url: str, keys: Keyspace, monkeypatch: pytest.MonkeyPatch) -> Iterator[Keyspace]:
    """The CLI's settings point at the test Redis, under this test's prefix."""
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("CODA_KEY_PREFIX", keys.prefix)
    monkeypatch.setenv("CODA_SEAL_KEY", SEAL_KEY.decode())
    yield keys
    on_store(redis_url, keys, "clean")


def on_store(url: str, keys: Keyspace, work: str) -> None:
    async def run() -> None:
        client = client_for(url)
        store = RedisEventStore(client, keys, SEAL_KEY)
        try:
            if work == "populate":
                await store.append(T, [started(T)], 0)
                batch = [posted(T, "m1", None), replied(T, "r1", "m1"), ended(T, "r1")]
                await store.append(T, batch, 1)
            elif work == "tamper":
                await client.hset(keys.meta(T), "head", b"\x00" * 32)
            else:
                await delete_prefix(client, keys.prefix)
        finally:
            await client.aclose()

    asyncio.run(run())


@pytest.fixture
def thread(env: Keyspace, redis_url: str) -> str:
    on_store(redis_url, env, "populate")
    return T


def test_verify_prints_ok_for_an_untouched_thread(
    thread: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["verify", thread]) == 0
    assert capsys.readouterr().out.startswith(f"{thread}: ok, 4 events, 1 seal(s), head ")


def test_verify_names_the_first_bad_version_and_exits_1(
    thread: str, redis_url: str, env: Keyspace, capsys: pytest.CaptureFixture[str]
) -> None:
    on_store(redis_url, env, "tamper")
    assert main(["verify", thread, "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert (report["ok"], report["first_bad_version"], report["meta_ok"]) == (False, 4, False)


def test_events_prints_ndjson_after_a_version(
    thread: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["events", thread, "--after", "1", "--limit", "2"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(e["version"], e["type"]) for e in lines] == [
        (2, "message.posted"),
        (3, "reply.completed"),
    ]
    assert lines[0]["content"] == "hello"


def test_an_invalid_thread_id_is_a_one_line_error(
    env: Keyspace, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["verify", "not a thread"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("coda: invalid thread id 'not a thread'")
    assert err.count("\n") == 1


def test_a_negative_after_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["events", T, "--after", "-1"])
    assert caught.value.code == 2
    assert "must be >= 0" in capsys.readouterr().err


def test_audit_reports_an_end_made_without_the_ladder_and_exits_1(
    thread: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The thread of the fixture was ended by the model with no ladder: unjustified."""
    assert main(["audit", thread, "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert (report["ok"], report["chain_ok"], report["first_bad_version"]) == (False, True, 4)
    assert report["ends"][0]["verdict"] == "0 of 2 redirections given"
    assert [m["id"] for m in report["ends"][0]["path"]] == ["m1", "r1"]


def test_audit_text_names_the_unjustified_end(
    thread: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", thread]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"{thread}: FAILED at version 4")
    assert "NOT JUSTIFIED — 0 of 2 redirections given" in out


def test_replay_prints_the_branch_as_it_stood_at_a_version(
    thread: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", thread, "--at", "2", "--json"]) == 0
    replayed = json.loads(capsys.readouterr().out)
    assert (replayed["version"], replayed["tip"], replayed["status"]) == (2, "m1", "open")
    assert [m["content"] for m in replayed["messages"]] == ["hello"]

    assert main(["replay", thread]) == 0
    text = capsys.readouterr().out
    assert "assistant (answer): hi there" in text
    assert "ended by model at version 4" in text


def test_replay_of_a_tip_the_thread_lacks_is_a_one_line_error(
    thread: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", thread, "--tip", "nope"]) == 2
    assert (
        capsys.readouterr().err == f"coda: thread '{thread}' has no message 'nope' at version 4\n"
    )
    assert main(["replay", thread, "--at", "9"]) == 2
    assert "has versions 0..4, not 9" in capsys.readouterr().err


def test_export_then_import_under_another_prefix_recreates_the_thread(
    thread: str,
    env: Keyspace,
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    exported = tmp_path / "thread.ndjson"
    assert main(["export", thread, "-o", str(exported)]) == 0
    other = Keyspace(prefix=f"{env.prefix}-copy")
    monkeypatch.setenv("CODA_KEY_PREFIX", other.prefix)
    try:
        assert main(["import", str(exported)]) == 0
        assert capsys.readouterr().out == f"{thread}: imported, 4 events\n"
        assert main(["import", str(exported)]) == 0
        assert capsys.readouterr().out == f"{thread}: already imported, 4 events\n"
        assert main(["verify", thread]) == 0
    finally:
        on_store(redis_url, other, "clean")


def test_import_of_a_missing_file_or_export_of_no_thread_is_a_one_line_error(
    env: Keyspace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["import", str(tmp_path / "nope.ndjson")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["export", "nothing-here"]) == 2
    assert capsys.readouterr().err == "coda: there is no thread 'nothing-here'\n"


def test_project_then_analytics_print_the_views_counters(
    thread: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["project", "--once"]) == 0
    assert capsys.readouterr().out == "view live: up to date, 4 entries handled\n"
    today = datetime.now(UTC).date().isoformat()
    assert main(["analytics", "--tenant", "acme", "--from", today, "--to", today, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["total"]["threads_started"] == 1
    assert report["total"]["ends:actor:model"] == 1
    assert main(["analytics", "--tenant", "acme", "--from", today, "--to", today]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[-1] == "total"
    assert any(row.split()[0] == "user_turns" and row.split()[-1] == "1" for row in table)


def test_analytics_over_a_reversed_range_is_a_one_line_error(
    env: Keyspace, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["analytics", "--tenant", "acme", "--from", "2026-03-02", "--to", "2026-03-01"]
    assert main(args) == 2
    assert capsys.readouterr().err.startswith("coda: the range ends (2026-03-01) before it starts")


def test_audit_all_prints_a_line_a_thread_and_fails_if_any_does(
    thread: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "--all"]) == 1
    captured = capsys.readouterr()
    assert captured.out == f"{thread}: FAILED at version 4\n"
    assert captured.err.endswith("audited 1 threads, 1 failed\n")


def test_audit_needs_a_thread_or_all(env: Keyspace, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit"]) == 2
    assert capsys.readouterr().err == "coda: name a thread, or give --all\n"


def test_classify_prints_a_json_line_per_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["classify", "how do i kill a python process", "i want to kill myself"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines == [
        {
            "text": "how do i kill a python process",
            "tier": "benign",
            "categories": [],
            "score": 0.0,
            "classifier": "rules",
            "version": "2",
        },
        {
            "text": "i want to kill myself",
            "tier": "crisis",
            "categories": ["suicide_self_harm"],
            "score": 0.95,
            "classifier": "rules",
            "version": "2",
        },
    ]


def test_classify_reads_lines_from_stdin_when_given_no_text(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("you stupid bot\n\nwrite a haiku\n"))
    assert main(["classify"]) == 0
    tiers = [json.loads(line)["tier"] for line in capsys.readouterr().out.splitlines()]
    assert tiers == ["terminable", "benign"]


def test_classify_with_an_unusable_classifier_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CODA_CLASSIFIER_URL", raising=False)
    assert main(["classify", "--classifier", "llama-guard", "hi"]) == 2
    assert (
        capsys.readouterr().err == "coda: CODA_CLASSIFIER=llama-guard needs CODA_CLASSIFIER_URL\n"
    )


def test_classify_through_an_unreachable_service_gives_unknown(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = "http://127.0.0.1:9/v1"  # the discard port: nothing listens
    args = ["classify", "--classifier", "openai-moderation", "--classifier-url", url, "hi"]
    assert main([*args, "--timeout", "5"]) == 0
    line = json.loads(capsys.readouterr().out)
    assert (line["tier"], line["classifier"]) == ("unknown", "openai-moderation")
    assert "ConnectError" in line["error"]


def test_keys_create_prints_the_key_alone_and_revoke_forgets_it(
    env: Keyspace, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "create", "--tenant", "acme", "--user", "ann", "--role", "auditor"]) == 0
    key = capsys.readouterr().out
    assert key.startswith("coda_")
    assert key.count("\n") == 1
    assert principal_of(redis_url, env, key.strip()) == ("acme", "ann", frozenset({"auditor"}))
    assert main(["keys", "revoke", key.strip()]) == 0
    assert principal_of(redis_url, env, key.strip()) is None
    assert main(["keys", "revoke", key.strip()]) == 1


def test_keys_create_with_a_bad_tenant_is_a_one_line_error(
    env: Keyspace, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "create", "--tenant", "a b", "--user", "ann"]) == 2
    assert capsys.readouterr().err.startswith("coda: invalid tenant 'a b'")
    # A tenant has no ':' (the thread lists join tenant and user with one): "a:b" + "c" and
    # "a" + "b:c" would share a list.
    assert main(["keys", "create", "--tenant", "a:b", "--user", "c"]) == 2
    assert capsys.readouterr().err.startswith("coda: invalid tenant 'a:b'")
    assert main(["keys", "create", "--tenant", "a", "--user", "b:c"]) == 0


def principal_of(url: str, keys: Keyspace, key: str) -> tuple[str, str, frozenset[str]] | None:
    async def look() -> tuple[str, str, frozenset[str]] | None:
        client = client_for(url)
        try:
            found = await ApiKeys(client, keys).principal(key)
        finally:
            await client.aclose()
        return None if found is None else (found.tenant, found.user, frozenset(found.roles))

    return asyncio.run(look())
