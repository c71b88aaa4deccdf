"""The ``llm-ledger`` command line.

One Typer app; commands live by subject: ``core.py`` (info, migrate, calls, show,
recover, demo), ``sql.py`` (sql, and the read-only connections), ``costs.py`` (costs, stats, reprice), ``transfer.py``
(export, import, copy, import-pickle, prune, vacuum). Output helpers are in
``output.py``. ``--db`` falls back to LLM_LEDGER_URL, then ./llm_ledger.db.
"""

from __future__ import annotations

from dataclasses import dataclass

import typer

from ..config import DEFAULT_DB_FILE

app = typer.Typer(
    name="llm-ledger",
    help="Query, report on and move an llm_ledger database (cache + audit log of OpenAI calls).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@dataclass
class CliState:
    db: str


@app.callback()
def _root(
    ctx: typer.Context,
    db: str = typer.Option(
        None,
        "--db",
        envvar="LLM_LEDGER_URL",
        help="Ledger path or SQLAlchemy URL (default: $LLM_LEDGER_URL, else ./llm_ledger.db).",
        show_default=False,
    ),
) -> None:
    ctx.obj = CliState(db=db or DEFAULT_DB_FILE)


from . import core, costs, sql, transfer  # noqa: E402,F401  (they register their commands)


def main() -> None:
    app()
