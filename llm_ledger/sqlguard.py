"""What keeps ``llm-ledger sql`` from touching a PostgreSQL or MariaDB server.

No home-made parser is the line of defence; the engine's own machinery is (see
docs/reliability.md, "Threat model"):

1. The login must hold no server rights. A superuser, or a login that may read or write
   server files, run programs, signal other sessions or change server settings, is
   refused (unless the caller passes ``unsafe``): on PostgreSQL ``SET ROLE`` cannot
   be the answer, because the text itself could undo it with ``set_config('role', ...)``;
   on MariaDB roles only add rights. :func:`grant_reader` creates a login that can only
   SELECT the ledger's tables and views.
2. The text runs only where the engine parses it as one query: PostgreSQL runs
   ``SELECT * FROM (<text>) AS llm_ledger_q``, so ``COPY``, ``CHECKPOINT``, ``LOCK``,
   ``NOTIFY`` and a second statement are syntax errors. MariaDB first PREPAREs that
   wrapper (it only parses), then runs the text itself, because MariaDB drops ORDER BY
   and refuses repeated column names inside a derived table; ``INTO OUTFILE``, ``SET``
   and ``/*! ... */`` tricks fail that parse.
3. In a READ ONLY transaction with a statement timeout, always rolled back.
4. What such a transaction still lets act beyond it (large objects, WAL messages, advisory
   locks, LOCK IN SHARE MODE...) is refused by name, from the whole text, before connecting:
   :func:`refused_text`, which cannot be fooled by quoting or comments, only over-refuse.

SQLite's guard is here too (a ``mode=ro`` file, ``query_only``, an authorizer that also
refuses :data:`SQLITE_REFUSED_FUNCTIONS`, a progress handler for the timeout), and
the statement splitter, which only words the CLI's messages: it can refuse, never allow.
"""

from __future__ import annotations

import math
import re
import sqlite3
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import String, literal, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from .errors import LedgerError
from .store.db import SQLITE_BUSY_TIMEOUT_MS
from .store.models import VIEW_NAMES, Base

# PostgreSQL roles that reach beyond the database: server files, programs, other sessions.
PG_SERVER_ROLES = (
    "pg_read_server_files",
    "pg_write_server_files",
    "pg_execute_server_program",
    "pg_signal_backend",
    "pg_checkpoint",
)
# Functions that touch the server, normally superuser-only; a GRANT EXECUTE is refused too.
PG_SERVER_FUNCTIONS = (
    "pg_read_file(text)",
    "pg_read_binary_file(text)",
    "pg_ls_dir(text)",
    "pg_stat_file(text)",
    "lo_import(text)",
    "lo_export(oid,text)",
    "pg_reload_conf()",
    "pg_switch_wal()",
    "pg_rotate_logfile()",
    "pg_promote(boolean,integer)",
)
# MariaDB global privileges that only concern data (a READ ONLY transaction stops writes);
# any other one (FILE, SUPER, PROCESS, RELOAD, SHUTDOWN, CONNECTION ADMIN, ...) is refused.
MARIADB_DATA_PRIVILEGES = frozenset(
    {
        "USAGE",
        "SELECT",
        "INSERT",
        "UPDATE",
        "DELETE",
        "CREATE",
        "DROP",
        "REFERENCES",
        "INDEX",
        "ALTER",
        "SHOW DATABASES",
        "CREATE TEMPORARY TABLES",
        "LOCK TABLES",
        "CREATE VIEW",
        "SHOW VIEW",
        "TRIGGER",
        "DELETE HISTORY",
    }
)
DEFAULT_TIMEOUT_S = 60.0
# --timeout bounds: 1 ms is the engines' resolution (0 would mean no limit to them); a day
# is far below PostgreSQL's statement_timeout ceiling (2^31 ms) and MariaDB's (a year).
MIN_TIMEOUT_S = 0.001
MAX_TIMEOUT_S = 86400.0
# What grant-reader sets on the reader login for sessions that do not come through `sql`
# (psql, the mysql client): defaults it may change in its own session, see docs/cli.md.
READER_CONNECTION_LIMIT = 10
READER_STATEMENT_TIMEOUT_S = DEFAULT_TIMEOUT_S

