"""Judge order records keep their cache-write tokens (issue 18).

A judge order is stored as JSON on its verdict (`order_cheaper_first`,
`order_stronger_first`) or gate item (`order_candidate_first`, `order_replaced_first`):
the answer and the tokens and cost of its calls. From this revision an order also
records `cache_write_tokens`, so its cost can be computed again from its tokens at the
prices it must be charged at (a gate run's recorded prices; `judge/pricing.py`) instead
of the price table of the worker that made the call.

No column changes. Orders stored before this revision get `"cache_write_tokens": null`,
meaning "not recorded": the prompt-cache writes of those calls are unknown (the provider
priced them into `cost_usd` and did not keep the count), so such an order keeps the cost
it was charged. Downgrade removes the key from every stored order, the shape the code
before this revision wrote.

Revision ID: 0021_judge_order_cache_tokens
Revises: 0020_review_label_queue
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0021_judge_order_cache_tokens"
down_revision = "0020_review_label_queue"
branch_labels = None
depends_on = None

ORDER_COLUMNS = {
    "verdict": ("order_cheaper_first", "order_stronger_first"),
    "gate_item": ("order_candidate_first", "order_replaced_first"),
}


def _postgres_mark(column: str) -> str:
    # JSONB: `||` merges objects; a JSON null or a non-object order is left alone.
    return (
        f"{column} = {column} || '{{\"cache_write_tokens\": null}}'::jsonb "
        f"WHERE jsonb_typeof({column}) = 'object' AND NOT ({column} ? 'cache_write_tokens')"
    )


def _sqlite_mark(column: str) -> str:
    # json_set with an SQL NULL value stores JSON null; json_type(…, path) is NULL when absent.
    return (
        f"{column} = json_set({column}, '$.cache_write_tokens', NULL) "
        f"WHERE json_type({column}) = 'object' "
        f"AND json_type({column}, '$.cache_write_tokens') IS NULL"
    )


def _postgres_unmark(column: str) -> str:
    return (
        f"{column} = {column} - 'cache_write_tokens' "
        f"WHERE jsonb_typeof({column}) = 'object' AND {column} ? 'cache_write_tokens'"
    )


def _sqlite_unmark(column: str) -> str:
    return (
        f"{column} = json_remove({column}, '$.cache_write_tokens') "
        f"WHERE json_type({column}) = 'object' "
        f"AND json_type({column}, '$.cache_write_tokens') IS NOT NULL"
    )


def _update_orders(postgres: bool, mark: bool) -> None:
    if postgres:
        statement = _postgres_mark if mark else _postgres_unmark
    else:
        statement = _sqlite_mark if mark else _sqlite_unmark
    for table, columns in ORDER_COLUMNS.items():
        for column in columns:
            op.execute(f"UPDATE {table} SET {statement(column)}")  # noqa: S608 (fixed names)


def upgrade() -> None:
    _update_orders(op.get_bind().dialect.name == "postgresql", mark=True)


def downgrade() -> None:
    _update_orders(op.get_bind().dialect.name == "postgresql", mark=False)
