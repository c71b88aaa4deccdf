"""API faults (429, 5xx, dropped connections, read timeouts, 4xx) and SIGKILL mid-write.

Every fault is injected by the test-kit server and seen through the real openai SDK
(built with max_retries=0, so every retry here is the library's). The ``sleeps``
fixture records each wait the retry loop asks for, so waits are asserted exactly and
nothing actually sleeps.
"""

from __future__ import annotations

import math
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

import llm_ledger
from llm_ledger.testing import FakeOpenAIServer

from .conftest import TEST_KEY, Sleeps, msgs

WORKER = Path(__file__).with_name("_load_worker.py")


def last_call(db: Path) -> dict[str, Any]:
    llm_ledger.flush()  # calls are written behind them (writes="journal")
    engine = create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        row = (
            conn.execute(
                text(
                    "SELECT cache_status, status, attempts, error_type, error_message, response_id "
                    "FROM call_log ORDER BY id DESC LIMIT 1"
                )
            )
            .mappings()
            .one()
        )
    engine.dispose()
    return dict(row)


def settle(api: FakeOpenAIServer) -> None:
    """Wait until the server has finished every request (a delayed answer outlives the
    client's timeout and would otherwise count in the next test)."""
    deadline = time.monotonic() + 30
    while any(r.status == 0 for r in api.requests) and time.monotonic() < deadline:
        time.sleep(0.02)


OK = {
    "cache_status": "miss",
    "status": "ok",
    "error_type": None,
    "error_message": None,
}


# --- retried faults ------------------------------------------------------------------


def test_429_waits_exactly_what_retry_after_says(client, api, db_path, sleeps: Sleeps) -> None:
    api.fail_next(429, times=2, retry_after=7)
    assert client.send_message(msgs("rate"), temperature=0)["content"] == "answer 1 to: rate"
    assert sleeps == [7.0, 7.0]
    assert api.request_count == 3
    row = last_call(db_path)
    assert row["attempts"] == 3
    assert {k: row[k] for k in OK} == OK


def test_fractional_retry_after_is_honoured(client, api, db_path, sleeps: Sleeps) -> None:
    api.fail_next(429, retry_after=0.25)
    assert client.send_message(msgs(), temperature=0) is not None
    assert sleeps == [0.25]
    assert last_call(db_path)["attempts"] == 2


@pytest.mark.parametrize("header", [-1, math.nan])
def test_a_nonsense_retry_after_is_not_obeyed(api, db_path, header) -> None:
    client = llm_ledger.OpenAIClient(cache_file_name=str(db_path))  # the real time.sleep
    api.fail_next(429, retry_after=header)
    out = client.send_message(msgs(), temperature=0, waiting_time=0.01)
    assert out is not None
    assert last_call(db_path)["attempts"] == 2


def test_429_without_retry_after_backs_off_exponentially_then_gives_up(
    client, api, db_path, sleeps: Sleeps
) -> None:
    api.fail_next(429, times=5)
    assert client.send_message(msgs(), temperature=0) is None
    assert sleeps == [1.0, 5.0, 25.0, 125.0]  # waiting_time 1 x factor 5 ** k, 5 attempts
    assert last_call(db_path) == {
        "cache_status": "miss",
        "status": "error",
        "attempts": 5,
        "error_type": "RateLimitError",
        "error_message": "Error code: 429 - Fake error 429 injected by FakeOpenAIServer",
        "response_id": None,
    }


def test_per_call_backoff_settings_are_used(client, api, db_path, sleeps: Sleeps) -> None:
    api.fail_next(503, times=3)
    out = client.send_message(
        msgs(), temperature=0, max_attempts=4, waiting_time=0.5, exponential_backoff_factor=2
    )
    assert out is not None
    assert sleeps == [0.5, 1.0, 2.0]
    assert last_call(db_path)["attempts"] == 4


def test_500_then_success_is_one_ok_row_with_two_attempts(
    client, api, db_path, sleeps: Sleeps
) -> None:
    api.fail_next(500)
    assert client.send_message(msgs("five"), temperature=0)["content"] == "answer 1 to: five"
    assert sleeps == [1.0]
    row = last_call(db_path)
    assert row["attempts"] == 2
    assert {k: row[k] for k in OK} == OK


