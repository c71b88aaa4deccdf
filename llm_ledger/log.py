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
