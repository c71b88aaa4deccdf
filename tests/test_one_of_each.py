"""One of each small helper: the call log in Python as the CLI prints it, one ledger size,
one date parser, the library's errors exported from the package."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

import llm_ledger
from llm_ledger import calllog, errors, pickles, reports, transfer
from llm_ledger.store import maintenance
from llm_ledger.timebounds import parse_time

from .test_cli_core import invoke, known  # noqa: F401  (fixture)


def test_python_callers_get_the_calls_the_cli_lists(known: str) -> None:  # noqa: F811
    result = invoke("--db", known, "calls", "--since", "2026-05-02", "--format", "json")
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)

    rows = calllog.find_calls(known, since="2026-05-02")

    assert [r["id"] for r in rows] == [r["id"] for r in printed] == [5, 4, 3]
    assert [r["prompt"] for r in rows] == [r["prompt"] for r in printed]
    assert list(rows[0]) == list(calllog.CALL_COLUMNS)


def test_python_callers_get_the_call_the_cli_shows(known: str) -> None:  # noqa: F811
    result = invoke("--db", known, "show", "4", "--format", "json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)

    doc = calllog.get_call(known, 4)

    assert doc is not None
    assert (
        doc["error"]
        == shown["error"]
        == {
            "error_type": "BadRequestError",
            "error_message": shown["error"]["error_message"],
        }
    )
    assert doc["call"]["call_uuid"] == shown["call"]["call_uuid"]
    assert doc["request"] == shown["request"]
    assert calllog.get_call(known, 99) is None


def test_info_and_vacuum_measure_the_ledger_the_same_way(any_db: str) -> None:
    llm_ledger.Ledger(any_db).close()
    vacuumed = maintenance.vacuum(any_db)
    result = invoke("--db", any_db, "info", "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["size_bytes"] == vacuumed["bytes_after"]


def test_one_date_parser_for_reports_the_cli_and_the_call_log() -> None:
    assert reports.parse_time is parse_time
    assert parse_time("2026-05-01T12:30:00+02:00", "since") == datetime(2026, 5, 1, 10, 30)
    assert parse_time("2026-05-01", "until", end=True) == datetime(2026, 5, 2)


def test_prune_reads_its_date_with_the_one_parser(tmp_path: Path) -> None:
    result = invoke("--db", str(tmp_path / "x.db"), "prune", "--before", "20260501")
    assert result.exit_code == 2
    assert result.output.startswith("error: --before: '20260501' is not a date")


@pytest.mark.parametrize(
    "name", ["TransferError", "BundleError", "PickleImportError", "UnsafePickleError"]
)
def test_transfer_and_pickle_errors_live_in_errors_and_are_exported(name: str) -> None:
    cls = getattr(errors, name)
    assert getattr(llm_ledger, name) is cls
    assert name in llm_ledger.__all__
    assert issubclass(cls, llm_ledger.LedgerError)
    owner = pickles if "Pickle" in name else transfer
    assert getattr(owner, name) is cls


def test_api_call_error_declares_its_sdk_error() -> None:
    err = llm_ledger.APICallError("gave up", attempts=3, error_type="APIConnectionError")
    assert err.sdk_error is None
    assert "sdk_error" in llm_ledger.APICallError.__annotations__
