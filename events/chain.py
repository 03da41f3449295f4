"""The per-thread hash chain, and the seals of ends and heads.

    hash(v)       = SHA-256( lp(hash(v-1)) lp(thread_id) lp(u64be(v)) lp(tag) lp(stored bytes) )
    seal(kind, v) = HMAC-SHA256( key, lp(kind) lp(thread_id) lp(u64be(v)) lp(hash(v)) )

`lp(x)` is x prefixed with its length as a 4-byte big-endian integer, so no two field lists
hash alike; hash(0) is 32 zero bytes. `kind` is "end" for the seal of a thread.ended and "head"
for the seal of the head after an append: an end's seal can never pass for a head's, so the
seals left in the meta cannot vouch for a thread cut back to an end. The seal key never
enters Redis: without it nobody can rewrite a history and re-seal it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import struct
from pathlib import Path
from typing import Final, Literal, TypeAlias

from events.errors import StoreConfigError

GENESIS: Final = bytes(32)
SEAL_KEY_ENV: Final = "CODA_SEAL_KEY"
SEAL_KEY_FILE: Final = "seal.key"
MIN_SEAL_KEY_BYTES: Final = 32
_u32: Final = struct.Struct(">I").pack
_VERSION_LEN: Final = _u32(8)
SealKind: TypeAlias = Literal["end", "head"]
_KINDS: Final = {kind: _u32(len(kind)) + kind.encode() for kind in ("end", "head")}


def chain_hash(prev: bytes, thread_id: str, version: int, tag: str, data: bytes) -> bytes:
    t, g = thread_id.encode(), tag.encode()
    # lp() spelled out: this runs for every event appended or verified.
    fields = (
        _u32(len(prev)),
        prev,
        _u32(len(t)),
        t,
        _VERSION_LEN,
        version.to_bytes(8, "big"),
        _u32(len(g)),
        g,
        _u32(len(data)),
        data,
    )
    return hashlib.sha256(b"".join(fields)).digest()


class Sealer:
    """HMAC-SHA256 under one key, with the key's pads hashed once (RFC 2104).

    Every append seals its head: keeping the keyed inner and outer states, and copying them,
    costs a third of what `hmac.digest` spends setting the key up on each call.
    """

    def __init__(self, key: bytes) -> None:
        block = hashlib.sha256().block_size
        if len(key) > block:
            key = hashlib.sha256(key).digest()
        key = key.ljust(block, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))

    def seal(self, kind: SealKind, thread_id: str, version: int, head: bytes) -> bytes:
        t = thread_id.encode()
        inner = self._inner.copy()
        inner.update(_KINDS[kind])
        inner.update(b"".join((_u32(len(t)), t, _VERSION_LEN, version.to_bytes(8, "big"))))
        inner.update(_u32(len(head)) + head)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def ok(self, kind: SealKind, thread_id: str, version: int, head: bytes, stored: bytes) -> bool:
        return hmac.compare_digest(self.seal(kind, thread_id, version, head), stored)


def seal(key: bytes, kind: SealKind, thread_id: str, version: int, head: bytes) -> bytes:
    return Sealer(key).seal(kind, thread_id, version, head)


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


def _read_key_file(path: Path) -> bytes:
    key = path.read_text().strip().encode()
    if len(key) < MIN_SEAL_KEY_BYTES:
        raise StoreConfigError(f"seal key file {path} holds fewer than {MIN_SEAL_KEY_BYTES} bytes")
    return key
