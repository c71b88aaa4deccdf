"""Engines, per-connection settings, and the schema check/migration at open.

The embedded SQLite ledger is created and upgraded on first use. A PostgreSQL
or MariaDB ledger is created when the database holds none of it yet, but an
older schema there is only upgraded on request (``llm-ledger migrate``), since
other workers may still run the old code. A schema newer than this code is an
error everywhere.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, NoSuchModuleError, OperationalError

from ..errors import LedgerOpenError, SchemaVersionError
from ..keys import canonical_json
from ..log import logger
from .connections import until_not_busy
from .models import TABLES

log = logger

SQLITE_BUSY_TIMEOUT_MS = 30_000
LEDGER_TABLES = frozenset(TABLES)


def normalize_url(location: str) -> str:
    """A plain path means an SQLite file; URLs get the drivers this library ships extras for."""
    if "://" not in location:
        if location == ":memory:":
            return "sqlite://"
        return "sqlite:///" + str(Path(location).expanduser().absolute())
    scheme, rest = location.split("://", 1)
    scheme = {
        "postgres": "postgresql+psycopg",
        "postgresql": "postgresql+psycopg",
        "mysql": "mysql+pymysql",
        "mariadb": "mariadb+pymysql",
    }.get(scheme, scheme)
    url = f"{scheme}://{rest}"
    if scheme.endswith("+pymysql") and "charset=" not in url:
        url += ("&" if "?" in url else "?") + "charset=utf8mb4"
    return url


def sqlite_path(url: str) -> Path | None:
    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    return Path(u.database)


def own_file(url: str, path: str | os.PathLike[str]) -> Path | None:
    """The SQLite ledger's file if ``path`` is it or one of the files it keeps beside it
    (``-wal``, ``-shm``, ``-journal``, its spool and dead letters ``.spool…``, the
    write-behind journal ``.journal/``), through links and ``..``; else None. An output
    file (an export, a report) must never be one of them."""
    ledger = sqlite_path(url)
    if ledger is None:
        return None
    own = Path(os.path.realpath(ledger))
    target = Path(os.path.realpath(path))
    for p in (target, *target.parents):
        if p.parent == own.parent and (
            p.name == own.name
            or p.name.startswith((own.name + "-", own.name + ".spool", own.name + ".journal"))
        ):
            return own
    return None


# Query parameters that may carry a credential (password=, sslpassword=, sslkey=, token=...).
_SECRET_PARAM = re.compile(r"pass|pwd|secret|token|key|auth|cred", re.I)
_USERINFO = re.compile(r"(://[^/@:?#]*):[^@/?#]*@")
_SECRET_PAIR = re.compile(
    r"([?&;][^=&;#]*(?:pass|pwd|secret|token|key|auth|cred)[^=&;#]*=)[^&;#]*", re.I
)


def describe(url: str) -> str:
    """The URL with every credential hidden (the userinfo password and any query parameter
    that may hold one), for messages and logs."""
    try:
        u = make_url(url)
    except ArgumentError:
        return _SECRET_PAIR.sub(r"\1***", _USERINFO.sub(r"\1:***@", url))
    hidden = {k: "***" for k in u.query if _SECRET_PARAM.search(k)}
    shown = u.update_query_dict(hidden).render_as_string(hide_password=True)
    return shown.replace("=%2A%2A%2A", "=***")


def _create_private_file(path: Path) -> None:
    """New ledger files are readable by their owner only (they hold prompts and answers)."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


def make_engine(location: str, **kwargs: Any) -> Engine:
    url = normalize_url(location)
    path = sqlite_path(url)
    if path is not None:
        _create_private_file(path)
        kwargs.setdefault(
            "connect_args", {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}
        )
    try:
        engine = create_engine(url, json_serializer=canonical_json, **kwargs)
    except NoSuchModuleError as exc:
        raise LedgerOpenError(f"{describe(url)}: unsupported database URL ({exc})") from None
    except ModuleNotFoundError as exc:
        extra = "postgres" if "psycopg" in str(exc) else "mysql"
        raise LedgerOpenError(
            f"{describe(url)}: the database driver is not installed ({exc}); "
            f"pip install 'llm-ledger[{extra}]'"
        ) from None
    except ArgumentError as exc:
        raise LedgerOpenError(
            f"{describe(location)!r} is not a database URL or path: {describe(str(exc))}"
        ) from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    _wal_on(cur)
    cur.execute("PRAGMA synchronous = NORMAL")
    cur.execute("PRAGMA foreign_keys = ON")
    cur.close()


