"""Text columns of the views and full-text search (migration 0008), on every engine."""

from __future__ import annotations

import pytest
from sqlalchemy import text

import llm_ledger
from llm_ledger import search
from llm_ledger.errors import ConfigError
from llm_ledger.filters import CallFilter
from llm_ledger.store import db

from .analyst_ledger import CAPITAL_Q, SYSTEM, TEXTS, build


def _ids(rows: list[dict]) -> list[int]:
    return [r["id"] for r in rows]


def test_calls_view_shows_system_prompt_prompt_answer_and_finish_reason(any_db: str) -> None:
    ledger = build(any_db)
    with ledger.engine.connect() as conn:
        got = {
            r.id: (r.system_prompt, r.prompt, r.answer, r.finish_reason)
            for r in conn.execute(
                text("SELECT id, system_prompt, prompt, answer, finish_reason FROM calls")
            )
        }
    assert got == TEXTS


def test_cached_answers_view_shows_the_stored_answers_texts(any_db: str) -> None:
    ledger = build(any_db)
    with ledger.engine.connect() as conn:
        got = {
            r.response_id: (r.system_prompt, r.prompt, r.answer, r.finish_reason)
            for r in conn.execute(
                text(
                    "SELECT c.response_id, a.system_prompt, a.prompt, a.answer, a.finish_reason "
                    "FROM cached_answers a JOIN cache_entries c ON c.id = a.id"
                )
            )
        }
    # One entry per stored answer: c1's (served again to c2), c3, c4, c5, c7; c6 failed.
    assert got == {1: TEXTS[1], 2: TEXTS[3], 3: TEXTS[4], 4: TEXTS[5], 5: TEXTS[7]}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("capital France", [2, 1]),  # in the prompt and in the answer; c6 has no answer
        ("PARIS", [2, 1]),  # only in the answer; any case
        ("geography", [2, 1]),  # in the system prompt
        ("oslo weather", [3]),  # text parts of the prompt, and the tool call's arguments
        ("help", [4]),  # the refusal
        ("beta", [5]),  # the embedding input
        ("glaciers", [7]),  # the last user message and the answer
        ("rivers question", []),  # "question" is only in an earlier user message
        ("geography paris", []),  # one word in the prompt, the other only in the answer
        ("spain", []),  # only the failed call
    ],
)
def test_search_finds_calls_whose_prompt_or_answer_holds_every_word(
    any_db: str, query: str, expected: list[int]
) -> None:
    ledger = build(any_db)
    assert _ids(search.search_calls(ledger, query)) == expected


def test_search_returns_the_text_columns_and_honours_filters(any_db: str) -> None:
    ledger = build(any_db)
    rows = search.search_calls(ledger, "capital", CallFilter(cache="miss", tags=(("team", "x"),)))
    assert [(r["id"], r["system_prompt"], r["prompt"], r["cache_status"]) for r in rows] == [
        (1, SYSTEM, CAPITAL_Q, "miss")
    ]
    assert _ids(search.search_calls(ledger, "capital", CallFilter(run="nope"))) == []
    assert _ids(search.search_calls(ledger, "capital", limit=1)) == [2]


def test_search_index_follows_new_answers_and_deleted_ones(any_db: str) -> None:
    ledger = build(any_db)
    assert _ids(search.search_calls(ledger, "glaciers")) == [7]
    with ledger.engine.begin() as conn:
        for sql in (
            "DELETE FROM cache_entries WHERE response_id = 4",
            "UPDATE call_log SET response_id = NULL WHERE response_id = 4",
            "DELETE FROM responses WHERE id = 4",
        ):
            conn.execute(text(sql))
        dialect = ledger.engine.dialect.name
        if dialect != "postgresql":  # PostgreSQL's index is the table's own
            left = conn.execute(text("SELECT COUNT(*) FROM answer_search")).scalar_one()
            assert left == 4  # c1, c3, c4, c7 (c5's went with its response)
        if dialect == "sqlite":  # its words are gone from the (contentless) index too
            sql = "SELECT rowid FROM answer_search WHERE answer_search MATCH 'beta OR paris'"
            assert conn.execute(text(sql)).scalars().all() == [1]
    assert _ids(search.search_calls(ledger, "glaciers")) == [7]
    assert _ids(search.search_calls(ledger, "beta")) == []


