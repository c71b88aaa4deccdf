"""report indexes: covering indexes for cost reports and latency percentiles

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 07:00:00.000000

Each ``llm-ledger costs --by model|run|template`` report walks one of these indexes in group
order, and ``--by day`` walks the created_at one a day at a time, reading only index
entries: no sort and no visit to the wide call_log rows (on SQLite, a 1M-row report goes
from several seconds to well under one). The latency index lets ``stats`` read exact
percentiles with ``ORDER BY latency_ms LIMIT 1 OFFSET k`` per model. See llm_ledger/reports.py.
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# What every cost report reads besides its group column: filters, then the summed columns.
COST_COLUMNS = [
    "created_at",
    "cache_status",
    "status",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "saved_usd",
]
INDEXES = {
    "ix_call_log_costs_by_model": ["model", *COST_COLUMNS],
    "ix_call_log_costs_by_run": ["run", *COST_COLUMNS],
    "ix_call_log_costs_by_template": ["template", *COST_COLUMNS],
    "ix_call_log_costs_by_day": COST_COLUMNS,
    "ix_call_log_model_latency": ["model", "latency_ms", "status", "cache_status", "created_at"],
}


def upgrade() -> None:
    for name, columns in INDEXES.items():
        op.create_index(name, "call_log", columns, unique=False)


def downgrade() -> None:
    for name in reversed(list(INDEXES)):
        op.drop_index(name, table_name="call_log")
