"""Commands: see llm_ledger/cli/__init__.py."""

from __future__ import annotations

from . import app  # noqa: F401
