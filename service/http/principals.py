"""Who is calling: API keys, stored as their SHA-256 only, each naming a tenant, a user, roles.

A key is shown once, when it is made (`coda keys create`); Redis holds `coda:apikey:<sha256>`
→ tenant, user, roles, created_at, and the key's own limits (`limit:<name>`) if it has any.
Revoking deletes the hash, so a revoked key is unknown.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Final, Literal, TypeAlias, get_args

import msgspec

from events.errors import redis_errors
from events.keys import Keyspace
from events.store import Redis
from service.http.limits import Limits

Role: TypeAlias = Literal["user", "auditor", "admin"]
ROLES: Final[tuple[Role, ...]] = get_args(Role)
PREFIX: Final = "coda_"  # keys are recognisable in a leaked config file
LIMIT_NAMES: Final = Limits.__struct_fields__
REMEMBERED: Final = 10_000  # keys a process remembers at most
_Name: TypeAlias = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.:@-]{1,128}$")]
# A tenant has no ':', so the keys that join a tenant and a user with one stay unambiguous.
_Tenant: TypeAlias = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.@-]{1,128}$")]


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    tenant: str
    user: str
    roles: frozenset[Role]
    key_id: str = ""  # the key's SHA-256, which its limits are counted under
    limits: dict[str, int] = {}  # the key's own limits, over the defaults

    def can(self, *roles: Role) -> bool:
        return bool(self.roles.intersection(roles))


class ApiKeyError(ValueError):
    """A key that cannot be made as asked (a bad tenant, user or role)."""


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeys:
    """The keys in Redis. With `remember_seconds`, a process keeps what a key resolved to for
    that long (a bounded cache): a revoked key then stops working within that time."""

    def __init__(self, client: Redis, keys: Keyspace, *, remember_seconds: float = 0.0) -> None:
        self.redis = client
        self.keys = keys
        self.remember_seconds = remember_seconds
        self._known: OrderedDict[str, tuple[float, Principal | None]] = OrderedDict()

    async def create(
        self,
        tenant: str,
        user: str,
        roles: frozenset[Role],
        limits: Mapping[str, int] | None = None,
    ) -> str:
        """A new key for `user` of `tenant`, with its own `limits` (see `Limits`) if given; the
        key itself is returned once and stored nowhere."""
        for name, value, kind, allowed in (
            ("tenant", tenant, _Tenant, "_ . @ -"),
            ("user", user, _Name, "_ . : @ -"),
        ):
            try:
                msgspec.convert(value, type=kind)
            except msgspec.ValidationError:
                raise ApiKeyError(
                    f"invalid {name} {value!r}: use 1-128 characters of A-Z a-z 0-9 {allowed}"
                ) from None
        if not roles or not roles <= set(ROLES):
            raise ApiKeyError(f"roles must be some of {', '.join(ROLES)}, not {sorted(roles)}")
        key = PREFIX + secrets.token_urlsafe(32)
        fields = [
            *("tenant", tenant),
            *("user", user),
            *("roles", ",".join(sorted(roles))),
            *("created_at", datetime.now(UTC).isoformat()),
        ]
        for limit, amount in (limits or {}).items():
            if limit not in LIMIT_NAMES or amount < 1:
                raise ApiKeyError(f"a key's limits are some of {', '.join(LIMIT_NAMES)}, >= 1")
            fields += [f"limit:{limit}", str(amount)]
        with redis_errors():
            await self.redis.hset(self.keys.api_key(digest(key)), items=fields)
        return key

    async def revoke(self, key: str) -> bool:
        """Forget a key (given whole, or as its SHA-256); False if it was unknown."""
        hashed = key if len(key) == 64 and not key.startswith(PREFIX) else digest(key)
        with redis_errors():
            return bool(await self.redis.delete(self.keys.api_key(hashed)))

    async def any(self) -> bool:
        """Whether any key exists at all."""
        with redis_errors():
            async for _ in self.redis.scan_iter(match=self.keys.api_key("*"), count=1000):
                return True
        return False

    async def principal(self, key: str) -> Principal | None:
        """Who `key` belongs to, or None for an unknown or revoked key."""
        hashed = digest(key)
        if self.remember_seconds:
            known = self._known.get(hashed)
            if known is not None and known[0] > time.monotonic():
                return known[1]
        found = await self._principal(hashed)
        if self.remember_seconds:
            self._known[hashed] = (time.monotonic() + self.remember_seconds, found)
            self._known.move_to_end(hashed)
            while len(self._known) > REMEMBERED:
                self._known.popitem(last=False)
        return found

    async def _principal(self, hashed: str) -> Principal | None:
        with redis_errors():
            fields = await self.redis.hgetall(self.keys.api_key(hashed))
        if not fields:
            return None
        text = {_text(k): _text(v) for k, v in fields.items()}
        roles = frozenset(r for r in ROLES if r in text.get("roles", "").split(","))
        limits = {
            name.removeprefix("limit:"): int(value)
            for name, value in text.items()
            if name.startswith("limit:") and value.isdigit()
        }
        return Principal(
            tenant=text["tenant"], user=text["user"], roles=roles, key_id=hashed, limits=limits
        )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
