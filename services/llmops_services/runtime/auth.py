"""API keys with roles. Keys are random 256-bit secrets, so a plain sha256 is a safe way to store
them (no password stretching needed); the secret itself is shown once, at creation.

Auth is on whenever an unrevoked key exists. Health and reflection stay open. The role each RPC
needs is in `roles.METHOD_ROLES`.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from llmops_services.db.database import Database
from llmops_services.db.tables import ApiKeyRow, utcnow
from llmops_services.errors import (
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from llmops_services.runtime.context import ANONYMOUS, Principal
from llmops_services.runtime.roles import METHOD_ROLES, PACKAGE, MissingRoleError

ROLES = ("reader", "writer", "admin")
_RANK = {role: rank for rank, role in enumerate(ROLES)}
KEY_PREFIX = "llmops_"


def required_role(method: str) -> str:
    """The least role an RPC needs, from `roles.METHOD_ROLES`.

    `method` is the full name, `/llmops.v1.RegistryService/GetModel`. An RPC of the `llmops.v1`
    services without a row raises `MissingRoleError`; a method of any other package (never
    served by the platform, only by tests) needs `admin`.
    """
    role = METHOD_ROLES.get(method)
    if role is not None:
        return role
    if method.startswith(f"/{PACKAGE}."):
        raise MissingRoleError(method)
    return "admin"


def has_role(principal: Principal, role: str) -> bool:
    """Whether the principal's role is at least `role`."""
    return _RANK[principal.role] >= _RANK[role]


def hash_key(key: str) -> str:
    """How keys are stored and looked up."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class CreatedKey:
    """A new key: `secret` is the bearer token, shown once."""

    key_id: str
    role: str
    secret: str


@dataclass(frozen=True)
class KeyInfo:
    """A stored key, without its secret."""

    key_id: str
    role: str
    description: str
    create_time: str
    revoked: bool


def create_key(db: Database, role: str, description: str = "") -> CreatedKey:
    """Creates a key with a role and returns its secret."""
    if role not in _RANK:
        raise InvalidArgument(
            f"unknown role {role!r}",
            violations=[FieldViolation("role", f"must be one of {', '.join(ROLES)}")],
        )
    key_id = "key-" + secrets.token_hex(6)
    secret = f"{KEY_PREFIX}{secrets.token_urlsafe(32)}"
    row = ApiKeyRow(id=key_id, key_sha256=hash_key(secret), role=role, description=description)
    db.run_sync(lambda session: session.add(row))
    return CreatedKey(key_id=key_id, role=role, secret=secret)


def list_keys(db: Database) -> list[KeyInfo]:
    """Every key, oldest first."""

    def work(session: Session) -> list[KeyInfo]:
        rows = session.scalars(select(ApiKeyRow).order_by(ApiKeyRow.create_time)).all()
        return [
            KeyInfo(
                r.id, r.role, r.description, r.create_time.isoformat(), r.revoke_time is not None
            )
            for r in rows
        ]

    return db.run_sync(work)


def revoke_key(db: Database, key_id: str) -> None:
    """Revokes a key; calls with it fail from the next cache refresh on."""

    def work(session: Session) -> None:
        row = session.get(ApiKeyRow, key_id)
        if row is None:
            raise NotFound(
                f"API key {key_id} not found", resource_type="api_key", resource_name=key_id
            )
        row.revoke_time = row.revoke_time or utcnow()

    db.run_sync(work)


class ApiKeyCache:
    """Active keys by hash, re-read from the database at most every `ttl` seconds."""

    def __init__(self, db: Database, ttl: float) -> None:
        self._db = db
        self._ttl = ttl
        self._keys: dict[str, Principal] = {}
        self._by_token: dict[str, Principal] = {}
        self._loaded_at = float("-inf")

    @property
    def stale(self) -> bool:
        """Whether the keys must be read again before the next check."""
        return time.monotonic() - self._loaded_at >= self._ttl

    @property
    def enabled(self) -> bool:
        """Whether auth is on: an unrevoked key existed when the keys were last read."""
        return bool(self._keys)

    async def refresh(self) -> None:
        """Reads the active keys from the database."""
        now = time.monotonic()

        def work(session: Session) -> dict[str, Principal]:
            rows = session.execute(
                select(ApiKeyRow.key_sha256, ApiKeyRow.id, ApiKeyRow.role).where(
                    ApiKeyRow.revoke_time.is_(None)
                )
            ).all()
            return {digest: Principal(key_id, role) for digest, key_id, role in rows}

        self._keys = await self._db.run(work)
        self._by_token = {}
        self._loaded_at = now

    def authenticate(self, authorization: str | None, method: str, needed: str) -> Principal:
        """The caller of `method`, which needs role `needed` (`required_role`), given its
        `authorization` header; or an error saying why not.

        Uses the keys as last read: call `refresh` first when `stale`.
        """
        if not self._keys:
            return ANONYMOUS
        principal = self._by_token.get(authorization or "")
        if principal is None:
            principal = self._principal(authorization)
            if len(self._by_token) < 10_000:
                self._by_token[authorization or ""] = principal
        if not has_role(principal, needed):
            raise PermissionDenied(
                f"API key {principal.key_id} has role {principal.role}; "
                f"{method.rsplit('/', 1)[-1]} needs {needed}"
            )
        return principal

    def _principal(self, authorization: str | None) -> Principal:
        """The key behind a header, hashed once per key and cache refresh."""
        if not authorization:
            raise Unauthenticated("missing API key: send `authorization: Bearer <key>`")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("malformed authorization header: expected `Bearer <key>`")
        principal = self._keys.get(hash_key(token.strip()))
        if principal is None:
            raise Unauthenticated("invalid or revoked API key")
        return principal
