"""structlog for the library: one event name per thing that happens.

A library must not flood its host's output. When the host has not configured
structlog, llm_ledger sets a filtering level from ``LLM_LEDGER_LOG_LEVEL``
(default ``warning``); a host that configures structlog itself keeps its own
settings.
"""

from __future__ import annotations

import logging
import os

import structlog

_LEVEL = os.environ.get("LLM_LEDGER_LOG_LEVEL", "warning").upper()
if not structlog.is_configured():
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(
            getattr(logging, _LEVEL, logging.WARNING)
        ),
        logger_factory=structlog.PrintLoggerFactory(file=__import__("sys").stderr),
    )

logger = structlog.get_logger("llm_ledger")


def info_enabled() -> bool:
    """Whether an info event would be emitted now. Hot paths skip building a filtered-out
    event (~4 µs); with a wrapper class that cannot say, they log as usual."""
    try:
        wrapper = structlog._config._CONFIG.default_wrapper_class
        return bool(wrapper.is_enabled_for(None, logging.INFO))
    except Exception:  # noqa: BLE001 -- another structlog setup: let it decide
        return True
