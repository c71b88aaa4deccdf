"""stored answers byte for byte: PostgreSQL keeps requests, answers and tags as json, not jsonb

Revision ID: 0006
Revises: 0003
Create Date: 2026-11-27 13:20:00.000000

``jsonb`` parses a document into its own binary form: it reorders object keys (shortest
first), so a cache hit on PostgreSQL returned the message's keys in another order than the
miss and than SQLite and MariaDB, and it refuses the escape ``\\u0000``, so a request or an
answer holding a NUL character could not be written at all (the call was paid, then
spooled, and recovery stopped at it). ``json`` stores the text the ledger wrote, as it was
written, on PostgreSQL as the ``JSON`` columns of SQLite and MariaDB do. Nothing in the
ledger relies on jsonb operators or indexes.

Other engines: no change. The views that read these columns are dropped and recreated
around the type change with the definitions they had (PostgreSQL will not change the type
of a column a view uses). Existing jsonb rows keep the key order jsonb gave them.
Downgrade fails on a row holding ``\\u0000`` (jsonb cannot hold it); delete or edit it first.
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

revision = "0006"
down_revision = "0003"
branch_labels = None
depends_on = None

COLUMNS = (("requests", "request"), ("responses", "response"), ("call_log", "tags"))
VIEWS = ("calls", "daily_usage", "model_costs", "cached_answers")


def _retype(to: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    definitions = {}
    for name in VIEWS:
        row = bind.execute(
            text(
                "SELECT pg_get_viewdef(c.oid) FROM pg_class c WHERE c.relname = :n AND c.relkind = 'v' AND pg_table_is_visible(c.oid)"
            ),
            {"n": name},
        ).first()
        if row is not None:
            definitions[name] = row[0]
    for name in reversed(VIEWS):
        if name in definitions:
            op.execute(f"DROP VIEW {name}")
    for table, column in COLUMNS:
        op.execute(
            f"ALTER TABLE {table} ALTER COLUMN {column} TYPE {to} USING {column}::text::{to}"
        )
    for name in VIEWS:
        if name in definitions:
            op.execute(f"CREATE VIEW {name} AS {definitions[name]}")


def upgrade() -> None:
    _retype("json")


def downgrade() -> None:
    _retype("jsonb")
