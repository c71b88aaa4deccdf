"""Bundles written before a column existed import after it (transfer.ADDED_FIELDS)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import llm_ledger
from llm_ledger import transfer
from llm_ledger.testing import FakeOpenAIServer

from .test_transfer import record_calls, rewrite


def _without_template(src: Path, dst: Path) -> None:
    """The bundle an llm_ledger from before call_log.template would have written."""
    rewrite(src, dst, lambda r: {k: v for k, v in r.items() if k != "template"})


def test_a_field_added_since_the_bundle_was_written_is_filled_in(
    client: llm_ledger.OpenAIClient,
    api: FakeOpenAIServer,
    db_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    record_calls(client, api)
    transfer.export_bundle(str(db_path), tmp_path / "new.jsonl")
    _without_template(tmp_path / "new.jsonl", tmp_path / "old.jsonl")
    monkeypatch.setitem(transfer.ADDED_FIELDS, "call", {"template": None})

    result = transfer.import_bundle(str(tmp_path / "b.db"), tmp_path / "old.jsonl")

    llm_ledger.flush()  # writes="journal": this process's calls into the tables first
    conn = sqlite3.connect(tmp_path / "b.db")
    calls, templates = conn.execute("SELECT COUNT(*), COUNT(template) FROM call_log").fetchone()
    conn.close()
    assert result["calls"] == {"added": calls, "already_present": 0, "refused": 0}
    assert calls > 0 and templates == 0


def test_a_missing_field_that_is_not_listed_as_added_makes_the_bundle_invalid(
    client: llm_ledger.OpenAIClient, api: FakeOpenAIServer, db_path: Path, tmp_path: Path
) -> None:
    record_calls(client, api)
    transfer.export_bundle(str(db_path), tmp_path / "new.jsonl")
    _without_template(tmp_path / "new.jsonl", tmp_path / "old.jsonl")

    with pytest.raises(
        llm_ledger.BundleError,
        match=r"call record: missing fields \['template'\], unknown fields \[\]",
    ):
        transfer.import_bundle(str(tmp_path / "b.db"), tmp_path / "old.jsonl")
    llm_ledger.flush()  # writes="journal": this process's calls into the tables first
    assert not (tmp_path / "b.db").exists() or sqlite3.connect(tmp_path / "b.db").execute(
        "SELECT COUNT(*) FROM call_log"
    ).fetchone() == (0,)
