"""``llm-ledger sql``, and the read-only connections every reading command uses.

The database keeps these connections read-only (:func:`read_only`), so ``llm-ledger sql``
can be handed to analysts: SQLite is opened ``mode=ro`` with an authorizer that refuses
anything but reads; PostgreSQL and MariaDB sessions are set READ ONLY; one statement
runs per call (PostgreSQL gets it as a prepared statement, which the server refuses to
hold two of, so ``COMMIT; DROP ...`` cannot leave the read-only transaction).
"""

from __future__ import annotations

import contextlib
import re
import shlex
from collections.abc import Iterator
from functools import partial
from typing import Annotated, Any

import typer
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError, StatementError
from sqlalchemy.pool import NullPool
from typer.core import TyperCommand

from .. import sqlguard
from ..errors import LedgerError
from ..sqlguard import statements
from ..store import db
from . import app
from .output import FORMAT_OPTION, Format, db_message, emit, fail, stdin_text, wide
from .output import where as location_name

# --- read-only connections ---------------------------------------------------


def _read_only_engine(location: str) -> Engine:
    url = db.normalize_url(location)
    path = db.sqlite_path(url)
    if path is not None:
        if not path.exists():
            fail(
                f"no ledger at {path}: one is created by the first call, or by "
                f"`llm-ledger --db {shlex.quote(str(path))} migrate`"
            )
        if path.is_dir():  # read-only SQLite says only "disk I/O error" about a directory
            fail(str(db.open_error(db.describe(url), "unable to open database file")))
        return create_engine(
            "sqlite://",
            creator=partial(sqlguard.connect_sqlite_read_only, path),
            poolclass=NullPool,
        )
    # prepare_threshold=0: psycopg prepares every statement (extended protocol: one statement).
    extra = {"connect_args": {"prepare_threshold": 0}} if url.startswith("postgresql") else {}
    try:
        return db.make_engine(location, poolclass=NullPool, **extra)
    except LedgerError as exc:
        fail(str(exc))


@contextlib.contextmanager
def read_only(location: str, *, need_ledger: bool = True) -> Iterator[Connection]:
    """A connection the database holds read-only; ``need_ledger``: refuse a non-ledger."""
    import llm_ledger

    llm_ledger.flush()  # run in a process that made calls (a notebook): see every one
    engine = _read_only_engine(location)
    where = location_name(location)
    try:
        conn = engine.connect()
    except DBAPIError as exc:
        engine.dispose()
        fail(str(db.open_error(where, exc)))
    try:
        try:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
                conn.commit()
            elif conn.dialect.name in ("mysql", "mariadb"):
                conn.exec_driver_sql("SET SESSION TRANSACTION READ ONLY")
                conn.commit()
                conn.exec_driver_sql("START TRANSACTION READ ONLY")
            # Read something even when no ledger is needed: a file that is not a
            # database, or a server that refuses this user, is told here in one line.
            if need_ledger:
                _check_ledger(conn, where)
            else:
                db.current_revision(conn)
        except DBAPIError as exc:
            fail(str(db.open_error(where, exc)))
        yield conn
    finally:
        with contextlib.suppress(SQLAlchemyError):
            conn.rollback()
        conn.close()
        engine.dispose()


def _check_ledger(conn: Connection, where: str) -> None:
    rev, head = db.current_revision(conn), db.head_revision()
    if rev == head:
        return
    if rev is None:
        fail(
            f"{where} holds no ledger (no schema revision): point --db at a ledger, "
            "or create one with `llm-ledger migrate`"
        )
    if rev not in db.known_revisions():
        fail(
            f"{where} has schema revision {rev}, which this llm_ledger does not know "
            f"(its newest is {head}); upgrade with `pip install -U llm-ledger`"
        )
    fail(f"{where} has schema revision {rev}, older than {head}; run `llm-ledger migrate` first")


# --- one statement, read-only -------------------------------------------------


