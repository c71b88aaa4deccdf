"""Fill each contender's store with entries 0..n-1 of the workload, in bulk, quickly.

The ledger is created (and migrated) by ``llm_ledger`` itself, then its four tables
are written with ``executemany`` straight through ``sqlite3``: entry ``i`` is one
``requests`` row, one ``responses`` row, one ``cache_entries`` row and one
``call_log`` row (the miss that stored it), in the formats SQLAlchemy reads back.
Rows are built from string templates (checked against the library's own
canonicalisation), in a helper process while this one inserts, for big sizes.
Timed loops add rows; :func:`trim` removes them again so every measurement at a
size sees that size.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import uuid
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from llm_ledger import keys
from llm_ledger._version import __version__
from llm_ledger.store.repository import Ledger

from . import floor, workload

CHUNK = 20_000
PIPELINE_FROM = 100_000  # below this, rows are built in this process
LEDGER_TABLES = ("requests", "responses", "cache_entries", "call_log")
START = datetime(2026, 1, 1)
SPAN_S = 30 * 86_400  # seeded calls spread over 30 days, so reports have days to group by
PRICE = {"gpt-4o-mini": (0.15e-6, 0.6e-6), "gpt-4o": (2.5e-6, 10e-6)}

Rows = list[tuple[Any, ...]]
WORKLOAD_VERSION = "1"  # bump when workload.py or the seeders change what they write


@lru_cache(maxsize=2)
def fingerprint(ledger: bool = False) -> str:
    """The workload's version, and for a ledger its migrations: a kept store seeded under
    another one (a migration edited in place included) is seeded again, not measured."""
    from llm_ledger.store import db

    h = hashlib.sha256(WORKLOAD_VERSION.encode())
    for script in sorted(db.migrations_dir().glob("versions/*.py")) if ledger else ():
        h.update(script.name.encode() + b"\0" + script.read_bytes())
    return h.hexdigest()


def _chunks(make: Callable[[int, int, int], Any], n: int) -> Iterator[Any]:
    """``make(lo, hi, n)`` for each chunk, in order; computed ahead in a helper process."""
    ranges = [(lo, min(n, lo + CHUNK), n) for lo in range(0, n, CHUNK)]
    if n < PIPELINE_FROM:
        for r in ranges:
            yield make(*r)
        return
    from .children import context

    with context().Pool(1) as pool:
        todo = iter(ranges)
        pending = deque(
            pool.apply_async(make, r) for r in [next(todo) for _ in range(min(2, len(ranges)))]
        )
        while pending:
            rows = pending.popleft().get()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append(pool.apply_async(make, nxt))
            yield rows


def _bulk_connection(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -1000000")
    return conn


# --- the ledger ------------------------------------------------------------------------


def _ts(i: int, n: int) -> str:
    return (START + timedelta(seconds=SPAN_S * i / max(n, 1))).isoformat(
        sep=" ", timespec="microseconds"
    )


def _cost(model: str) -> float:
    p_in, p_out = PRICE[model]
    return round(workload.PROMPT_TOKENS * p_in + workload.COMPLETION_TOKENS * p_out, 10)


def ledger_rows(lo: int, hi: int, n: int) -> tuple[Rows, Rows, Rows, Rows]:
    reqs, resps, entries, logs = [], [], [], []
    p, c = workload.PROMPT_TOKENS, workload.COMPLETION_TOKENS
    for i in range(lo, hi):
        model = workload.model_of(i)
        body = workload.request_json(i)
        text = workload.response_json(i)
        ts = _ts(i, n)
        h = keys.hash_json(body)
        cost = _cost(model)
        reqs.append((h, "chat", model, body, ts))
        resps.append((i + 1, h, keys.hash_json(text), text, p, c, p + c, cost, "bench-seed", ts))
        entries.append((i + 1, h, i + 1, ts, ts))
        logs.append(
            (i + 1, str(uuid.UUID(int=i + 1)), ts, model, h, i + 1, 1.0, p, c, p + c, cost,
             "bench-seed", __version__)
        )  # fmt: skip
    return reqs, resps, entries, logs


_LEDGER_INSERTS = (
    "INSERT INTO requests (request_hash, kind, model, request, created_at) VALUES (?, ?, ?, ?, ?)",
    "INSERT INTO responses (id, request_hash, response_hash, response, prompt_tokens, "
    "completion_tokens, cached_tokens, reasoning_tokens, total_tokens, tokens_estimated, "
    "cost_usd, cost_note, price_version, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?, NULL, NULL, ?, 0, ?, NULL, ?, ?)",
    "INSERT INTO cache_entries (id, namespace, request_hash, slot, response_id, created_at, "
    "updated_at) VALUES (?, '', ?, 0, ?, ?, ?)",
    "INSERT INTO call_log (id, call_uuid, created_at, kind, api_type, endpoint_host, model, "
    "namespace, request_hash, slot, response_id, cache_status, status, attempts, latency_ms, "
    "prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, total_tokens, "
    "tokens_estimated, cost_usd, price_version, library_version) "
    "VALUES (?, ?, ?, 'chat', 'openai', NULL, ?, '', ?, 0, ?, 'miss', 'ok', 1, ?, ?, ?, NULL, "
    "NULL, ?, 0, ?, ?, ?)",
)


def seed_ledger(path: Path, n: int) -> None:
    """A migrated ledger holding entries 0..n-1 (and their n audit rows)."""
    workload.check_templates(0, 1, max(n - 1, 0), n // 2)
    Ledger(str(path)).close()
    conn = _bulk_connection(path)
    conn.execute("BEGIN")
    for chunk in _chunks(ledger_rows, n):
        for sql, rows in zip(_LEDGER_INSERTS, chunk, strict=True):
            conn.executemany(sql, rows)
    conn.execute("COMMIT")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("ANALYZE")
    conn.close()


# --- the floor -------------------------------------------------------------------------


def floor_rows(lo: int, hi: int, n: int) -> Rows:
    params = {k: v for k, v in workload.PARAMS.items() if v is not None}
    p, c = workload.PROMPT_TOKENS, workload.COMPLETION_TOKENS
    return [
        (
            floor.floor_key(workload.model_of(i), workload.messages(i), params),
            workload.response_json(i),
            workload.model_of(i),
            p,
            c,
        )
        for i in range(lo, hi)
    ]


def seed_floor(path: Path, n: int) -> None:
    floor.seed_floor(str(path), (row for chunk in _chunks(floor_rows, n) for row in chunk))


# --- LangChain's SQLiteCache -----------------------------------------------------------


def quiet_langchain() -> None:
    """LangChain warns about its own betas and deprecations on every import and lookup."""
    warnings.filterwarnings("ignore", message=r".*langchain", category=DeprecationWarning)
    try:
        from langchain_core._api.beta_decorator import LangChainBetaWarning
        from langchain_core._api.deprecation import (
            LangChainDeprecationWarning,
            LangChainPendingDeprecationWarning,
        )
    except ImportError:
        return
    for category in (
        LangChainBetaWarning,
        LangChainDeprecationWarning,
        LangChainPendingDeprecationWarning,
    ):
        warnings.filterwarnings("ignore", category=category)


def langchain_prompt(i: int) -> str:
    """The ``prompt`` a LangChain chat model looks up: ``dumps`` of its messages."""
    quiet_langchain()
    from langchain_core.load import dumps
    from langchain_core.messages import HumanMessage, SystemMessage

    m = workload.messages(i)
    return str(
        dumps([SystemMessage(content=m[0]["content"]), HumanMessage(content=m[1]["content"])])
    )


def langchain_llm_string(model: str) -> str:
    """What a chat model passes as ``llm_string``: its parameters, sorted, as a string."""
    params: dict[str, Any] = {"model_name": model, "_type": "openai-chat", "stop": None}
    params.update({k: v for k, v in workload.PARAMS.items() if v is not None})
    return str(sorted(params.items()))


@lru_cache(maxsize=1)
def _langchain_templates() -> tuple[str, str]:
    quiet_langchain()
    from langchain_core.load import dumps
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
    from langchain_core.outputs import ChatGeneration

    hole = "\x00HOLE\x00"
    encoded = json.dumps(hole)[1:-1]
    prompt = dumps([SystemMessage(content=workload.SYSTEM), HumanMessage(content=hole)])
    answer = dumps(ChatGeneration(message=AIMessage(content=hole)))
    return (
        prompt.replace("%", "%%").replace(encoded, "%s"),
        answer.replace("%", "%%").replace(encoded, "%s"),
    )


def _lc_prompt(i: int) -> str:
    return _langchain_templates()[0] % json.dumps(workload.messages(i)[1]["content"])[1:-1]


def _lc_answer(i: int) -> str:
    content = json.dumps(workload.response(i)["choices"][0]["message"]["content"])[1:-1]
    return _langchain_templates()[1] % (content, content)


def langchain_rows(lo: int, hi: int, n: int) -> Rows:
    return [
        (_lc_prompt(i), langchain_llm_string(workload.model_of(i)), 0, _lc_answer(i))
        for i in range(lo, hi)
    ]


def seed_langchain(path: Path, n: int) -> None:
    quiet_langchain()
    from langchain_community.cache import SQLiteCache
    from langchain_core.load import loads

    for i in (0, max(n - 1, 0)):
        if _lc_prompt(i) != langchain_prompt(i):
            raise AssertionError("the LangChain prompt template differs from dumps()")
        content = loads(_lc_answer(i)).message.content
        if content != workload.response(i)["choices"][0]["message"]["content"]:
            raise AssertionError("the LangChain answer template does not load back")
    SQLiteCache(database_path=str(path)).engine.dispose()  # its own table and index
    conn = _bulk_connection(path)
    conn.execute("BEGIN")
    for chunk in _chunks(langchain_rows, n):
        conn.executemany(
            "INSERT INTO full_llm_cache (prompt, llm, idx, response) VALUES (?, ?, ?, ?)", chunk
        )
    conn.execute("COMMIT")
    conn.close()


# --- trimming: undo what a timed loop added ----------------------------------------------


def marks(path: Path, tables: tuple[str, ...]) -> dict[str, int]:
    conn = sqlite3.connect(path)
    try:
        return {
            t: conn.execute(f"SELECT coalesce(max(rowid), 0) FROM {t}").fetchone()[0]
            for t in tables
        }
    finally:
        conn.close()


def added(path: Path, mark: dict[str, int]) -> dict[str, int]:
    """Rows each table gained since ``mark``."""
    conn = sqlite3.connect(path)
    try:
        return {
            t: conn.execute(f"SELECT count(*) FROM {t} WHERE rowid > ?", (m,)).fetchone()[0]
            for t, m in mark.items()
        }
    finally:
        conn.close()


_CHILDREN_FIRST = ("call_tags", "call_log", "cache_entries", "responses", "requests")


def trim(path: Path, mark: dict[str, int]) -> int:
    """Delete rows added since ``mark`` (children first); returns how many went."""
    order = [t for t in _CHILDREN_FIRST if t in mark] + [
        t for t in mark if t not in _CHILDREN_FIRST
    ]
    conn = sqlite3.connect(path, timeout=60)
    conn.execute("PRAGMA synchronous = OFF")  # bookkeeping between timings: no fsync needed
    removed = 0
    try:
        with conn:
            for t in order:
                removed += conn.execute(f"DELETE FROM {t} WHERE rowid > ?", (mark[t],)).rowcount
    finally:
        conn.close()
    return removed