def _wal_on(cur: Any) -> None:
    """Switch WAL on for a new file or a ledger only, never for another application's
    database that ensure_schema will refuse (the journal mode is written into the file).

    SQLite takes the lock this switch needs without its busy handler: with another
    process writing a new file's first transaction (two processes creating one ledger at
    once), ``journal_mode = WAL`` fails at once with "database is locked" (seen in CI under
    load). So the switch is tried again in short sleeps for the busy timeout, and whether
    the file is new or a ledger is asked again each time: the other process may have made
    it either meanwhile.
    """

    def attempt() -> None:
        if _new_or_ledger(cur):
            cur.execute("PRAGMA journal_mode = WAL")

    until_not_busy(attempt, SQLITE_BUSY_TIMEOUT_MS / 1000, (0.001, 0.05))


def _new_or_ledger(cur: Any) -> bool:
    if cur.execute("PRAGMA page_count").fetchone()[0] == 0:
        return True
    found = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'call_log'"
    return cur.execute(found).fetchone() is not None


# --- migrations -------------------------------------------------------------


def migrations_dir() -> Path:
    here = Path(__file__).resolve().parent.parent  # llm_ledger/, the package above store/
    for candidate in (here / "_migrations", here.parent / "migrations"):
        if (candidate / "env.py").exists():
            return candidate
    raise LedgerOpenError(
        "llm_ledger's migrations are missing from this installation; reinstall llm-ledger"
    )


def alembic_config(url: str | None = None, connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    if url:
        cfg.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@lru_cache(maxsize=1)
def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    head = _script().get_current_head()
    assert head is not None
    return head


def known_revisions() -> set[str]:
    return {rev.revision for rev in _script().walk_revisions()}


def current_revision(conn: Connection) -> str | None:
    """The one revision in alembic_version (None: no table, or empty after a downgrade).

    Several rows are never a ledger's state: they come back joined ("0003, 9999"), a
    revision no llm_ledger knows, so every caller refuses them with its usual message.
    """
    if not inspect(conn).has_table("alembic_version"):
        return None
    rows = [str(r) for r in conn.execute(text("SELECT version_num FROM alembic_version")).scalars()]
    if not rows:
        return None
    return ", ".join(sorted(rows))


@contextlib.contextmanager
def _migration_lock(engine: Engine) -> Iterator[Connection]:
    """Serialise schema checks across processes that open one ledger at once."""
    with engine.connect() as conn:
        name = engine.dialect.name
        if name == "sqlite":
            path = sqlite_path(str(engine.url))
            if path is None:
                yield conn
                return
            import fcntl

            with open(path, "rb") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                try:
                    yield conn
                finally:
                    fcntl.flock(fh, fcntl.LOCK_UN)
        elif name == "postgresql":
            conn.execute(text("SELECT pg_advisory_lock(7402119)"))
            conn.commit()
            try:
                yield conn
            finally:
                conn.rollback()
                conn.execute(text("SELECT pg_advisory_unlock(7402119)"))
                conn.commit()
        elif name in ("mysql", "mariadb"):
            conn.execute(text("SELECT GET_LOCK('llm_ledger_migrate', 120)"))
            try:
                yield conn
            finally:
                conn.rollback()
                conn.execute(text("SELECT RELEASE_LOCK('llm_ledger_migrate')"))
        else:
            yield conn


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str | None]:
    """Upgrade the ledger; returns (from, to) revisions."""
    with _migration_lock(engine) as conn:
        before = current_revision(conn)
        tables = set(inspect(conn).get_table_names())
        conn.commit()
        where = describe(str(engine.url))
        check_revision(where, engine.dialect.name == "sqlite", before, tables, may_upgrade=True)
        command.upgrade(alembic_config(connection=conn), revision)
        conn.commit()
        return before, current_revision(conn)


def downgrade(engine: Engine, revision: str = "base") -> None:
    with _migration_lock(engine) as conn:
        command.downgrade(alembic_config(connection=conn), revision)
        conn.commit()


