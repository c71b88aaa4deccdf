"""The ``llm-ledger`` command line.

One Typer app; commands live by subject: ``admin.py`` (info, migrate, recover, demo),
``calls.py`` (calls, show), ``sql.py`` (sql, and the read-only connections),
``costs.py`` (costs, stats, reprice), ``transfer.py`` (export, import, copy,
import-pickle, prune, vacuum), ``analyst.py`` (search, report, datasette-metadata).
Output, errors, dates, progress bars and the call filter options all reading commands
share are in ``output.py``. ``--db`` falls back to LLM_LEDGER_URL, then ./llm_ledger.db.

Why the command modules load lazily: they import SQLAlchemy, Alembic, the OpenAI SDK
(~1.5 s together), and ``llm-ledger --help`` needs none of that. ``_LazyGroup`` lists
the commands and their one-line help from the modules' source (``ast``, no import) and
imports a module only when one of its commands is looked up (to run or show its own help).
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

from ..config import DEFAULT_DB_FILE


def command_modules() -> list[str]:
    """The modules of this package, by name: any of them may register commands on ``app``."""
    here = Path(__file__).parent
    return sorted(p.stem for p in here.glob("*.py") if p.stem != "__init__")


def _scan(module: str) -> list[tuple[str, dict[str, Any]]]:
    """(command name, help keywords) of each ``@app.command(...)`` in ``module``'s source, in order.

    Mirrors what Typer takes from a command: the decorator's name or the function's,
    ``help=``/``short_help=``/``hidden=``/``deprecated=`` literals, else the docstring.
    """
    source = (Path(__file__).parent / f"{module}.py").read_text(encoding="utf-8")
    found: list[tuple[str, dict[str, Any]]] = []
    for node in ast.parse(source).body:
        if not isinstance(node, ast.FunctionDef):
            continue
        for deco in node.decorator_list:
            if not (
                isinstance(deco, ast.Call)
                and isinstance(deco.func, ast.Attribute)
                and deco.func.attr == "command"
                and isinstance(deco.func.value, ast.Name)
                and deco.func.value.id == "app"
            ):
                continue
            name = node.name.lower().replace("_", "-")
            if deco.args and isinstance(deco.args[0], ast.Constant):
                name = str(deco.args[0].value)
            info: dict[str, Any] = {"help": ast.get_docstring(node)}
            for kw in deco.keywords:
                if kw.arg in ("help", "short_help", "hidden", "deprecated"):
                    info[kw.arg] = ast.literal_eval(kw.value)
            found.append((name, info))
    return found


class _LazyCommands(MutableMapping[str, Any]):
    """The group's name -> click command mapping; a command's module is imported on first lookup.

    Iterating lists every command (from the source scan) without importing any.
    """

    def __init__(self, loaded: MutableMapping[str, Any]) -> None:
        self._loaded = dict(loaded)

    def _load(self, name: str) -> None:
        listed = _listing().get(name)
        for module in [listed[0]] if listed else command_modules():
            importlib.import_module(f"{__name__}.{module}")
        for info in app.registered_commands:
            assert info.callback is not None
            cmd_name = info.name or typer.main.get_command_name(info.callback.__name__)
            if cmd_name not in self._loaded:
                self._loaded[cmd_name] = typer.main.get_command_from_info(
                    info,
                    pretty_exceptions_short=app.pretty_exceptions_short,
                    rich_markup_mode=app.rich_markup_mode,
                )

    def __getitem__(self, name: str) -> Any:
        if name not in self._loaded:
            self._load(name)
        return self._loaded[name]

    def __setitem__(self, name: str, command: Any) -> None:
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        del self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        names = list(_listing())
        return iter(names + [name for name in self._loaded if name not in names])

    def __len__(self) -> int:
        return len(list(iter(self)))

    def __contains__(self, name: object) -> bool:
        return name in self._loaded or name in _listing()

    def for_listing(self) -> dict[str, Any]:
        """Every command, an unloaded one as a stand-in carrying the same help fields."""
        listed = _listing()
        return {
            name: self._loaded.get(name)
            or TyperCommand(name=name, rich_markup_mode=app.rich_markup_mode, **listed[name][1])
            for name in self
        }


_LISTING: dict[str, tuple[str, dict[str, Any]]] = {}


def _listing() -> dict[str, tuple[str, dict[str, Any]]]:
    """command name -> (module, help fields), scanned once per process."""
    if not _LISTING:
        for module in command_modules():
            for name, info in _scan(module):
                _LISTING[name] = (module, info)
    return _LISTING


class _LazyGroup(TyperGroup):
    """A Typer group whose commands are imported on first use (see the module docstring)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.commands = _LazyCommands(self.commands)

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self.commands)

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, _db_first(args))

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        # TyperGroup's own listing, over stand-ins for the commands not imported yet.
        commands = self.commands
        assert isinstance(commands, _LazyCommands)
        self.commands = commands.for_listing()
        try:
            super().format_commands(ctx, formatter)
        finally:
            self.commands = commands


def _db_first(args: list[str]) -> list[str]:
    """``--db X`` given after the command (``llm-ledger calls --db x.db``) moves before it,
    where the group's option is parsed; given twice, the one after the command wins."""
    command = None
    i = 0
    while i < len(args):
        token = args[i]
        if token == "--":
            return args
        if token == "--db":
            i += 2
            continue
        if not token.startswith("-"):
            command = i
            break
        i += 1
    if command is None:
        return args
    before, after, moved = args[:command], [], []
    rest = args[command:]
    j = 0
    while j < len(rest):
        token = rest[j]
        if token == "--":
            after.extend(rest[j:])
            break
        if token == "--db" and j + 1 < len(rest):
            moved += rest[j : j + 2]
            j += 2
            continue
        if token.startswith("--db="):
            moved.append(token)
        else:
            after.append(token)
        j += 1
    return before + moved + after


app = typer.Typer(
    name="llm-ledger",
    cls=_LazyGroup,
    help="Query, report on and move an llm_ledger database (cache + audit log of OpenAI calls).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@dataclass
class CliState:
    db: str


def _print_version(value: bool) -> None:
    if value:
        from .._version import __version__

        typer.echo(f"llm-ledger {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    db: str = typer.Option(
        None,
        "--db",
        envvar="LLM_LEDGER_URL",
        help="Ledger path or SQLAlchemy URL (default: $LLM_LEDGER_URL, else ./llm_ledger.db). "
        "Accepted after the command too.",
        show_default=False,
    ),
    version: bool = typer.Option(
        False,
        "--version",
        is_eager=True,
        callback=_print_version,
        help="Print llm-ledger's version and exit.",
    ),
) -> None:
    ctx.obj = CliState(db=db or DEFAULT_DB_FILE)


def main() -> None:
    import structlog

    from ..log import configure

    if not structlog.is_configured():
        configure()  # the CLI is an application: it sets up logging, the library never does
    app()