@pytest.mark.parametrize("status", [409, 500, 502, 503])
def test_transient_statuses_are_retried(client, api, db_path, sleeps: Sleeps, status) -> None:
    api.fail_next(status)
    assert client.send_message(msgs(), temperature=0) is not None
    assert (last_call(db_path)["attempts"], sleeps) == (2, [1.0])


def test_dropped_connection_is_retried(client, api, db_path, sleeps: Sleeps) -> None:
    api.drop_next()
    assert client.send_message(msgs("drop"), temperature=0)["content"] == "answer 1 to: drop"
    assert sleeps == [1.0]
    row = last_call(db_path)
    assert row["attempts"] == 2
    assert {k: row[k] for k in OK} == OK


def test_connection_dropped_every_time_gives_up_and_says_why(
    client, api, db_path, sleeps: Sleeps
) -> None:
    api.drop_next(times=3)
    assert client.send_message(msgs(), temperature=0, max_attempts=3) is None
    assert sleeps == [1.0, 5.0]
    assert api.request_count == 3
    assert last_call(db_path) == {
        "cache_status": "miss",
        "status": "error",
        "attempts": 3,
        "error_type": "APIConnectionError",
        "error_message": "Connection error.",
        "response_id": None,
    }


def test_read_timeout_is_retried(client, api, db_path, sleeps: Sleeps) -> None:
    api.delay_next(0.6)
    out = client.send_message(msgs("slow"), temperature=0, timeout=0.2)
    settle(api)
    # The retry was answered first; the abandoned request was answered (and paid) later.
    assert out["content"] == "answer 1 to: slow"
    assert api.chat_count == 2
    assert sleeps == [1.0]
    row = last_call(db_path)
    assert row["attempts"] == 2
    assert {k: row[k] for k in OK} == OK


def test_read_timeout_every_time_gives_up_and_says_why(
    client, api, db_path, sleeps: Sleeps
) -> None:
    api.delay_next(0.6, times=2)
    assert client.send_message(msgs(), temperature=0, timeout=0.2, max_attempts=2) is None
    settle(api)
    assert sleeps == [1.0]
    assert last_call(db_path) == {
        "cache_status": "miss",
        "status": "error",
        "attempts": 2,
        "error_type": "APITimeoutError",
        "error_message": "Request timed out.",
        "response_id": None,
    }


# --- terminal faults -------------------------------------------------------------------


@pytest.mark.parametrize(
    "status,error_type",
    [
        (400, "BadRequestError"),
        (401, "AuthenticationError"),
        (403, "PermissionDeniedError"),
        (404, "NotFoundError"),
        (422, "UnprocessableEntityError"),
    ],
)
def test_client_errors_are_not_retried(
    client, api, db_path, sleeps: Sleeps, status, error_type
) -> None:
    api.fail_next(status, times=5)
    assert client.send_message(msgs(), temperature=0) is None
    assert api.request_count == 1
    assert sleeps == []
    row = last_call(db_path)
    assert (row["status"], row["attempts"], row["error_type"]) == ("error", 1, error_type)
    assert row["error_message"] == (
        f"Error code: {status} - Fake error {status} injected by FakeOpenAIServer"
    )


def test_a_failed_call_is_not_cached(client, api, db_path) -> None:
    api.fail_next(400)
    assert client.send_message(msgs(), temperature=0) is None
    assert client.send_message(msgs(), temperature=0)["content"] == "answer 1 to: hello there"
    assert api.chat_count == 1
    assert last_call(db_path)["cache_status"] == "miss"


# --- raise_on_error ----------------------------------------------------------------------


def test_raise_on_error_400_is_invalid_request_error(client, api, db_path, sleeps) -> None:
    api.fail_next(400, message="bad thing")
    with pytest.raises(llm_ledger.InvalidRequestError) as info:
        client.send_message(msgs(), temperature=0, raise_on_error=True)
    assert str(info.value) == "BadRequestError: Error code: 400 - bad thing"
    assert isinstance(info.value, llm_ledger.LedgerError)
    assert (last_call(db_path)["status"], sleeps) == ("error", [])


def test_raise_on_error_exhausted_429_is_rate_limit_error(client, api, db_path, sleeps) -> None:
    api.fail_next(429, times=3)
    with pytest.raises(llm_ledger.RateLimitError) as info:
        client.send_message(msgs(), temperature=0, max_attempts=3, raise_on_error=True)
    err = info.value
    assert (err.attempts, err.error_type) == (3, "RateLimitError")
    assert str(err) == (
        "rate limited after 3 attempt(s): RateLimitError: Error code: 429 - "
        "Fake error 429 injected by FakeOpenAIServer"
    )
    assert isinstance(err, llm_ledger.APICallError)
    assert last_call(db_path)["attempts"] == 3