# PostgreSQL functions any login may run (EXECUTE is granted to PUBLIC) whose effect
# outlives the rolled-back READ ONLY transaction, reaches other sessions, or runs SQL
# text no check could see. Keys are regular expressions for whole names.
PG_REFUSED_FUNCTIONS: dict[str, str] = {
    "pg_logical_emit_message": "it writes WAL that a rollback does not take back",
    "lo_creat|lo_create|lo_from_bytea|lo_import|lo_export|lo_open|lowrite|lo_put|lo_truncate"
    "|lo_truncate64|lo_unlink": "it writes large objects, whose storage outlives the rollback",
    "txid_current|pg_current_xact_id": "it assigns a transaction id, which a rollback does "
    "not give back",
    "pg_advisory_\\w*|pg_try_advisory_\\w*": "it takes locks other sessions wait for "
    "(the ledger's migrations take one)",
    "pg_notify": "it queues notifications for other sessions",
    "pg_cancel_backend|pg_terminate_backend|pg_log_backend_memory_contexts": "it acts on "
    "other sessions",
    "pg_stat_reset\\w*": "it resets the server's statistics",
    "pg_create_\\w*_replication_slot|pg_copy_\\w*_replication_slot|pg_drop_replication_slot"
    "|pg_replication_slot_advance|pg_logical_slot_\\w*|pg_replication_origin_\\w*": "it "
    "changes replication state",
    "query_to_xml\\w*|cursor_to_xml\\w*|ts_stat|ts_rewrite|dblink\\w*|pg_background\\w*": "it "
    "runs SQL text given as a value, which the other checks cannot see",
}
# MariaDB: what a READ ONLY transaction still allows and other sessions wait for; each is
# refused when its words appear in this order anywhere in the text.
MARIADB_REFUSED: tuple[tuple[str, tuple[str, ...], str], ...] = (
    (
        "LOCK IN SHARE MODE",
        ("lock", "in", "share", "mode"),
        "it locks the rows it reads, and writers wait for them",
    ),
    ("FOR SHARE", ("for", "share"), "it locks the rows it reads, and writers wait for them"),
    (
        "GET_LOCK()",
        ("get_lock",),
        "it takes a lock other sessions wait for (the ledger's migrations take one)",
    ),
)
# SQLite functions the authorizer refuses: Python's sqlite3 registers none of the shell's
# file functions (readfile, writefile, edit), so these are what SQLite itself brings.
SQLITE_REFUSED_FUNCTIONS = frozenset(
    {
        "fts3_tokenizer",  # reads tokenizer pointers (memory addresses), and replaces them
        "fts5",  # hands out a pointer to the FTS5 API
        "load_extension",  # loads native code (also off in Python's sqlite3)
    }
)
_GLOBAL_GRANT = re.compile(r"^GRANT (.+?) ON \*\.\* TO ", re.I)


_NOT_IN_A_STRING = (
    "; this check reads the whole text, strings and comments too: give text that names it "
    "as a -p value"
)


def _word(word: str) -> str:
    """A name as its own word; digits may come before it (``/*!50000LOCK ...*/``)."""
    return rf"(?<![^\W\d])(?<!\$)(?:{word})(?![\w$])"


def refused_text(query: str, dialect: str) -> str | None:
    """Why the text may not run, read from the text alone; None when it names nothing refused.

    No parsing: the whole text, strings and comments included, lower-cased. Quoting, case
    or comments cannot hide a name from it; the price is refusing a query that only mentions
    one in a string, which a ``-p`` value carries instead.
    """
    lowered = query.lower()
    if dialect == "postgresql":
        if 'u&"' in lowered:
            return (
                'U&"..." identifiers are refused (they could spell a refused function\'s '
                "name); write the name plainly"
            )
        for names, why in PG_REFUSED_FUNCTIONS.items():
            if m := re.search(_word(names), lowered):
                return f"{m.group(0)}() is refused: {why}{_NOT_IN_A_STRING}"
    elif dialect in ("mysql", "mariadb"):
        for what, words, why in MARIADB_REFUSED:
            at = 0
            for word in words:
                m = re.compile(_word(word)).search(lowered, at)
                if m is None:
                    break
                at = m.end()
            else:
                return f"{what} is refused: {why}{_NOT_IN_A_STRING}"
    return None