def test_migration_indexes_answers_written_before_it(any_db: str) -> None:
    ledger = build(any_db)
    ledger.close()
    llm_ledger.flush()  # writes="journal": this process's calls into the tables first
    engine = db.make_engine(any_db)
    try:
        db.downgrade(engine, "0003")
        db.upgrade(engine)
    finally:
        engine.dispose()
    from llm_ledger.store.repository import Ledger

    again = Ledger(any_db)
    try:
        assert _ids(search.search_calls(again, "capital")) == [2, 1]
        assert _ids(search.search_calls(again, "oslo")) == [3]
    finally:
        again.close()


def test_search_text_without_words_is_refused() -> None:
    with pytest.raises(ConfigError, match="has no words to look for"):
        search.words(" -- !? ")


def test_search_words_are_lower_cased_and_unique() -> None:
    assert search.words("Paris, paris; PARIS capital") == ["paris", "capital"]


def test_mariadb_refuses_a_search_of_only_unindexed_words() -> None:
    from sqlalchemy import column, table

    relation = table("calls", column("response_id"), column("request_hash"))
    with pytest.raises(ConfigError, match="shorter than 3 characters"):
        search.matches("mariadb", "is to", relation)


def test_highlight_marks_whole_words_in_any_case() -> None:
    pieces = search.highlight("Paris  is the capital;\nparisian PARIS", ["paris"])
    assert pieces == [
        ("Paris", True),
        (" is the capital; parisian ", False),
        ("PARIS", True),
    ]
    assert search.marked(pieces) == "**Paris** is the capital; parisian **PARIS**"


def test_snippet_cuts_around_the_first_match() -> None:
    value = "x" * 100 + " needle " + "y" * 100
    out = search.marked(search.snippet(value, ["needle"], width=40))
    assert out == "…" + "x" * 9 + " **needle** " + "y" * 23 + "…"


@pytest.mark.parametrize("dense_from", [1, 2, 1_000_000])
def test_sqlite_search_finds_the_same_calls_by_probe_or_by_list(
    db_path, monkeypatch: pytest.MonkeyPatch, dense_from: int
) -> None:
    # dense_from=1: every search walks the calls newest first, probing the index per call.
    monkeypatch.setattr(search, "DENSE_MATCHES", dense_from)
    ledger = build(str(db_path))
    assert _ids(search.search_calls(ledger, "capital")) == [2, 1]
    assert _ids(search.search_calls(ledger, "capital", limit=1)) == [2]
    assert _ids(search.search_calls(ledger, "capital", CallFilter(cache="miss"))) == [1]
    assert _ids(search.search_calls(ledger, "oslo weather")) == [3]
    assert _ids(search.search_calls(ledger, "geography paris")) == []
    assert _ids(search.search_calls(ledger, "capital", limit=0)) == [2, 1]


def test_a_nul_character_in_prompt_or_answer_neither_breaks_the_write_nor_the_search(
    any_db: str,
) -> None:
    # PostgreSQL keeps \u0000 in json (0006) but text cannot hold it: the texts read a space.
    from llm_ledger.store.repository import Ledger

    from .analyst_ledger import chat_response, put

    ledger = Ledger(any_db)
    request = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "nul\x00byte"}]}
    answer = chat_response({"role": "assistant", "content": "zebra\x00crossing"})
    put(ledger, "nul", "2026-05-04 10:00:00", request, answer, cost="0.0001")
    assert _ids(search.search_calls(ledger, "zebra")) == [1]
    with ledger.engine.connect() as conn:
        prompt = conn.execute(text("SELECT prompt FROM calls")).scalar_one()
    # SQLite reads text up to the NUL, PostgreSQL reads it as a space, MariaDB keeps it.
    assert prompt == {"sqlite": "nul", "postgresql": "nul byte"}.get(
        ledger.engine.dialect.name, "nul\x00byte"
    )
