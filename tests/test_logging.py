"""One structlog event per thing that happens, with its context as key/values."""

from __future__ import annotations

import logging
from collections.abc import Iterator

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
