"""The hash chain and the seal: golden vectors, and the documented formula computed by hand."""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from pathlib import Path

import pytest

from events.chain import GENESIS, Sealer, SealKind, chain_hash, load_seal_key, seal
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


@pytest.mark.parametrize(
    ("kind", "golden"),
    [
        ("end", "8e40eda6028ed35d85717946a7b14536b8fc27a41bfdfebfa215565c527ebb6b"),
        ("head", "403199ce003936e33550ce2357d515b37fb5959e7967a89bd6070368b65ed7d7"),
    ],
)
def test_seal_golden_vectors_and_formula(kind: SealKind, golden: str) -> None:
    key = b"k" * 32
    sealed = seal(key, kind, "t1", 6, GENESIS)
    assert sealed.hex() == golden
    message = lp(kind.encode()) + lp(b"t1") + lp((6).to_bytes(8, "big")) + lp(GENESIS)
    assert sealed == hmac.new(key, message, hashlib.sha256).digest()


def test_a_seal_does_not_verify_under_another_key_head_or_kind() -> None:
    sealer = Sealer(b"k" * 32)
    sealed = sealer.seal("end", "t1", 6, GENESIS)
    assert sealer.ok("end", "t1", 6, GENESIS, sealed)
    assert not Sealer(b"j" * 32).ok("end", "t1", 6, GENESIS, sealed)
    assert not sealer.ok("end", "t1", 6, b"\x01" * 32, sealed)
    assert not sealer.ok("head", "t1", 6, GENESIS, sealed)


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
    sealed = Sealer(key).seal("head", "t1", 6, b"\x05" * 32)
    assert sealed == hmac.digest(key, lp(b"head") + message, "sha256")
