"""Admin routes for API keys."""

from __future__ import annotations

from fastapi import APIRouter, Query, status

from shadoweval.auth import service
from shadoweval.auth.models import ApiKeyCreate, ApiKeyCreated, ApiKeyPublic, ApiKeyRotate
from shadoweval.db import SessionDep
from shadoweval.deps import AdminScope

router = APIRouter(prefix="/v1/keys", tags=["keys"], dependencies=[AdminScope])


@router.get("")
def list_keys(
    session: SessionDep, include_inactive: bool = Query(default=False)
) -> list[ApiKeyPublic]:
    return service.list_keys(session=session, include_inactive=include_inactive)


@router.post("", status_code=status.HTTP_201_CREATED)
def create_key(body: ApiKeyCreate, session: SessionDep) -> ApiKeyCreated:
    return service.create_key(
        session=session, scopes=body.scopes, name=body.name, expires_in_days=body.expires_in_days
    )


@router.delete("/{prefix}")
def revoke_key(prefix: str, session: SessionDep) -> ApiKeyPublic:
    return service.revoke_key(session=session, prefix=prefix)


@router.post("/{prefix}/rotate", status_code=status.HTTP_201_CREATED)
def rotate_key(prefix: str, body: ApiKeyRotate, session: SessionDep) -> ApiKeyCreated:
    return service.rotate_key(session=session, prefix=prefix, grace_hours=body.grace_hours)
