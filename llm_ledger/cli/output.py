"""Printing rows as a rich table, CSV or JSON, and failing with a message and exit code 2."""

from __future__ import annotations

import csv
import enum
import io
import json
import sys
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table


class Format(str, enum.Enum):
    table = "table"
    csv = "csv"
    json = "json"


FORMAT_OPTION = typer.Option(
    Format.table, "--format", "-f", help="Output format: table, csv or json."
)


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat(sep=" ") if isinstance(value, datetime) else value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", "replace")
    return value


def _cell(value: Any) -> str:
    value = _plain(value)
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    if isinstance(value, float):
        return f"{Decimal(repr(value)):f}"  # money without scientific notation
    return str(value)


def emit(
    rows: Sequence[dict[str, Any]], columns: Sequence[str], fmt: Format, title: str | None = None
) -> None:
    """Print rows (dicts) with the given columns, in order."""
    if fmt is Format.json:
        out = [{c: _plain(r.get(c)) for c in columns} for r in rows]
        typer.echo(json.dumps(out, ensure_ascii=False, indent=2, default=str))
    elif fmt is Format.csv:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        for r in rows:
            writer.writerow([_cell(r.get(c)) for c in columns])
        typer.echo(buf.getvalue(), nl=False)
    else:
        table = Table(title=title, show_lines=False)
        for c in columns:
            table.add_column(c, overflow="fold")
        for r in rows:
            table.add_row(*[_cell(r.get(c)) for c in columns])
        Console(width=max(100, Console().width), soft_wrap=False).print(table)


def fail(message: str, code: int = 2) -> NoReturn:
    """A one-line error on stderr and an exit code; never a traceback."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def stdin_text() -> str:
    return sys.stdin.read()
