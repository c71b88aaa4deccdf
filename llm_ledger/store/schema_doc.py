"""docs/schema.md, generated: every table, view and column of the ledger, with meaning and units.

Tables and columns come from the SQLAlchemy metadata (models.py), their meanings from the
columns' ``comment=`` (which PostgreSQL and MariaDB keep as COMMENT: psql ``\\d+`` shows
them). Views come from an SQLite ledger migrated to head in a temporary directory (their
columns and the SQL that defines them), so the page shows what the migrations create;
the meanings of view columns live here, in :data:`COLUMNS`, keyed ``view.column``. ``python -m llm_ledger.store.schema_doc > docs/schema.md``
regenerates the page; tests/test_schema_doc.py fails when the file differs, when a column
has no description, or when a description names a column that no longer exists.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Column, Table, UniqueConstraint, text

from . import db
from .models import TABLES as TABLE_ORDER
from .models import VIEW_NAMES, Base

_MONEY = "USD"
_UTC = "naive UTC timestamp, microseconds"

TABLES = {
    "alembic_version": "Alembic's bookkeeping: the schema revision of this ledger.",
}

# The meaning and unit of every view column, ``view.column``, and of Alembic's own table.
# Table columns carry theirs as ``comment=`` in models.py (the database keeps it as COMMENT).
COLUMNS: dict[str, str] = {
    # alembic_version
    "alembic_version.version_num": "The Alembic revision the schema is at "
    "(`llm-ledger info` says whether it is current).",
    # daily_usage
    "daily_usage.day": "UTC calendar day of created_at, `date(created_at)` (a DATE; text "
    "`YYYY-MM-DD` on SQLite).",
    "daily_usage.model": "Model, or Azure deployment, as requested.",
    "daily_usage.calls": "Calls that day (count).",
    "daily_usage.hits": "Of those, answered from the ledger (count).",
    "daily_usage.errors": "Of those, with status `error` (count).",
    "daily_usage.prompt_tokens": "Sum of call_log.prompt_tokens (tokens) billed: hits left out, as in `llm-ledger costs`.",
    "daily_usage.completion_tokens": "Sum of call_log.completion_tokens (tokens) billed: hits left out, as in `llm-ledger costs`.",
    "daily_usage.total_tokens": "Sum of call_log.total_tokens (tokens) billed: hits left out, as in `llm-ledger costs`.",
    "daily_usage.cost_usd": "Paid to the API (USD, sum of call_log.cost_usd).",
    "daily_usage.saved_usd": "Not paid thanks to hits (USD, sum of call_log.saved_usd).",
    # model_costs
    "model_costs.model": "Model, or Azure deployment, as requested.",
    "model_costs.calls": "Calls to the model (count).",
    "model_costs.hits": "Of those, answered from the ledger (count).",
    "model_costs.errors": "Of those, with status `error` (count).",
    "model_costs.prompt_tokens": "Sum of call_log.prompt_tokens (tokens) billed: hits left out, as in `llm-ledger costs`.",
    "model_costs.completion_tokens": "Sum of call_log.completion_tokens (tokens) billed: hits left out, as in `llm-ledger costs`.",
    "model_costs.total_tokens": "Sum of call_log.total_tokens (tokens) billed: hits left out, as in `llm-ledger costs`.",
    "model_costs.cost_usd": "Paid to the API (USD, sum of call_log.cost_usd).",
    "model_costs.saved_usd": "Not paid thanks to hits (USD, sum of call_log.saved_usd).",
    "model_costs.avg_latency_ms": "Mean latency_ms (ms), hits included.",
    "model_costs.first_call": f"Earliest created_at ({_UTC}).",
    "model_costs.last_call": f"Latest created_at ({_UTC}).",
    # cached_answers
    "cached_answers.id": "The cache entry (cache_entries.id).",
    "cached_answers.namespace": "Cache namespace (cache_entries.namespace).",
    "cached_answers.request_hash": "The request (requests.request_hash).",
    "cached_answers.slot": "Sample slot (cache_entries.slot).",
    "cached_answers.kind": "`chat` or `embedding`.",
    "cached_answers.model": "Model, or Azure deployment, as requested.",
    "cached_answers.request": "The canonical request (JSON, requests.request).",
    "cached_answers.response": "The answer served now (JSON, responses.response).",
    "cached_answers.cost_usd": f"What that answer cost when it was paid for ({_MONEY}).",
    "cached_answers.created_at": f"When the entry was created ({_UTC}).",
    "cached_answers.updated_at": f"When it last got a new answer ({_UTC}).",
    **{
        f"{view}.{name}": meaning
        for view in ("calls", "cached_answers")
        for name, meaning in {
            "system_prompt": "Text of the first message when its role is system or developer "
            "(from the request JSON); a content given as parts counts its text parts.",
            "prompt": "Text of the last message whose role is user, or the embedding input "
            "(strings joined by spaces).",
            "answer": "The first choice's text; else `refusal: ...`, else `tool calls: "
            "name(arguments); ...`. NULL for embeddings and for calls without an answer.",
            "finish_reason": "The first choice's finish_reason (`stop`, `length`, `tool_calls`, "
            "`content_filter`); NULL for embeddings and for calls without an answer.",
        }.items()
    },  # fmt: skip
}

# A view column described as the table column it copies: ``calls`` is call_log as it is.
SAME_AS = {"calls": "call_log"}

VIEWS = {
    "calls": "Every call_log row, as it is, with the texts of its prompt and answer "
    "(system_prompt, prompt, answer, finish_reason): the view to start queries from.",
    "daily_usage": "Calls, hits, errors, tokens and money per UTC day and model.",
    "model_costs": "Calls, hits, errors, tokens, money and latency per model, over all time.",
    "cached_answers": "What the cache serves now: each entry with its request and answer.",
}


@dataclass(frozen=True)
class View:
    name: str
    columns: list[str]
    sql: str


def describe(table: str, column: str) -> str | None:
    model = Base.metadata.tables.get(table)
    if model is not None and column in model.c:
        return model.c[column].comment
    found = COLUMNS.get(f"{table}.{column}")
    if found is None and table in SAME_AS:
        found = describe(SAME_AS[table], column)
    return found


def migrated_views() -> tuple[list[View], list[str]]:
    """The views of a new SQLite ledger migrated to head, and its table names."""
    with tempfile.TemporaryDirectory() as tmp:
        engine = db.make_engine(str(Path(tmp) / "schema.db"))
        try:
            db.upgrade(engine)
            with engine.connect() as conn:
                tables = conn.execute(
                    text(
                        "SELECT name FROM sqlite_master WHERE type = 'table' "
                        "AND name NOT LIKE 'sqlite%' ORDER BY name"
                    )
                ).scalars()
                table_names = list(tables)
                views = []
                for name, sql in conn.execute(
                    text("SELECT name, sql FROM sqlite_master WHERE type = 'view'")
                ):
                    columns = [r[1] for r in conn.execute(text(f'PRAGMA table_info("{name}")'))]
                    views.append(View(name, columns, sql))
        finally:
            engine.dispose()
    order = {name: i for i, name in enumerate(VIEW_NAMES)}
    views.sort(key=lambda v: (order.get(v.name, len(order)), v.name))
    return views, table_names


def tables() -> list[Table]:
    known = Base.metadata.tables
    names = [t for t in TABLE_ORDER if t in known] + sorted(set(known) - set(TABLE_ORDER))
    return [known[name] for name in names]


def missing_descriptions() -> list[str]:
    """Every ``table.column`` (views included) without a description."""
    views, table_names = migrated_views()
    wanted = [f"{t.name}.{c.name}" for t in tables() for c in t.columns]
    wanted += [f"{name}.version_num" for name in table_names if name == "alembic_version"]
    wanted += [f"{v.name}.{c}" for v in views for c in v.columns]
    return [key for key in wanted if describe(*key.split(".", 1)) is None]


def stale_descriptions() -> list[str]:
    """Descriptions of columns that no longer exist."""
    views, _ = migrated_views()
    present = {f"{t.name}.{c.name}" for t in tables() for c in t.columns}
    present |= {f"{v.name}.{c}" for v in views for c in v.columns}
    present.add("alembic_version.version_num")
    return sorted(set(COLUMNS) - present)


def _type(column: Column) -> str:
    return str(column.type)


def _keys(table: Table, column: Column) -> str:
    notes = []
    if column.primary_key:
        notes.append("PK")
    for fk in sorted(column.foreign_keys, key=lambda f: f.target_fullname):
        notes.append(f"→ {fk.target_fullname}")
    for constraint in table.constraints:
        cols = [c.name for c in getattr(constraint, "columns", [])]
        if isinstance(constraint, UniqueConstraint) and cols == [column.name]:
            notes.append("unique")
    return ", ".join(notes)


def _table_doc(table: Table) -> str:
    mapper = next((m for m in Base.registry.mappers if m.local_table is table), None)
    doc = (mapper.class_.__doc__ or "") if mapper is not None else ""
    return " ".join(doc.strip().split("\n\n")[0].split()) or TABLES.get(table.name, "")


def _index_lines(table: Table) -> list[str]:
    lines = []
    for index in sorted(table.indexes, key=lambda i: str(i.name)):
        cols = ", ".join(c.name for c in index.columns)
        where = index.dialect_options["sqlite"].get("where")
        partial = (
            f" where {where} (SQLite, PostgreSQL; all rows on MariaDB)" if where is not None else ""
        )
        lines.append(f"`{index.name}` ({cols}){' unique' if index.unique else ''}{partial}")
    for constraint in sorted(table.constraints, key=lambda c: str(c.name)):
        if isinstance(constraint, UniqueConstraint):
            cols = ", ".join(c.name for c in constraint.columns)
            lines.append(f"`{constraint.name}` ({cols}) unique")
    return lines


def _cell(value: str) -> str:
    return value.replace("|", "\\|")


def format_view_sql(sql: str) -> str:
    """A view's one-line CREATE VIEW, one select item and one clause per line."""
    match = re.match(r"CREATE VIEW (\w+) AS SELECT (.*)$", " ".join(sql.split()), re.S)
    if match is None:
        return sql
    name, rest = match.groups()
    parts = _split_top(rest, r"\bFROM\b|\bJOIN\b|\bWHERE\b|\bGROUP BY\b|\bORDER BY\b")
    items = _split_top(parts[0], ",")
    lines = [f"CREATE VIEW {name} AS", "SELECT"]
    lines += [
        f"    {item.strip()}{',' if i < len(items) - 1 else ''}" for i, item in enumerate(items)
    ]
    lines += [part.strip() for part in parts[1:]]
    return "\n".join(lines)


