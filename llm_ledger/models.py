"""The ledger's tables (SQLAlchemy 2 typed declarative).

Four tables and one side table; the analyst-facing views (``calls``,
``daily_usage``, ``model_costs``, ``cached_answers``) are created by the
migrations. docs/schema.md is generated from this metadata plus the views.

- ``requests``: each distinct request once, by its hash.
- ``responses``: every answer the API gave (paid for), immutable.
- ``cache_entries``: the current answer per (namespace, request_hash, slot).
- ``call_log``: the audit log, one row per call (hit, miss, bypass, error, refusal).
- ``call_tags``: one row per tag of a call, so reports can group by tag on every engine.
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

    request_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    model: Mapped[str] = mapped_column(String(200))
    request: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(Timestamp)


class Response(Base):
    """An answer the API gave for a request, as the SDK returned it. Never updated."""

    __tablename__ = "responses"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    request_hash: Mapped[str] = mapped_column(ForeignKey("requests.request_hash"), index=True)
    # SHA-256 of the canonical response JSON: a response's identity across ledgers (import, copy).
    response_hash: Mapped[str] = mapped_column(String(64), index=True)
    response: Mapped[dict[str, Any]] = mapped_column(JSONType)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    cached_tokens: Mapped[int | None] = mapped_column(Integer)
    reasoning_tokens: Mapped[int | None] = mapped_column(Integer)
    total_tokens: Mapped[int | None] = mapped_column(Integer)
    tokens_estimated: Mapped[bool] = mapped_column(Boolean, default=False)
    cost_usd: Mapped[Decimal | None] = mapped_column(Money)
    cost_note: Mapped[str | None] = mapped_column(Text)
    price_version: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(Timestamp)


class CacheEntry(Base):
    """Which answer a (namespace, request, slot) gets now; refresh repoints it."""

    __tablename__ = "cache_entries"
    __table_args__ = (UniqueConstraint("namespace", "request_hash", "slot"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    namespace: Mapped[str] = mapped_column(Namespace, default="")
    request_hash: Mapped[str] = mapped_column(ForeignKey("requests.request_hash"))
    slot: Mapped[int] = mapped_column(Integer, default=0)
    response_id: Mapped[int] = mapped_column(ForeignKey("responses.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    updated_at: Mapped[datetime] = mapped_column(Timestamp)


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

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    call_uuid: Mapped[str] = mapped_column(String(36), unique=True)
    created_at: Mapped[datetime] = mapped_column(Timestamp)  # indexed by ix_call_log_costs_by_day
    kind: Mapped[str] = mapped_column(String(16))
    api_type: Mapped[str] = mapped_column(String(16))
    endpoint_host: Mapped[str | None] = mapped_column(String(255))
    model: Mapped[str] = mapped_column(String(200))
    namespace: Mapped[str] = mapped_column(Namespace, default="")
    request_hash: Mapped[str] = mapped_column(ForeignKey("requests.request_hash"), index=True)
    slot: Mapped[int | None] = mapped_column(Integer)
    response_id: Mapped[int | None] = mapped_column(ForeignKey("responses.id"), index=True)
    cache_status: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(8))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    latency_ms: Mapped[float | None] = mapped_column(Double)  # FLOAT is single precision on MariaDB
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    cached_tokens: Mapped[int | None] = mapped_column(Integer)
    reasoning_tokens: Mapped[int | None] = mapped_column(Integer)
    total_tokens: Mapped[int | None] = mapped_column(Integer)
    tokens_estimated: Mapped[bool] = mapped_column(Boolean, default=False)
    items_total: Mapped[int | None] = mapped_column(Integer)
    items_hit: Mapped[int | None] = mapped_column(Integer)
    error_type: Mapped[str | None] = mapped_column(String(100))
    error_message: Mapped[str | None] = mapped_column(Text)
    cost_usd: Mapped[Decimal | None] = mapped_column(Money)
    saved_usd: Mapped[Decimal | None] = mapped_column(Money)
    cost_note: Mapped[str | None] = mapped_column(Text)
    price_version: Mapped[str | None] = mapped_column(String(64))
    run: Mapped[str | None] = mapped_column(String(200))
    template: Mapped[str | None] = mapped_column(String(400))
    tags: Mapped[dict[str, str] | None] = mapped_column(JSONType)
    library_version: Mapped[str] = mapped_column(String(32))


class CallTag(Base):
    """A call's tag as a row, so every engine can group by tag without JSON functions."""

    __tablename__ = "call_tags"
    __table_args__ = (Index("ix_call_tags_name_value", "name", "value"),)

    call_id: Mapped[int] = mapped_column(
        ForeignKey("call_log.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(String(255))


TABLES = tuple(t.name for t in Base.metadata.sorted_tables)
"""Every ledger table, parents first: requests, responses, cache_entries, call_log, call_tags."""
VIEW_NAMES = ("calls", "daily_usage", "model_costs", "cached_answers")
