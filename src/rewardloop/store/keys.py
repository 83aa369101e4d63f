"""API keys with roles, stored hashed; and ``rewardloop keys create|list|revoke``.

    keys = ApiKeys(store)
    key = keys.create("alice", role="annotator")     # shown once: "rlk-…"; the database keeps only its SHA-256
    keys.authenticate(key)                            # → {"name": "alice", "role": "annotator", ...} or None

A key is 32 random bytes (``secrets.token_urlsafe``), so a plain SHA-256 is enough to store it: a slow password hash
exists to protect guessable secrets, and nobody can guess 256 random bits. Lookups are by the hash (UNIQUE index).
Roles (``models.ROLES``): ``client`` generates and posts feedback; ``annotator`` also uses the annotation pages;
``admin`` may do everything, including the admin page and export. See docs/guides/serving.md.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any, Literal

from pydantic import Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from rewardloop.config import ConfigError, Section
from rewardloop.store.models import ROLES, ApiKey, utcnow
from rewardloop.store.store import Store, StoreError, as_dict

KEY_PREFIX = "rlk-"
MAX_NAME = 100  # a holder's name goes into annotation idempotency keys (at most 200 characters)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeys:
    """Create, check, list and revoke the server's API keys (in ``store``'s database)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def create(self, name: str, role: str = "client") -> str:
        """A new key for ``name`` with ``role``; returns the key (the only time it is seen)."""
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME or ":" in name:
            raise StoreError(f"name: expected 1–{MAX_NAME} characters without ':', got {name!r}")
        if role not in ROLES:
            raise StoreError(f"role: {role!r} is not one of {', '.join(ROLES)}")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        with self.store._session() as s:
            s.add(ApiKey(name=name, role=role, key_hash=hash_key(key), prefix=key[:10]))
            try:
                s.commit()
            except IntegrityError as e:
                raise StoreError(f"name: an API key named {name!r} already exists (revoke it first)") from e
        return key

    def authenticate(self, key: str | None) -> dict[str, Any] | None:
        """The key's holder ``{name, role, ...}``, or None for a missing, unknown or revoked key."""
        if not key:
            return None
        with self.store._session() as s:
            row = s.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None)))
            return _public(row) if row is not None else None

    def list(self) -> list[dict[str, Any]]:
        with self.store._session() as s:
            return [_public(k) for k in s.scalars(select(ApiKey).order_by(ApiKey.id))]

    def revoke(self, name: str) -> None:
        """Revoke ``name``'s key and free the name for a new one (the row stays, renamed, for the record)."""
        with self.store._session() as s:
            row = s.scalar(select(ApiKey).where(ApiKey.name == name, ApiKey.revoked_at.is_(None)))
            if row is None:
                raise StoreError(f"name: no active API key named {name!r}")
            row.revoked_at = utcnow()
            row.name = f"{name}#revoked-{row.id}"
            s.commit()

    def any_active(self) -> bool:
        with self.store._session() as s:
            return s.scalar(select(ApiKey.id).where(ApiKey.revoked_at.is_(None)).limit(1)) is not None


def _public(row: ApiKey) -> dict[str, Any]:
    return {k: v for k, v in as_dict(row).items() if k != "key_hash"}


class KeysStore(Section):
    url: str = Field("sqlite:///rewardloop.db", description="the store's SQLAlchemy URL (as `rewardloop serve`)")


class KeysConfig(Section):
    """``rewardloop keys create --name alice --role annotator --store URL`` (prints the key once), ``keys list``,
    ``keys revoke --name alice``."""

    action: Literal["create", "list", "revoke"] = Field("list", description="create | list | revoke")
    store: KeysStore = KeysStore()
    name: str | None = Field(None, description="the key holder (create, revoke)")
    role: Literal["client", "annotator", "admin"] = Field("client", description="client | annotator | admin")


def run(cfg: KeysConfig, resume: bool = False) -> Any:
    """The ``rewardloop keys`` command (``resume`` is ignored)."""
    if cfg.action in ("create", "revoke") and not cfg.name:
        raise ConfigError(f"name: `rewardloop keys {cfg.action}` needs --name")
    with Store.open(cfg.store.url) as store:
        keys = ApiKeys(store)
        if cfg.action == "create":
            key = keys.create(cfg.name, cfg.role)
            print(f"API key for {cfg.name} ({cfg.role}) — shown once, store it now:\n{key}")
            return None
        if cfg.action == "revoke":
            keys.revoke(cfg.name)
            print(f"revoked the API key of {cfg.name}")
            return None
        rows = keys.list()
        for k in rows:
            state = "revoked" if k["revoked_at"] else "active"
            print(f"{k['name']:<30} {k['role']:<10} {k['prefix']}…  {state}  created {k['created_at']}")
        return None
