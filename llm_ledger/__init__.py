"""llm_ledger: every OpenAI / Azure OpenAI call through a SQL ledger.

The public API keeps the shape of TinyTroupe's ``openai_utils``; the ledger is
both the response cache and the audit log.

Why the names are loaded lazily: ``import llm_ledger`` must stay cheap (the CLI's
``--help``, a script that only reads ``settings``). The clients pull in the OpenAI SDK,
the ledger SQLAlchemy and Alembic, pricing genai-prices; each is imported the first
time one of its names is asked for (PEP 562 module ``__getattr__``), so
``from llm_ledger import OpenAIClient`` works as before. ``scope`` is imported eagerly:
the submodule of the same name would otherwise shadow the function once imported.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import log as _log
from ._version import __version__
from .config import Settings, default, settings
from .errors import (
    APICallError,
    BudgetExceededError,
    BundleError,
    CacheMissError,
    ConfigError,
    InvalidInputError,
    InvalidInputTypeError,
    InvalidRequestError,
    LedgerError,
    LedgerOpenError,
    LedgerUnwritableError,
    NonTerminalError,
    PickleImportError,
    RateLimitError,
    SchemaVersionError,
    TransferError,
    UnsafePickleError,
)
from .scope import scope

if TYPE_CHECKING:  # what the lazy names are, for type checkers and IDEs
    from .clients import AzureClient, OpenAIClient
    from .flight import reset_slots
    from .registry import (
        _get_client_for_api_type,
        client,
        force_api_cache,
        force_api_type,
        force_default_value,
        register_client,
    )
    from .sdk.clients import wrap
    from .sdk.seed_async import AsyncAzureClient, AsyncOpenAIClient
    from .store.repository import Ledger, open_ledger
    from .templates import LLMCall

logger = _log.logger

# public name -> the submodule that defines it (imported on first access)
_LAZY: dict[str, str] = {
    "AzureClient": "clients",
    "OpenAIClient": "clients",
    "reset_slots": "flight",
    "_get_client_for_api_type": "registry",
    "client": "registry",
    "force_api_cache": "registry",
    "force_api_type": "registry",
    "force_default_value": "registry",
    "register_client": "registry",
    "Ledger": "store.repository",
    "open_ledger": "store.repository",
    "LLMCall": "templates",
    "AsyncOpenAIClient": "sdk.seed_async",
    "AsyncAzureClient": "sdk.seed_async",
    "wrap": "sdk.clients",  # an OpenAI SDK client on the ledger (llm_ledger.openai, docs/sdk.md)
}


def flush() -> None:
    """Write every call record this process has journaled and not written yet.

    Calls are written behind (``writes="journal"``, the default): a call's records are in
    the tables ~20 ms after it returns. Reports, exports and lookups of this process see
    them at once anyway; call this before reading the tables on a connection of your own
    (or before handing the database to another process) to see every call made so far.
    """
    import sys

    repository = sys.modules.get(f"{__name__}.store.repository")
    if repository is not None:  # no ledger was ever opened: nothing to write
        repository.flush_all()


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "APICallError",
    "AsyncAzureClient",
    "AsyncOpenAIClient",
    "AzureClient",
    "BudgetExceededError",
    "BundleError",
    "CacheMissError",
    "ConfigError",
    "InvalidInputError",
    "InvalidInputTypeError",
    "InvalidRequestError",
    "LLMCall",
    "Ledger",
    "LedgerError",
    "LedgerOpenError",
    "LedgerUnwritableError",
    "NonTerminalError",
    "OpenAIClient",
    "PickleImportError",
    "RateLimitError",
    "SchemaVersionError",
    "Settings",
    "TransferError",
    "UnsafePickleError",
    "__version__",
    "_get_client_for_api_type",
    "client",
    "default",
    "force_api_cache",
    "force_api_type",
    "force_default_value",
    "flush",
    "logger",
    "open_ledger",
    "register_client",
    "reset_slots",
    "scope",
    "settings",
    "wrap",
]
