"""docs/schema.md is generated from the models and migrations, and describes every column."""

from __future__ import annotations

from pathlib import Path

import pytest

from llm_ledger.store import schema_doc
from llm_ledger.store.models import VIEW_NAMES, Base

SCHEMA_MD = Path(__file__).resolve().parent.parent / "docs" / "schema.md"


def test_docs_schema_md_is_what_the_generator_prints() -> None:
    assert SCHEMA_MD.read_text(encoding="utf-8") == schema_doc.generate(), (
        "docs/schema.md is out of date: run `python -m llm_ledger.store.schema_doc > docs/schema.md`"
    )


def test_every_table_and_view_column_has_a_description() -> None:
    assert schema_doc.missing_descriptions() == []


def test_no_description_names_a_column_that_is_gone() -> None:
    assert schema_doc.stale_descriptions() == []


def test_the_page_covers_every_table_and_view() -> None:
    text = schema_doc.generate()
    for name in [*Base.metadata.tables, "alembic_version", *VIEW_NAMES]:
        assert f"\n### {name}\n" in text


def all_columns() -> list[tuple[str, str]]:
    views, _ = schema_doc.migrated_views()
    found = [(t.name, c.name) for t in schema_doc.tables() for c in t.columns]
    return found + [(v.name, c) for v in views for c in v.columns]


@pytest.mark.parametrize(
    ("suffix", "unit"),
    [("_usd", "USD"), ("_ms", "ms"), ("_tokens", "tokens"), ("_at", "UTC"), ("_call", "UTC")],
)
def test_descriptions_give_the_unit(suffix: str, unit: str) -> None:
    columns = [(t, c) for t, c in all_columns() if c.endswith(suffix)]
    assert columns
    for table, column in columns:
        assert unit in (schema_doc.describe(table, column) or ""), f"{table}.{column}"


def test_view_sql_is_laid_out_one_item_per_line() -> None:
    sql = "CREATE VIEW v AS SELECT a, SUM(CASE WHEN x = 'a,b' THEN 1 ELSE 0 END) AS n FROM t JOIN u ON u.id = t.id GROUP BY a"
    assert schema_doc.format_view_sql(sql) == (
        "CREATE VIEW v AS\n"
        "SELECT\n"
        "    a,\n"
        "    SUM(CASE WHEN x = 'a,b' THEN 1 ELSE 0 END) AS n\n"
        "FROM t\n"
        "JOIN u ON u.id = t.id\n"
        "GROUP BY a"
    )
