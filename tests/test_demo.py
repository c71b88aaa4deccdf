"""``llm-ledger demo`` / ``make demo``: a second identical pass comes from the ledger, offline."""

from __future__ import annotations

import os
import re
from pathlib import Path

from sqlalchemy import create_engine, text
from typer.testing import CliRunner

import llm_ledger
from llm_ledger.cli import app
from llm_ledger.demo import run_demo


def normalise(lines: list[str]) -> list[str]:
    return [re.sub(r"\s+\d+\.\d ms", " <t> ms", line) for line in lines]


def rows(location: str, query: str) -> list[tuple]:
    llm_ledger.flush()  # calls are written behind them (writes="journal")
    engine = create_engine(f"sqlite:///{location}")
    with engine.connect() as conn:
        found = [tuple(r) for r in conn.execute(text(query))]
    engine.dispose()
    return found


def expected(location: str, prefix: str, first_pass_status: str, first_requests: int) -> list[str]:
    q1 = "'In one sentence: what does a ledger record?' -> 'answer 1 to: In one sentence: what does a led...'"
    q2 = "'Why cache answers from a language model?' -> 'answer 1 to: Why cache answers from a languag...'"
    q3 = "'Name one thing an audit log of API calls is good for.' -> 'answer 1 to: Name one thing an audit log of A...'"
    s = first_pass_status
    return [
        "OPENAI_API_KEY is not set: starting llm_ledger's local test server "
        "(llm_ledger.testing.FakeOpenAIServer on 127.0.0.1) and pointing OPENAI_BASE_URL and "
        "OPENAI_API_KEY at it, for this process only.",
        f"Ledger: sqlite:///{location}",
        "",
        "First pass:",
        f"  chat       {s} <t> ms  {q1}",
        f"  chat       {s} <t> ms  {q2}",
        f"  chat       {s} <t> ms  {q3}",
        f"  embedding  {s} <t> ms  3 texts -> 3 vectors of 8",
        f"  The test server received {first_requests} requests in this pass ({first_requests} in all).",
        "",
        "Second pass, the same calls again:",
        f"  chat       hit <t> ms  {q1}",
        f"  chat       hit <t> ms  {q2}",
        f"  chat       hit <t> ms  {q3}",
        "  embedding  hit <t> ms  3 texts -> 3 vectors of 8",
        f"  The test server received 0 requests in this pass ({first_requests} in all).",
        "",
        "Summary, from the ledger (this demo's calls):",
        f"  calls  8  ({8 - first_requests} answered from the ledger, {first_requests} by the API)",
        f"  cost   ${'0.00002726' if first_requests else '0'}  paid to the API",
        f"  saved  ${'0.00002726' if first_requests else '0.00005452'}  not paid again, thanks to the hits",
        "",
        "Try next:",
        f"  {prefix} calls --run demo",
        f"  {prefix} show {16 if not first_requests else 8}",
        f'  {prefix} sql "SELECT model, calls, hits, cost_usd, saved_usd FROM model_costs"',
    ]


def test_demo_runs_offline_and_the_second_pass_is_all_hits(tmp_path: Path) -> None:
    location = str(tmp_path / "demo.db")
    lines: list[str] = []
    assert run_demo(location, echo=lines.append) == 0
    assert normalise(lines) == expected(location, f"llm-ledger --db {location}", "miss", 4)


def test_demo_writes_the_calls_to_the_ledger(tmp_path: Path) -> None:
    location = str(tmp_path / "demo.db")
    assert run_demo(location, echo=lambda line: None) == 0
    assert rows(
        location,
        "SELECT kind, model, cache_status, status, attempts, run, items_total, items_hit "
        "FROM call_log ORDER BY id",
    ) == [
        ("chat", "gpt-4o-mini", "miss", "ok", 1, "demo", None, None),
        ("chat", "gpt-4o-mini", "miss", "ok", 1, "demo", None, None),
        ("chat", "gpt-4o-mini", "miss", "ok", 1, "demo", None, None),
        ("embedding", "text-embedding-3-small", "miss", "ok", 1, "demo", 3, 0),
        ("chat", "gpt-4o-mini", "hit", "ok", 0, "demo", None, None),
        ("chat", "gpt-4o-mini", "hit", "ok", 0, "demo", None, None),
        ("chat", "gpt-4o-mini", "hit", "ok", 0, "demo", None, None),
        ("embedding", "text-embedding-3-small", "hit", "ok", 0, "demo", 3, 3),
    ]
    assert rows(
        location, "SELECT value, COUNT(*) FROM call_tags WHERE name = 'pass' GROUP BY value"
    ) == [("1", 4), ("2", 4)]
    counts = rows(
        location,
        "SELECT (SELECT COUNT(*) FROM requests), (SELECT COUNT(*) FROM responses), "
        "(SELECT COUNT(*) FROM cache_entries)",
    )
    assert counts == [(7, 6, 6)]  # 3 chats + the batch + its 3 texts; 3 + 3 answers


def test_demo_leaves_the_environment_as_it_found_it(tmp_path: Path) -> None:
    run_demo(str(tmp_path / "demo.db"), echo=lambda line: None)
    assert "OPENAI_API_KEY" not in os.environ
    assert "OPENAI_BASE_URL" not in os.environ


def test_demo_again_on_the_same_ledger_is_answered_from_it(tmp_path: Path) -> None:
    location = str(tmp_path / "demo.db")
    run_demo(location, echo=lambda line: None)
    lines: list[str] = []
    assert run_demo(location, echo=lines.append) == 0
    assert normalise(lines) == expected(location, f"llm-ledger --db {location}", "hit", 0)


def test_the_demo_command_uses_llm_ledger_db_in_the_current_directory(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["demo"])  # the tests run in tmp_path
    assert result.exit_code == 0, result.output
    lines = normalise(result.stdout.splitlines())
    location = str(tmp_path / "llm_ledger.db")
    assert lines == expected(location, "llm-ledger", "miss", 4)
    assert Path(location).exists()
