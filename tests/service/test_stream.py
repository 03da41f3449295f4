"""`GET /v1/threads/{id}/stream` against real servers: the live tail, resumed by Last-Event-ID,
also from another process after the one generating the reply was killed."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.coda_process import Served, serve_coda

Frame = tuple[str, str, Any]  # id, event, data

SLOW = {"CODA_SCRIPTED_DELAY": "0.2", "CODA_LEASE_SECONDS": "1"}  # 10 deltas: about 2 s


@pytest.fixture
def shared(served_env: dict[str, str]) -> dict[str, str]:
    """Settings that put several servers on the test Redis, under this test's prefix."""
    return {**served_env, **SLOW}


def frames(response: httpx.Response) -> Iterator[Frame]:
    """The frames of an event stream as they arrive (comments skipped)."""
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if not line:
            if "event" in fields:
                yield fields.get("id", ""), fields["event"], json.loads(fields["data"])
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            fields[name] = value


def read_until(served: Served, thread: str, names: set[str], **headers: str) -> list[Frame]:
    """Frames of the thread's stream until one named in `names` arrives."""
    got = []
    with httpx.stream(
        "GET",
        f"{served.url}/v1/threads/{thread}/stream",
        headers={"Authorization": f"Bearer {served.key()}", **headers},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        for got_frame in frames(response):
            got.append(got_frame)
            if got_frame[1] in names:
                return got
    raise AssertionError(f"the stream ended before any of {names}")


def new_thread(served: Served) -> str:
    auth = {"Authorization": f"Bearer {served.key()}"}
    return str(httpx.post(f"{served.url}/v1/threads", json={}, headers=auth).json()["id"])


def post_in_background(served: Served, thread: str, content: str) -> threading.Thread:
    def post() -> None:
        auth = {"Authorization": f"Bearer {served.key()}"}
        with contextlib.suppress(httpx.TransportError):  # the server may be killed under it
            httpx.post(
                f"{served.url}/v1/threads/{thread}/messages",
                json={"content": content},
                headers=auth,
                timeout=30,
            )

    poster = threading.Thread(target=post, daemon=True)
    poster.start()
    return poster


@pytest.mark.timeout(90)
def test_a_stream_resumed_by_last_event_id_repeats_and_loses_nothing(
    tmp_path: Path, shared: dict[str, str]
) -> None:
    with serve_coda(tmp_path / "a", shared) as served:
        thread = new_thread(served)
        post_in_background(served, thread, "hello there").join()
        whole = read_until(served, thread, {"reply.completed"})
        middle = next(i for i, f in enumerate(whole) if f[1] == "reply.delta") + 2
        resumed = read_until(
            served, thread, {"reply.completed"}, **{"Last-Event-ID": whole[middle][0]}
        )
    assert resumed == whole[middle + 1 :]
    names = [name for _, name, _ in whole]
    assert names[:4] == ["thread.started", "message.posted", "message.classified", "reply.started"]
    deltas = "".join(data["text"] for _, name, data in whole if name == "reply.delta")
    assert deltas == whole[-1][2]["content"]


@pytest.mark.timeout(90)
def test_a_stream_resumes_on_another_process_after_the_generating_one_was_killed(
    tmp_path: Path, shared: dict[str, str]
) -> None:
    with serve_coda(tmp_path / "a", shared) as first:
        key = first.key()
        thread = new_thread(first)
        post_in_background(first, thread, "hello there")
        seen = read_until(first, thread, {"reply.delta"})
        first.kill()  # mid-generation: its lease lapses, its reply stays pending
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "dev-key").write_text(key)
    with serve_coda(tmp_path / "b", shared) as second:
        rest = read_until(second, thread, {"reply.failed"}, **{"Last-Event-ID": seen[-1][0]})
    ids = [frame_id for frame_id, _, _ in seen + rest]
    assert len(ids) == len(set(ids)), "no frame twice"
    failed = rest[-1][2]
    assert failed["reason"] == "owner_lost"
    streamed = "".join(data["text"] for _, name, data in seen + rest if name == "reply.delta")
    assert failed["partial_content"] == streamed
