"""Every registered command documents itself, and README / docs/cli.md keep up with them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from llm_ledger.cli import app
from llm_ledger.demo import run_demo

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def readme_block() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start, end = "<!-- cli-reference:start -->", "<!-- cli-reference:end -->"
    assert start in text and end in text
    return text[text.index(start) + len(start) : text.index(end)]


def readme_rows() -> dict[str, tuple[str, str]]:
    """command -> (description, example) from the reference table."""
    rows = {}
    for line in readme_block().splitlines():
        match = re.fullmatch(r"\| `([a-z-]+)` \| ([^|]+) \| `([^`]+)` \|", line)
        if match:
            assert match[1] not in rows, f"{match[1]} listed twice"
            rows[match[1]] = (match[2].strip(), match[3])
    return rows


def test_the_app_registers_the_commands_of_every_module() -> None:
    assert {"info", "migrate", "calls", "show", "sql", "recover", "demo"} <= set(COMMANDS)
    assert {"costs", "stats", "reprice"} <= set(COMMANDS)
    assert {"export", "import", "copy", "import-pickle", "prune", "vacuum"} <= set(COMMANDS)


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help_with_an_example(name: str) -> None:
    result = CliRunner().invoke(app, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example:" in result.stdout
    example = result.stdout.split("Example:", 1)[1]
    assert "llm-ledger" in example and name in example


def test_readme_reference_lists_every_command_and_no_other() -> None:
    assert sorted(readme_rows()) == COMMANDS


@pytest.mark.parametrize("name", COMMANDS)
def test_readme_reference_gives_a_description_and_an_example(name: str) -> None:
    description, example = readme_rows()[name]
    assert description
    assert re.search(rf"\bllm-ledger (--db \S+ )?{re.escape(name)}(?![\w-])", example), example


def test_docs_cli_has_a_section_per_command() -> None:
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    sections = set(re.findall(r"^## ([a-z-]+)$", text, re.M))
    assert set(COMMANDS) <= sections


def analyst_queries() -> list[tuple[str, str | None]]:
    """The (query, shown output) pairs of docs/cli.md's "SQL for analysts"."""
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    section = text.split("### SQL for analysts", 1)[1].split("\n## ", 1)[0]
    found = re.findall(r"```sql\n(.*?)```\n(?:\n```\n(.*?)```\n)?", section, re.S)
    return [(sql.strip(), output or None) for sql, output in found]


def test_docs_analyst_queries_run_on_a_demo_ledger(tmp_path: Path) -> None:
    location = str(tmp_path / "demo.db")
    assert run_demo(location, echo=lambda line: None) == 0
    queries = analyst_queries()
    assert len(queries) >= 6
    for sql, shown in queries:
        params = ["-p", "pattern", "%ledger%"] if ":pattern" in sql else []
        result = CliRunner().invoke(app, ["--db", location, "sql", sql, *params])
        assert result.exit_code == 0, (sql, result.output)
        if shown is not None and not re.search(r"\d{4}-\d{2}-\d{2}", shown):
            assert result.stdout == shown, sql  # no timestamps or latencies: exactly as shown
