"""One structlog event per thing that happens, with its context as key/values."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from .conftest import msgs


def events(logs: list[dict], name: str) -> list[dict]:
    return [e for e in logs if e["event"] == name]


@pytest.fixture
def verbose() -> Iterator[None]:
    """Let info events through, as a host that configured structlog at info would."""
    old = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    yield
    structlog.configure(**old)


def test_call_hit_retry_and_give_up_events(client, api, verbose) -> None:
    with capture_logs() as logs:
        client.send_message(msgs(), temperature=0)
        client.send_message(msgs(), temperature=0)
        api.fail_next(500, times=2)
        client.send_message(msgs("other"), temperature=0, max_attempts=2, waiting_time=0.25)
    [call] = events(logs, "llm.call")
    assert call["model"] == "gpt-4o-mini" and len(call["request_hash"]) == 64
    assert (call["prompt_tokens"], call["completion_tokens"], call["attempts"]) == (5, 5, 1)
    assert call["latency_ms"] > 0 and call["cost_usd"] == "0.00000375"
    [hit] = events(logs, "llm.cache_hit")
    assert hit["request_hash"] == call["request_hash"] and hit["slot"] == 0
    [retry] = events(logs, "llm.retry")
    assert (retry["attempt"], retry["delay_s"], retry["error_type"]) == (
        1,
        0.25,
        "InternalServerError",
    )
    [give_up] = events(logs, "llm.give_up")
    assert (give_up["attempts"], give_up["error_type"], give_up["retryable"]) == (
        2,
        "InternalServerError",
        True,
    )
    assert give_up["log_level"] == "warning"


def test_library_is_quiet_below_warning_by_default() -> None:
    # llm_ledger sets a warning threshold when the host has not configured structlog.
    logger = structlog.get_logger("llm_ledger")
    assert logger.info("llm.call") is None
    assert structlog.get_config()["wrapper_class"].__name__.startswith(
        "BoundLoggerFilteringAtWarning"
    )


def test_hot_paths_skip_info_events_only_when_structlog_filters_them() -> None:
    from llm_ledger.log import info_enabled

    old = structlog.get_config()
    try:
        assert info_enabled() is False  # the library's default: warning and up
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
        assert info_enabled() is True
        structlog.configure(wrapper_class=structlog.BoundLogger)  # cannot say: log as usual
        assert info_enabled() is True
    finally:
        structlog.configure(**old)


def test_every_module_logs_through_the_library_logger() -> None:
    """structlog's own ``get_logger`` prints every level to stdout until the host configures
    structlog; only llm_ledger/log.py may call it (behind its is_configured check)."""
    import llm_ledger

    root = Path(llm_ledger.__file__).parent
    direct = sorted(
        str(p.relative_to(root))
        for p in root.rglob("*.py")
        if p.name != "log.py" and "structlog.get_logger" in p.read_text()
    )
    assert direct == []


DEAD_CHILD = """
import sys
import llm_ledger

c = llm_ledger.OpenAIClient(cache_file_name=sys.argv[1])
c.ledger._record_writer().interval = 3600  # the row stays in the journal
c.send_message([{"role": "user", "content": "paid"}], temperature=0)
print("ready", flush=True)
import threading; threading.Event().wait()
"""

NEXT_PROCESS = """
import json, sys
import llm_ledger

c = llm_ledger.OpenAIClient(cache_file_name=sys.argv[1])
answer = c.send_message([{"role": "user", "content": "paid"}], temperature=0)
print(json.dumps({"answer": answer["content"], "recovered": c.ledger.journal_recovered}))
"""


@pytest.mark.parametrize("level", ["", "info"])
def test_a_journal_recovered_at_open_logs_nothing_to_the_hosts_stdout(
    api: Any, tmp_path: Path, level: str
) -> None:
    """A program that speaks JSON on stdout opens a ledger a killed process left a journal
    in: its stdout is its own. The recovery's info event is dropped by default and goes
    to stderr at LLM_LEDGER_LOG_LEVEL=info (it went to stdout, at any level)."""
    db = tmp_path / "ledger.db"
    env = {"PATH": "/usr/bin:/bin", "OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": api.url}
    child = subprocess.Popen(
        [sys.executable, "-c", DEAD_CHILD, str(db)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert child.stdout is not None and child.stdout.readline() == "ready\n"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    if level:
        env["LLM_LEDGER_LOG_LEVEL"] = level
    done = subprocess.run(
        [sys.executable, "-c", NEXT_PROCESS, str(db)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == '{"answer": "answer 1 to: paid", "recovered": 1}\n'
    assert api.chat_count == 1  # the second process's call was a hit on the recovered answer
    assert ("ledger.journal_recovered" in done.stderr) is bool(level)