def _refusal(exc: DBAPIError, conn: Connection) -> str | None:
    """The database's reason when it refused a statement as a write; None for other errors."""
    orig = exc.orig
    message = str(orig).strip()
    name = conn.dialect.name
    if name == "sqlite":
        refused = getattr(conn.connection.dbapi_connection, "refused", None)
        if refused is not None and ("not authorized" in message or "authorization" in message):
            return f"{message}: {refused}"
        if (
            "readonly database" in message
            or "one statement at a time" in message
            or "may not be modified" in message
            or "not authorized to use function" in message
        ):
            return message
    elif name == "postgresql":
        if getattr(orig, "sqlstate", None) in ("25006", "25001") or "multiple commands" in message:
            return message.splitlines()[0]
    elif name in ("mysql", "mariadb"):
        args = getattr(orig, "args", ())
        if args and args[0] in (1792, 1290):  # read-only transaction, --read-only server
            return str(args[-1])
    return None


# Words that start a query; anything else the servers refuse as "not one query".
_QUERY_WORDS = frozenset({"SELECT", "WITH", "VALUES", "TABLE", "("})
# Words that start a statement which is not a query (for the message only).
_STATEMENT_WORDS = frozenset(
    "INSERT UPDATE DELETE MERGE REPLACE UPSERT DROP CREATE ALTER TRUNCATE RENAME GRANT REVOKE "
    "COMMIT ROLLBACK BEGIN START SAVEPOINT RELEASE SET RESET LOCK UNLOCK NOTIFY LISTEN "
    "CHECKPOINT VACUUM ANALYZE CLUSTER REINDEX REFRESH CALL DO EXECUTE PREPARE DEALLOCATE "
    "LOAD COPY IMPORT KILL SHUTDOWN FLUSH INSTALL UNINSTALL HANDLER PURGE CHANGE COMMENT "
    "SECURITY DISCARD FETCH MOVE CLOSE DECLARE ATTACH DETACH PRAGMA EXPLAIN SHOW".split()
)
_SYNTAX_ERRORS = {"postgresql": "42601", "mysql": 1064, "mariadb": 1064}


def _first_word(part: str) -> str:
    word = part.lstrip().split(None, 1)[0].upper() if part.strip() else ""
    return "(" if word.startswith("(") else re.sub(r"\W.*", "", word) or word


def _not_one_query(exc: DBAPIError, conn: Connection, query: str, word: str) -> str | None:
    """The message when a server parsed the text and found no single query in it."""
    orig = exc.orig
    if conn.dialect.name == "postgresql":
        code = getattr(orig, "sqlstate", None)
    else:
        code = (getattr(orig, "args", None) or (None,))[0]
    if code != _SYNTAX_ERRORS.get(conn.dialect.name):
        return None
    return _not_a_query_message(conn, query, word, db_message(exc).splitlines()[0])


def _not_a_query_message(conn: Connection, query: str, word: str, reason: str) -> str | None:
    if conn.dialect.name == "postgresql" and re.search(r"\bCOPY\b", query, re.I):
        return "read-only: COPY is not allowed (it can write files on the server); use --format csv"
    if re.search(r"\bINTO\s+(OUT|DUMP)FILE\b", query, re.I):
        return "read-only: SELECT ... INTO OUTFILE is not allowed; use --format csv"
    if word in _QUERY_WORDS or word not in _STATEMENT_WORDS:
        return None
    return (
        "read-only: `llm-ledger sql` runs one query (SELECT, WITH, VALUES or TABLE); the "
        f"database refused this {word} statement ({reason})"
    )


