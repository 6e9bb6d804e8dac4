"""API keys: the table (hashes only, never the key) and their public views."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field
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


class ApiKeyCreate(BaseModel):
    scopes: list[Scope] = Field(min_length=1)
    name: str = Field(default="", max_length=200)
    expires_in_days: float | None = Field(default=None, gt=0)


class ApiKeyRotate(BaseModel):
    grace_hours: float = Field(
        default=0, ge=0, description="How long the old key keeps working after rotation."
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
