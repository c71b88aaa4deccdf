"""search, report, datasette-metadata, the shared filters of costs/stats, --format nl, --chart."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llm_ledger.cli import app

from .analyst_ledger import CAPITAL_Q, SYSTEM, build

runner = CliRunner()


def invoke(db: str, *args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, ["--db", db, *args])


@pytest.fixture
def ledger_db(db_path: Path) -> str:
    build(str(db_path)).close()
    return str(db_path)


def test_search_json_gives_the_texts_and_the_marked_passages(any_db: str) -> None:
    build(any_db).close()
    result = invoke(any_db, "search", "Capital FRANCE", "--cache", "miss", "-f", "json")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert (row["id"], row["system_prompt"], row["prompt"], row["finish_reason"]) == (
        1,
        SYSTEM,
        CAPITAL_Q,
        "stop",
    )
    assert row["prompt_match"] == "What is the **capital** of **France**?"
    assert row["answer_match"] == "Paris is the **capital** of **France**."


def test_search_nl_prints_one_object_per_line(ledger_db: str) -> None:
    result = invoke(ledger_db, "search", "capital", "-f", "nl")
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["id"] for line in result.stdout.splitlines()] == [2, 1]


def test_search_table_marks_the_words_when_piped(ledger_db: str) -> None:
    result = invoke(ledger_db, "search", "glaciers")
    assert result.exit_code == 0, result.output
    assert "prompt: Now a follow-up about **glaciers**" in result.stdout
    assert "answer: **Glaciers** are slow rivers of ice." in result.stdout
    assert invoke(ledger_db, "search", "zebra").stdout == "no calls match 'zebra'\n"


def test_search_without_words_exits_2_with_the_reason(ledger_db: str) -> None:
    result = invoke(ledger_db, "search", "?!")
    assert result.exit_code == 2
    assert result.stderr == (
        "error: search text '?!' has no words to look for: give at least one word, "
        "for example --search invoice\n"
    )


def test_search_on_mariadb_refuses_only_unindexed_words(mysql_url: str) -> None:
    build(mysql_url).close()
    result = invoke(mysql_url, "search", "is of")
    assert result.exit_code == 2
    assert "leaves out words shorter than 3 characters" in result.stderr


def test_search_takes_the_shared_filters(ledger_db: str) -> None:
    def ids(*args: str) -> list[int]:
        result = invoke(ledger_db, "search", "capital", *args, "-f", "json")
        assert result.exit_code == 0, result.output
        return [r["id"] for r in json.loads(result.stdout)]

    assert ids("--tag", "team=y") == [2]
    assert ids("--tag", "team=x", "--tag", "team=y") == []
    assert ids("--run", "geo", "--status", "ok", "--namespace", "") == [2, 1]
    assert ids("--until", "2026-05-01T10:30:00") == [1]
    assert ids("--model", "gpt-4o") == []


def test_bad_tag_option_exits_2_before_opening_anything(tmp_path: Path) -> None:
    missing = str(tmp_path / "none.db")
    for command in (["search", "x"], ["stats"], ["costs"], ["report", "--html", "r.html"]):
        result = invoke(missing, *command, "--tag", "team")
        assert result.exit_code == 2, command
        assert result.stderr == (
            "error: --tag 'team': expected NAME=VALUE, for example --tag team=search\n"
        )
    assert not Path(missing).exists()


def test_costs_take_status_cache_namespace_and_tags(ledger_db: str) -> None:
    result = invoke(ledger_db, "costs", "--tag", "team=x", "--cache", "miss", "-f", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [
        {"model": "gpt-4o", "calls": 1, "hits": 0, "prompt_tokens": 10,
         "completion_tokens": 5, "cost_usd": 0.004, "saved_usd": 0},
        {"model": "gpt-4o-mini", "calls": 1, "hits": 0, "prompt_tokens": 10,
         "completion_tokens": 5, "cost_usd": 0.0003, "saved_usd": 0},
    ]  # fmt: skip
    result = invoke(ledger_db, "costs", "--status", "refused", "--by", "day", "-f", "json")
    assert [(r["day"], r["calls"]) for r in json.loads(result.stdout)] == [("2026-05-02", 1)]


def test_stats_take_the_filters_and_draw_bars(ledger_db: str) -> None:
    result = invoke(ledger_db, "stats", "--run", "geo", "-f", "json")
    assert result.exit_code == 0, result.output
    assert [(r["model"], r["calls"], r["hits"]) for r in json.loads(result.stdout)] == [
        ("gpt-4o-mini", 2, 1)
    ]
    result = invoke(ledger_db, "stats", "--model", "gpt-4o", "--tag", "team=x", "--chart")
    assert result.exit_code == 0, result.output
    bar = "█" * 40
    assert result.stdout.endswith(
        f"\ncost_usd\n  gpt-4o  {bar}  0.004\n\nhit_rate\n  gpt-4o  {' ' * 40}  0.0%\n"
    )


def test_json_and_nl_print_json_columns_as_objects_on_every_engine(any_db: str) -> None:
    # --unsafe: the test servers are reached as root, which `sql` refuses otherwise.
    build(any_db).close()
    sql = "SELECT id, tags FROM calls WHERE id IN (1, 3) ORDER BY id"
    result = invoke(any_db, "sql", sql, "--unsafe", "-f", "nl")
    assert result.exit_code == 0, result.output
    assert result.stdout == '{"id": 1, "tags": {"team": "x"}}\n{"id": 3, "tags": null}\n'
    result = invoke(any_db, "sql", sql, "--unsafe", "-f", "json")
    assert json.loads(result.stdout) == [{"id": 1, "tags": {"team": "x"}}, {"id": 3, "tags": None}]


def test_report_without_plotly_exits_2_saying_what_to_install(
    ledger_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    result = invoke(ledger_db, "report", "--html", str(tmp_path / "r.html"))
    assert result.exit_code == 2
    assert result.stderr == (
        "error: the HTML report embeds plotly.js from the plotly package, which is not "
        "installed: pip install 'llm-ledger[report]' (or pip install plotly)\n"
    )
    assert not (tmp_path / "r.html").exists()
