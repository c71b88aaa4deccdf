"""llm_ledger: every OpenAI / Azure OpenAI call through a SQL ledger.

The public API keeps the shape of TinyTroupe's ``openai_utils``; the ledger is
both the response cache and the audit log.
"""

from __future__ import annotations

from . import log as _log
from ._version import __version__
from .clients import AzureClient, OpenAIClient
from .config import Settings, default, settings
from .errors import (
    APICallError,
    BudgetExceededError,
    CacheMissError,
    ConfigError,
    InvalidInputError,
    InvalidInputTypeError,
    InvalidRequestError,
    LedgerError,
    LedgerOpenError,
    NonTerminalError,
    RateLimitError,
    SchemaVersionError,
)
from .flight import reset_slots
from .registry import (
    _get_client_for_api_type,
    client,
    force_api_cache,
    force_api_type,
    force_default_value,
    register_client,
)
from .repository import Ledger, open_ledger
from .scope import scope
from .templates import LLMCall

logger = _log.logger

__all__ = [
    "APICallError",
    "AzureClient",
    "BudgetExceededError",
    "CacheMissError",
    "ConfigError",
    "InvalidInputError",
    "InvalidInputTypeError",
    "InvalidRequestError",
    "LLMCall",
    "Ledger",
    "LedgerError",
    "LedgerOpenError",
    "NonTerminalError",
    "OpenAIClient",
    "RateLimitError",
    "SchemaVersionError",
    "Settings",
    "__version__",
    "_get_client_for_api_type",
    "client",
    "default",
    "force_api_cache",
    "force_api_type",
    "force_default_value",
    "logger",
    "open_ledger",
    "register_client",
    "reset_slots",
    "scope",
    "settings",
]
