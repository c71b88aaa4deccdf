"""PostgreSQL: many processes x threads against one server, the ledger vs a raw psycopg floor.

Where users who outgrow one machine go. The same workload and stub API as the SQLite
rows; ``processes`` x ``threads`` callers (8 x 4 by default), 80% hits / 20% stores,
all calls over the wall time from the first start to the last finish.

- **ledger**: ``send_message`` on a ledger at the PostgreSQL URL, seeded with ``size``
  entries through ``send_message`` itself (so every seeded row is the ledger's own).
- **floor**: raw ``psycopg``, one connection per thread, two tables in the same database
  (``bench_floor_cache`` keyed by the request's SHA-256, ``bench_floor_audit``): a hit is
  one primary-key lookup, the answer parsed, one audit row, one commit; a store the
  lookup, the stub API, one cache row and one audit row, one commit.

Both must gain exactly one audit row per call. The URL comes from ``--pg-url`` or
``LLM_LEDGER_BENCH_PG_URL``; the part is skipped with a note without one. It drops and
recreates the ledger's tables and the floor's in that database: never point it at a
ledger you keep.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from typing import Any

from llm_ledger.store.db import describe

from . import workload
from .children import collect, context, summarise
from .contenders import LEDGER_OPTIONS, StubAPI, StubClient, chat_completion
from .floor import floor_key

FRESH = 800_000_000
ENV = "LLM_LEDGER_BENCH_PG_URL"
FLOOR_SCHEMA = """
DROP TABLE IF EXISTS bench_floor_audit;
DROP TABLE IF EXISTS bench_floor_cache;
CREATE TABLE bench_floor_cache (
    key TEXT PRIMARY KEY,
    response TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE bench_floor_audit (
    id BIGSERIAL PRIMARY KEY,
    created_at DOUBLE PRECISION NOT NULL,
    key TEXT NOT NULL,
    model TEXT NOT NULL,
    status TEXT NOT NULL,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    latency_ms DOUBLE PRECISION
);
"""
_AUDIT = (
    "INSERT INTO bench_floor_audit (created_at, key, model, status, prompt_tokens, "
    "completion_tokens, latency_ms) VALUES (%s, %s, %s, %s, %s, %s, %s)"
)


def _psycopg_url(url: str) -> str:
    """A libpq URL from a SQLAlchemy one (``postgresql+psycopg://`` -> ``postgresql://``)."""
    scheme, rest = url.split("://", 1)
    return "postgresql://" + rest if scheme.startswith("postgresql") else url


class PgFloor:
    """The floor of ``floor.Floor`` on PostgreSQL: one psycopg connection per thread."""

    def __init__(self, url: str, api: Any) -> None:
        self.url = _psycopg_url(url)
        self.api = api
        self.params = {k: v for k, v in workload.PARAMS.items() if v is not None}
        self._local = threading.local()
        self._all: list[Any] = []

    @property
    def conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            import psycopg

            conn = self._local.conn = psycopg.connect(self.url)
            self._all.append(conn)
        return conn

    def call(self, model: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
        t0 = time.perf_counter()
        key = floor_key(model, messages, self.params)
        conn = self.conn
        with conn.cursor() as cur:
            cur.execute("SELECT response FROM bench_floor_cache WHERE key = %s", (key,))
            row = cur.fetchone()
            if row is not None:
                response = json.loads(row[0])
                status = "hit"
            else:
                response = self.api(model, messages)
                text = json.dumps(response, separators=(",", ":"), ensure_ascii=False)
                cur.execute(
                    "INSERT INTO bench_floor_cache (key, response, created_at) "
                    "VALUES (%s, %s, %s) ON CONFLICT (key) DO NOTHING",
                    (key, text, time.time()),
                )
                status = "miss"
            u = response.get("usage") or {}
            cur.execute(
                _AUDIT,
                (
                    time.time(),
                    key,
                    model,
                    status,
                    u.get("prompt_tokens"),
                    u.get("completion_tokens"),
                    (time.perf_counter() - t0) * 1000,
                ),
            )
        conn.commit()
        return response

    def close(self) -> None:
        for conn in self._all:
            conn.close()
        self._all.clear()


def _ledger_client(url: str, api: StubAPI) -> StubClient:
    return StubClient(cache_file_name=url, api=api, **LEDGER_OPTIONS)


def _reset_ledger(url: str) -> None:
    """Empty the database (its public schema), so the ledger is created afresh by its migrations."""
    import psycopg

    with psycopg.connect(_psycopg_url(url), autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS public CASCADE")
        conn.execute("CREATE SCHEMA public")


def _drop_floor(url: str) -> None:
    """Leave the database holding a ledger only (its floor tables would fail `alembic check`)."""
    import psycopg

    with psycopg.connect(_psycopg_url(url), autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_floor_audit, bench_floor_cache")


def seed(url: str, size: int, threads: int = 4) -> dict[str, float]:
    """Fresh ledger and floor tables holding entries 0..size-1; seconds each took."""
    import psycopg

    from llm_ledger.store import repository

    out: dict[str, float] = {}
    t0 = time.monotonic()
    _reset_ledger(url)
    client = _ledger_client(url, StubAPI(chat_completion))
    client.ledger  # noqa: B018 - create and migrate

    def fill(lo: int) -> None:
        for i in range(lo, size, threads):
            it = workload.item(i)
            client.send_message(it.messages, model=it.model, temperature=0.0)

    pool = [threading.Thread(target=fill, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    repository.close_all()
    out["ledger"] = round(time.monotonic() - t0, 1)

    t0 = time.monotonic()
    params = {k: v for k, v in workload.PARAMS.items() if v is not None}
    with psycopg.connect(_psycopg_url(url)) as conn:
        conn.execute(FLOOR_SCHEMA)
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO bench_floor_cache (key, response, created_at) VALUES (%s, %s, %s)",
                [
                    (
                        floor_key(workload.model_of(i), workload.messages(i), params),
                        json.dumps(workload.response(i), separators=(",", ":")),
                        time.time(),
                    )
                    for i in range(size)
                ],
            )
    out["floor"] = round(time.monotonic() - t0, 1)
    return out


def _audit_rows(url: str, kind: str) -> int:
    import psycopg

    table = "call_log" if kind == "ledger" else "bench_floor_audit"
    with psycopg.connect(_psycopg_url(url)) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608 - fixed names
        return int(row[0]) if row else 0


def _items(size: int, proc: int, thread: int, ops: int, hit_ratio: float, run: int) -> list[int]:
    rng = random.Random(f"pg/{size}/{proc}/{thread}")
    fresh = FRESH + run * 100_000_000 + proc * 1_000_000 + thread * 100_000
    return [rng.randrange(size) if rng.random() < hit_ratio else fresh + k for k in range(ops)]


def _worker(
    kind: str,
    url: str,
    size: int,
    proc: int,
    threads: int,
    ops: int,
    hit_ratio: float,
    run: int,
    barrier: Any,
    out: Any,
) -> None:
    from llm_ledger import config
    from llm_ledger.store import repository

    config.reset_settings({})
    if kind == "ledger":
        api = StubAPI(chat_completion)
        client = _ledger_client(url, api)
        client.ledger  # noqa: B018 - open outside the timing

        def call(it: workload.Item) -> Any:
            return client.send_message(it.messages, model=it.model, temperature=0.0)

    else:
        api = StubAPI(dict)
        impl = PgFloor(url, api)

        def call(it: workload.Item) -> Any:
            return impl.call(it.model, it.messages)

    plans = [
        [workload.item(i) for i in _items(size, proc, t, ops, hit_ratio, run)]
        for t in range(threads)
    ]
    done = [0] * threads
    errors: list[str] = []

    def run_thread(t: int) -> None:
        for it in plans[t]:
            try:
                if call(it) is not None:
                    done[t] += 1
            except Exception as exc:  # noqa: BLE001 - counted and reported, not hidden
                errors.append(f"{type(exc).__name__}: {exc}"[:200])

    pool = [threading.Thread(target=run_thread, args=(t,)) for t in range(threads)]
    barrier.wait()
    t0 = time.monotonic()
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    if kind == "ledger":
        client.ledger.flush()  # records still queued (writes="journal"), inside the timing
    t1 = time.monotonic()
    if kind == "ledger":
        repository.close_all()
    else:
        impl.close()
    out.put({"t0": t0, "t1": t1, "calls": sum(done), "errors": errors, "api_calls": api.calls})


def measure(
    kind: str,
    url: str,
    size: int,
    *,
    processes: int = 8,
    threads: int = 4,
    ops: int = 100,
    hit_ratio: float = 0.8,
    run: int = 0,
) -> dict[str, Any]:
    """Calls per second of ``processes`` x ``threads`` callers, each making ``ops`` calls."""
    before = _audit_rows(url, kind)
    ctx = context()
    barrier = ctx.Barrier(processes)
    out = ctx.Queue()
    procs = [
        ctx.Process(
            target=_worker,
            args=(kind, url, size, p, threads, ops, hit_ratio, run, barrier, out),
        )
        for p in range(processes)
    ]
    for p in procs:
        p.start()
    results = collect(procs, out)
    audit_rows = _audit_rows(url, kind) - before
    return summarise(results, audit_rows, processes=processes, threads=threads, hit_ratio=hit_ratio)


def run_part(url: str, size: int, *, ops: int, repeats: int) -> dict[str, Any]:
    """Seed, then ``repeats`` alternating runs of the ledger and the floor; medians."""
    out: dict[str, Any] = {"size": size, "url": describe(url), "seed_s": seed(url, size)}
    runs: dict[str, list[dict[str, Any]]] = {"ledger": [], "floor": []}
    try:
        for r in range(repeats):
            order = ("ledger", "floor") if r % 2 == 0 else ("floor", "ledger")
            for kind in order:
                runs[kind].append(measure(kind, url, size, ops=ops, run=r))
    finally:
        _drop_floor(url)
    for kind, results in runs.items():
        rates = sorted(x["calls_per_s"] for x in results)
        out[kind] = {
            "calls_per_s": rates[len(rates) // 2],
            "runs_calls_per_s": [x["calls_per_s"] for x in results],
            "audit_rows_ok": all(x["audit_rows_ok"] for x in results),
            "errors": sum(x["errors"] for x in results),
            "first_error": next((x["first_error"] for x in results if x["first_error"]), None),
        }
    out["ratio"] = round(out["ledger"]["calls_per_s"] / out["floor"]["calls_per_s"], 3)
    return out


def url_from(arg: str | None) -> str | None:
    return arg or os.environ.get(ENV) or None
