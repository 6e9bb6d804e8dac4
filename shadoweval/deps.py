"""Route dependencies shared by every stage: settings, the API-key scope check, and the
parameter types every read route uses, so that a bad parameter is a 422 naming it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Path, Query, Request
from pydantic import AfterValidator, AwareDatetime
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from shadoweval.auth import service as auth_service
from shadoweval.auth.middleware import bearer_token_from_header
from shadoweval.auth.models import Principal, Scope
from shadoweval.config import Settings
from shadoweval.db import SessionDep, get_session
from shadoweval.exceptions import PermissionDenied
from shadoweval.paging import MAX_ROW_ID, check_instant

log = logging.getLogger(__name__)


def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


def bearer_token(request: Request) -> str:
    return bearer_token_from_header(request.headers.get("authorization") or "")


def require_scope(scope: Scope) -> Callable[..., Principal]:
    """A dependency that lets a call through only with a valid key holding `scope`."""

    def check(request: Request, session: SessionDep) -> Principal:
        principal = _authenticate_on_primary(request, session)
        request.state.key_prefix = principal.prefix
        if scope.value not in principal.scopes:
            raise PermissionDenied(
                f"API key {principal.prefix} lacks the `{scope.value}` scope this call needs",
                required_scope=scope.value,
            )
        return principal

    return check


def _authenticate_on_primary(request: Request, session: Session) -> Principal:
    """The key checked on the primary, even where the route reads from the replica: a key
    created or revoked a moment ago must count at once, and the check writes
    `last_used_at`."""
    primary: Engine = request.app.state.engine
    if session.get_bind() is primary:
        return auth_service.authenticate(session=session, key=bearer_token(request))
    with Session(primary, expire_on_commit=False) as on_primary:
        return auth_service.authenticate(session=on_primary, key=bearer_token(request))


# --- the read replica ----------------------------------------------------------------------
# Routes (by path template) whose every read may lag the primary by the replica's lag: the
# analytics and list reads the dashboard makes. Anything else stays on the primary, and a
# new route does too until it is listed here. Kept on the primary on purpose: routes that
# write while reading (`/v1/review/queue` assigns pairs; the key check writes
# `last_used_at`), and reads a client makes right after its own write — keys, alert rules,
# the pool (PUT then GET), `/v1/alerts` (the dashboard's acknowledge and silence re-read
# it), single gates and decisions fetched by id after their POST. The training export
# streams through its own sessions on `app.state.engine`, so it is not listed.
REPLICA_READ_ROUTES = frozenset(
    {
        "/v1/segments",
        "/v1/segments/{segment}/estimates",
        "/v1/calibration",
        "/v1/economics",
        "/v1/spend",
        "/v1/sessions",
        "/v1/thresholds",
        "/v1/judge/quality",
        "/v1/judge/agreement",
        "/v1/judge/timeline",
        "/v1/judge/pairs",
        "/v1/sampling",
        "/v1/sampling/periods",
        "/v1/budget",
        "/v1/events",
        "/v1/drift",
        "/v1/drift/{report_id}/report.html",
        "/v1/verdicts",
        "/v1/verdicts/{verdict_id}",
        "/v1/shadow-runs",
        "/v1/decisions",
        "/v1/gates",
        "/v1/alert-deliveries",
        "/v1/alert-deliveries/{delivery_id}/attempts",
    }
)


def reads_from_replica(request: Request) -> bool:
    """A GET of a route in REPLICA_READ_ROUTES."""
    route = request.scope.get("route")
    return request.method == "GET" and getattr(route, "path", None) in REPLICA_READ_ROUTES


def get_read_session(request: Request) -> Iterator[Session]:
    """A session on the read engine (`app.state.read_engine`: the replica when
    `SHADOWEVAL_DATABASE_READ_URL` is set, else the primary). Read-only: never commit on it."""
    session = Session(request.app.state.read_engine, expire_on_commit=False)
    try:
        yield session
    finally:
        try:
            session.close()
        except SQLAlchemyError as exc:  # as db.get_session: the answer is already sent
            log.warning("closing a read session failed: %s", str(exc).splitlines()[0])


ReadSessionDep = Annotated[Session, Depends(get_read_session)]


def get_routed_session(request: Request) -> Iterator[Session]:
    """The session of a route's `SessionDep` once a read URL is set (the app installs it
    as the override of `db.get_session`): the read engine for REPLICA_READ_ROUTES, the
    primary for everything else. The key check stays on the primary either way."""
    if reads_from_replica(request):
        yield from get_read_session(request)
    else:
        yield from get_session(request)


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
