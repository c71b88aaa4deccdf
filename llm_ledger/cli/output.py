"""Printing rows as a rich table, CSV or JSON, progress bars, and failing with a message and exit code 2."""

from __future__ import annotations

import contextlib
import csv
import enum
import io
import json
import math
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from ..errors import ConfigError, LedgerError
from ..store import db
from ..timebounds import parse_time

if TYPE_CHECKING:
    from ..filters import CallFilter

# Tables piped to a file or another program are not folded to a terminal's width.
PIPE_WIDTH = 240


class Format(str, enum.Enum):
    table = "table"
    csv = "csv"
    json = "json"
    nl = "nl"  # newline-delimited JSON: one object per line


# The date window every command that filters by time takes (the same words everywhere).
Since = Annotated[
    str | None,
    typer.Option(help="From this UTC date (YYYY-MM-DD) or ISO datetime on (inclusive)."),
]
Until = Annotated[
    str | None,
    typer.Option(help="Before this UTC datetime; a date alone includes that whole day."),
]

# The call filters every reading command takes (calls, search, costs, stats, report): the
# same words everywhere, one llm_ledger.filters.CallFilter.


class Status(str, enum.Enum):
    ok = "ok"
    error = "error"
    refused = "refused"


class Cache(str, enum.Enum):
    hit = "hit"
    miss = "miss"
    bypass = "bypass"


Run = Annotated[str | None, typer.Option(help="Only calls made in scope(run=RUN).")]
Model = Annotated[str | None, typer.Option(help="Only calls to this model.")]
StatusOpt = Annotated[Status | None, typer.Option(help="Only calls with this status.")]
CacheOpt = Annotated[Cache | None, typer.Option(help="Only calls with this cache status.")]
Namespace = Annotated[str | None, typer.Option(help="Only calls in this cache namespace.")]
Tags = Annotated[
    list[str] | None,
    typer.Option(
        "--tag",
        metavar="NAME=VALUE",
        help="Only calls with this tag; repeat for calls that have every one.",
    ),
]


def tag_option(tags: list[str] | None) -> tuple[tuple[str, str], ...]:
    """``--tag NAME=VALUE`` options as pairs; a malformed one exits with the message."""
    from ..filters import parse_tags  # SQLAlchemy: not at --help time

    try:
        return parse_tags(tags)
    except LedgerError as exc:
        fail(str(exc))


def call_filter(
    since: str | None = None,
    until: str | None = None,
    run: str | None = None,
    model: str | None = None,
    status: Status | None = None,
    cache: Cache | None = None,
    namespace: str | None = None,
    tags: list[str] | None = None,
) -> CallFilter:
    """The options as a CallFilter; a malformed date or tag exits with the message."""
    from ..errors import LedgerError
    from ..filters import CallFilter, parse_tags  # SQLAlchemy: not at --help time

    try:
        found = CallFilter(
            since=since,
            until=until,
            run=run,
            model=model,
            status=status.value if status else None,
            cache=cache.value if cache else None,
            namespace=namespace,
            tags=parse_tags(tags),
        )
        found.conditions()  # parses the dates now, before anything is opened
    except LedgerError as exc:
        fail(str(exc))
    return found


FORMAT_OPTION = typer.Option(
    Format.table,
    "--format",
    "-f",
    help="Output format: table, csv, json (an array) or nl (one JSON object per line).",
)

# Columns that hold JSON documents: printed as JSON values by json and nl on every engine
# (SQLite and MariaDB hand them over as strings, PostgreSQL as objects).
JSON_COLUMNS = frozenset({"request", "response", "tags"})


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat(sep=" ") if isinstance(value, datetime) else value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", "replace")
    return value


def plain(value: Any) -> Any:
    """``_plain`` all the way down: what ``--format json`` prints for nested values."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return _plain(value)


def _json_cell(column: str, value: Any) -> Any:
    """A value for json/nl: a JSON column's text parsed into the object it holds."""
    if column in JSON_COLUMNS and isinstance(value, (str, bytes)):
        with contextlib.suppress(ValueError):
            return plain(json.loads(value))
    return plain(value)


def _cell(value: Any) -> str:
    value = _plain(value)
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    if isinstance(value, float):
        # Plain notation (money), 15 significant digits like the sqlite3 shell: a sum of
        # REAL dollars prints 0.000027, not 0.000027000000000000002.
        return f"{Decimal(repr(float(f'{value:.15g}'))):f}" if math.isfinite(value) else str(value)
    return str(value)