def timeout_seconds(shown: str) -> float:
    """``--timeout`` as seconds: a finite number from 1 ms to a day; the limit is never off."""
    try:
        seconds = float(shown)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and MIN_TIMEOUT_S <= seconds <= MAX_TIMEOUT_S):
        raise LedgerError(
            f"--timeout must be a number of seconds from {MIN_TIMEOUT_S:g} to "
            f"{MAX_TIMEOUT_S:g}, not {shown} (there is no way to turn the limit off)"
        )
    return seconds


def is_mysql(conn: Connection) -> bool:
    return conn.dialect.name in ("mysql", "mariadb")


def server_rights(conn: Connection) -> list[str]:
    """What this login could do to the server beyond reading ([] when nothing)."""
    if conn.dialect.name == "postgresql":
        if conn.exec_driver_sql(
            "SELECT rolsuper FROM pg_roles WHERE rolname = session_user"
        ).scalar():
            return ["superuser"]
        names = ", ".join(f"'{r}'" for r in PG_SERVER_ROLES)
        roles = conn.exec_driver_sql(
            "SELECT CASE WHEN r.rolsuper THEN 'superuser ' || r.rolname ELSE r.rolname END "
            "FROM pg_roles r WHERE pg_has_role(session_user, r.oid, 'MEMBER') "
            f"AND (r.rolsuper OR r.rolname IN ({names})) ORDER BY 1"
        ).scalars()
        rights = list(roles)
        functions = ", ".join(f"'{f}'" for f in PG_SERVER_FUNCTIONS)
        granted = conn.exec_driver_sql(
            f"SELECT f FROM unnest(ARRAY[{functions}]) AS f "
            "WHERE to_regprocedure(f) IS NOT NULL "
            "AND has_function_privilege(session_user, to_regprocedure(f), 'EXECUTE') ORDER BY 1"
        ).scalars()
        return rights + [f"EXECUTE {f}" for f in granted]
    if is_mysql(conn):
        grants = [str(r[0]) for r in conn.exec_driver_sql("SHOW GRANTS")]
        role = conn.exec_driver_sql("SELECT CURRENT_ROLE()").scalar()
        if role:
            quoted = conn.dialect.identifier_preparer.quote(str(role))
            grants += [str(r[0]) for r in conn.exec_driver_sql(f"SHOW GRANTS FOR {quoted}")]
        found: list[str] = []
        for line in grants:
            m = _GLOBAL_GRANT.match(line)
            if m is None:
                continue
            for privilege in (p.strip().upper() for p in m.group(1).split(",")):
                if privilege not in MARIADB_DATA_PRIVILEGES and privilege not in found:
                    found.append(privilege)
        if any(re.search(r" ON \*\.\* TO .* WITH GRANT OPTION", g, re.I) for g in grants):
            found.append("GRANT OPTION")
        return found
    return []


def login_name(conn: Connection) -> str:
    if conn.dialect.name == "postgresql":
        return str(conn.exec_driver_sql("SELECT session_user").scalar())
    return str(conn.exec_driver_sql("SELECT CURRENT_USER()").scalar())


def refusal(conn: Connection) -> str | None:
    """Why ``sql`` must not run on this login, in one line; None when it may."""
    rights = server_rights(conn)
    if not rights:
        return None
    engine = "PostgreSQL" if conn.dialect.name == "postgresql" else "MariaDB"
    return (
        f"`llm-ledger sql` does not run as {login_name(conn)} on {engine}: that login holds "
        f"{', '.join(rights)}, so a query could read or write server files, run programs, "
        "stop other sessions or change server settings; connect as a read-only login "
        "(`llm-ledger --db ADMIN_URL grant-reader` creates one), or pass --unsafe if everyone "
        "who can run this command may administer the server"
    )


def body(query: str) -> str:
    """The text as it goes between parentheses: outer blanks and trailing semicolons off."""
    out = query.strip()
    while out.endswith(";"):
        out = out[:-1].rstrip()
    return out


