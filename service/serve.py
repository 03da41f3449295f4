"""`coda serve` and `coda keys`: running the HTTP API, and the API keys that open it.

On first start with no API key at all, `coda serve` makes a development key (tenant `dev`, user
`dev`, roles user and auditor), prints it once and keeps it in `<data dir>/dev-key` (mode 0600).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Final

import uvicorn

from events.connect import RedisSettings, open_store
from service.http.app import NO_PROJECTOR_ENV
from service.http.limits import Limits
from service.http.principals import LIMIT_NAMES, ApiKeys, Role

DEV_KEY_FILE: Final = "dev-key"
DEV_ROLES: Final[frozenset[Role]] = frozenset({"user", "auditor"})


def serve(args: argparse.Namespace) -> int:
    """Make the development key if there is no key at all, then run uvicorn (blocking)."""
    Limits.from_env()  # a limit set wrong is said now, in one line, not by every worker
    asyncio.run(_first_key())
    if args.no_projector:
        os.environ[NO_PROJECTOR_ENV] = "1"
    uvicorn.run(
        "service.http.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level="info",
        access_log=not args.no_access_log,
    )
    return 0


async def _first_key() -> None:
    settings = RedisSettings.from_env()
    async with open_store(settings) as store:
        keys = ApiKeys(store.redis, store.keys)
        if await keys.any():
            return
        key = await keys.create("dev", "dev", DEV_ROLES)
    path = _keep(settings.data_dir, key)
    print(f"coda: a development key (tenant dev, user dev), also kept in {path}:\n{key}")


async def keys_create(args: argparse.Namespace) -> int:
    async with open_store(RedisSettings.from_env()) as store:
        limits = {
            name: getattr(args, f"limit_{name}")
            for name in LIMIT_NAMES
            if getattr(args, f"limit_{name}") is not None
        }
        key = await ApiKeys(store.redis, store.keys).create(
            args.tenant, args.user, frozenset(args.role or ["user"]), limits
        )
    sys.stdout.write(key + "\n")
    return 0


async def keys_revoke(args: argparse.Namespace) -> int:
    async with open_store(RedisSettings.from_env()) as store:
        revoked = await ApiKeys(store.redis, store.keys).revoke(args.key)
    if not revoked:
        print("coda: no such key", file=sys.stderr)
        return 1
    return 0


def _keep(data_dir: Path, key: str) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / DEV_KEY_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(key + "\n")
    path.chmod(0o600)
    return path
