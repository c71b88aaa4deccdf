"""initial ledger schema: requests, responses, cache entries, audit log, tags, views

Revision ID: 0001
Revises:
Create Date: 2026-11-26 06:33:22.189163
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


# The analyst views. `date(ts)` means the same on SQLite, PostgreSQL and MariaDB.
CALL_COLUMNS = (
    "id, call_uuid, created_at, kind, api_type, endpoint_host, model, namespace, "
    "request_hash, slot, response_id, cache_status, status, attempts, latency_ms, "
    "prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, total_tokens, "
    "tokens_estimated, items_total, items_hit, error_type, error_message, cost_usd, "
    "saved_usd, cost_note, price_version, run, tags, template, library_version"
)
# Token sums count what was billed: a hit's row carries the tokens of the answer it served
# (what it would have cost), which the views leave out, as the cost reports do.
USAGE_COLUMNS = (
    "COUNT(*) AS calls, "
    "SUM(CASE WHEN cache_status = 'hit' THEN 1 ELSE 0 END) AS hits, "
    "SUM(CASE WHEN status = 'error' THEN 1 ELSE 0 END) AS errors, "
    "SUM(CASE WHEN cache_status <> 'hit' THEN prompt_tokens END) AS prompt_tokens, "
    "SUM(CASE WHEN cache_status <> 'hit' THEN completion_tokens END) AS completion_tokens, "
    "SUM(CASE WHEN cache_status <> 'hit' THEN total_tokens END) AS total_tokens, "
    "SUM(cost_usd) AS cost_usd, SUM(saved_usd) AS saved_usd"
)
VIEWS = {
    "calls": f"SELECT {CALL_COLUMNS} FROM call_log",
    "daily_usage": (
        f"SELECT date(created_at) AS day, model, {USAGE_COLUMNS} "
        "FROM call_log GROUP BY date(created_at), model"
    ),
    "model_costs": (
        f"SELECT model, {USAGE_COLUMNS}, AVG(latency_ms) AS avg_latency_ms, "
        "MIN(created_at) AS first_call, MAX(created_at) AS last_call FROM call_log GROUP BY model"
    ),
    "cached_answers": (
        "SELECT c.id AS id, c.namespace AS namespace, c.request_hash AS request_hash, "
        "c.slot AS slot, q.kind AS kind, q.model AS model, q.request AS request, "
        "r.response AS response, r.cost_usd AS cost_usd, c.created_at AS created_at, "
        "c.updated_at AS updated_at FROM cache_entries c "
        "JOIN requests q ON q.request_hash = c.request_hash "
        "JOIN responses r ON r.id = c.response_id"
    ),
}


def upgrade() -> None:
    op.create_table(
        "requests",
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column(
            "request",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "created_at",
            sa.DateTime()
            .with_variant(mysql.DATETIME(fsp=6), "mariadb")
            .with_variant(mysql.DATETIME(fsp=6), "mysql"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("request_hash", name=op.f("pk_requests")),
    )
    op.create_table(
        "responses",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("response_hash", sa.String(length=64), nullable=False),
        sa.Column(
            "response",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("prompt_tokens", sa.Integer(), nullable=True),
        sa.Column("completion_tokens", sa.Integer(), nullable=True),
        sa.Column("cached_tokens", sa.Integer(), nullable=True),
        sa.Column("reasoning_tokens", sa.Integer(), nullable=True),
        sa.Column("total_tokens", sa.Integer(), nullable=True),
        sa.Column("tokens_estimated", sa.Boolean(), nullable=False),
        sa.Column("cost_usd", sa.Numeric(precision=20, scale=10), nullable=True),
        sa.Column("cost_note", sa.Text(), nullable=True),
        sa.Column("price_version", sa.String(length=64), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime()
            .with_variant(mysql.DATETIME(fsp=6), "mariadb")
            .with_variant(mysql.DATETIME(fsp=6), "mysql"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["request_hash"],
            ["requests.request_hash"],
            name=op.f("fk_responses_request_hash_requests"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_responses")),
    )
    with op.batch_alter_table("responses", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_responses_request_hash"), ["request_hash"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_responses_response_hash"), ["response_hash"], unique=False
        )

    op.create_table(
        "cache_entries",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "namespace",
            sa.String(length=191).with_variant(
                mysql.VARCHAR(length=191, collation="utf8mb4_bin"), "mysql", "mariadb"
            ),
            nullable=False,
        ),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column(
            "response_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "created_at",
            sa.DateTime()
            .with_variant(mysql.DATETIME(fsp=6), "mariadb")
            .with_variant(mysql.DATETIME(fsp=6), "mysql"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime()
            .with_variant(mysql.DATETIME(fsp=6), "mariadb")
            .with_variant(mysql.DATETIME(fsp=6), "mysql"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["request_hash"],
            ["requests.request_hash"],
            name=op.f("fk_cache_entries_request_hash_requests"),
        ),
        sa.ForeignKeyConstraint(
            ["response_id"], ["responses.id"], name=op.f("fk_cache_entries_response_id_responses")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cache_entries")),
        sa.UniqueConstraint(
            "namespace",
            "request_hash",
            "slot",
            name=op.f("uq_cache_entries_namespace_request_hash_slot"),
        ),
    )
    with op.batch_alter_table("cache_entries", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_cache_entries_response_id"), ["response_id"], unique=False
        )

    op.create_table(
        "call_log",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("call_uuid", sa.String(length=36), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime()
            .with_variant(mysql.DATETIME(fsp=6), "mariadb")
            .with_variant(mysql.DATETIME(fsp=6), "mysql"),
            nullable=False,
        ),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("api_type", sa.String(length=16), nullable=False),
        sa.Column("endpoint_host", sa.String(length=255), nullable=True),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column(
            "namespace",
            sa.String(length=191).with_variant(
                mysql.VARCHAR(length=191, collation="utf8mb4_bin"), "mysql", "mariadb"
            ),
            nullable=False,
        ),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=True),
        sa.Column(
            "response_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("cache_status", sa.String(length=8), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("latency_ms", sa.Double(), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=True),
        sa.Column("completion_tokens", sa.Integer(), nullable=True),
        sa.Column("cached_tokens", sa.Integer(), nullable=True),
        sa.Column("reasoning_tokens", sa.Integer(), nullable=True),
        sa.Column("total_tokens", sa.Integer(), nullable=True),
        sa.Column("tokens_estimated", sa.Boolean(), nullable=False),
        sa.Column("items_total", sa.Integer(), nullable=True),
        sa.Column("items_hit", sa.Integer(), nullable=True),
        sa.Column("error_type", sa.String(length=100), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("cost_usd", sa.Numeric(precision=20, scale=10), nullable=True),
        sa.Column("saved_usd", sa.Numeric(precision=20, scale=10), nullable=True),
        sa.Column("cost_note", sa.Text(), nullable=True),
        sa.Column("price_version", sa.String(length=64), nullable=True),
        sa.Column("run", sa.String(length=200), nullable=True),
        sa.Column("template", sa.String(length=400), nullable=True),
        sa.Column(
            "tags",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("library_version", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_hash"],
            ["requests.request_hash"],
            name=op.f("fk_call_log_request_hash_requests"),
        ),
        sa.ForeignKeyConstraint(
            ["response_id"], ["responses.id"], name=op.f("fk_call_log_response_id_responses")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_call_log")),
        sa.UniqueConstraint("call_uuid", name=op.f("uq_call_log_call_uuid")),
    )
    with op.batch_alter_table("call_log", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_call_log_created_at"), ["created_at"], unique=False)
        batch_op.create_index("ix_call_log_model_created_at", ["model", "created_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_call_log_request_hash"), ["request_hash"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_call_log_response_id"), ["response_id"], unique=False)
        batch_op.create_index("ix_call_log_run_created_at", ["run", "created_at"], unique=False)

    op.create_table(
        "call_tags",
        sa.Column("call_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("value", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(
            ["call_id"],
            ["call_log.id"],
            name=op.f("fk_call_tags_call_id_call_log"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("call_id", "name", name=op.f("pk_call_tags")),
    )
    with op.batch_alter_table("call_tags", schema=None) as batch_op:
        batch_op.create_index("ix_call_tags_name_value", ["name", "value"], unique=False)
    for name, select in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {select}")


def downgrade() -> None:
    for name in reversed(list(VIEWS)):
        op.execute(f"DROP VIEW IF EXISTS {name}")
    for table in ("call_tags", "call_log", "cache_entries", "responses", "requests"):
        op.drop_table(table)
