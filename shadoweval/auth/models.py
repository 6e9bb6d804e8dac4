"""API keys: the table (hashes only, never the key) and their public views."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, Field
from sqlalchemy import Column
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from shadoweval.db import JsonType, UtcDateTime


class Scope(StrEnum):
    """What a key may do. Scopes are independent: `admin` does not imply `read`."""

    INGEST = "ingest"  # post decisions and feedback
    READ = "read"  # every GET but the open operational endpoints
    OPERATE = "operate"  # acknowledge and silence alerts, start gates, post reviewer labels
    ADMIN = "admin"  # keys, alert rules, pool, deletion


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_key"

    id: int | None = SQLField(default=None, primary_key=True)
    prefix: str = SQLField(max_length=32, unique=True, index=True)
    key_hash: str = SQLField(max_length=64)
    name: str = SQLField(default="", max_length=200)
    scopes: list[str] = SQLField(default_factory=list, sa_column=Column(JsonType, nullable=False))
    created_at: datetime = SQLField(sa_column=Column(UtcDateTime(), nullable=False))
    expires_at: datetime | None = SQLField(default=None, sa_column=Column(UtcDateTime()))
    revoked_at: datetime | None = SQLField(default=None, sa_column=Column(UtcDateTime()))
    last_used_at: datetime | None = SQLField(default=None, sa_column=Column(UtcDateTime()))
    rotated_from: str | None = SQLField(default=None, max_length=32)


# Bounds that keep `now + timedelta(...)` inside what Python and both databases hold, with
# room to spare: a key can live 100 years, and an old key 1 year past its rotation.
MAX_KEY_LIFETIME_DAYS = 36_500
MAX_ROTATION_GRACE_HOURS = 24 * 366


def _printable(value: str) -> str:
    if any(ch < " " or ch == "\x7f" for ch in value):
        raise ValueError("must not contain control characters (NUL, newlines, …)")
    return value


class ApiKeyCreate(BaseModel):
    scopes: list[Scope] = Field(min_length=1, max_length=len(Scope))
    name: Annotated[str, AfterValidator(_printable)] = Field(default="", max_length=200)
    expires_in_days: float | None = Field(
        default=None, gt=0, le=MAX_KEY_LIFETIME_DAYS, allow_inf_nan=False
    )


class ApiKeyRotate(BaseModel):
    grace_hours: float = Field(
        default=0,
        ge=0,
        le=MAX_ROTATION_GRACE_HOURS,
        allow_inf_nan=False,
        description="How long the old key keeps working after rotation.",
    )


class ApiKeyPublic(BaseModel):
    """A key as listed: its prefix, never the key or its hash."""

    prefix: str
    name: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    rotated_from: str | None
    active: bool


class ApiKeyCreated(ApiKeyPublic):
    key: str = Field(description="The full key. Shown once; only its hash is stored.")


class Principal(BaseModel):
    """The caller a valid key identifies."""

    prefix: str
    scopes: frozenset[str]
