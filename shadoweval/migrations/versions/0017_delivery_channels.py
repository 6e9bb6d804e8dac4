"""Delivery rows reference their channel; no webhook URL (or its secret) is stored.

`alert_delivery.channel_name` names the configured channel a row goes to (`webhook`,
`slack`, `pagerduty`, `retrain`: one per kind in the settings); the sender resolves its
URL and secrets from the settings when it sends. `alert_delivery.url` keeps only the
redacted form shown by the API (scheme and host; path, query and credentials hidden),
and the URLs stored before this revision are redacted in place. Open deliveries stay
deliverable: they are sent to the URL now configured for their channel.

Downgrade drops the column but cannot bring the URLs back: code before this revision
would post open deliveries to the redacted URL, so finish or purge them first.

Revision ID: 0017_delivery_channels
Revises: 0016_pool_first_seen
Create Date: 2026-12-07
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import sqlalchemy as sa
from alembic import op

revision = "0017_delivery_channels"
down_revision = "0016_pool_first_seen"
branch_labels = None
depends_on = None

BATCH = 1000


def _redacted(url: str) -> str:
    """channels.redact_url as of this revision (a migration must not follow later code)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
    except ValueError:
        return "***"
    path = "/***" if parts.path not in ("", "/") else parts.path
    query = "***" if parts.query else ""
    return urlunsplit((parts.scheme, host, path, query, ""))


def upgrade() -> None:
    with op.batch_alter_table("alert_delivery") as batch:
        batch.add_column(sa.Column("channel_name", sa.String(100), nullable=True))
    op.execute(sa.text("UPDATE alert_delivery SET channel_name = channel"))
    with op.batch_alter_table("alert_delivery") as batch:
        batch.alter_column("channel_name", existing_type=sa.String(100), nullable=False)

    connection = op.get_bind()
    table = sa.table("alert_delivery", sa.column("id", sa.BigInteger), sa.column("url", sa.String))
    last_id = 0
    while True:
        rows = connection.execute(
            sa.select(table.c.id, table.c.url)
            .where(table.c.id > last_id)
            .order_by(table.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            return
        for row_id, url in rows:
            shown = _redacted(url or "")
            if shown != url:
                connection.execute(sa.update(table).where(table.c.id == row_id).values(url=shown))
        last_id = int(rows[-1][0])


def downgrade() -> None:
    with op.batch_alter_table("alert_delivery") as batch:
        batch.drop_column("channel_name")