def _json(value: Any, *, sort_keys: bool = False) -> str:
    """What ``--format json`` prints: indented, non-ASCII kept, anything else as text."""
    return json.dumps(value, ensure_ascii=False, indent=2, sort_keys=sort_keys, default=str)


def wide() -> int:
    """A table width: the terminal's when there is one, else wide enough not to fold rows."""
    console = Console()
    return max(100, console.width) if console.is_terminal else PIPE_WIDTH


def emit(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str],
    fmt: Format,
    title: str | None = None,
    *,
    width: int | None = None,
    empty: str | None = None,
) -> None:
    """Print rows (dicts) with the given columns, in order.

    ``width`` sets the table's console width (default: the terminal's, at least 100).
    ``empty``: what a table says instead when there are no rows (CSV keeps its header
    line and JSON is ``[]``, for programs).
    """
    if fmt in (Format.json, Format.nl):
        out = [{c: _json_cell(c, r.get(c)) for c in columns} for r in rows]
        if fmt is Format.json:
            typer.echo(_json(out))
        for obj in out if fmt is Format.nl else ():
            typer.echo(json.dumps(obj, ensure_ascii=False, default=str))
    elif fmt is Format.csv:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        for r in rows:
            writer.writerow([_cell(r.get(c)) for c in columns])
        typer.echo(buf.getvalue(), nl=False)
    elif not rows and empty is not None:
        typer.echo(empty)
    else:
        table = Table(title=title, show_lines=False)
        for c in columns:
            table.add_column(c, overflow="fold")
        for r in rows:
            table.add_row(*[_cell(r.get(c)) for c in columns])
        console_width = width if width is not None else max(100, Console().width)
        Console(width=console_width, soft_wrap=False).print(table)


def emit_object(obj: Mapping[str, Any]) -> None:
    """One JSON object (``--format json`` of a single thing: ``show``, ``info``)."""
    typer.echo(_json(plain(obj)))


def emit_fields(title: str, fields: Iterable[tuple[str, Any]], indent: int = 2) -> None:
    """A titled block of aligned ``name  value`` lines; None prints as ``-``."""
    pairs = list(fields)
    typer.echo(title)
    if not pairs:
        typer.echo(f"{' ' * indent}-")
        return
    width = max(len(name) for name, _ in pairs)
    for name, value in pairs:
        text = "-" if value is None else _cell(value)
        typer.echo(f"{' ' * indent}{name.ljust(width)}  {text}".rstrip())


def emit_json_block(title: str, value: Any, indent: int = 2) -> None:
    """A titled, indented, pretty-printed JSON document (a request, a response)."""
    typer.echo(title)
    if value is None:
        typer.echo(f"{' ' * indent}-")
        return
    text = _json(plain(value), sort_keys=True)
    for line in text.splitlines():
        typer.echo(f"{' ' * indent}{line}")


def fail(message: str, code: int = 2) -> NoReturn:
    """A one-line error on stderr and an exit code; never a traceback."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def stdin_text() -> str:
    return sys.stdin.read()


def where(location: str) -> str:
    """The ledger's URL as messages show it (password hidden)."""
    return db.describe(db.normalize_url(location))


def db_message(exc: BaseException) -> str:
    """The database's own message for a SQLAlchemy/driver error, on one line."""
    orig = getattr(exc, "orig", None) or exc
    args: tuple[Any, ...] = tuple(getattr(orig, "args", ()))
    if len(args) == 2 and isinstance(args[0], int):  # PyMySQL: (code, message)
        return str(args[1]).strip()
    return str(orig).strip()


@contextlib.contextmanager
def failing(location: str | None = None) -> Iterator[None]:
    """Library, database and file errors become one line on stderr and exit code 2.

    The one error wrapper of the commands: ``location`` names the ledger in database errors.
    """
    try:
        yield
    except (LedgerError, ValueError) as exc:
        fail(str(exc))
    except SQLAlchemyError as exc:
        prefix = f"{where(location)}: " if location is not None else ""
        fail(f"{prefix}database error: {db_message(exc)}")
    except OSError as exc:
        fail(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "))


def time_option(value: str | None, option: str, *, end: bool = False) -> datetime | None:
    """A ``--since``/``--until`` value read by :func:`llm_ledger.timebounds.parse_time`."""
    try:
        return parse_time(value, option, end=end)
    except ConfigError:
        fail(
            f"{option} {value!r}: expected a date (2026-05-01) or a UTC datetime "
            "(2026-05-01T12:30:00, or with an offset such as +02:00)"
        )


@contextlib.contextmanager
def progress_bar(
    enabled: bool, description: str, total: int | None
) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr when enabled; yields advance(n)."""
    if not enabled:
        yield lambda n: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)
