"""The benchmark harness still runs and still reports every figure (timings never fail this).

Runs ``python -m benchmarks.run --quick --sizes 200`` as documented in docs/benchmarks.md
and checks the JSON's shape: every expected key there, every figure a positive number,
optional contenders either measured or skipped with a note.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
SIZE = "200"
ALWAYS = ("floor", "sqlite3_ledger_schema", "sqlite3_ledger_schema_journal", "ledger", "pickle")
OPTIONAL = ("langchain", "diskcache")  # the bench extra; skipped with a note without it
CONCURRENCY_KEYS = ("calls_per_s", "calls", "wall_s", "errors", "audit_rows_added", "audit_rows_ok")
LOOPBACK_KEYS = ("raw_sdk_us", "ledger_miss_us", "overhead_pct", "ratio")


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench") / "quick.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLM_LEDGER_", "OPENAI_"))}
    pg_url = os.environ.get("LLM_LEDGER_TEST_PG_URL")  # this test run's own database
    pg = ["--pg-url", pg_url] if pg_url else []
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--sizes", SIZE, "--out", str(out)]
        + pg,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=480,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| measurement (median) |" in done.stdout
    assert out.with_suffix(".md").read_text().startswith("| measurement (median) |")
    return json.loads(out.read_text())


def test_meta_names_the_machine_and_the_workload(results: dict[str, Any]) -> None:
    meta = results["meta"]
    assert meta["quick"] is True
    assert meta["sizes"] == [int(SIZE)]
    assert meta["machine"]["cores"] >= 1
    assert meta["machine"]["sqlite"]
    assert 800 <= meta["workload"]["request_bytes"] <= 1000
    assert 500 <= meta["workload"]["answer_bytes"] <= 700


def test_every_contender_has_a_positive_hit_and_store_figure(results: dict[str, Any]) -> None:
    size = results["sizes"][SIZE]
    for name in ALWAYS:
        assert _positive(size["hit_us"][name]), name
        assert _positive(size["store_us"][name]), name
        assert _positive(size["ratio_to_floor"]["store"][name]), name
    assert _positive(size["store_us"]["ledger_dict"])
    assert size["ratio_to_floor"]["hit"]["floor"] == 1.0


def test_optional_contenders_are_measured_or_skipped_with_a_note(
    results: dict[str, Any],
) -> None:
    size = results["sizes"][SIZE]
    for name in OPTIONAL:
        if name in results["skipped"]:
            assert "install" in results["skipped"][name]
            assert name not in size["hit_us"]
        else:
            assert _positive(size["hit_us"][name]), name
            assert _positive(size["store_us"][name]), name


def test_concurrency_loopback_report_and_memory_are_reported(results: dict[str, Any]) -> None:
    size = results["sizes"][SIZE]
    for kind in ("ledger", "floor"):
        figures = size["concurrency"][kind]
        assert all(key in figures for key in CONCURRENCY_KEYS), kind
        assert _positive(figures["calls_per_s"])
        assert figures["audit_rows_ok"] is True, figures
    for key in ("loopback", "loopback_nodelay"):
        assert all(_positive(size[key][k]) for k in ("raw_sdk_us", "ledger_miss_us", "ratio"))
        assert all(k in size[key] for k in LOOPBACK_KEYS)
    assert _positive(size["report"]["seconds"])
    assert size["report"]["source"]
    assert _positive(size["memory"]["calls"]["peak_rss_mb"])
    assert _positive(size["memory"]["main_rss_mb"])


def test_export_and_copy_are_timed_or_skipped_with_a_note(results: dict[str, Any]) -> None:
    size = results["sizes"][SIZE]
    for kind in ("export", "copy"):
        if "skipped" in size[kind]:
            assert results["skipped"][kind] == size[kind]["skipped"]
        else:
            assert _positive(size[kind]["rows_per_s"]), kind
            assert size[kind]["rows"] >= 4 * int(SIZE)


def test_targets_are_evaluated_without_deciding_anything(results: dict[str, Any]) -> None:
    targets = results["targets"]
    assert {t["target"].split(" (")[0] for t in targets} >= {
        "hit <= 2x floor",
        "store <= 2.5x floor",
        "calls/s, 4 procs x 4 threads >= 0.6x floor",
        "cost report over 200 calls <= 2 s",
    }
    for t in targets:
        assert t["met"] in (True, False, None)
        assert t["op"] in ("<=", ">=")


COLD_KEYS = (
    "python_pass_ms",
    "import_openai_ms",
    "import_llm_ledger_ms",
    "import_client_ms",
    "cli_help_ms",
    "first_count_ms",
    "first_chat_ms",
    "warm_chat_ms",
    "first_chat_ratio",
    "first_embedding_ms",
    "warm_embedding_ms",
)


def test_cold_start_figures_are_reported(results: dict[str, Any]) -> None:
    cold = results["coldstart"]
    assert all(_positive(cold[key]) for key in COLD_KEYS), cold
    names = {t["target"] for t in results["targets"]}
    assert "llm-ledger --help <= 0.4 s" in names
    assert "first call to the test-kit server <= 1.5x a warm call" in names


def test_postgres_row_is_measured_or_skipped_with_a_note(results: dict[str, Any]) -> None:
    if not os.environ.get("LLM_LEDGER_TEST_PG_URL"):
        assert "--pg-url" in results["skipped"]["postgres"]
        return
    pgr = results["postgres"]
    for kind in ("ledger", "floor"):
        assert _positive(pgr[kind]["calls_per_s"]), kind
        assert pgr[kind]["audit_rows_ok"] is True, pgr[kind]
        assert pgr[kind]["errors"] == 0
    assert _positive(pgr["ratio"])


def test_the_journaled_schema_floor_writes_every_call_once_and_empties_its_journal(
    tmp_path: Path,
) -> None:
    """The bound the benchmark reports for the write-behind design must do what it claims:
    every call's rows, each once, the journal holding each call until it is written."""
    sys.path.insert(0, str(REPO))
    try:
        from benchmarks import contenders, seed, workload
    finally:
        sys.path.remove(str(REPO))

    c = contenders.LedgerSchemaJournalFloor(tmp_path, 20)
    c.seed()
    c.open()
    impl = c.impl
    assert isinstance(impl, contenders.floor.LedgerSchemaJournalFloor)
    mark = seed.marks(c.db, c.tables)
    hits = [workload.item(i) for i in range(10)] * 13  # 130 hits: one batch of 128 written
    for it in hits:
        want = workload.response(it.i)["choices"][0]["message"]["content"]
        assert c.call(*c.prepare(it))["content"] == want
    assert seed.added(c.db, mark)["call_log"] == 128
    assert len(Path(impl._journal).read_text().splitlines()) == 2
    for k in range(3):  # three stores, fresh requests
        c.call(*c.prepare(workload.item(1_000_000 + k)))
    c.finish()
    assert seed.added(c.db, mark) == {
        "requests": 3,
        "responses": 3,
        "cache_entries": 3,
        "call_log": 133,
    }
    assert Path(impl._journal).read_text() == ""
    assert c.api.calls == 3
    c.close()
    assert not Path(impl._journal).exists()


