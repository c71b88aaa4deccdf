"""text columns and full-text search: prompts and answers readable in the views, searchable

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27 13:00:00.000000

The ``calls`` and ``cached_answers`` views gain four readable columns, computed from the
stored JSON (nothing new is stored in ``requests`` or ``responses``, so export, import and
copy are unchanged):

- ``system_prompt``: the first message's text when its role is system or developer;
- ``prompt``: the text of the last message whose role is user, else the embedding input;
- ``answer``: the first choice's text, else ``refusal: ...``, else
  ``tool calls: name(arguments); ...``; NULL for embeddings and failed calls;
- ``finish_reason``: the first choice's finish reason.

A message's content given as a list of parts counts its text parts, joined by spaces.

Full-text search, with each engine's own machinery (llm_ledger/search.py queries it):

- SQLite: a contentless FTS5 table ``answer_search`` (rowid = responses.id; columns
  system_prompt, prompt, answer; the texts themselves are read from the JSON, so the index
  keeps no copy), filled for existing answers here and kept in step by triggers on
  ``responses`` (an answer is never updated; prune deletes it). Only a call that writes an
  answer (a miss) pays for it: a cache hit writes no response.
- PostgreSQL: two GIN indexes of ``to_tsvector('simple', ...)`` over SQL functions
  ``ledger_request_text(request)`` and ``ledger_answer_text(response)``; the functions
  also compute the view columns.
- MariaDB/MySQL: a table ``answer_search`` (response_id, system_prompt, prompt, answer) with
  FULLTEXT indexes on (system_prompt, prompt) and (answer), kept in step by triggers on
  ``responses`` (creating triggers needs the TRIGGER privilege; with binary logging on,
  also SUPER or ``log_bin_trust_function_creators``).

A search document is one answer with the prompt it answered: a failed call (no answer) is
not found by search (``llm-ledger calls --status error`` lists those).

The view SQL is view set 0008 (llm_ledger/store/viewsets.py, built per engine by
llm_ledger/store/textviews.py, both frozen at this revision): 0007's views with the texts added;
downgrade puts back view set 0007. On PostgreSQL the JSON columns are
``json`` from 0006 on: the functions take ``json``, and first read any ``\\u0000`` as a space
(``text`` cannot hold NUL, and an index expression that fails would refuse the write).
"""

from __future__ import annotations

from alembic import op

from llm_ledger.store.textviews import PG_FUNCTIONS, PG_INDEXES, maria_texts, sqlite_texts
from llm_ledger.store.viewsets import rebuilt_views

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# --- upgrade / downgrade ------------------------------------------------------


def _sqlite_search() -> None:
    def texts(response: str) -> str:
        t = sqlite_texts("q.request", response)
        return f"{t['system_prompt']}, {t['prompt']}, {t['answer']}"

    columns = "answer_search (rowid, system_prompt, prompt, answer)"
    fill = (
        f"INSERT INTO {columns} SELECT new.id, {texts('new.response')} "
        "FROM requests q WHERE q.request_hash = new.request_hash;"
    )
    # Contentless: a deleted document is named with the values it was indexed with.
    forget = (
        "INSERT INTO answer_search (answer_search, rowid, system_prompt, prompt, answer) "
        f"SELECT 'delete', old.id, {texts('old.response')} "
        "FROM requests q WHERE q.request_hash = old.request_hash;"
    )
    op.execute(
        "CREATE VIRTUAL TABLE answer_search USING fts5(system_prompt, prompt, answer, "
        "content = '', tokenize = 'unicode61 remove_diacritics 2')"
    )
    op.execute(f"CREATE TRIGGER answer_search_insert AFTER INSERT ON responses BEGIN {fill} END")
    op.execute(
        "CREATE TRIGGER answer_search_update AFTER UPDATE OF response, request_hash ON responses "
        f"BEGIN {forget} {fill} END"
    )
    op.execute(f"CREATE TRIGGER answer_search_delete AFTER DELETE ON responses BEGIN {forget} END")
    op.execute(
        f"INSERT INTO {columns} SELECT r.id, {texts('r.response')} FROM responses r "
        "JOIN requests q ON q.request_hash = r.request_hash"
    )


def _maria_search() -> None:
    op.execute(
        "CREATE TABLE answer_search (response_id BIGINT NOT NULL PRIMARY KEY, "
        "system_prompt LONGTEXT NULL, prompt LONGTEXT NULL, answer LONGTEXT NULL, "
        "FULLTEXT KEY ft_answer_search_prompt (system_prompt, prompt), "
        "FULLTEXT KEY ft_answer_search_answer (answer)) "
        "ENGINE = InnoDB DEFAULT CHARSET = utf8mb4"
    )
    t = maria_texts("q.request", "NEW.response")
    fill = (
        "INSERT INTO answer_search (response_id, system_prompt, prompt, answer) SELECT "
        f"NEW.id, {t['system_prompt']}, {t['prompt']}, {t['answer']} "
        "FROM requests q WHERE q.request_hash = NEW.request_hash"
    )
    op.execute(f"CREATE TRIGGER answer_search_insert AFTER INSERT ON responses FOR EACH ROW {fill}")
    op.execute(
        "CREATE TRIGGER answer_search_update AFTER UPDATE ON responses FOR EACH ROW "
        f"BEGIN IF NOT (NEW.response <=> OLD.response) THEN "
        f"DELETE FROM answer_search WHERE response_id = OLD.id; {fill}; END IF; END"
    )
    op.execute(
        "CREATE TRIGGER answer_search_delete AFTER DELETE ON responses FOR EACH ROW "
        "DELETE FROM answer_search WHERE response_id = OLD.id"
    )
    b = maria_texts("q.request", "r.response")
    op.execute(
        "INSERT INTO answer_search (response_id, system_prompt, prompt, answer) SELECT r.id, "
        f"{b['system_prompt']}, {b['prompt']}, {b['answer']} FROM responses r "
        "JOIN requests q ON q.request_hash = r.request_hash"
    )


def _pg_search() -> None:
    for signature, body in PG_FUNCTIONS.items():
        returns = "json" if signature.startswith("ledger_nul_free") else "text"
        # SET search_path: an index expression is re-evaluated by pg_restore with an empty one.
        op.execute(
            f"CREATE OR REPLACE FUNCTION {signature} RETURNS {returns} LANGUAGE sql IMMUTABLE "
            f"PARALLEL SAFE SET search_path FROM CURRENT AS $fn${body}\n$fn$"
        )
    for name, (table, expression) in PG_INDEXES.items():
        op.execute(
            f"CREATE INDEX {name} ON {table} USING gin (to_tsvector('simple', {expression}))"
        )


def upgrade() -> None:
    dialect = op.get_context().dialect.name
    if dialect == "sqlite":
        _sqlite_search()
    elif dialect == "postgresql":
        _pg_search()
    else:
        _maria_search()
    with rebuilt_views("0008"):  # PostgreSQL: after the functions its views call
        pass


def downgrade() -> None:
    dialect = op.get_context().dialect.name
    with rebuilt_views("0007"):  # before the functions 0008's views call go
        pass
    if dialect == "postgresql":
        for name in PG_INDEXES:
            op.execute(f"DROP INDEX IF EXISTS {name}")
        for signature in reversed(list(PG_FUNCTIONS)):
            op.execute(f"DROP FUNCTION IF EXISTS {signature.split('(')[0]}(json)")
        return
    for trigger in ("answer_search_insert", "answer_search_update", "answer_search_delete"):
        op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    op.execute("DROP TABLE IF EXISTS answer_search")
