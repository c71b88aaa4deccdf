"""Load: N processes x M threads x K calls on one ledger, against one test-kit server.

Each worker (tests/_load_worker.py) is a separate process with its own engine; the
prompts mix ones shared by every worker and thread with unique ones, at temperature 0.
Single-flight only works inside a process, so two processes can both miss the same
prompt and both pay for it: the second writer's cache insert yields to the first's
row and its caller gets the first answer. Hence the invariants checked exactly:

- audit rows = N*M*K, all status 'ok', no worker error, nothing on any stderr;
- misses on the audit log = responses rows = chat requests the server answered;
- cache entries = requests rows = distinct prompts;
- every caller of one prompt got the same answer: the one its cache entry holds;
- responses no row references = misses - entries (the answers of lost races).

CI size is 2 x 4 x 25; LLM_LEDGER_STRESS=1 runs 4 x 8 x 250 (8,000 rows) per engine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

import llm_ledger
from llm_ledger.store import db, repository, spool
from llm_ledger.testing import FakeOpenAIServer

from ._load_worker import all_prompts
from .conftest import TEST_KEY

WORKER = Path(__file__).with_name("_load_worker.py")
STRESS = os.environ.get("LLM_LEDGER_STRESS") == "1"
SHARED = 10


@pytest.fixture
def own_api() -> Iterator[FakeOpenAIServer]:
    """A server of its own: no late answer from another test can touch its counters."""
    with FakeOpenAIServer() as server:
        yield server


def run_workers(
    url: str, api: FakeOpenAIServer, procs: int, threads: int, calls: int
) -> tuple[list[dict], float]:
    env = {
        **os.environ,
        "OPENAI_API_KEY": TEST_KEY,
        "OPENAI_BASE_URL": api.url,
        "LLM_LEDGER_LOG_LEVEL": "warning",
    }
    t0 = time.perf_counter()
    children = [
        subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                "--db",
                url,
                "--worker",
                str(w),
                "--threads",
                str(threads),
                "--calls",
                str(calls),
                "--shared",
                str(SHARED),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        for w in range(procs)
    ]
    results = []
    for child in children:
        out, err = child.communicate(timeout=1200)
        assert child.returncode == 0, err
        assert err == "", err  # no "database is locked", no ledger.write_failed, nothing
        results.append(json.loads(out))
    return results, time.perf_counter() - t0


def scalar(conn, sql: str) -> int:
    return int(conn.execute(text(sql)).scalar_one())


def check_load(url: str, api: FakeOpenAIServer, procs: int, threads: int, calls: int) -> str:
    llm_ledger.flush()  # calls are written behind them (writes="journal")
    results, wall = run_workers(url, api, procs, threads, calls)
    expected = procs * threads * calls
    prompts = all_prompts(procs, threads, calls, SHARED)
    distinct = len(set(prompts))

    for r in results:
        assert r["errors"] == []
        assert (r["calls"], r["none"]) == (threads * calls, 0)

    # Checked before opening: an open would recover (and remove) a spool.
    assert not spool.default_spool_path(db.normalize_url(url)).exists()
    ledger = repository.open_ledger(url)
    with ledger.engine.connect() as conn:
        statuses = dict(
            conn.execute(text("SELECT status, count(*) FROM call_log GROUP BY 1")).all()
        )
        kinds = dict(
            conn.execute(text("SELECT cache_status, count(*) FROM call_log GROUP BY 1")).all()
        )
        entries = scalar(conn, "SELECT count(*) FROM cache_entries")
        requests = scalar(conn, "SELECT count(*) FROM requests")
        responses = scalar(conn, "SELECT count(*) FROM responses")
        unreferenced = scalar(
            conn,
            "SELECT count(*) FROM responses r WHERE NOT EXISTS "
            "(SELECT 1 FROM call_log c WHERE c.response_id = r.id) AND NOT EXISTS "
            "(SELECT 1 FROM cache_entries e WHERE e.response_id = r.id)",
        )
        stored = conn.execute(
            text(
                "SELECT q.request, r.response FROM cache_entries e "
                "JOIN requests q ON q.request_hash = e.request_hash "
                "JOIN responses r ON r.id = e.response_id"
            )
        ).all()
    misses = kinds.get("miss", 0)
    assert statuses == {"ok": expected}
    assert set(kinds) <= {"hit", "miss"}
    assert kinds.get("hit", 0) + misses == expected
    assert misses == api.chat_count == api.request_count == responses
    assert entries == requests == distinct
    # A process that lost a race for a slot to another one answered with its own answer
    # (writes="journal": written after it returned), and its row names that answer.
    assert unreferenced == 0

    def as_dict(value):
        return json.loads(value) if isinstance(value, str) else value

    cached = {}
    for req, resp in stored:
        cached[as_dict(req)["messages"][0]["content"]] = as_dict(resp)["choices"][0]["message"][
            "content"
        ]
    seen: dict[str, set[str]] = {}
    for r in results:
        for p, answers in r["answers"].items():
            seen.setdefault(p, set()).update(answers)
    # Every stored answer was returned; a prompt answered otherwise too was a race lost
    # between processes, each of which returned its own (paid) answer (writes="journal").
    assert set(seen) == set(prompts)
    assert all(cached[p] in answers for p, answers in seen.items())
    assert sum(len(answers) - 1 for answers in seen.values()) <= misses - entries
    return (
        f"{ledger.dialect}: {procs}x{threads}x{calls}: rows {sum(statuses.values())}/{expected}, "
        f"errors 0, hits {kinds.get('hit', 0)}, misses {misses}, server requests "
        f"{api.request_count}, distinct prompts {distinct}, lost races {misses - entries}, "
        f"wall {wall:.1f}s"
    )


def test_processes_and_threads_share_one_ledger(any_db: str, own_api: FakeOpenAIServer) -> None:
    print(check_load(any_db, own_api, 2, 4, 25))


@pytest.mark.stress
@pytest.mark.skipif(not STRESS, reason="full-size load test; run with LLM_LEDGER_STRESS=1")
def test_full_size_load(any_db: str, own_api: FakeOpenAIServer) -> None:
    print(check_load(any_db, own_api, 4, 8, 250))
