"""Route dependencies shared by every stage: settings, and the API-key scope check."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request

from shadoweval.auth import service as auth_service
from shadoweval.auth.models import Principal, Scope
from shadoweval.config import Settings
from shadoweval.db import SessionDep
from shadoweval.exceptions import AuthenticationFailed, PermissionDenied


def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise AuthenticationFailed("missing API key; send `Authorization: Bearer <key>`")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationFailed("malformed Authorization header; expected `Bearer <key>`")
    return token.strip()


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