def _split_top(sql: str, separator: str) -> list[str]:
    """Split where ``separator`` (a regex) occurs outside parentheses and quotes.

    A keyword separator starts the next part; a comma is dropped.
    """
    parts, depth, start, i, quote = [], 0, 0, 0, False
    pattern = re.compile(separator, re.I)
    while i < len(sql):
        ch = sql[i]
        if ch == "'":
            quote = not quote
        elif not quote and ch == "(":
            depth += 1
        elif not quote and ch == ")":
            depth -= 1
        elif not quote and depth == 0:
            found = pattern.match(sql, i)
            if found and (separator == "," or i == 0 or not sql[i - 1].isalnum()):
                if i > start:
                    parts.append(sql[start:i])
                start = found.end() if separator == "," else i
                i = found.end()
                continue
        i += 1
    parts.append(sql[start:])
    return [p for p in parts if p.strip()]


def generate() -> str:
    views, table_names = migrated_views()
    out = [
        "# Ledger schema",
        "",
        "<!-- Generated by `python -m llm_ledger.store.schema_doc > docs/schema.md`; do not edit. -->",
        "",
        f"Schema revision **{db.head_revision()}**. Generated from the SQLAlchemy models "
        "(`llm_ledger/store/models.py`) and the views an SQLite ledger gets from the migrations; "
        "tests/test_schema_doc.py fails when this page is out of date.",
        "",
        "Conventions:",
        "",
        "- **Time**: every timestamp is a naive UTC timestamp with microseconds (no time zone "
        "stored; `DATETIME(6)` on MariaDB, `TIMESTAMP WITHOUT TIME ZONE` on PostgreSQL).",
        "- **Money**: USD, exact decimals `NUMERIC(20, 10)` (SQLite stores a REAL rounded "
        "back to 10 places on read).",
        "- **Tokens**: counts of model tokens as the API reported them (or estimated "
        "locally with tiktoken, when `tokens_estimated` is true).",
        "- **Durations**: milliseconds (ms).",
        "- **JSON**: `JSON` (the text as written, not `JSONB`) on every engine; cast to text "
        "to search it with LIKE.",
        "- **Ids**: `BIGINT` (`INTEGER` on SQLite) surrogate keys.",
        "",
        "A call flows into these tables in one transaction: its request (once per distinct "
        "request), the answers it paid for, their cache entries, its `call_log` row and its "
        "tags. Analysts start from the views.",
        "",
        "The meaning of each table column is its `comment=` in the models, which PostgreSQL "
        "and MariaDB keep as the column's COMMENT (`\\d+ call_log` in psql, `SHOW FULL COLUMNS "
        "FROM call_log` in MariaDB).",
        "",
        "Adding a column to the audit row (`call_log`) touches: the column in "
        "`llm_ledger/store/models.py` (with `comment=`); a migration that adds it inside "
        "`llm_ledger.store.viewsets.rebuilt_views` with a new view set whose `calls` selects it "
        "(else the migration, or tests/test_schema_comments.py, fails); the field of the same name on "
        "`llm_ledger.records.CallRecord` (with a default, so spool files written before it still "
        "load); the line of the call pipeline that sets it; and, "
        "so that older bundles still import, its entry in `llm_ledger.transfer.ADDED_FIELDS`. "
        "Every writer of audit rows (the repository, import/copy, the pickle import) maps the "
        "row from the record in one place (`llm_ledger.store.statements`): a column without a "
        "field fails when the package is imported, never after a paid call.",
        "",
        "## Tables",
        "",
    ]
    for table in tables():
        out += [f"### {table.name}", "", _table_doc(table), ""]
        out += ["| column | type | null | key | meaning |", "|---|---|---|---|---|"]
        for column in table.columns:
            out.append(
                f"| `{column.name}` | {_type(column)} | {'yes' if column.nullable else 'no'} "
                f"| {_cell(_keys(table, column))} | {_cell(describe(table.name, column.name) or '')} |"
            )
        indexes = _index_lines(table)
        if indexes:
            out += ["", "Indexes: " + "; ".join(indexes) + "."]
        out.append("")
    if "alembic_version" in table_names:
        out += [
            "### alembic_version",
            "",
            TABLES["alembic_version"],
            "",
            "| column | type | null | key | meaning |",
            "|---|---|---|---|---|",
            f"| `version_num` | VARCHAR(32) | no | PK | {describe('alembic_version', 'version_num')} |",
            "",
        ]
    out += ["## Views", ""]
    for view in views:
        out += [f"### {view.name}", "", VIEWS.get(view.name, ""), ""]
        if view.name in SAME_AS:
            same = SAME_AS[view.name]
            own = [n for n in view.columns if f"{view.name}.{n}" in COLUMNS]
            out += [f"Its columns are those of `{same}`, with the same meanings, and:", ""]
            out += ["| column | meaning |", "|---|---|"]
            out += [f"| `{n}` | {_cell(describe(view.name, n) or '')} |" for n in own]
            out += [
                "",
                "The SQL below is SQLite's; PostgreSQL computes the texts with the functions "
                "`ledger_system_prompt`, `ledger_prompt`, `ledger_answer`, "
                "`ledger_finish_reason`, MariaDB with `JSON_TABLE` (migration 0008). "
                "Full-text search: docs/analyst.md.",
                "",
            ]
        else:
            out += ["| column | meaning |", "|---|---|"]
            for name in view.columns:
                out.append(f"| `{name}` | {_cell(describe(view.name, name) or '')} |")
            out.append("")
        out += ["```sql", format_view_sql(view.sql), "```", ""]
    return "\n".join(out).rstrip() + "\n"


def main() -> None:
    print(generate(), end="")


if __name__ == "__main__":
    main()
