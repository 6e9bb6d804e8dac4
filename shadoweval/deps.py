"""Route dependencies shared by every stage: settings, the API-key scope check, and the
parameter types every read route uses, so that a bad parameter is a 422 naming it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Path, Query, Request
from pydantic import AfterValidator, AwareDatetime

from shadoweval.auth import service as auth_service
from shadoweval.auth.middleware import bearer_token_from_header
from shadoweval.auth.models import Principal, Scope
from shadoweval.config import Settings
from shadoweval.db import SessionDep
from shadoweval.exceptions import PermissionDenied
from shadoweval.paging import MAX_ROW_ID, check_instant


def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


def bearer_token(request: Request) -> str:
    return bearer_token_from_header(request.headers.get("authorization") or "")


def require_scope(scope: Scope) -> Callable[..., Principal]:
    """A dependency that lets a call through only with a valid key holding `scope`."""

    def check(request: Request, session: SessionDep) -> Principal:
        principal = auth_service.authenticate(session=session, key=bearer_token(request))
        request.state.key_prefix = principal.prefix
        if scope.value not in principal.scopes:
            raise PermissionDenied(
                f"API key {principal.prefix} lacks the `{scope.value}` scope this call needs",
                required_scope=scope.value,
            )
        return principal

    return check


IngestScope = Depends(require_scope(Scope.INGEST))
ReadScope = Depends(require_scope(Scope.READ))
OperateScope = Depends(require_scope(Scope.OPERATE))
AdminScope = Depends(require_scope(Scope.ADMIN))


# --- parameter types ----------------------------------------------------------------------
# Each rejects what the databases cannot bind (an instant outside years 1–9999 in UTC, an
# id past BIGINT) as a 422 naming the parameter, before a service or a stream starts.
# NUL characters and bytes that are not UTF-8 in any parameter are refused earlier, by
# `auth.middleware.RequestGuard`.

DecisionTime = Annotated[AwareDatetime, AfterValidator(check_instant)]
"""An RFC 3339 instant with its offset, within years 1–9999 in UTC; compared to decision ts."""

Since = Annotated[DecisionTime | None, Query(description="ts ≥ since (RFC 3339).")]
Until = Annotated[DecisionTime | None, Query(description="ts < until (RFC 3339).")]

RowId = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="A row id (1 to 2^63 − 1).")]
"""A row id in the path: out of range is a 422, an unknown id a 404."""

RowIdFilter = Annotated[
    int | None, Query(ge=1, le=MAX_ROW_ID, description="A row id (1 to 2^63 − 1).")
]


def utc_day(value: str) -> str:
    """`YYYY-MM-DD`, the form budget days are stored in."""
    try:
        return datetime.strptime(value, "%Y-%m-%d").date().isoformat()
    except ValueError as exc:
        raise ValueError("must be a UTC day, YYYY-MM-DD") from exc


UtcDay = Annotated[str, AfterValidator(utc_day)]