def _bound() -> Any:
    sys.path.insert(0, str(REPO))
    try:
        from benchmarks import bound
    finally:
        sys.path.remove(str(REPO))
    return bound


def test_the_schema_decomposition_measures_every_variant_on_its_own_rows(
    tmp_path: Path,
) -> None:
    """``python -m benchmarks.bound`` at a tiny size: each variant timed on hits (and, but
    for the hit-row variants, stores), each round checked to have written every call's
    rows once; the table has a line per variant and the floor."""
    bound = _bound()
    results = bound.measure(tmp_path, 30, hits=20, stores=4, rounds=2)
    assert list(results) == [v.label for v in bound.VARIANTS]
    for v in bound.VARIANTS:
        r = results[v.label]
        assert [len(r[k]) for k in ("hit", "store", "floor hit", "floor store")] == [
            2,
            2 if v.stores else 0,
            2,
            2,
        ]
        assert all(_positive(x) for x in r["hit"] + r["store"] + r["floor hit"] + r["floor store"])
    lines = bound.table(results, 30)
    assert len(lines) == 2 + 1 + len(bound.VARIANTS)
    assert lines[2].startswith("| floor: raw sqlite3, minimal schema | ")
    assert lines[-1].startswith("| hit row: none (journal line only) | ")
    assert lines[-1].endswith("| – | – |")
    assert lines[2].split(" | ")[2] == "1.00"  # the floor against itself
    assert not list(tmp_path.glob("tmp*"))  # the variants' copies are gone


def test_the_schema_decomposition_stops_on_a_variant_that_loses_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check can fail: a variant whose hits go nowhere while it claims call_log."""
    bound = _bound()
    lossy = bound.Variant("lossy", impl=bound._NoHitRow)
    monkeypatch.setattr(bound, "VARIANTS", (lossy,))
    with pytest.raises(SystemExit) as stop:
        bound.measure(tmp_path, 30, hits=20, stores=4, rounds=1)
    four = "'requests': 4, 'responses': 4, 'cache_entries': 4"
    assert str(stop.value) == (
        f"lossy: wrote {{{four}, 'call_log': 4, 'hit_slim': 0}}, "
        f"expected {{{four}, 'call_log': 24, 'hit_slim': 0}}"
    )
