"""The seed's client registry: ``register_client``, ``client()``, ``force_*``.

"openai" and "azure" are registered lazily: nothing is built (no SDK client, no
ledger file) until a client is first asked for.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from . import config as cfg
from .clients import AzureClient, OpenAIClient
from .errors import ConfigError

_lock = threading.Lock()
_factories: dict[str, Callable[[], Any]] = {"openai": OpenAIClient, "azure": AzureClient}
_clients: dict[str, Any] = {}


def register_client(api_type: str, client: Any) -> None:
    """Register a client object (or a zero-argument factory class) under ``api_type``."""
    if not isinstance(api_type, str) or not api_type:
        raise ConfigError("api_type must be a non-empty str, e.g. 'openai'")
    with _lock:
        if isinstance(client, type):
            _factories[api_type] = client
            _clients.pop(api_type, None)
        else:
            _clients[api_type] = client


def registered_types() -> list[str]:
    return sorted(set(_factories) | set(_clients))


def _get_client_for_api_type(api_type: str) -> Any:
    with _lock:
        if api_type in _clients:
            return _clients[api_type]
        factory = _factories.get(api_type)
        if factory is None:
            raise ConfigError(
                f"no client registered for api_type {api_type!r}; registered: "
                f"{', '.join(registered_types())} (use register_client(api_type, client))"
            )
        made = _clients[api_type] = factory()
        return made


def client() -> Any:
    """The client of the current api type (``force_api_type`` / LLM_LEDGER_API_TYPE)."""
    return _get_client_for_api_type(cfg.settings().api_type)


def force_api_type(api_type: str) -> None:
    if api_type not in registered_types():
        raise ConfigError(
            f"unknown api_type {api_type!r}; registered: {', '.join(registered_types())}"
        )
    cfg.set_default("api_type", api_type)


def force_api_cache(cache_api_calls: bool, cache_file_name: str | None = None) -> None:
    """Apply a cache setting to every registered client, and to those made later."""
    cfg.set_default("cache_api_calls", cache_api_calls)
    if cache_file_name is not None:
        cfg.set_default("cache_file_name", cache_file_name)
    with _lock:
        clients = list(_clients.values())
    for c in clients:
        if hasattr(c, "set_api_cache"):
            c.set_api_cache(cache_api_calls, cache_file_name)


def force_default_value(key: str, value: Any) -> None:
    """Change one default (an unknown key is an error naming the valid ones)."""
    cfg.set_default(key, value)


def reset_clients() -> None:
    """Forget built clients (tests; after changing the environment)."""
    with _lock:
        _clients.clear()
        _factories.update({"openai": OpenAIClient, "azure": AzureClient})
