"""The per-thread hash chain and the seal of ended threads.

    hash(v) = SHA-256( lp(hash(v-1)) lp(thread_id) lp(u64be(v)) lp(tag) lp(stored bytes) )
    seal(v) = HMAC-SHA256( key, lp(thread_id) lp(u64be(v)) lp(hash(v)) )

`lp(x)` is x prefixed with its length as a 4-byte big-endian integer, so no two field lists
hash alike; hash(0) is 32 zero bytes. The seal key never enters Redis: without it nobody can
rewrite an ended thread's history and re-seal it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path
from typing import Final

from events.errors import StoreConfigError

GENESIS: Final = bytes(32)
SEAL_KEY_ENV: Final = "CODA_SEAL_KEY"
SEAL_KEY_FILE: Final = "seal.key"
MIN_SEAL_KEY_BYTES: Final = 32


def chain_hash(prev: bytes, thread_id: str, version: int, tag: str, data: bytes) -> bytes:
    return hashlib.sha256(
        _lp(prev, thread_id.encode(), version.to_bytes(8, "big"), tag.encode(), data)
    ).digest()


def seal(key: bytes, thread_id: str, version: int, head: bytes) -> bytes:
    message = _lp(thread_id.encode(), version.to_bytes(8, "big"), head)
    return hmac.new(key, message, hashlib.sha256).digest()


def seal_ok(key: bytes, thread_id: str, version: int, head: bytes, stored: bytes) -> bool:
    return hmac.compare_digest(seal(key, thread_id, version, head), stored)


def load_seal_key(data_dir: Path) -> bytes:
    """The seal key: $CODA_SEAL_KEY, else `<data_dir>/seal.key`, created (mode 0600) if absent."""
    if value := os.environ.get(SEAL_KEY_ENV):
        key = value.encode()
        if len(key) < MIN_SEAL_KEY_BYTES:
            raise StoreConfigError(
                f"{SEAL_KEY_ENV} must be at least {MIN_SEAL_KEY_BYTES} characters"
            )
        return key
    path = data_dir / SEAL_KEY_FILE
    try:
        return _read_key_file(path)
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Write the key beside its place, then link it in: readers never see a half-written file,
    # and when two processes race, both end up with the one that was linked first.
    tmp = data_dir / f".{SEAL_KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return _read_key_file(path)


def _lp(*parts: bytes) -> bytes:
    """Each part prefixed with its length (4 bytes, big-endian), all joined."""
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def _read_key_file(path: Path) -> bytes:
    key = path.read_text().strip().encode()
    if len(key) < MIN_SEAL_KEY_BYTES:
        raise StoreConfigError(f"seal key file {path} holds fewer than {MIN_SEAL_KEY_BYTES} bytes")
    return key