def wrapped(query: str) -> str:
    """The text as a derived table; the newline ends a trailing ``--`` comment."""
    return f"SELECT * FROM (\n{body(query)}\n) AS llm_ledger_q"


def start(conn: Connection, timeout_s: float) -> None:
    """The statement timeout for this read-only transaction; never 0, which means none."""
    ms = max(1, round(timeout_seconds(repr(timeout_s)) * 1000))
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SET LOCAL statement_timeout = {ms}")
    elif is_mysql(conn):
        conn.exec_driver_sql(f"SET SESSION max_statement_time = {ms / 1000:.3f}")
    else:
        # SQLite has no statement timeout: SQLite calls this every 1000 instructions, and a
        # true answer interrupts the statement ("interrupted").
        deadline = time.monotonic() + timeout_s
        raw = conn.connection.dbapi_connection
        assert isinstance(raw, sqlite3.Connection)
        raw.set_progress_handler(lambda: time.monotonic() > deadline, 1000)


def run(conn: Connection, query: str, params: dict[str, str]) -> Any:
    """Run the user's text as one query the engine parsed; the SQLAlchemy result."""
    if conn.dialect.name == "postgresql":
        return conn.execute(text(wrapped(query)), params)
    if is_mysql(conn):
        shown = (
            text(wrapped(query))
            .bindparams(**params)
            .compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
        )
        _check_parses_as_a_query(conn, str(shown), shown_alone(conn, query, params))
        return conn.execute(text(body(query)), params)
    return conn.execute(text(query), params)


class NotOneQuery(LedgerError):
    """The server parsed the text alone, but not as one query (SET, KILL, INTO OUTFILE...)."""


def shown_alone(conn: Connection, query: str, params: dict[str, str]) -> str:
    return str(
        text(body(query))
        .bindparams(**params)
        .compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
    )


def _check_parses_as_a_query(conn: Connection, wrapper: str, alone: str) -> None:
    """MariaDB: PREPARE (which only parses and resolves, never runs) the wrapper.

    Repeated column names (1060) mean it parsed. A syntax error (1064) is the user's
    own when the text alone does not parse either; otherwise the text is a statement
    that is not a query.
    """
    try:
        conn.exec_driver_sql("PREPARE llm_ledger_check FROM %s", (wrapper,))
    except DBAPIError as exc:
        code = _code(exc)
        if code == 1060:
            return
        if code != 1064:
            raise
    else:
        conn.exec_driver_sql("DEALLOCATE PREPARE llm_ledger_check")
        return
    try:
        conn.exec_driver_sql("PREPARE llm_ledger_check FROM %s", (alone,))
    except DBAPIError as exc:
        if _code(exc) == 1064:
            raise  # the user's own syntax error, in the user's own words
    else:
        conn.exec_driver_sql("DEALLOCATE PREPARE llm_ledger_check")
    raise NotOneQuery("it parses only as a whole statement, not as a query")


def _code(exc: DBAPIError) -> Any:
    return (getattr(exc.orig, "args", None) or (None,))[0]


# --- SQLite ---------------------------------------------------------------------

# SQLite authorizer actions a query may take; PRAGMAs only to look, not to set.
_SQLITE_ACTIONS = {
    getattr(sqlite3, "SQLITE_" + name): name.replace("_", " ")
    for name in (
        "CREATE_INDEX CREATE_TABLE CREATE_TEMP_INDEX CREATE_TEMP_TABLE CREATE_TEMP_TRIGGER "
        "CREATE_TEMP_VIEW CREATE_TRIGGER CREATE_VIEW DELETE DROP_INDEX DROP_TABLE "
        "DROP_TEMP_INDEX DROP_TEMP_TABLE DROP_TEMP_TRIGGER DROP_TEMP_VIEW DROP_TRIGGER "
        "DROP_VIEW INSERT PRAGMA READ SELECT TRANSACTION UPDATE ATTACH DETACH ALTER_TABLE "
        "REINDEX ANALYZE CREATE_VTABLE DROP_VTABLE FUNCTION SAVEPOINT RECURSIVE"
    ).split()
    if hasattr(sqlite3, "SQLITE_" + name)
}
_SQLITE_READS = {
    sqlite3.SQLITE_SELECT,
    sqlite3.SQLITE_READ,
    sqlite3.SQLITE_FUNCTION,
    getattr(sqlite3, "SQLITE_RECURSIVE", 33),
}
_SQLITE_LOOKING_PRAGMAS = frozenset(
    "table_info table_xinfo table_list index_list index_info index_xinfo foreign_key_list "
    "foreign_key_check database_list collation_list function_list pragma_list module_list "
    "compile_options integrity_check quick_check".split()
)