@pytest.mark.parametrize(
    "inject,error_type",
    [
        (lambda api: api.fail_next(500, times=2), "InternalServerError"),
        (lambda api: api.drop_next(times=2), "APIConnectionError"),
    ],
)
def test_raise_on_error_other_failures_are_api_call_error(
    api, db_path, sleeps, inject, error_type
) -> None:
    client = llm_ledger.OpenAIClient(
        cache_file_name=str(db_path), sleep=sleeps, raise_on_error=True
    )
    inject(api)
    with pytest.raises(llm_ledger.APICallError) as info:
        client.send_message(msgs(), temperature=0, max_attempts=2)
    err = info.value
    assert not isinstance(err, llm_ledger.RateLimitError)
    assert (err.attempts, err.error_type) == (2, error_type)
    assert str(err).startswith(f"the API call failed after 2 attempt(s): {error_type}: ")
    assert last_call(db_path)["error_type"] == error_type


# --- SIGKILL while writing ---------------------------------------------------------------

CHECKS = {
    "cache entries whose response is missing": (
        "SELECT count(*) FROM cache_entries e LEFT JOIN responses r ON r.id = e.response_id "
        "WHERE r.id IS NULL"
    ),
    "ok misses without their response": (
        "SELECT count(*) FROM call_log c LEFT JOIN responses r ON r.id = c.response_id "
        "WHERE c.cache_status = 'miss' AND c.status = 'ok' AND r.id IS NULL"
    ),
    "hits without the response they served": (
        "SELECT count(*) FROM call_log c LEFT JOIN responses r ON r.id = c.response_id "
        "WHERE c.cache_status = 'hit' AND r.id IS NULL"
    ),
    "responses nothing refers to": (
        "SELECT count(*) FROM responses r WHERE NOT EXISTS "
        "(SELECT 1 FROM call_log c WHERE c.response_id = r.id) AND NOT EXISTS "
        "(SELECT 1 FROM cache_entries e WHERE e.response_id = r.id)"
    ),
    "calls whose request is missing": (
        "SELECT count(*) FROM call_log c LEFT JOIN requests q ON q.request_hash = c.request_hash "
        "WHERE q.request_hash IS NULL"
    ),
    "responses whose request is missing": (
        "SELECT count(*) FROM responses r LEFT JOIN requests q ON q.request_hash = r.request_hash "
        "WHERE q.request_hash IS NULL"
    ),
}


def test_sigkill_mid_write_leaves_a_consistent_ledger(api, db_path) -> None:
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    env = {**os.environ, "OPENAI_API_KEY": TEST_KEY, "OPENAI_BASE_URL": api.url}
    calls_before = 0
    for iteration in range(3):
        child = subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                "--db",
                str(db_path),
                "--worker",
                str(iteration),
                "--shared",
                "5",
                "--forever",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        try:
            assert child.stdout is not None
            ready = child.stdout.readline()
            assert ready == "ready\n", child.stderr.read() if child.stderr else ""
            time.sleep(rng.uniform(0.0, 0.4))  # a random moment among many writes
        finally:  # never leave a --forever child behind, whatever failed above
            child.send_signal(signal.SIGKILL)
            child.communicate()
        assert child.returncode == -signal.SIGKILL

        # The next open writes what the killed child had journaled (writes="journal").
        from llm_ledger.store.repository import Ledger

        Ledger(str(db_path)).close()
        con = sqlite3.connect(db_path)
        try:
            assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            assert con.execute("PRAGMA foreign_key_check").fetchall() == []
            problems = {name: con.execute(sql).fetchone()[0] for name, sql in CHECKS.items()}
            assert problems == dict.fromkeys(CHECKS, 0)
            calls = con.execute("SELECT count(*) FROM call_log").fetchone()[0]
            statuses = con.execute("SELECT DISTINCT status FROM call_log").fetchall()
        finally:
            con.close()
        assert calls > calls_before  # the child really was writing
        assert statuses == [("ok",)]
        calls_before = calls
    # And the ledger still works after all that.
    client = llm_ledger.OpenAIClient(cache_file_name=str(db_path))
    assert client.send_message(msgs("after"), temperature=0)["content"] == "answer 1 to: after"
