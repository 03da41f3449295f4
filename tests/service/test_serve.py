"""`coda serve` as a user starts it: a real process, the embedded Redis, the development key."""

from __future__ import annotations

import stat
from pathlib import Path

import httpx

from tests.coda_process import serve_coda


def test_serve_makes_a_development_key_and_takes_a_turn(tmp_path: Path) -> None:
    with serve_coda(tmp_path / ".coda") as served:
        auth = {"Authorization": f"Bearer {served.key()}"}
        thread = httpx.post(f"{served.url}/v1/threads", json={"title": "hi"}, headers=auth)
        turn = httpx.post(
            f"{served.url}/v1/threads/{thread.json()['id']}/messages",
            json={"content": "hello there"},
            headers=auth,
            timeout=30,
        )
        ready = httpx.get(f"{served.url}/readyz").json()
    assert stat.S_IMODE((tmp_path / ".coda" / "dev-key").stat().st_mode) == 0o600
    assert ready == {"status": "ready"}
    assert turn.status_code == 200
    assert turn.json()["reply"]["kind"] == "answer"