def run_query(
    location: str,
    query: str,
    params: dict[str, str],
    *,
    unsafe: bool = False,
    timeout_s: float = sqlguard.DEFAULT_TIMEOUT_S,
) -> tuple[list[str], list[dict[str, Any]]]:
    """Run one read-only query with ``:name`` parameters; (columns, rows).

    SQLite: the read-only file and its authorizer decide. PostgreSQL and MariaDB: see
    :mod:`llm_ledger.sqlguard` (a login without server rights, the text parsed by the
    engine as one query, a READ ONLY transaction with a timeout). The statement splitter
    here only words the messages: it can refuse, never allow.
    """
    dialect = make_url(db.normalize_url(location)).get_backend_name()
    parts = statements(query, dialect)
    if not parts:
        fail("empty query: pass the SQL as an argument, or - to read it from stdin")
    if len(parts) > 1:
        fail(
            f"read-only: one statement per call, and this holds {len(parts)} "
            "(`llm-ledger sql` never changes the ledger)"
        )
    word = _first_word(parts[0])
    if (reason := sqlguard.refused_text(query, dialect)) is not None:
        fail(f"read-only: {reason}")
    if dialect == "postgresql" and word == "COPY":
        fail("read-only: COPY is not allowed (it can write files on the server); use --format csv")
    if dialect in ("mysql", "mariadb") and re.search(r"\bINTO\s+(OUT|DUMP)FILE\b", parts[0], re.I):
        fail("read-only: SELECT ... INTO OUTFILE is not allowed; use --format csv")
    stmt = text(query)
    wanted = set(stmt.compile().params)
    for name in sorted(wanted - set(params)):
        fail(f"the query uses :{name}; give it a value with -p {name} VALUE")
    for name in sorted(set(params) - wanted):
        fail(f"-p {name}: the query has no :{name} parameter")
    with read_only(location, need_ledger=False) as conn:
        try:
            if dialect != "sqlite":
                reason = None if unsafe else sqlguard.refusal(conn)
                if reason is not None:
                    fail(f"read-only: {reason}")
            sqlguard.start(conn, timeout_s)
            result = sqlguard.run(conn, query, params)
            if not result.returns_rows:
                return [], []
            names = _unique(list(result.keys()))
            return names, [dict(zip(names, row, strict=True)) for row in result.fetchall()]
        except DBAPIError as exc:
            reason = _refusal(exc, conn)
            if reason is not None:
                fail(
                    "read-only: `llm-ledger sql` does not change the ledger; the database "
                    f"refused this {word} statement ({reason})"
                )
            if (message := _not_one_query(exc, conn, query, word)) is not None:
                fail(message)
            if _timed_out(exc, conn):
                fail(
                    f"the query ran longer than --timeout {timeout_s:g} s and was stopped; "
                    f"narrow it, or give a larger --timeout (at most {sqlguard.MAX_TIMEOUT_S:g})"
                )
            fail(db_message(exc).splitlines()[0])
        except StatementError as exc:
            fail(str(exc.orig or exc).splitlines()[0])
        except sqlguard.NotOneQuery as exc:
            word = word if word in _STATEMENT_WORDS else "non-query"
            fail(
                _not_a_query_message(conn, query, word, str(exc))
                or "read-only: `llm-ledger sql` runs one query (SELECT, WITH, VALUES or TABLE); "
                "the database parses this text only as a statement that is not a query"
            )


def _timed_out(exc: DBAPIError, conn: Connection) -> bool:
    orig = exc.orig
    if conn.dialect.name == "sqlite":  # only sqlguard.start's progress handler interrupts
        return str(orig) == "interrupted"
    if conn.dialect.name == "postgresql":
        return getattr(orig, "sqlstate", None) == "57014"
    return bool(getattr(orig, "args", None)) and orig.args[0] == 1969  # type: ignore[union-attr]


def _unique(names: list[str]) -> list[str]:
    """Result columns as dict keys: a repeated name gets _2, _3..."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return out


class _ParamPairs(TyperCommand):
    """Lets ``-p NAME VALUE`` repeat: each pair becomes ``-p NAME -p VALUE`` before parsing."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        out: list[str] = []
        i = 0
        while i < len(args):
            if args[i] == "--":
                out += args[i:]
                break
            if args[i] in ("-p", "--param"):
                if len(args) - i < 3:
                    raise typer.BadParameter("expects two values: NAME VALUE", param_hint="-p")
                out += [args[i], args[i + 1], args[i], args[i + 2]]
                i += 3
            else:
                out.append(args[i])
                i += 1
        return super().parse_args(ctx, out)


