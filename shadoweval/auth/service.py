"""API key service: create, list, revoke, rotate, and authenticate keys.

A key reads `sek_<prefix>_<secret>`. The prefix identifies the key in listings
and logs; only a SHA-256 hash of the whole key is stored. Keys are 256-bit
random, so a fast hash is safe here (no password stretching is needed).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from shadoweval.auth.models import ApiKey, ApiKeyCreated, ApiKeyPublic, Principal, Scope
from shadoweval.db import utcnow
from shadoweval.exceptions import AuthenticationFailed, InvalidRequest, NotFound

KEY_MARKER = "sek"
# Writing last_used_at on every request would turn each read into a write.
_LAST_USED_RESOLUTION = timedelta(minutes=1)


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _is_active(key: ApiKey, now: datetime) -> bool:
    return key.revoked_at is None and (key.expires_at is None or key.expires_at > now)


def to_public(key: ApiKey, now: datetime | None = None) -> ApiKeyPublic:
    return ApiKeyPublic(
        prefix=key.prefix,
        name=key.name,
        scopes=list(key.scopes),
        created_at=key.created_at,
        expires_at=key.expires_at,
        revoked_at=key.revoked_at,
        last_used_at=key.last_used_at,
        rotated_from=key.rotated_from,
        active=_is_active(key, now or utcnow()),
    )


def create_key(
    *,
    session: Session,
    scopes: list[Scope],
    name: str = "",
    expires_in_days: float | None = None,
    rotated_from: str | None = None,
) -> ApiKeyCreated:
    now = utcnow()
    created = _new_key(session, scopes=scopes, name=name, now=now, expires_in_days=expires_in_days)
    created.row.rotated_from = rotated_from
    session.commit()
    return created.answer(now)


@dataclass
class _NewKey:
    """A key added to the session but not committed, with the secret to return once."""

    row: ApiKey
    key: str

    def answer(self, now: datetime) -> ApiKeyCreated:
        return ApiKeyCreated(key=self.key, **to_public(self.row, now).model_dump())


def _new_key(
    session: Session,
    *,
    scopes: list[Scope],
    name: str,
    now: datetime,
    expires_in_days: float | None = None,
) -> _NewKey:
    if not scopes:
        raise InvalidRequest("a key needs at least one scope", allowed=[s.value for s in Scope])
    try:
        expires_at = now + timedelta(days=expires_in_days) if expires_in_days else None
    except OverflowError as exc:  # the route bounds it; a caller in code may not
        raise InvalidRequest(
            "expires_in_days is out of range", loc=["body", "expires_in_days"]
        ) from exc
    prefix = f"{KEY_MARKER}_{secrets.token_hex(4)}"
    key = f"{prefix}_{secrets.token_urlsafe(32)}"
    row = ApiKey(
        prefix=prefix,
        key_hash=_hash(key),
        name=name,
        scopes=sorted({scope.value for scope in scopes}),
        created_at=now,
        expires_at=expires_at,
    )
    session.add(row)
    return _NewKey(row=row, key=key)


def list_keys(*, session: Session, include_inactive: bool = False) -> list[ApiKeyPublic]:
    now = utcnow()
    keys = session.exec(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)).all()  # type: ignore[arg-type]
    return [to_public(k, now) for k in keys if include_inactive or _is_active(k, now)]


def _get_by_prefix(session: Session, prefix: str) -> ApiKey:
    key = session.exec(select(ApiKey).where(ApiKey.prefix == prefix)).first()
    if key is None:
        raise NotFound(f"no API key with prefix {prefix}")
    return key


def revoke_key(*, session: Session, prefix: str) -> ApiKeyPublic:
    key = _get_by_prefix(session, prefix)
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        session.add(key)
        session.commit()
    _note_revocation()
    return to_public(key)


def rotate_key(*, session: Session, prefix: str, grace_hours: float = 0) -> ApiKeyCreated:
    """A new key with the same name and scopes; the old one stops working after the grace period.

    One transaction: the new key is committed together with the old key's end, so a
    failure anywhere before the commit leaves no active key whose secret was never shown.
    """
    old = _get_by_prefix(session, prefix)
    now = utcnow()
    if not _is_active(old, now):
        raise InvalidRequest(f"API key {prefix} is revoked or expired and cannot be rotated")
    try:
        ends = now + timedelta(hours=grace_hours) if grace_hours > 0 else None
    except OverflowError as exc:
        raise InvalidRequest("grace_hours is out of range", loc=["body", "grace_hours"]) from exc
    try:
        new = _new_key(session, scopes=[Scope(s) for s in old.scopes], name=old.name, now=now)
        new.row.rotated_from = old.prefix
        if ends is not None:
            old.expires_at = ends if old.expires_at is None else min(old.expires_at, ends)
        else:
            old.revoked_at = now
        session.add(old)
        session.commit()
    except BaseException:
        session.rollback()
        raise
    _note_revocation()
    return new.answer(now)


def authenticate(*, session: Session, key: str) -> Principal:
    """The principal for a presented key, or AuthenticationFailed saying why."""
    return _authenticate(session, key)[0]


def _authenticate(session: Session, key: str) -> tuple[Principal, datetime | None]:
    parts = key.split("_")
    if len(parts) < 3 or parts[0] != KEY_MARKER:
        raise AuthenticationFailed("malformed API key; expected `sek_<prefix>_<secret>`")
    prefix = f"{parts[0]}_{parts[1]}"
    row = session.exec(select(ApiKey).where(ApiKey.prefix == prefix)).first()
    if row is None or not hmac.compare_digest(row.key_hash, _hash(key)):
        raise AuthenticationFailed("invalid API key")
    now = utcnow()
    if row.revoked_at is not None:
        raise AuthenticationFailed(f"API key {prefix} was revoked")
    if row.expires_at is not None and row.expires_at <= now:
        raise AuthenticationFailed(f"API key {prefix} has expired")
    if row.last_used_at is None or now - row.last_used_at > _LAST_USED_RESOLUTION:
        row.last_used_at = now
        session.add(row)
        session.commit()
    return Principal(prefix=prefix, scopes=frozenset(row.scopes)), row.expires_at


# --- key cache ----------------------------------------------------------------------------

# Bumped by every revocation and rotation in this process: caches drop what they hold, so a
# key revoked through this process stops working at once; through another process, within
# a cache's `ttl_s`.
_revocation_generation = 0
_revocation_lock = threading.Lock()


def _note_revocation() -> None:
    global _revocation_generation
    with _revocation_lock:
        _revocation_generation += 1


class KeyCache:
    """Principals of keys authenticated in the last `ttl_s` seconds, so that hot paths
    (ingest) skip the key lookup and its threadpool hop.

    Bound: a key revoked or expired elsewhere keeps working here for at most `ttl_s`
    seconds (never past its own expiry); `ttl_s = 0` turns the cache off. Entries are
    keyed by the key's SHA-256, so no secret is held in memory beyond the request.
    """

    def __init__(self, ttl_s: float, *, max_entries: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: dict[str, tuple[Principal, float]] = {}
        self._generation = _revocation_generation
        self._lock = threading.Lock()

    def get(self, key: str) -> Principal | None:
        if self.ttl_s <= 0:
            return None
        digest = _hash(key)
        with self._lock:
            if self._generation != _revocation_generation:
                self._entries.clear()
                self._generation = _revocation_generation
            entry = self._entries.get(digest)
            if entry is None:
                return None
            if entry[1] <= time.monotonic():
                del self._entries[digest]
                return None
            return entry[0]

    def authenticate(self, *, engine: Engine, key: str) -> Principal:
        """The principal from the cache, or from the database (then cached)."""
        principal = self.get(key)
        if principal is not None:
            return principal
        generation = _revocation_generation
        with Session(engine, expire_on_commit=False) as session:
            principal, expires_at = _authenticate(session, key)
        if self.ttl_s <= 0:
            return principal
        valid_for = self.ttl_s
        if expires_at is not None:
            valid_for = min(valid_for, (expires_at - utcnow()).total_seconds())
        with self._lock:
            # A revocation while the key was being read: do not cache what may be stale.
            if generation == _revocation_generation == self._generation and valid_for > 0:
                if len(self._entries) >= self.max_entries:
                    self._entries.clear()
                self._entries[_hash(key)] = (principal, time.monotonic() + valid_for)
        return principal
