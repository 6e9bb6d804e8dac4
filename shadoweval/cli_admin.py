"""`shadoweval db` (migrations) and `shadoweval keys` (API keys): the administrator's groups."""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Annotated

import typer

from shadoweval.cli_common import HELP, fail
from shadoweval.cli_run import _settings

if TYPE_CHECKING:
    from sqlmodel import Session

db_app = typer.Typer(help="Database migrations.", **HELP)
keys_app = typer.Typer(help="API keys (stored hashed, listed by prefix).", **HELP)


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Migrate the database to the latest schema (or to REVISION)."""
    from shadoweval.db import upgrade_database

    settings = _settings()
    upgrade_database(settings, revision)
    typer.echo(f"database migrated to {revision}")


@db_app.command("downgrade")
def db_downgrade(revision: str = typer.Argument(..., help="Target revision, e.g. base.")) -> None:
    """Migrate the database down to REVISION."""
    from alembic import command

    from shadoweval.db import alembic_config

    settings = _settings()
    command.downgrade(alembic_config(settings.resolved_database_url), revision)
    typer.echo(f"database migrated down to {revision}")


@db_app.command("current")
def db_current() -> None:
    """Print the database's revision and the revision this code expects."""
    from shadoweval.db import create_db_engine, current_revision, head_revision

    engine = create_db_engine(_settings())
    typer.echo(f"current: {current_revision(engine) or 'none'}  expected: {head_revision()}")


def _key_service_session() -> AbstractContextManager[Session]:
    from shadoweval.db import check_database_ready, create_db_engine, session_scope
    from shadoweval.exceptions import DatabaseNotReady

    engine = create_db_engine(_settings())
    try:
        check_database_ready(engine)
    except DatabaseNotReady as error:
        raise fail(error.message) from error
    return session_scope(engine)


@keys_app.command("create")
def keys_create(
    scope: Annotated[
        list[str], typer.Option("--scope", help="ingest, read, operate or admin; repeatable.")
    ],
    name: Annotated[str, typer.Option(help="What the key is for.")] = "",
    expires_in_days: Annotated[float | None, typer.Option(help="Expire after N days.")] = None,
) -> None:
    """Create a key and print it once (only its hash is stored)."""
    from shadoweval.auth import service
    from shadoweval.auth.models import Scope

    try:
        scopes = [Scope(s) for s in scope]
    except ValueError as error:
        raise fail(f"{error}; scopes are {', '.join(s.value for s in Scope)}", 2) from error
    with _key_service_session() as session:
        created = service.create_key(
            session=session, scopes=scopes, name=name, expires_in_days=expires_in_days
        )
    typer.echo(created.key)
    typer.echo(f"prefix {created.prefix}, scopes {','.join(created.scopes)}", err=True)


@keys_app.command("list")
def keys_list(
    include_inactive: Annotated[
        bool, typer.Option("--all", help="Include revoked/expired.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
) -> None:
    """List keys by prefix."""
    from shadoweval.auth import service

    with _key_service_session() as session:
        keys = service.list_keys(session=session, include_inactive=include_inactive)
    if as_json:
        typer.echo(json.dumps([k.model_dump(mode="json") for k in keys], indent=2))
        return
    typer.echo(f"{'PREFIX':<14} {'SCOPES':<28} {'ACTIVE':<7} {'CREATED':<20} NAME")
    for k in keys:
        created = k.created_at.strftime("%Y-%m-%d %H:%M")
        typer.echo(
            f"{k.prefix:<14} {','.join(k.scopes):<28} {k.active!s:<7} {created:<20} {k.name}"
        )


@keys_app.command("revoke")
def keys_revoke(prefix: str) -> None:
    """Revoke a key at once."""
    from shadoweval.auth import service
    from shadoweval.exceptions import NotFound

    try:
        with _key_service_session() as session:
            service.revoke_key(session=session, prefix=prefix)
    except NotFound as error:
        raise fail(error.message) from error
    typer.echo(f"revoked {prefix}")


@keys_app.command("rotate")
def keys_rotate(
    prefix: str,
    grace_hours: Annotated[float, typer.Option(help="Hours the old key keeps working.")] = 0,
) -> None:
    """Replace a key with a new one of the same scopes; print the new key."""
    from shadoweval.auth import service
    from shadoweval.exceptions import InvalidRequest, NotFound

    try:
        with _key_service_session() as session:
            created = service.rotate_key(session=session, prefix=prefix, grace_hours=grace_hours)
    except (NotFound, InvalidRequest) as error:
        raise fail(error.message) from error
    typer.echo(created.key)
    typer.echo(f"prefix {created.prefix} replaces {prefix}", err=True)
