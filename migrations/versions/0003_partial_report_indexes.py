"""partial report indexes: a call pays only for the indexes its reports need

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 10:30:00.000000

Every audit row was written into eight B-trees; each is one more page per commit. Three
of the report indexes of 0002 become partial, on SQLite and PostgreSQL (MariaDB has no
partial indexes and keeps them whole):

- ``ix_call_log_costs_by_run`` only holds calls with a run, and
  ``ix_call_log_costs_by_template`` only calls with a template: a program that does not
  use runs or templates no longer writes them. ``costs --run X`` still reads the index;
  ``costs --by run`` over calls mostly without a run reads the table (0.5-0.7 s at 1M).
- ``ix_call_log_model_latency`` only holds calls that were not cache hits: the latency
  percentiles of ``stats`` are over answered API calls, and a hit (the most frequent
  call) no longer writes it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

COST_COLUMNS = [
    "created_at",
    "cache_status",
    "status",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "saved_usd",
]
PARTIAL = {
    "ix_call_log_costs_by_run": (["run", *COST_COLUMNS], "run IS NOT NULL"),
    "ix_call_log_costs_by_template": (["template", *COST_COLUMNS], "template IS NOT NULL"),
    "ix_call_log_model_latency": (
        ["model", "latency_ms", "status", "cache_status", "created_at"],
        "cache_status <> 'hit'",
    ),
}


def _where(condition: str | None) -> dict[str, object]:
    if condition is None:
        return {}
    return {"sqlite_where": sa.text(condition), "postgresql_where": sa.text(condition)}


def _rebuild(partial: bool) -> None:
    if op.get_context().dialect.name not in ("sqlite", "postgresql"):
        return  # MariaDB/MySQL: no partial indexes, the full ones of 0002 stay
    for name, (columns, condition) in PARTIAL.items():
        op.drop_index(name, table_name="call_log")
        op.create_index(
            name, "call_log", columns, unique=False, **_where(condition if partial else None)
        )


def upgrade() -> None:
    _rebuild(partial=True)


def downgrade() -> None:
    _rebuild(partial=False)
