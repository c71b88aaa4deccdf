"""``llm-ledger costs``, ``stats`` and ``reprice``: exact output, errors without tracebacks."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal, InvalidOperation
from pathlib import Path

import pytest
from typer.testing import CliRunner

import llm_ledger
from llm_ledger.cli import app

from .conftest import msgs
from .test_reports import build_known_ledger

D = Decimal
runner = CliRunner()


@pytest.fixture
def known_db(db_path: Path) -> str:
    build_known_ledger(str(db_path)).close()
    return str(db_path)


def invoke(db: str, *args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, ["--db", db, *args])


def test_costs_json_parses_back_with_the_group_named_by_the_grouping(known_db: str) -> None:
    result = invoke(known_db, "costs", "--by", "run", "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [
        {"run": "b", "calls": 3, "hits": 0, "prompt_tokens": 2010, "completion_tokens": 105,
         "cost_usd": 0.006, "saved_usd": 0},
        {"run": None, "calls": 1, "hits": 0, "prompt_tokens": 1000, "completion_tokens": 50,
         "cost_usd": 0.003, "saved_usd": 0},
        {"run": "a", "calls": 3, "hits": 1, "prompt_tokens": 1000, "completion_tokens": 200,
         "cost_usd": 0.00027, "saved_usd": 0.00027},
        {"run": "c", "calls": 1, "hits": 1, "prompt_tokens": 0, "completion_tokens": 0,
         "cost_usd": 0, "saved_usd": 0.00002},
    ]  # fmt: skip


def values(cells: list[str]) -> list[object]:
    """Cells as values: numbers as Decimal (so 0 and 0.0 are alike), '' as None."""
    out: list[object] = []
    for cell in cells:
        try:
            out.append(None if cell == "" else Decimal(cell))
        except InvalidOperation:
            out.append(cell)
    return out


def csv_rows(text: str) -> tuple[str, list[list[object]]]:
    """The header line exactly as printed, and the data rows as values."""
    header, *rest = text.splitlines()
    return header, [values(r) for r in csv.reader(io.StringIO("\n".join(rest)))]


def test_costs_csv_by_day(known_db: str) -> None:
    result = invoke(known_db, "costs", "--by", "day", "--format", "csv")
    assert result.exit_code == 0, result.output
    assert csv_rows(result.stdout) == (
        "day,calls,hits,prompt_tokens,completion_tokens,cost_usd,saved_usd",
        [
            ["2026-05-02", 2, 0, 3000, 150, D("0.009"), 0],
            ["2026-05-01", 2, 1, 1000, 200, D("0.00027"), D("0.00027")],
            ["2026-05-03", 4, 1, 10, 5, 0, D("0.00002")],
        ],
    )


def test_costs_filters(known_db: str) -> None:
    result = invoke(
        known_db, "costs", "--by", "tag", "--run", "a", "--model", "gpt-4o-mini",
        "--since", "2026-05-01", "--until", "2026-05-01T10:30:00Z", "-f", "csv",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert csv_rows(result.stdout) == (
        "tag,calls,hits,prompt_tokens,completion_tokens,cost_usd,saved_usd",
        [["team=x", 1, 0, 1000, 200, D("0.00027"), 0]],
    )


def test_costs_table_is_the_default_and_notes_unpriced_calls(known_db: str) -> None:
    result = invoke(known_db, "costs")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].strip() == "Cost by model"
    header = [cell.strip() for line in lines if "┃" in line for cell in line.split("┃")[1:-1]]
    body = [values([c.strip() for c in line.split("│")[1:-1]]) for line in lines if "│" in line]
    assert header == [
        "model", "calls", "hits", "prompt_tokens", "completion_tokens", "cost_usd", "saved_usd",
    ]  # fmt: skip
    assert body == [
        ["gpt-4o", 2, 0, 3000, 150, D("0.009"), 0],
        ["gpt-4o-mini", 4, 1, 1000, 200, D("0.00027"), D("0.00027")],
        ["prod-chat", 1, 0, 10, 5, 0, 0],
        ["text-embedding-3-small", 1, 1, 0, 0, 0, D("0.00002")],
    ]
    assert result.stderr == (
        "note: paid calls without a price (cost_usd NULL, left out of the totals), by model: "
        "prod-chat: 1; map the model with LLM_LEDGER_MODEL_MAP or LLM_LEDGER_PRICES, then "
        "run `llm-ledger reprice`\n"
    )


def test_stats_json(known_db: str) -> None:
    result = invoke(known_db, "stats", "--until", "2026-05-02", "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [
        {"model": "gpt-4o", "calls": 2, "hits": 0, "hit_rate": 0.0, "prompt_tokens": 3000,
         "completion_tokens": 150, "cost_usd": 0.009, "saved_usd": 0,
         "p50_latency_ms": 300.0, "p95_latency_ms": 500.0},
        {"model": "gpt-4o-mini", "calls": 2, "hits": 1, "hit_rate": 0.5, "prompt_tokens": 1000,
         "completion_tokens": 200, "cost_usd": 0.00027, "saved_usd": 0.00027,
         "p50_latency_ms": 100.0, "p95_latency_ms": 100.0},
    ]  # fmt: skip


def test_stats_csv(known_db: str) -> None:
    result = invoke(known_db, "stats", "-f", "csv")
    assert result.exit_code == 0, result.output
    header, rows = csv_rows(result.stdout)
    assert header == (
        "model,calls,hits,hit_rate,prompt_tokens,completion_tokens,cost_usd,saved_usd,"
        "p50_latency_ms,p95_latency_ms"
    )
    assert rows == [
        ["gpt-4o", 2, 0, 0, 3000, 150, D("0.009"), 0, 300, 500],
        ["gpt-4o-mini", 4, 1, D("0.25"), 1000, 200, D("0.00027"), D("0.00027"), 100, 100],
        ["prod-chat", 1, 0, 0, 10, 5, 0, 0, 200, 200],
        ["text-embedding-3-small", 1, 1, 1, 0, 0, 0, D("0.00002"), None, None],
    ]


def test_reprice_after_mapping_a_deployment(api, client, db_path: Path, monkeypatch) -> None:
    api.set_usage(prompt_tokens=1000, completion_tokens=200)
    client.send_message(msgs(), model="prod-chat", temperature=0)
    client.send_message(msgs(), model="prod-chat", temperature=0)
    llm_ledger.store.repository.close_all()
    monkeypatch.setenv("LLM_LEDGER_MODEL_MAP", "prod-chat=gpt-4o-mini")
    result = invoke(str(db_path), "reprice", "--model", "prod-chat")
    assert (result.exit_code, result.stdout) == (0, "repriced 3 rows (3 examined)\n")
    costs = invoke(str(db_path), "costs", "-f", "json")
    assert json.loads(costs.stdout) == [
        {"model": "prod-chat", "calls": 2, "hits": 1, "prompt_tokens": 1000,
         "completion_tokens": 200, "cost_usd": 0.00027, "saved_usd": 0.00027},
    ]  # fmt: skip
    assert costs.stderr == ""
    again = invoke(str(db_path), "reprice", "--since", "2000-01-01")
    assert again.stdout == "repriced 0 rows (3 examined)\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["costs", "--since", "last week"],
            "error: since='last week' is not a date: expected YYYY-MM-DD or an ISO 8601 "
            "datetime such as 2026-05-01T12:30:00Z (UTC)\n",
        ),
        (
            ["stats", "--since", "2026-05-02", "--until", "2026-05-01"],
            "error: since='2026-05-02' is not before until='2026-05-01': the range is empty\n",
        ),
        (
            ["reprice", "--since", "2026-02-30"],
            "error: since='2026-02-30' is not a date: expected YYYY-MM-DD or an ISO 8601 "
            "datetime such as 2026-05-01T12:30:00Z (UTC)\n",
        ),
    ],
)
def test_bad_input_fails_with_a_message_and_exit_2(known_db: str, args, message) -> None:  # type: ignore[no-untyped-def]
    result = invoke(known_db, *args)
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", message)


def test_bad_model_map_fails_reprice_with_the_pricing_message(known_db: str, monkeypatch) -> None:
    monkeypatch.setenv("LLM_LEDGER_MODEL_MAP", "prod-chat")
    result = invoke(known_db, "reprice")
    assert result.exit_code == 2
    assert result.stderr.startswith(
        "error: LLM_LEDGER_MODEL_MAP: entry 'prod-chat' is not of the form alias=model"
    )
    assert "Traceback" not in result.output


def test_missing_ledger_file_is_an_error_not_a_new_ledger(tmp_path: Path) -> None:
    missing = tmp_path / "nope.db"
    result = invoke(str(missing), "costs")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: no ledger at {missing}")
    assert not missing.exists()


def test_unknown_grouping_is_a_usage_error(known_db: str) -> None:
    result = invoke(known_db, "costs", "--by", "week")
    assert result.exit_code == 2
    assert "week" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("command", ["costs", "stats", "reprice"])
def test_help_has_an_example(command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert f"Example: llm-ledger {command}" in result.stdout or (
        command == "reprice" and "Example: LLM_LEDGER_MODEL_MAP=" in result.stdout
    )