def check_revision(
    where: str, is_sqlite: bool, rev: str | None, tables: set[str], *, may_upgrade: bool
) -> None:
    """Refuse what must not be migrated: another application's database, an unstamped
    ledger, a revision from a newer llm_ledger, or (unless allowed) an older one."""
    head = head_revision()
    tables = tables - {"alembic_version"}  # left empty by a downgrade to base
    if rev is None:
        if tables & LEDGER_TABLES:
            raise LedgerOpenError(
                f"{where} holds ledger tables but no alembic_version; stamp it with "
                f"`alembic -x url=... stamp head` if it is a ledger, or use another database"
            )
        if is_sqlite and tables:
            raise LedgerOpenError(
                f"{where} is an SQLite database of another application (tables: "
                f"{', '.join(sorted(tables)[:5])}); point cache_file_name / LLM_LEDGER_URL "
                "(or llm-ledger --db) at a new file"
            )
    elif rev not in known_revisions():
        raise SchemaVersionError(
            f"{where} has schema revision {rev}, which this llm_ledger does not know "
            f"(its newest is {head}): the ledger was written by a newer llm_ledger or by "
            "another application; upgrade with `pip install -U llm-ledger`"
        )
    elif rev != head and not may_upgrade:
        raise SchemaVersionError(
            f"{where} has schema revision {rev}, older than this code's {head}; "
            f"run `llm-ledger --db '{where}' migrate` (or `alembic -x url=... upgrade head`)"
        )


def ensure_schema(engine: Engine, *, auto_upgrade: bool | None = None) -> str:
    """Check (and where allowed, create or upgrade) the schema; returns the revision."""
    where = describe(str(engine.url))
    is_sqlite = engine.dialect.name == "sqlite"
    if auto_upgrade is None:
        auto_upgrade = is_sqlite
    head = head_revision()
    try:
        with engine.connect() as conn:
            rev = current_revision(conn)
            if rev == head:
                return rev
    except DatabaseError as exc:
        raise _open_error(where, exc) from None
    try:
        with _migration_lock(engine) as conn:
            rev = current_revision(conn)
            tables = set(inspect(conn).get_table_names())
            conn.commit()
            if rev == head:
                return rev
            check_revision(where, is_sqlite, rev, tables, may_upgrade=auto_upgrade)
            command.upgrade(alembic_config(connection=conn), "head")
            conn.commit()
            log.info("ledger.migrated", db=where, from_revision=rev, to_revision=head)
            return head
    except DatabaseError as exc:
        raise _open_error(where, exc) from None


def _open_error(where: str, exc: DatabaseError) -> LedgerOpenError:
    return open_error(where, exc)


def open_error(where: str, exc: BaseException | str) -> LedgerOpenError:
    """The one wording of "cannot open this ledger", for the library and every command.

    ``exc``: the database's error (SQLAlchemy's or the driver's), or its message.
    """
    orig = exc if isinstance(exc, str) else getattr(exc, "orig", None) or exc
    args: tuple[Any, ...] = tuple(getattr(orig, "args", ()))
    if len(args) == 2 and isinstance(args[0], int):  # PyMySQL: (code, message)
        orig = str(args[1])
    text_ = " ".join(str(orig).split())  # one line (libpq adds a hint on a second)
    if "file is not a database" in text_:
        return LedgerOpenError(
            f"{where} is not an SQLite database ({text_}); point cache_file_name / LLM_LEDGER_URL "
            "at a ledger file or a new path"
        )
    if "malformed" in text_:
        return LedgerOpenError(
            f"{where} is damaged ({text_}); restore it from a backup, salvage it with "
            "`sqlite3 <file> .recover`, or point cache_file_name / LLM_LEDGER_URL at a new path"
        )
    if "unable to open database file" in text_:
        return LedgerOpenError(
            f"cannot open the ledger at {where} ({text_}); the path must name a file (not a "
            "directory) this user can read and write, in a directory it can write"
        )
    if (
        isinstance(exc, str)
        or isinstance(exc, OperationalError)
        or not isinstance(exc, DatabaseError)
    ):
        return LedgerOpenError(f"cannot open the ledger at {where}: {text_}")
    return LedgerOpenError(f"{where}: {text_}")
