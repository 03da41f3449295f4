"""The hash chain and the seal: golden vectors, and the documented formula computed by hand."""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from pathlib import Path

import pytest

from events.chain import GENESIS, Sealer, chain_hash, load_seal_key, seal, seal_ok
from events.errors import StoreConfigError


def lp(part: bytes) -> bytes:
    return len(part).to_bytes(4, "big") + part


def test_chain_hash_golden_vectors() -> None:
    first = chain_hash(GENESIS, "t1", 1, "thread.started", b"abc")
    assert first.hex() == "16bfaf00d560b309eb961c352641337a0f601c1fee9b5e7c5843979d314a206a"
    second = chain_hash(bytes.fromhex("11" * 32), "t1", 2, "message.posted", b"")
    assert second.hex() == "662cd0cfa87ab0999b359f95eaca7df866ac9979e9228c25d61d6bfe0afc3619"


def test_chain_hash_is_sha256_over_length_prefixed_fields() -> None:
    fields = [GENESIS, b"t1", (7).to_bytes(8, "big"), b"reply.completed", b"\x81\xa1a\x01"]
    by_hand = hashlib.sha256(b"".join(lp(f) for f in fields)).digest()
    assert chain_hash(GENESIS, "t1", 7, "reply.completed", b"\x81\xa1a\x01") == by_hand


def test_length_prefixes_keep_shifted_boundaries_apart() -> None:
    assert chain_hash(GENESIS, "t1", 1, "ab", b"c") != chain_hash(GENESIS, "t1", 1, "a", b"bc")


def test_seal_golden_vector_and_formula() -> None:
    key = b"k" * 32
    sealed = seal(key, "t1", 6, GENESIS)
    assert sealed.hex() == "abb206045132c222fdecc158152a66920380e138401aefae993a3fdcb38d391d"
    message = lp(b"t1") + lp((6).to_bytes(8, "big")) + lp(GENESIS)
    assert sealed == hmac.new(key, message, hashlib.sha256).digest()


def test_a_seal_does_not_verify_under_another_key_or_head() -> None:
    sealed = seal(b"k" * 32, "t1", 6, GENESIS)
    assert seal_ok(b"k" * 32, "t1", 6, GENESIS, sealed)
    assert not seal_ok(b"j" * 32, "t1", 6, GENESIS, sealed)
    assert not seal_ok(b"k" * 32, "t1", 6, b"\x01" * 32, sealed)


def test_the_seal_key_file_is_created_once_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CODA_SEAL_KEY", raising=False)
    key = load_seal_key(tmp_path / "data")
    path = tmp_path / "data" / "seal.key"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_seal_key(tmp_path / "data") == key
    assert len(key) == 64
    assert os.listdir(tmp_path / "data") == ["seal.key"]


def test_the_seal_key_from_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CODA_SEAL_KEY", "x" * 40)
    assert load_seal_key(tmp_path) == b"x" * 40
    assert not (tmp_path / "seal.key").exists()


def test_a_short_seal_key_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODA_SEAL_KEY", "short")
    with pytest.raises(StoreConfigError, match="at least 32"):
        load_seal_key(tmp_path)


@pytest.mark.parametrize("size", [1, 32, 64, 65, 200])
def test_the_sealer_is_hmac_sha256_for_any_key_length(size: int) -> None:
    key = bytes(range(256))[:size] * 1
    message = lp(b"t1") + lp((6).to_bytes(8, "big")) + lp(b"\x05" * 32)
    assert Sealer(key).seal("t1", 6, b"\x05" * 32) == hmac.digest(key, message, "sha256")
