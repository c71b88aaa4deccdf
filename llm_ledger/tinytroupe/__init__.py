"""TinyTroupe (v0.5/v0.6) on the ledger, with no change to TinyTroupe's files.

    import tinytroupe
    import llm_ledger.tinytroupe

    llm_ledger.tinytroupe.install()

``install()`` registers ledger clients for TinyTroupe's api types (``openai``, ``azure``,
``ollama``) in ``tinytroupe.clients`` (its ``register_client`` registry), so
``tinytroupe.clients.client()`` -- which every TinyTroupe module asks for its client --
returns a ledger client, configured from TinyTroupe's ``config_manager`` (see
:mod:`llm_ledger.tinytroupe.clients`). It also puts a ledger-backed llama-index
embedding model in ``llama_index.core.Settings.embed_model`` (TinyTroupe's semantic
memory), unless ``embeddings=False``. Calling it again changes nothing.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..errors import ConfigError
from ..log import logger
from .clients import (
    CLIENT_CLASSES,
    TinyTroupeAzureClient,
    TinyTroupeConfigured,
    TinyTroupeOllamaClient,
    TinyTroupeOpenAIClient,
)
from .embeddings import LedgerEmbedder, llama_index_model

log = logger


class TinyTroupeMissingError(ConfigError):
    """TinyTroupe (or llama-index, for the embeddings) is not installed."""


def _import(name: str, how: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise TinyTroupeMissingError(
            f"{name} cannot be imported ({exc}); {how}, then call "
            "llm_ledger.tinytroupe.install() again"
        ) from None


def install(
    *,
    api_types: tuple[str, ...] = ("openai", "azure", "ollama"),
    embeddings: bool = True,
    **client_options: Any,
) -> dict[str, TinyTroupeConfigured]:
    """Register ledger clients in TinyTroupe's client registry; returns them by api type.

    ``client_options`` go to each client (``namespace=``, ``mode=``, ``redact=``, ...).
    A client already installed for an api type is kept as it is (idempotent). Call it
    right after importing TinyTroupe: a ``force_api_cache(...)`` made before it set the
    clients being replaced, and is not carried over (their values cannot be told apart
    from stale ones); one made after it reaches the ledger clients.
    """
    unknown = [t for t in api_types if t not in CLIENT_CLASSES]
    if unknown:
        raise ConfigError(
            f"unknown TinyTroupe api type {unknown[0]!r}; valid ones are: "
            f"{', '.join(CLIENT_CLASSES)}"
        )
    tt = _import("tinytroupe", "install TinyTroupe (pip install the TinyTroupe source tree)")
    registry = _import("tinytroupe.clients", "install TinyTroupe v0.5 or later")
    config = tt.config_manager
    installed: dict[str, TinyTroupeConfigured] = {}
    for api_type in api_types:
        try:
            current = registry._get_client_for_api_type(api_type)
        except ValueError:
            current = None
        if isinstance(current, TinyTroupeConfigured):
            installed[api_type] = current
            continue
        made = CLIENT_CLASSES[api_type](config, **client_options)  # type: ignore[call-arg]
        registry.register_client(api_type, made)
        installed[api_type] = made
        log.info("tinytroupe.client_installed", api_type=api_type, replaced=type(current).__name__)
    if embeddings:
        chat_type = config.get("api_type") or "openai"
        source = installed.get(chat_type) or next(iter(installed.values()), None)
        if source is not None:
            install_embeddings(source)
    return installed


def install_embeddings(client: Any, *, model: str | None = None) -> Any:
    """Put a ledger-backed embedding model in llama-index's ``Settings.embed_model``.

    Returns the model. Idempotent: a ledger model already there is kept.
    """
    core = _import("llama_index.core", "pip install llama-index-core (TinyTroupe depends on it)")
    current = getattr(core.Settings, "_embed_model", None)
    if current is not None and type(current).__name__ == "LedgerEmbedding":
        return current
    made = llama_index_model(LedgerEmbedder(client, model))
    core.Settings.embed_model = made
    try:
        tt: Any = importlib.import_module("tinytroupe")
        tt.llamaindex_openai_embed_model = made  # the name TinyTroupe exports for it
    except ImportError:
        pass
    log.info("tinytroupe.embeddings_installed", model=made.model_name)
    return made


__all__ = [
    "LedgerEmbedder",
    "TinyTroupeAzureClient",
    "TinyTroupeConfigured",
    "TinyTroupeMissingError",
    "TinyTroupeOllamaClient",
    "TinyTroupeOpenAIClient",
    "install",
    "install_embeddings",
]
