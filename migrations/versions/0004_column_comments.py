"""column comments: every table column carries its meaning, as COMMENT on PostgreSQL and MariaDB

Revision ID: 0004
Revises: 0006
Create Date: 2026-11-27 13:45:00.000000

The meanings docs/schema.md gives each column now live on the columns themselves
(``comment=`` in models.py), so ``psql \\d+ call_log`` and MariaDB's ``SHOW FULL COLUMNS``
show them. SQLite keeps no comments: nothing happens there.

The comments (and, for MariaDB's ``MODIFY``, which restates a column whole, the columns'
types) are frozen here as they were at this revision: a later change of a meaning is a
new migration, never an edit of this one.
"""

from __future__ import annotations

from typing import NamedTuple

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0004"
down_revision = "0006"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
JSON_TYPE = sa.JSON()  # json on PostgreSQL too since 0006
NAMESPACE = sa.String(191).with_variant(
    mysql.VARCHAR(191, collation="utf8mb4_bin"), "mysql", "mariadb"
)
MONEY = sa.Numeric(20, 10)


class Column(NamedTuple):
    name: str
    type: sa.types.TypeEngine  # type: ignore[type-arg]
    nullable: bool
    autoincrement: bool
    comment: str


COMMENTS: dict[str, list[Column]] = {
    "requests": [
        Column(
            "request_hash",
            sa.String(64),
            False,
            False,
            (
                "SHA-256 (64 hex chars) of the canonical request JSON (sorted keys, "
                "compact); with namespace and slot, the cache key."
            ),
        ),
        Column("kind", sa.String(16), False, False, "`chat` or `embedding`."),
        Column("model", sa.String(200), False, False, "Model, or Azure deployment, as requested."),
        Column(
            "request",
            JSON_TYPE,
            False,
            False,
            (
                "The canonical request (JSON): kind, model, messages or input, params. "
                "What was hashed, unless the client's `redact` hook changed it before "
                "storing."
            ),
        ),
        Column(
            "created_at",
            TIMESTAMP,
            False,
            False,
            ("When the request was first stored (naive UTC timestamp, microseconds)."),
        ),
    ],
    "responses": [
        Column("id", ID, False, True, "Surrogate key."),
        Column(
            "request_hash",
            sa.String(64),
            False,
            False,
            "The request answered (requests.request_hash).",
        ),
        Column(
            "response_hash",
            sa.String(64),
            False,
            False,
            (
                "SHA-256 of the canonical response JSON: the same answer's identity "
                "across ledgers (export, import, copy)."
            ),
        ),
        Column(
            "response",
            JSON_TYPE,
            False,
            False,
            (
                "The answer as the SDK returned it (JSON): a `chat.completion`, or an "
                "embedding `list`."
            ),
        ),
        Column(
            "prompt_tokens",
            sa.Integer(),
            True,
            False,
            "Input tokens billed (tokens); includes cached_tokens.",
        ),
        Column(
            "completion_tokens",
            sa.Integer(),
            True,
            False,
            ("Output tokens billed (tokens); includes reasoning_tokens; 0 for embeddings."),
        ),
        Column(
            "cached_tokens",
            sa.Integer(),
            True,
            False,
            (
                "Input tokens read from OpenAI's prompt cache (tokens), billed at the "
                "cached-input price."
            ),
        ),
        Column(
            "reasoning_tokens",
            sa.Integer(),
            True,
            False,
            ("Hidden reasoning tokens of reasoning models (tokens), part of completion_tokens."),
        ),
        Column(
            "total_tokens", sa.Integer(), True, False, "prompt_tokens + completion_tokens (tokens)."
        ),
        Column(
            "tokens_estimated",
            sa.Boolean(),
            False,
            False,
            (
                "True when the token counts were counted locally (tiktoken) because the"
                " API reported none, or split between the items of an embedding batch."
            ),
        ),
        Column(
            "cost_usd",
            MONEY,
            True,
            False,
            ("What this answer cost (USD); NULL when it could not be priced (cost_note says why)."),
        ),
        Column(
            "cost_note",
            sa.Text(),
            True,
            False,
            "Why cost_usd is NULL, or how the model was priced.",
        ),
        Column(
            "price_version",
            sa.String(64),
            True,
            False,
            (
                "The price table behind cost_usd, e.g. `genai-prices 0.2.3`, or "
                "`custom` (LLM_LEDGER_PRICES)."
            ),
        ),
        Column(
            "created_at",
            TIMESTAMP,
            False,
            False,
            "When the answer was stored (naive UTC timestamp, microseconds).",
        ),
    ],
    "cache_entries": [
        Column("id", ID, False, True, "Surrogate key."),
        Column(
            "namespace",
            NAMESPACE,
            False,
            False,
            (
                "Cache namespace, `''` by default (scope(namespace=...), "
                "LLM_LEDGER_NAMESPACE): separate caches in one ledger."
            ),
        ),
        Column("request_hash", sa.String(64), False, False, "The request (requests.request_hash)."),
        Column(
            "slot",
            sa.Integer(),
            False,
            False,
            (
                "Sample slot (count from 0): the k-th identical sampled request "
                "(temperature > 0 or none sent, or n > 1) of a run gets slot k, so a re-run replays "
                "the same sequence. 0 for deterministic requests."
            ),
        ),
        Column(
            "response_id",
            ID,
            False,
            False,
            "The answer served now (responses.id); refresh repoints it.",
        ),
        Column(
            "created_at",
            TIMESTAMP,
            False,
            False,
            "When the entry was created (naive UTC timestamp, microseconds).",
        ),
        Column(
            "updated_at",
            TIMESTAMP,
            False,
            False,
            (
                "When it last got a new answer (naive UTC timestamp, microseconds); "
                "max_age is measured from here."
            ),
        ),
    ],
    "call_log": [
        Column("id", ID, False, True, "Surrogate key, increasing in insertion order."),
        Column(
            "call_uuid",
            sa.String(36),
            False,
            False,
            "UUID4 of the call: spool recovery writes each call exactly once.",
        ),
        Column(
            "created_at",
            TIMESTAMP,
            False,
            False,
            "When the call was made (naive UTC timestamp, microseconds).",
        ),
        Column("kind", sa.String(16), False, False, "`chat` or `embedding`."),
        Column(
            "api_type",
            sa.String(16),
            False,
            False,
            "`openai` or `azure`: the client that made the call.",
        ),
        Column(
            "endpoint_host",
            sa.String(255),
            True,
            False,
            (
                "host:port of the API endpoint, when the client had been built; NULL "
                "otherwise (e.g. a hit before any API call in the process)."
            ),
        ),
        Column("model", sa.String(200), False, False, "Model, or Azure deployment, as requested."),
        Column(
            "namespace",
            NAMESPACE,
            False,
            False,
            "Cache namespace of the call (see cache_entries.namespace).",
        ),
        Column(
            "request_hash",
            sa.String(64),
            False,
            False,
            (
                "The request (requests.request_hash); for an embedding batch, the whole"
                " batch's request."
            ),
        ),
        Column("slot", sa.Integer(), True, False, "Sample slot used (see cache_entries.slot)."),
        Column(
            "response_id",
            ID,
            True,
            False,
            (
                "The answer served or received (responses.id); NULL for errors, "
                "refusals and embedding batches of several texts (each text has its own"
                " answer)."
            ),
        ),
        Column(
            "cache_status",
            sa.String(8),
            False,
            False,
            (
                "`hit` (answered from the ledger), `miss` (looked up, nothing usable: "
                "the API was asked) or `bypass` (the ledger was not read: caching off, "
                "no_cache, refresh mode)."
            ),
        ),
        Column(
            "status",
            sa.String(8),
            False,
            False,
            (
                "`ok`, `error` (the API failed after every attempt, or a replay miss) "
                "or `refused` (a budget would have been exceeded; the API was not "
                "called)."
            ),
        ),
        Column(
            "attempts",
            sa.Integer(),
            False,
            False,
            (
                "HTTP requests made to the API for this call (count), retries included;"
                " 0 for hits and refusals."
            ),
        ),
        Column(
            "latency_ms",
            sa.Double(),
            True,
            False,
            (
                "Time the API took (ms): the attempts, retries and back-off waits "
                "included, none of the ledger's own work (token counting, pricing, the "
                "write); for a hit, the ledger's time to serve it."
            ),
        ),
        Column(
            "prompt_tokens",
            sa.Integer(),
            True,
            False,
            (
                "Input tokens (tokens). On a hit, the stored answer's count, which was "
                "not billed again: add `cache_status <> 'hit'` to sum billed tokens."
            ),
        ),
        Column(
            "completion_tokens",
            sa.Integer(),
            True,
            False,
            (
                "Output tokens (tokens). On a hit, the stored answer's count, which was"
                " not billed again: add `cache_status <> 'hit'` to sum billed tokens."
            ),
        ),
        Column(
            "cached_tokens",
            sa.Integer(),
            True,
            False,
            "Input tokens read from OpenAI's prompt cache (tokens).",
        ),
        Column(
            "reasoning_tokens",
            sa.Integer(),
            True,
            False,
            "Hidden reasoning tokens (tokens), part of completion_tokens.",
        ),
        Column(
            "total_tokens",
            sa.Integer(),
            True,
            False,
            (
                "prompt_tokens + completion_tokens (tokens). On a hit, the stored "
                "answer's count, which was not billed again: add `cache_status <> "
                "'hit'` to sum billed tokens."
            ),
        ),
        Column(
            "tokens_estimated",
            sa.Boolean(),
            False,
            False,
            "True when the counts were estimated locally (tiktoken).",
        ),
        Column(
            "items_total",
            sa.Integer(),
            True,
            False,
            "Embedding calls: number of input texts (count); NULL for chat.",
        ),
        Column(
            "items_hit",
            sa.Integer(),
            True,
            False,
            "Embedding calls: texts answered from the ledger (count).",
        ),
        Column(
            "error_type",
            sa.String(100),
            True,
            False,
            (
                "Error class when status is `error` or `refused` (e.g. RateLimitError, "
                "CacheMissError, BudgetExceededError)."
            ),
        ),
        Column(
            "error_message",
            sa.Text(),
            True,
            False,
            "The error's message (API keys scrubbed, at most 2000 chars).",
        ),
        Column(
            "cost_usd",
            MONEY,
            True,
            False,
            (
                "What the call paid the API (USD); 0 for hits and refusals; NULL for "
                "errors and unpriced models."
            ),
        ),
        Column(
            "saved_usd",
            MONEY,
            True,
            False,
            (
                "What a hit did not pay: the stored answers' cost (USD); NULL when "
                "nothing was served from the ledger."
            ),
        ),
        Column(
            "cost_note",
            sa.Text(),
            True,
            False,
            "Why cost_usd is NULL, or how the model was priced.",
        ),
        Column(
            "price_version",
            sa.String(64),
            True,
            False,
            "The price table behind cost_usd (see responses.price_version).",
        ),
        Column(
            "run",
            sa.String(200),
            True,
            False,
            "The run name of scope(run=...); NULL outside a run.",
        ),
        Column(
            "template",
            sa.String(400),
            True,
            False,
            "The LLMCall template the call came from, if any.",
        ),
        Column(
            "tags",
            JSON_TYPE,
            True,
            False,
            ("scope(tags=...) as a JSON object of strings; also one call_tags row each."),
        ),
        Column(
            "library_version",
            sa.String(32),
            False,
            False,
            "The llm_ledger version that wrote the row.",
        ),
    ],
    "call_tags": [
        Column(
            "call_id",
            ID,
            False,
            False,
            "The call (call_log.id); deleted with it (ON DELETE CASCADE).",
        ),
        Column("name", sa.String(100), False, False, "Tag name (at most 100 chars)."),
        Column("value", sa.String(255), False, False, "Tag value, as text (at most 255 chars)."),
    ],
}


def _comment(upgrade: bool) -> None:
    name = op.get_context().dialect.name
    if name == "sqlite":
        return  # SQLite keeps no column comments (and batch mode would rebuild every table)
    mysql_like = name in ("mysql", "mariadb")  # MODIFY restates the whole column
    for table, columns in COMMENTS.items():
        for c in columns:
            op.alter_column(
                table,
                c.name,
                comment=c.comment if upgrade else None,
                existing_comment=None if upgrade else c.comment,
                existing_type=c.type,
                existing_nullable=c.nullable,
                existing_server_default=None,
                **({"autoincrement": c.autoincrement} if mysql_like else {}),
            )


def upgrade() -> None:
    _comment(upgrade=True)


def downgrade() -> None:
    _comment(upgrade=False)