@app.command(cls=_ParamPairs)
def sql(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help="One SQL statement, or - to read it from stdin.")],
    param: Annotated[
        list[str] | None,
        typer.Option(
            "-p",
            "--param",
            metavar="NAME VALUE",
            help="Bind :NAME in the query to VALUE (a string); repeat for more.",
        ),
    ] = None,
    fmt: Format = FORMAT_OPTION,
    timeout: Annotated[
        str,
        typer.Option(
            "--timeout",
            metavar="SECONDS",
            help="Stop the query after this long, on every engine: 0.001 to 86400 "
            "(the limit cannot be turned off).",
        ),
    ] = f"{sqlguard.DEFAULT_TIMEOUT_S:g}",
    unsafe: Annotated[
        bool,
        typer.Option(
            "--unsafe",
            help="Run even as a login with server rights (superuser, FILE, SUPER...).",
        ),
    ] = False,
) -> None:
    """Run one read-only SQL query on the ledger (tables and views: see docs/schema.md).

    The database refuses any write: SQLite is opened read-only behind an authorizer;
    on PostgreSQL and MariaDB the text runs only as one query the server parses, in a
    READ ONLY transaction, and never as a login that holds server rights (superuser,
    file access, FILE, SUPER...): `grant-reader` creates a login for it. Functions and
    clauses that act beyond that transaction (large objects, advisory locks, LOCK IN
    SHARE MODE...) are refused by name. Every engine stops the query at --timeout.
    A refusal or bad SQL prints one line and exits with code 2 (docs/reliability.md,
    "Threat model").

    \b
    Example: llm-ledger sql "SELECT model, calls, cost_usd FROM model_costs WHERE calls > :n" -p n 10
    """
    try:
        seconds = sqlguard.timeout_seconds(timeout)
    except LedgerError as exc:
        fail(str(exc))
    source = stdin_text() if query == "-" else query
    pairs = param or []
    params = dict(zip(pairs[::2], pairs[1::2], strict=True))
    columns, rows = run_query(ctx.obj.db, source, params, unsafe=unsafe, timeout_s=seconds)
    emit(rows, columns, fmt, width=wide())


@app.command("grant-reader")
def grant_reader(
    ctx: typer.Context,
    name: Annotated[
        str | None,
        typer.Option("--name", help="The login to create (default: <database>_reader)."),
    ] = None,
    password: Annotated[
        str,
        typer.Option(
            "--password",
            envvar="LLM_LEDGER_READER_PASSWORD",
            prompt=True,
            hide_input=True,
            confirmation_prompt=True,
            help="Its password (default: $LLM_LEDGER_READER_PASSWORD, else asked).",
            show_default=False,
        ),
    ] = "",
) -> None:
    """Create a login that can only SELECT the ledger, for `llm-ledger sql` (PostgreSQL, MariaDB).

    Run it with an administrator's URL; it prints the URL to give `sql` (password not
    shown). Run it again after `llm-ledger migrate` adds tables or views.

    \b
    Example: llm-ledger --db postgresql://postgres@db.internal/ledger grant-reader
    """
    location = ctx.obj.db
    url = make_url(db.normalize_url(location))
    if url.get_backend_name() == "sqlite":
        fail("grant-reader is for PostgreSQL and MariaDB; `sql` opens SQLite files read-only")
    login = name or f"{url.database}_reader"
    try:
        engine = db.make_engine(location, poolclass=NullPool)
    except LedgerError as exc:
        fail(str(exc))
    try:
        with engine.connect() as conn:
            relations = sqlguard.grant_reader(conn, login, password)
    except LedgerError as exc:
        fail(str(exc))
    except DBAPIError as exc:
        fail(f"cannot create the reader at {location_name(location)}: {db_message(exc)}")
    finally:
        engine.dispose()
    reader = url.set(username=login, password=password).render_as_string(hide_password=False)
    typer.echo(
        f"{login} may SELECT {len(relations)} tables and views and nothing else; run sql as:\n"
        f"  llm-ledger --db {shlex.quote(db.describe(reader))} sql ..."
    )
