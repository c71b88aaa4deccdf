"""Full-text search over prompts and answers, each engine with its own index (migration 0008).

A search document is one stored answer with the prompt it answered. A call matches when
every word of the search text is in its prompt (system prompt + last user message), or
every word is in its answer. Words are matched whole and case-insensitively; SQLite also
ignores accents. Calls without an answer (failed calls) are not searched.

- SQLite: the FTS5 table ``answer_search`` (rowid = responses.id), filled by triggers.
- PostgreSQL: GIN indexes over ``to_tsvector('simple', ledger_request_text(request))`` and
  ``... ledger_answer_text(response)``; the query repeats those expressions exactly, which
  is what lets the planner use the indexes.
- MariaDB/MySQL: the table ``answer_search`` with FULLTEXT indexes, filled by triggers.
  InnoDB does not index words shorter than ``innodb_ft_min_token_size`` (3) or its
  stopwords ("the", "what", ...): such words are left out of the query there.

The search text is never handed to an engine's query syntax as is: it is split into words
and each is quoted, so punctuation in what a person types cannot make a syntax error.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    ColumnElement,
    bindparam,
    column,
    func,
    literal_column,
    or_,
    select,
    table,
    text,
)
from sqlalchemy.engine import Connection
from sqlalchemy.sql import operators
from sqlalchemy.types import Text

from .errors import ConfigError
from .filters import CallFilter
from .store.models import CallLog

if TYPE_CHECKING:
    from .store.repository import Ledger

__all__ = [
    "DERIVED_NAMES",
    "RESULT_COLUMNS",
    "call_rows",
    "highlight",
    "marked",
    "matches",
    "search_calls",
    "snippet",
    "words",
]

# Schema objects of migration 0008 that no model describes (Alembic's check skips them).
DERIVED_NAMES = frozenset(
    {
        "answer_search",
        "answer_search_data",
        "answer_search_idx",
        "answer_search_content",
        "answer_search_docsize",
        "answer_search_config",
        "ix_requests_search",
        "ix_responses_search",
    }
)

_WORD = re.compile(r"\w+", re.UNICODE)
# InnoDB's default full-text stopwords (INFORMATION_SCHEMA.INNODB_FT_DEFAULT_STOPWORD).
_INNODB_STOPWORDS = frozenset(
    "a about an are as at be by com de en for from how i in is it la of on or that the "
    "this to was what when where who will with und www".split()
)
_INNODB_MIN_TOKEN = 3

_ANSWER_SEARCH = table("answer_search", column("rowid"), column("response_id"))
_REQUESTS = table("requests", column("request_hash"), column("request"))
_RESPONSES = table("responses", column("id"), column("response"))


def words(text_value: str) -> list[str]:
    """The words of a search text, lower-cased, first occurrence order, no repeats."""
    found: list[str] = []
    for word in _WORD.findall(text_value.lower()):
        if word not in found:
            found.append(word)
    if not found:
        raise ConfigError(
            f"search text {text_value!r} has no words to look for: give at least one word, "
            "for example --search invoice"
        )
    return found


def matches(dialect: str, text_value: str, relation: Any) -> ColumnElement[bool]:
    """A condition on ``relation`` (call_log or the calls view): the call's texts match.

    ``relation`` needs the ``response_id`` and ``request_hash`` columns.
    """
    found = words(text_value)
    c = relation.c
    if dialect == "sqlite":
        return c.response_id.in_(
            select(_ANSWER_SEARCH.c.rowid).where(
                text("answer_search MATCH :fts_query").bindparams(fts_query=_fts5_query(found))
            )
        )
    if dialect == "postgresql":
        query = func.plainto_tsquery(literal_column("'simple'"), " ".join(found))

        def indexed(function: str, value: Any) -> Any:
            return func.to_tsvector(literal_column("'simple'"), getattr(func, function)(value))

        return c.response_id.is_not(None) & or_(
            c.request_hash.in_(
                select(_REQUESTS.c.request_hash).where(
                    indexed("ledger_request_text", _REQUESTS.c.request).op("@@")(query)
                )
            ),
            c.response_id.in_(
                select(_RESPONSES.c.id).where(
                    indexed("ledger_answer_text", _RESPONSES.c.response).op("@@")(query)
                )
            ),
        )
    usable = [w for w in found if len(w) >= _INNODB_MIN_TOKEN and w not in _INNODB_STOPWORDS]
    if not usable:
        raise ConfigError(
            f"search text {text_value!r}: MariaDB's full-text index leaves out words shorter "
            f"than {_INNODB_MIN_TOKEN} characters and common words such as 'the'; "
            "search for a longer word"
        )
    boolean = " ".join(f'+"{w}"' for w in usable)
    against = "MATCH ({}) AGAINST (:ft_query IN BOOLEAN MODE)"
    return c.response_id.in_(
        select(_ANSWER_SEARCH.c.response_id).where(
            text(
                f"{against.format('system_prompt, prompt')} OR {against.format('answer')}"
            ).bindparams(bindparam("ft_query", boolean))
        )
    )


RESULT_COLUMNS = (
    "id",
    "created_at",
    "model",
    "cache_status",
    "status",
    "run",
    "cost_usd",
    "system_prompt",
    "prompt",
    "answer",
    "finish_reason",
)
# The calls view, typed like call_log (so SQLite's timestamps and money come back converted).
_CALLS = table(
    "calls",
    *(
        column(c, CallLog.__table__.c[c].type if c in CallLog.__table__.c else Text())
        for c in dict.fromkeys(
            (*CallLog.__table__.c.keys(), "system_prompt", "prompt", "answer", "finish_reason")
        )
    ),
)


def search_calls(
    source: Ledger | Connection,
    text_value: str,
    filters: CallFilter | None = None,
    limit: int = 20,
) -> list[dict[str, Any]]:
    """The newest calls whose prompt or answer holds every word of ``text_value``.

    Rows of the ``calls`` view (:data:`RESULT_COLUMNS`), newest first; ``limit`` 0: all.
    ``source``: a Ledger, or an open connection to one (the CLI's read-only one).
    """
    if isinstance(source, Connection):
        return _search(source, text_value, filters, limit)
    source.flush()  # records still queued by this process (writebehind.py)
    with source.engine.connect() as conn:
        return _search(conn, text_value, filters, limit)


# At this many matching answers a newest-first search walks the call log and asks the
# index about each call instead of listing every match (SQLite; see _search).
DENSE_MATCHES = 2_000


def _search(
    conn: Connection, text_value: str, filters: CallFilter | None, limit: int
) -> list[dict[str, Any]]:
    log = CallLog.__table__
    dialect = conn.dialect.name
    dense = _dense_match(conn, text_value, log, limit)
    where = [
        matches(dialect, text_value, log) if dense is None else dense,
        *(filters or CallFilter()).conditions(log),
    ]
    order = (log.c.created_at.desc(), log.c.id.desc())
    return call_rows(conn, RESULT_COLUMNS, where, order, limit)


def _dense_match(
    conn: Connection, text_value: str, log: Any, limit: int
) -> ColumnElement[bool] | None:
    """For words that most calls hold (SQLite, newest ``limit``): a per-call index probe.

    ``response_id IN (matches)`` lists every match, then sorts their calls: a second or
    more when a million answers match. When the index holds :data:`DENSE_MATCHES` or more
    matches, walking the calls newest first (the created_at index) and probing the index
    for each call's answer (FTS5 seeks by rowid) stops after about ``limit`` / density
    calls instead. Rare words keep the list, which is then short.
    """
    if conn.dialect.name != "sqlite" or not limit:
        return None
    query = _fts5_query(words(text_value))
    found = conn.execute(
        text(
            "SELECT COUNT(*) FROM (SELECT rowid FROM answer_search "
            "WHERE answer_search MATCH :fts_query LIMIT :cap)"
        ),
        {"fts_query": query, "cap": DENSE_MATCHES},
    ).scalar_one()
    if found < DENSE_MATCHES:
        return None
    probe = text(
        "EXISTS (SELECT 1 FROM answer_search WHERE answer_search MATCH :fts_query "
        "AND answer_search.rowid = call_log.response_id)"
    ).bindparams(fts_query=query)
    return log.c.response_id.is_not(None) & probe


def call_rows(
    conn: Connection,
    columns: Sequence[str],
    where: Sequence[ColumnElement[bool]],
    order: Sequence[Any],
    limit: int,
) -> list[dict[str, Any]]:
    """``columns`` of the calls view for the call_log rows ``where`` picks, in ``order``.

    Two steps: the call ids are chosen on call_log (its indexes, no text), then the view's
    columns are read for those ids only. One query over the view would compute the text
    columns of every matching call before sorting them (SQLite does), which at a million
    calls takes minutes. A derived table rather than ``IN (... LIMIT n)``, which MariaDB
    refuses.
    """
    log = CallLog.__table__
    picked = select(log.c.id).where(*where).order_by(*order)
    if limit:
        picked = picked.limit(limit)
    top = picked.subquery("picked")
    view_order = [
        getattr(_CALLS.c[o.element.name], "desc" if o.modifier is operators.desc_op else "asc")()
        for o in order
    ]
    stmt = (
        select(*(_CALLS.c[c] for c in columns))
        .join_from(_CALLS, top, top.c.id == _CALLS.c.id)
        .order_by(*view_order)
    )
    return [dict(r._mapping) for r in conn.execute(stmt)]


def _fts5_query(found: Sequence[str]) -> str:
    """All words in the prompt columns, or all in the answer; each word a quoted phrase."""
    quoted = ['"' + w.replace('"', '""') + '"' for w in found]
    prompt = " AND ".join(f"{{system_prompt prompt}} : {q}" for q in quoted)
    answer = " AND ".join(f"answer : {q}" for q in quoted)
    return f"({prompt}) OR ({answer})"


# --- highlighting (in Python: the same on every engine) ------------------------


def _pattern(found: Sequence[str]) -> re.Pattern[str]:
    alternatives = "|".join(re.escape(w) for w in sorted(found, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


def highlight(value: str | None, found: Sequence[str]) -> list[tuple[str, bool]]:
    """``value`` cut into (piece, is_a_match) pieces; whitespace runs become one space."""
    if not value:
        return []
    flat = " ".join(value.split())
    pieces: list[tuple[str, bool]] = []
    at = 0
    for m in _pattern(found).finditer(flat):
        if m.start() > at:
            pieces.append((flat[at : m.start()], False))
        pieces.append((m.group(0), True))
        at = m.end()
    if at < len(flat):
        pieces.append((flat[at:], False))
    return pieces


def snippet(value: str | None, found: Sequence[str], width: int = 160) -> list[tuple[str, bool]]:
    """Like :func:`highlight`, cut to about ``width`` characters around the first match."""
    pieces = highlight(value, found)
    total = sum(len(p) for p, _ in pieces)
    if total <= width:
        return pieces
    flat = "".join(p for p, _ in pieces)
    first = next((i for i, (_, hit) in enumerate(pieces) if hit), None)
    offset = sum(len(p) for p, _ in pieces[:first]) if first is not None else 0
    start = max(0, min(offset - width // 4, total - width))
    end = start + width
    out: list[tuple[str, bool]] = [("…", False)] if start > 0 else []
    pos = 0
    for piece, hit in pieces:
        lo, hi = max(start, pos), min(end, pos + len(piece))
        if lo < hi:
            out.append((flat[lo:hi], hit))
        pos += len(piece)
    if end < total:
        out.append(("…", False))
    return out


def marked(pieces: Sequence[tuple[str, bool]], before: str = "**", after: str = "**") -> str:
    """Pieces as one string, each match between ``before`` and ``after``."""
    return "".join(f"{before}{p}{after}" if hit else p for p, hit in pieces)
