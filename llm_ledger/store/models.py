"""The ledger's tables (SQLAlchemy 2 typed declarative).

Four tables and one side table; the analyst-facing views (``calls``,
``daily_usage``, ``model_costs``, ``cached_answers``) are created by the
migrations. docs/schema.md is generated from this metadata plus the views.

- ``requests``: each distinct request once, by its hash.
- ``responses``: every answer the API gave (paid for), immutable.
- ``cache_entries``: the current answer per (namespace, request_hash, slot).
- ``call_log``: the audit log, one row per call (hit, miss, bypass, error, refusal).
- ``call_tags``: one row per tag of a call, so reports can group by tag on every engine.

Every column carries its meaning and unit (``comment=``): the database keeps it as the
column's COMMENT and docs/schema.md is generated from it. That is why this module is
longer than ~450 lines; the tables themselves fit on a screen each.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments an INTEGER PRIMARY KEY.
Id = BigInteger().with_variant(Integer(), "sqlite")
# Microsecond timestamps on MySQL/MariaDB too; all timestamps are naive UTC.
Timestamp = DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
# json, not jsonb, on PostgreSQL (migration 0006): the text as written, key order and
# \u0000 kept, as SQLite and MariaDB keep it.
JSONType = JSON()
LongText = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
# Cache keys compare byte for byte on every engine: MariaDB's default collation would make
# namespaces "A" and "a" one key (utf8mb4_bin still ignores trailing spaces there).
Namespace = String(191).with_variant(
    mysql.VARCHAR(191, collation="utf8mb4_bin"), "mysql", "mariadb"
)


def read_money(value: Any) -> Decimal | None:
    """A Money column's value as read from any driver: SQLite's REAL rounded back to 10 places.

    The one reader of stored dollars (SQLAlchemy's, and the raw-DBAPI layer's in statements.py).
    """
    if value is None:
        return None
    if isinstance(value, Decimal):
        return value.normalize() if value == value.to_integral() else value
    return Decimal(str(round(float(value), 10)))


class Money(TypeDecorator[Decimal]):
    """Exact decimal dollars: NUMERIC(20, 10); on SQLite, rounded back to 10 places on read."""

    impl = Numeric(20, 10)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(Numeric(20, 10, asdecimal=False))
        return dialect.type_descriptor(Numeric(20, 10))

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        return read_money(value)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Request(Base):
    """A distinct request, stored once: its hash is the primary key."""

    __tablename__ = "requests"

    request_hash: Mapped[str] = mapped_column(
        String(64),
        primary_key=True,
        comment=(
            "SHA-256 (64 hex chars) of the canonical request JSON (sorted keys, compact);"
            " with namespace and slot, the cache key."
        ),
    )
    kind: Mapped[str] = mapped_column(String(16), comment="`chat` or `embedding`.")
    model: Mapped[str] = mapped_column(
        String(200), comment="Model, or Azure deployment, as requested."
    )
    request: Mapped[dict[str, Any]] = mapped_column(
        JSONType,
        comment=(
            "The canonical request (JSON): kind, model, messages or input, params. What "
            "was hashed, unless the client's `redact` hook changed it before storing."
        ),
    )
    created_at: Mapped[datetime] = mapped_column(
        Timestamp, comment="When the request was first stored (naive UTC timestamp, microseconds)."
    )


class Response(Base):
    """An answer the API gave for a request, as the SDK returned it. Never updated."""

    __tablename__ = "responses"

    id: Mapped[int] = mapped_column(
        Id, primary_key=True, autoincrement=True, comment="Surrogate key."
    )
    request_hash: Mapped[str] = mapped_column(
        ForeignKey("requests.request_hash"),
        index=True,
        comment="The request answered (requests.request_hash).",
    )
    # SHA-256 of the canonical response JSON: a response's identity across ledgers (import, copy).
    response_hash: Mapped[str] = mapped_column(
        String(64),
        index=True,
        comment=(
            "SHA-256 of the canonical response JSON: the same answer's identity across "
            "ledgers (export, import, copy)."
        ),
    )
    response: Mapped[dict[str, Any]] = mapped_column(
        JSONType,
        comment=(
            "The answer as the SDK returned it (JSON): a `chat.completion`, or an embedding `list`."
        ),
    )
    prompt_tokens: Mapped[int | None] = mapped_column(
        Integer, comment="Input tokens billed (tokens); includes cached_tokens."
    )
    completion_tokens: Mapped[int | None] = mapped_column(
        Integer,
        comment="Output tokens billed (tokens); includes reasoning_tokens; 0 for embeddings.",
    )
    cached_tokens: Mapped[int | None] = mapped_column(
        Integer,
        comment=(
            "Input tokens read from OpenAI's prompt cache (tokens), billed at the "
            "cached-input price."
        ),
    )
    reasoning_tokens: Mapped[int | None] = mapped_column(
        Integer,
        comment=(
            "Hidden reasoning tokens of reasoning models (tokens), part of completion_tokens."
        ),
    )
    total_tokens: Mapped[int | None] = mapped_column(
        Integer, comment="prompt_tokens + completion_tokens (tokens)."
    )
    tokens_estimated: Mapped[bool] = mapped_column(
        Boolean,
        default=False,
        comment=(
            "True when the token counts were counted locally (tiktoken) because the API "
            "reported none, or split between the items of an embedding batch."
        ),
    )
    cost_usd: Mapped[Decimal | None] = mapped_column(
        Money,
        comment=(
            "What this answer cost (USD); NULL when it could not be priced (cost_note says why)."
        ),
    )
    cost_note: Mapped[str | None] = mapped_column(
        Text, comment="Why cost_usd is NULL, or how the model was priced."
    )
    price_version: Mapped[str | None] = mapped_column(
        String(64),
        comment=(
            "The price table behind cost_usd, e.g. `genai-prices 0.2.3`, or `custom` "
            "(LLM_LEDGER_PRICES)."
        ),
    )
    created_at: Mapped[datetime] = mapped_column(
        Timestamp, comment="When the answer was stored (naive UTC timestamp, microseconds)."
    )


class CacheEntry(Base):
    """Which answer a (namespace, request, slot) gets now; refresh repoints it."""

    __tablename__ = "cache_entries"
    __table_args__ = (UniqueConstraint("namespace", "request_hash", "slot"),)

    id: Mapped[int] = mapped_column(
        Id, primary_key=True, autoincrement=True, comment="Surrogate key."
    )
    namespace: Mapped[str] = mapped_column(
        Namespace,
        default="",
        comment=(
            "Cache namespace, `''` by default (scope(namespace=...), "
            "LLM_LEDGER_NAMESPACE): separate caches in one ledger."
        ),
    )
    request_hash: Mapped[str] = mapped_column(
        ForeignKey("requests.request_hash"), comment="The request (requests.request_hash)."
    )
    slot: Mapped[int] = mapped_column(
        Integer,
        default=0,
        comment=(
            "Sample slot (count from 0): the k-th identical sampled request (temperature "
            "> 0 or none sent, or n > 1) of a run gets slot k, so a re-run replays the same "
            "sequence. 0 for deterministic requests."
        ),
    )
    response_id: Mapped[int] = mapped_column(
        ForeignKey("responses.id"),
        index=True,
        comment="The answer served now (responses.id); refresh repoints it.",
    )
    created_at: Mapped[datetime] = mapped_column(
        Timestamp, comment="When the entry was created (naive UTC timestamp, microseconds)."
    )
    updated_at: Mapped[datetime] = mapped_column(
        Timestamp,
        comment=(
            "When it last got a new answer (naive UTC timestamp, microseconds); max_age "
            "is measured from here."
        ),
    )


# What every cost report reads besides its group column: filters, then the summed columns.
_COST_COLUMNS = (
    "created_at",
    "cache_status",
    "status",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "saved_usd",
)


def _partial(condition: str) -> dict[str, Any]:
    """An index holding only the rows that meet ``condition`` (MariaDB/MySQL: all rows)."""
    return {"sqlite_where": text(condition), "postgresql_where": text(condition)}


class CallLog(Base):
    """The audit log: one row per call, whatever happened to it."""

    __tablename__ = "call_log"
    __table_args__ = (
        # Covering indexes for llm_ledger.reports (migration 0002): a cost report walks one in
        # group order and never reads the wide rows; the latency one serves percentiles.
        # Partial where the engine allows (0003): a call only writes the ones it can appear in.
        Index("ix_call_log_costs_by_model", "model", *_COST_COLUMNS),
        Index("ix_call_log_costs_by_run", "run", *_COST_COLUMNS, **_partial("run IS NOT NULL")),
        Index(
            "ix_call_log_costs_by_template",
            "template",
            *_COST_COLUMNS,
            **_partial("template IS NOT NULL"),
        ),
        Index("ix_call_log_costs_by_day", *_COST_COLUMNS),
        Index(
            "ix_call_log_model_latency",
            "model",
            "latency_ms",
            "status",
            "cache_status",
            "created_at",
            **_partial("cache_status <> 'hit'"),
        ),
    )

    id: Mapped[int] = mapped_column(
        Id,
        primary_key=True,
        autoincrement=True,
        comment="Surrogate key, increasing in insertion order.",
    )
    call_uuid: Mapped[str] = mapped_column(
        String(36),
        unique=True,
        comment=(
            "UUID of the call, unique: version 7 (time-ordered) since revision 0009, version 4 "
            "before; spool and journal recovery write each call exactly once by it."
        ),
    )
    created_at: Mapped[datetime] = mapped_column(
        Timestamp, comment="When the call was made (naive UTC timestamp, microseconds)."
    )  # indexed by ix_call_log_costs_by_day
    kind: Mapped[str] = mapped_column(String(16), comment="`chat` or `embedding`.")
    api_type: Mapped[str] = mapped_column(
        String(16), comment="`openai` or `azure`: the client that made the call."
    )
    endpoint_host: Mapped[str | None] = mapped_column(
        String(255),
        comment=(
            "host:port of the API endpoint, when the client had been built; NULL "
            "otherwise (e.g. a hit before any API call in the process)."
        ),
    )
    model: Mapped[str] = mapped_column(
        String(200), comment="Model, or Azure deployment, as requested."
    )
    namespace: Mapped[str] = mapped_column(
        Namespace, default="", comment="Cache namespace of the call (see cache_entries.namespace)."
    )
    request_hash: Mapped[str] = mapped_column(
        ForeignKey("requests.request_hash"),
        index=True,
        comment=(
            "The request (requests.request_hash); for an embedding batch, the whole "
            "batch's request."
        ),
    )
    slot: Mapped[int | None] = mapped_column(
        Integer, comment="Sample slot used (see cache_entries.slot)."
    )
    response_id: Mapped[int | None] = mapped_column(
        ForeignKey("responses.id"),
        index=True,
        comment=(
            "The answer served or received (responses.id); NULL for errors, refusals and "
            "embedding batches of several texts (each text has its own answer)."
        ),
    )
    cache_status: Mapped[str] = mapped_column(
        String(8),
        comment=(
            "`hit` (answered from the ledger), `miss` (looked up, nothing usable: the API"
            " was asked) or `bypass` (the ledger was not read: caching off, no_cache, "
            "refresh mode)."
        ),
    )
    status: Mapped[str] = mapped_column(
        String(8),
        comment=(
            "`ok`, `error` (the API failed after every attempt, or a replay miss) or "
            "`refused` (a budget would have been exceeded; the API was not called)."
        ),
    )
    attempts: Mapped[int] = mapped_column(
        Integer,
        default=0,
        comment=(
            "HTTP requests made to the API for this call (count), retries included; 0 for"
            " hits and refusals."
        ),
    )
    latency_ms: Mapped[float | None] = mapped_column(
        Double,
        comment=(
            "Time the API took (ms): the attempts, retries and back-off waits included, "
            "none of the ledger's own work (token counting, pricing, the write); for a "
            "hit, the ledger's time to serve it."
        ),
    )  # FLOAT is single precision on MariaDB
    prompt_tokens: Mapped[int | None] = mapped_column(
        Integer,
        comment=(
            "Input tokens (tokens). On a hit, the stored answer's count, which was not "
            "billed again: add `cache_status <> 'hit'` to sum billed tokens."
        ),
    )
    completion_tokens: Mapped[int | None] = mapped_column(
        Integer,
        comment=(
            "Output tokens (tokens). On a hit, the stored answer's count, which was not "
            "billed again: add `cache_status <> 'hit'` to sum billed tokens."
        ),
    )
    cached_tokens: Mapped[int | None] = mapped_column(
        Integer, comment="Input tokens read from OpenAI's prompt cache (tokens)."
    )
    reasoning_tokens: Mapped[int | None] = mapped_column(
        Integer, comment="Hidden reasoning tokens (tokens), part of completion_tokens."
    )
    total_tokens: Mapped[int | None] = mapped_column(
        Integer,
        comment=(
            "prompt_tokens + completion_tokens (tokens). On a hit, the stored answer's "
            "count, which was not billed again: add `cache_status <> 'hit'` to sum billed"
            " tokens."
        ),
    )
    tokens_estimated: Mapped[bool] = mapped_column(
        Boolean, default=False, comment="True when the counts were estimated locally (tiktoken)."
    )
    items_total: Mapped[int | None] = mapped_column(
        Integer, comment="Embedding calls: number of input texts (count); NULL for chat."
    )
    items_hit: Mapped[int | None] = mapped_column(
        Integer, comment="Embedding calls: texts answered from the ledger (count)."
    )
    error_type: Mapped[str | None] = mapped_column(
        String(100),
        comment=(
            "Error class when status is `error` or `refused` (e.g. RateLimitError, "
            "CacheMissError, BudgetExceededError)."
        ),
    )
    error_message: Mapped[str | None] = mapped_column(
        Text, comment="The error's message (API keys scrubbed, at most 2000 chars)."
    )
    cost_usd: Mapped[Decimal | None] = mapped_column(
        Money,
        comment=(
            "What the call paid the API (USD); 0 for hits and refusals; NULL for errors "
            "and unpriced models."
        ),
    )
    saved_usd: Mapped[Decimal | None] = mapped_column(
        Money,
        comment=(
            "What a hit did not pay: the stored answers' cost (USD); NULL when nothing "
            "was served from the ledger."
        ),
    )
    cost_note: Mapped[str | None] = mapped_column(
        Text, comment="Why cost_usd is NULL, or how the model was priced."
    )
    price_version: Mapped[str | None] = mapped_column(
        String(64), comment="The price table behind cost_usd (see responses.price_version)."
    )
    run: Mapped[str | None] = mapped_column(
        String(200), comment="The run name of scope(run=...); NULL outside a run."
    )
    template: Mapped[str | None] = mapped_column(
        String(400), comment="The LLMCall template the call came from, if any."
    )
    tags: Mapped[dict[str, str] | None] = mapped_column(
        JSONType,
        comment="scope(tags=...) as a JSON object of strings; also one call_tags row each.",
    )
    library_version: Mapped[str] = mapped_column(
        String(32), comment="The llm_ledger version that wrote the row."
    )
    stream_status: Mapped[str | None] = mapped_column(
        String(16),
        comment=(
            "Streamed calls (`stream=True` through llm_ledger.openai): `complete`, "
            "`abandoned` (the caller stopped reading; the part that arrived is stored, not "
            "cached), `error` (the connection failed mid-stream; not cached), `replayed` "
            "(a hit served as a stream) or `failed` (the API failed before the stream opened). "
            "NULL when not streamed."
        ),
    )
    first_chunk_ms: Mapped[float | None] = mapped_column(
        Double,
        comment=(
            "Streamed misses: milliseconds (ms) from the start of the call to the first "
            "chunk; latency_ms is then the time to the last one. NULL otherwise."
        ),
    )
    chunks: Mapped[int | None] = mapped_column(
        Integer,
        comment=(
            "Streamed calls: events received from the API (miss) or replayed (hit) "
            "(count). NULL when not streamed."
        ),
    )


class CallTag(Base):
    """A call's tag as a row, so every engine can group by tag without JSON functions."""

    __tablename__ = "call_tags"
    __table_args__ = (Index("ix_call_tags_name_value", "name", "value"),)

    call_id: Mapped[int] = mapped_column(
        ForeignKey("call_log.id", ondelete="CASCADE"),
        primary_key=True,
        comment="The call (call_log.id); deleted with it (ON DELETE CASCADE).",
    )
    name: Mapped[str] = mapped_column(
        String(100), primary_key=True, comment="Tag name (at most 100 chars)."
    )
    value: Mapped[str] = mapped_column(
        String(255), comment="Tag value, as text (at most 255 chars)."
    )


TABLES = tuple(t.name for t in Base.metadata.sorted_tables)
"""Every ledger table, parents first: requests, responses, cache_entries, call_log, call_tags."""

MAX_ID = 2**53 - 1
"""The highest surrogate id a copy or a bundle may carry: far past any real ledger, yet far
enough below the 64-bit top that a target whose sequence is moved past a copy's ids keeps
room to grow, and exact in every JSON reader (doubles hold integers up to 2**53)."""

KINDS = ("chat", "embedding", "responses")
CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("requests", "kind"): KINDS,
    ("call_log", "kind"): KINDS,
    ("call_log", "cache_status"): ("hit", "miss", "bypass"),
    ("call_log", "status"): ("ok", "error", "refused"),
    ("call_log", "stream_status"): ("complete", "abandoned", "error", "replayed", "failed"),
}
"""(table, column) -> the values the library writes there (api_type is open: custom clients
name their own). Checked on what import and copy bring in."""
VIEW_NAMES = ("calls", "daily_usage", "model_costs", "cached_answers")
