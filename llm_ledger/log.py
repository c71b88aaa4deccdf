"""structlog for the library: one event name per thing that happens.

The library never configures structlog: the host does, or calls :func:`configure`
for the library's own setup (the ``llm-ledger`` CLI does). Every module logs through
:data:`logger`. Once structlog is configured it is structlog's ``llm_ledger`` logger,
with the host's level, processors and output. Until then the library keeps to itself:
events below ``LLM_LEDGER_LOG_LEVEL`` (default ``warning``) are dropped and the rest
go to stderr, never to the host's stdout.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import structlog

_METHOD_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "msg": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}


class _LibraryLogger:
    """The library's logger: structlog's when the host configured structlog, else a private
    one (level ``LLM_LEDGER_LOG_LEVEL``, stderr) that leaves structlog's global setup alone."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._quiet: dict[tuple[int, Any], Any] = {}

    def __getattr__(self, method: str) -> Any:
        if structlog.is_configured():
            return getattr(structlog.get_logger(self._name), method)
        return getattr(self._unconfigured(), method)

    def _unconfigured(self) -> Any:
        key = (_level(None), sys.stderr)
        quiet = self._quiet.get(key)
        if quiet is None:
            quiet = self._quiet[key] = structlog.wrap_logger(
                structlog.PrintLogger(file=sys.stderr),
                wrapper_class=structlog.make_filtering_bound_logger(key[0]),
            )
        return quiet


logger: Any = _LibraryLogger("llm_ledger")


def _level(level: str | int | None) -> int:
    """A level number; None: ``LLM_LEDGER_LOG_LEVEL`` as it was at import (default warning)."""
    if level is None:
        return _ENV_LEVEL
    if isinstance(level, int):
        return level
    return getattr(logging, level.upper(), logging.WARNING)


_ENV_LEVEL = getattr(
    logging, os.environ.get("LLM_LEDGER_LOG_LEVEL", "warning").upper(), logging.WARNING
)


def configure(level: str | int | None = None, *, file: Any = None) -> None:
    """Set up structlog for an application using llm_ledger: events at ``level`` and above
    (default ``LLM_LEDGER_LOG_LEVEL``, else ``warning``), printed to ``file`` (stderr).

    For programs that do not configure structlog themselves; one that does keeps its own
    settings and need not call this. Calling it reconfigures structlog process-wide.
    """
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(_level(level)),
        logger_factory=structlog.PrintLoggerFactory(file=file or sys.stderr),
    )


def info_enabled() -> bool:
    """Whether an info event would be emitted now. Hot paths skip building a filtered-out
    event (~4 µs); with a wrapper class that cannot say, they log as usual."""
    if not structlog.is_configured():
        return _ENV_LEVEL <= logging.INFO
    wrapper = structlog.get_config()["wrapper_class"]
    try:
        return bool(wrapper.is_enabled_for(None, logging.INFO))
    except Exception:  # noqa: BLE001 -- another structlog setup: let it decide
        return True