_SQLITE_SCHEMA_TABLES = frozenset({"sqlite_master", "sqlite_schema", "sqlite_temp_master"})


class _ReadOnlySqlite(sqlite3.Connection):
    """An SQLite connection that remembers what its authorizer refused (for the message)."""

    refused: str | None = None

    def authorize(self, action: int, arg1: str | None, arg2: str | None, *_: Any) -> int:
        if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in SQLITE_REFUSED_FUNCTIONS:
            return sqlite3.SQLITE_DENY  # SQLite's message names the function
        if action in _SQLITE_READS or (
            action == sqlite3.SQLITE_PRAGMA
            and (arg2 is None or (arg1 or "").lower() in _SQLITE_LOOKING_PRAGMAS)
        ):
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_UPDATE and arg1 in _SQLITE_SCHEMA_TABLES:
            # SQLite asks this while it opens a table-valued PRAGMA (pragma_user_version);
            # a real UPDATE of the schema table is refused by SQLite itself (no
            # writable_schema, which the authorizer never lets a query set).
            return sqlite3.SQLITE_IGNORE
        if self.refused is None:
            what = _SQLITE_ACTIONS.get(action, f"action {action}")
            if action == sqlite3.SQLITE_PRAGMA:
                self.refused = f"PRAGMA {arg1} = {arg2}"
            else:
                self.refused = f"{what} {arg1}" if arg1 else what
        return sqlite3.SQLITE_DENY


def connect_sqlite_read_only(path: Path) -> sqlite3.Connection:
    """SQLite's own guard: a read-only file, query_only, and the authorizer above."""
    uri = f"file:{quote(str(path))}?mode=ro"
    conn = sqlite3.connect(
        uri,
        uri=True,
        factory=_ReadOnlySqlite,
        timeout=SQLITE_BUSY_TIMEOUT_MS / 1000,
        check_same_thread=False,
    )
    conn.execute("PRAGMA query_only = ON")
    conn.set_authorizer(conn.authorize)
    return conn


# --- the statement splitter (messages only) ----------------------------------------

_DOLLAR_QUOTE = re.compile(r"\$(?:[A-Za-z_][A-Za-z_0-9]*)?\$")


def statements(sql: str, dialect: str) -> list[str]:
    """The SQL split at top-level semicolons, literals and comments blanked out, empties dropped.

    Only for counting statements and finding keywords; the database does the parsing.
    """
    mysql = dialect in ("mysql", "mariadb")
    parts: list[str] = []
    buf: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        ch, two = sql[i], sql[i : i + 2]
        if two == "--" or (mysql and ch == "#"):
            end = sql.find("\n", i)
            i = n if end < 0 else end
            buf.append(" ")
        elif two == "/*":
            end = sql.find("*/", i + 2)
            i = n if end < 0 else end + 2
            buf.append(" ")
        elif ch in "'\"`":
            backslash = ch != "`" and (
                mysql or (dialect == "postgresql" and i > 0 and sql[i - 1] in "eE")
            )
            j = i + 1
            while j < n:
                if backslash and sql[j] == "\\":
                    j += 2
                elif sql[j] == ch and sql[j + 1 : j + 2] == ch:
                    j += 2
                elif sql[j] == ch:
                    break
                else:
                    j += 1
            i = j + 1
            buf.append(" ? ")
        elif ch == "$" and dialect == "postgresql" and (m := _DOLLAR_QUOTE.match(sql, i)):
            end = sql.find(m.group(0), m.end())
            i = n if end < 0 else end + len(m.group(0))
            buf.append(" ? ")
        elif ch == ";":
            parts.append("".join(buf))
            buf = []
            i += 1
        else:
            buf.append(ch)
            i += 1
    parts.append("".join(buf))
    return [p.strip() for p in parts if p.strip()]


