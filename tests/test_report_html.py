"""llm-ledger report --html: the data on every engine, the file, and the page in a browser."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llm_ledger import report_html
from llm_ledger.cli import app
from llm_ledger.errors import ConfigError
from llm_ledger.filters import CallFilter

from . import browser
from .analyst_ledger import build

needs_plotly = pytest.mark.skipif(
    importlib.util.find_spec("plotly") is None, reason="plotly (the report extra) not installed"
)


def test_report_data_is_what_costs_and_stats_say(any_db: str) -> None:
    data = report_html.build_report(build(any_db))
    assert data["totals"] == {
        "calls": 7,
        "hits": 1,
        "hit_rate": 0.1429,
        "cost_usd": 0.00641,
        "saved_usd": 0.0003,
    }
    assert data["days"] == [
        {"day": "2026-05-01", "calls": 2, "hits": 1, "hit_rate": 0.5, "cost_usd": 0.0003, "saved_usd": 0.0003},
        {"day": "2026-05-02", "calls": 2, "hits": 0, "hit_rate": 0.0, "cost_usd": 0.0021, "saved_usd": 0.0},
        {"day": "2026-05-03", "calls": 3, "hits": 0, "hit_rate": 0.0, "cost_usd": 0.00401, "saved_usd": 0.0},
    ]  # fmt: skip
    assert data["models"] == [
        {"model": "gpt-4o", "cost_usd": 0.006},
        {"model": "gpt-4o-mini", "cost_usd": 0.0004},
        {"model": "text-embedding-3-small", "cost_usd": 0.00001},
    ]
    assert data["runs"] == [{"run": "tools", "cost_usd": 0.002}, {"run": "geo", "cost_usd": 0.0003}]
    assert data["latency"] == [
        {"model": "gpt-4o", "p50": 450.0, "p95": 800.0},
        {"model": "gpt-4o-mini", "p50": 120.0, "p95": 120.0},
        {"model": "text-embedding-3-small", "p50": 30.0, "p95": 30.0},
    ]
    assert [r["id"] for r in data["slowest"]] == [7, 3, 1, 4, 5, 6]
    assert [r["id"] for r in data["priciest"]] == [7, 3, 1, 4, 5]
    assert data["slowest"][0]["prompt"] == "Now a follow-up about glaciers"
    assert data["slowest"][0]["created_at"] == "2026-05-03 10:00:00"


def test_report_data_follows_the_filters(any_db: str) -> None:
    ledger = build(any_db)
    data = report_html.build_report(ledger, CallFilter(tags=(("team", "x"),)))
    assert data["filter"] == "tag team=x"
    assert data["totals"]["calls"] == 2
    assert data["totals"]["cost_usd"] == 0.0043
    assert [r["id"] for r in data["slowest"]] == [7, 1]
    data = report_html.build_report(ledger, CallFilter(since="2026-05-02", status="ok"))
    assert [d["day"] for d in data["days"]] == ["2026-05-02", "2026-05-03"]
    assert data["totals"]["calls"] == 3  # c3, c5, c7: c4 was refused, c6 failed


def test_report_without_plotly_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=re.escape("pip install 'llm-ledger[report]'")):
        report_html.plotly_js()


@needs_plotly
def test_report_file_holds_its_script_and_data_and_loads_nothing(db_path: Path) -> None:
    build(str(db_path)).close()
    out = db_path.parent / "report.html"
    result = CliRunner().invoke(app, ["--db", str(db_path), "report", "--html", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"wrote {out} (")
    page = out.read_text(encoding="utf-8")
    assert report_html.plotly_js() in page
    assert re.findall(r"<(?:script|link|img|iframe)[^>]*\b(?:src|href)=", page) == []
    assert page.count('class="chart"') == len(report_html.CHARTS)
    assert "Now a follow-up about glaciers" in page


def test_report_of_an_empty_selection_says_so_instead_of_drawing(db_path: Path) -> None:
    data = report_html.build_report(build(str(db_path)), CallFilter(model="no-such-model"))
    page = report_html.render(data, "/* plotly */")
    assert page.count("No calls in this selection.") == 3
    assert 'class="chart"' not in page
    assert "const FIGURES = {};" in page


@needs_plotly
def test_report_draws_every_chart_in_headless_chromium(db_path: Path, tmp_path: Path) -> None:
    executable = browser.find_chromium()
    if executable is None:
        pytest.skip("no chromium on PATH: apt-get install chromium (.ci/run installs it)")
    path = report_html.write_report(build(str(db_path)), tmp_path / "report.html")
    with browser.Browser(executable, tmp_path / "profile") as page:
        page.open_page()
        page.navigate(path.as_uri())
        counts = page.evaluate(
            "JSON.stringify(Object.fromEntries([...document.querySelectorAll('.chart')].map("
            "d => [d.id, [d.querySelectorAll('svg.main-svg').length,"
            " d.querySelectorAll('.point, path.js-line').length]])))"
        )
        shot = page.screenshot(tmp_path / "report.png")
        assert page.errors() == []
        assert page.requests() == [path.as_uri()]  # nothing fetched but the file itself
    import json

    drawn = json.loads(counts)
    assert sorted(drawn) == sorted(f"chart-{name}" for name in report_html.CHARTS)
    # Bars are .point paths (one per day/model/run), the hit-rate line is a path.js-line.
    assert {k: v[0] > 0 for k, v in drawn.items()} == dict.fromkeys(drawn, True)
    assert drawn["chart-spend"][1] == 6  # 3 days x (spent, saved)
    assert drawn["chart-models"][1] == 3
    assert drawn["chart-runs"][1] == 2
    assert drawn["chart-latency"][1] == 6  # 3 models x (p50, p95)
    assert drawn["chart-calls"][1] >= 4  # 3 bars + the line (+ its markers)
    assert shot.stat().st_size > 10_000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _calls_in(db: Path) -> int:
    import sqlite3

    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM call_log").fetchone()[0])


@needs_plotly
@pytest.mark.parametrize("name", ["ledger.db", "ledger.db-wal", "ledger.db.journal/x.html"])
def test_the_report_never_overwrites_the_ledger_or_its_files(db_path: Path, name: str) -> None:
    """``report --html ledger.db`` wrote the page over the ledger (exit 0, every call gone);
    now refused before any query, through ``..`` too, and the ledger keeps its calls."""
    build(str(db_path)).close()
    calls = _calls_in(db_path)
    out = db_path.parent / "sub" / ".." / name
    (db_path.parent / "sub").mkdir()
    result = CliRunner().invoke(app, ["--db", str(db_path), "report", "--html", str(out)])
    assert result.exit_code == 2, result.output
    assert result.output == (
        f"error: cannot write the report to {out}: it is the ledger {db_path} or one of its "
        "files; name another file, e.g. report.html\n"
    )
    assert _calls_in(db_path) == calls
    assert [p.name for p in db_path.parent.iterdir() if p.name.endswith(".html")] == []


@needs_plotly
def test_the_report_replaces_a_symlink_instead_of_writing_through_it(db_path: Path) -> None:
    """A link at the report's path to another file: the link is replaced by the report
    (0600, it holds prompts), the file it pointed at is untouched (it was overwritten)."""
    build(str(db_path)).close()
    victim = db_path.parent / "victim.txt"
    victim.write_text("keep me")
    link = db_path.parent / "report.html"
    link.symlink_to(victim)
    result = CliRunner().invoke(app, ["--db", str(db_path), "report", "--html", str(link)])
    assert result.exit_code == 0, result.output
    assert victim.read_text() == "keep me"
    assert not link.is_symlink()
    assert link.stat().st_mode & 0o777 == 0o600
    assert "Now a follow-up about glaciers" in link.read_text(encoding="utf-8")
    assert sorted(p.name for p in db_path.parent.iterdir() if p.name.startswith(".")) == []
