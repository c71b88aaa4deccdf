"""report indexes: covering indexes for cost reports and latency percentiles

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 07:00:00.000000

Each ``llm-ledger costs --by model|run|template`` report walks one of these indexes in group
order, and ``--by day`` walks the created_at one a day at a time, reading only index
entries: no sort and no visit to the wide call_log rows (on SQLite, a 1M-row report goes
from several seconds to well under one). The latency index lets ``stats`` read exact
percentiles with ``ORDER BY latency_ms LIMIT 1 OFFSET k`` per model. See llm_ledger/reports.py.
The three older indexes they start with are dropped: every call paid to update them.
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


# Each is a prefix of a covering index above, so it only cost a write on every call.
SUBSUMED = {
    "ix_call_log_created_at": ["created_at"],
    "ix_call_log_model_created_at": ["model", "created_at"],
    "ix_call_log_run_created_at": ["run", "created_at"],
}


def upgrade() -> None:
    for name, columns in INDEXES.items():
        op.create_index(name, "call_log", columns, unique=False)
    for name in SUBSUMED:
        op.drop_index(name, table_name="call_log")


def downgrade() -> None:
    for name, columns in SUBSUMED.items():
        op.create_index(name, "call_log", columns, unique=False)
    for name in reversed(list(INDEXES)):
        op.drop_index(name, table_name="call_log")