def ledger_relations(conn: Connection) -> list[str]:
    from sqlalchemy import inspect

    present = set(inspect(conn).get_table_names()) | set(inspect(conn).get_view_names())
    wanted = [*Base.metadata.tables, *VIEW_NAMES, "alembic_version"]
    return [name for name in wanted if name in present]


def grant_reader(conn: Connection, name: str, password: str) -> list[str]:
    """Create (or update) a login that may only SELECT the ledger; the relations granted.

    Run again after ``llm-ledger migrate`` adds tables or views.
    """
    if not password:
        raise LedgerError("grant-reader needs a password: give --password or set it when asked")
    relations = ledger_relations(conn)
    if not relations:
        raise LedgerError("no ledger tables here: run `llm-ledger migrate` first")
    q = conn.dialect.identifier_preparer.quote
    # A literal for a statement run without parameters: the driver then reads %% as %.
    secret = str(
        literal(password, String()).compile(
            dialect=conn.dialect, compile_kwargs={"literal_binds": True}
        )
    )
    if conn.dialect.name == "postgresql":
        exists = conn.exec_driver_sql(
            "SELECT 1 FROM pg_roles WHERE rolname = %(n)s", {"n": name}
        ).scalar()
        verb = "ALTER" if exists else "CREATE"
        conn.exec_driver_sql(
            f"{verb} ROLE {q(name)} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
            f"PASSWORD {secret}"
        )
        database = conn.exec_driver_sql("SELECT current_database()").scalar()
        schema = conn.exec_driver_sql("SELECT current_schema()").scalar()
        conn.exec_driver_sql(f"GRANT CONNECT ON DATABASE {q(str(database))} TO {q(name)}")
        conn.exec_driver_sql(f"GRANT USAGE ON SCHEMA {q(str(schema))} TO {q(name)}")
        # For sessions that do not come through `sql` (psql): defaults, which the login may
        # still SET in its own session; what PUBLIC is granted is left alone (docs/cli.md).
        conn.exec_driver_sql(f"REVOKE TEMPORARY ON DATABASE {q(str(database))} FROM {q(name)}")
        conn.exec_driver_sql(f"ALTER ROLE {q(name)} CONNECTION LIMIT {READER_CONNECTION_LIMIT}")
        seconds = f"'{READER_STATEMENT_TIMEOUT_S:g}s'"
        for setting, value in (
            ("default_transaction_read_only", "on"),
            ("statement_timeout", seconds),
            ("idle_in_transaction_session_timeout", seconds),
        ):
            conn.exec_driver_sql(f"ALTER ROLE {q(name)} SET {setting} = {value}")
        for relation in relations:
            conn.exec_driver_sql(f"GRANT SELECT ON {q(relation)} TO {q(name)}")
    elif is_mysql(conn):
        user = f"{q(name)}@'%%'"
        conn.exec_driver_sql(f"CREATE USER IF NOT EXISTS {user}")
        conn.exec_driver_sql(f"ALTER USER {user} IDENTIFIED BY {secret}")
        limits = f"MAX_USER_CONNECTIONS {READER_CONNECTION_LIMIT}"
        if getattr(conn.dialect, "is_mariadb", False):  # MySQL has no per-user statement time
            limits += f" MAX_STATEMENT_TIME {READER_STATEMENT_TIMEOUT_S:g}"
        conn.exec_driver_sql(f"ALTER USER {user} WITH {limits}")
        database = str(conn.exec_driver_sql("SELECT DATABASE()").scalar())
        for relation in relations:
            conn.exec_driver_sql(f"GRANT SELECT ON {q(database)}.{q(relation)} TO {user}")
    else:
        raise LedgerError("grant-reader is for PostgreSQL and MariaDB; SQLite files use mode=ro")
    conn.commit()
    return relations
