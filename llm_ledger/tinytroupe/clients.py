"""Ledger clients that take their defaults from TinyTroupe's configuration.

TinyTroupe (v0.5/v0.6) keeps its settings in ``tinytroupe.config_manager`` (read from
its ``config.ini``, changed at run time with ``config_manager.update(...)``). These
clients read it on every call, so a change takes effect at the next call, as it does
for TinyTroupe's own clients. ``config`` is anything with ``get(key, default=None)``:
TinyTroupe's ``config_manager``, or a dict-backed stand-in in tests.

What comes from TinyTroupe's configuration (its keys): ``model``, ``max_completion_tokens``,
``temperature`` / ``frequency_penalty`` / ``presence_penalty`` (sent only when set, as
TinyTroupe does), ``timeout``, ``max_attempts``, ``waiting_time`` (the pause before each
API request, as TinyTroupe makes it, and the first retry wait),
``exponential_backoff_factor``, ``reasoning_effort`` (reasoning models),
``embedding_model``, ``cache_api_calls``, ``cache_file_name``,
``max_concurrent_model_calls``, ``azure_api_version`` (Azure), ``base_url`` and ``top_p``
(ollama). Everything the ledger adds (mode, namespace, record_calls, ...) stays the
ledger's own setting.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import openai

from .. import config as cfg
from ..clients import AzureClient, OpenAIClient

OLLAMA_BASE_URL = "http://localhost:11434/v1"  # TinyTroupe's default for api_type=ollama

# Settings field <- TinyTroupe config key.
_SETTINGS_FROM_TT = {
    "model": "model",
    "timeout": "timeout",
    "max_attempts": "max_attempts",
    "waiting_time": "waiting_time",
    "exponential_backoff_factor": "exponential_backoff_factor",
    "embedding_model": "embedding_model",
    "cache_api_calls": "cache_api_calls",
    "cache_file_name": "cache_file_name",
}


class TinyTroupeConfigured:
    """Mixin: defaults from TinyTroupe's ``config_manager``, read at each call."""

    api_type: str
    config: Any
    _memo: tuple[Any, cfg.Settings] | None = None
    # TinyTroupe's OpenAI client sends top_p only when the caller passes it.
    _top_p_from_config = False

    def _tt_init(self, config: Any) -> None:
        self.config = config
        self._memo = None

    def _tt(self, key: str) -> Any:
        return self.config.get(key)

    def _settings(self) -> cfg.Settings:
        """The ledger's settings with TinyTroupe's values in force (memoised on both)."""
        base = cfg.settings()
        theirs = tuple(self._tt(k) for k in _SETTINGS_FROM_TT.values())
        key = (dataclasses.astuple(base), theirs)
        if self._memo is not None and self._memo[0] == key:
            return self._memo[1]
        changes = {f: v for f, v in zip(_SETTINGS_FROM_TT, theirs, strict=True) if v is not None}
        if "max_attempts" in changes:  # TinyTroupe keeps it as a float (5.0)
            changes["max_attempts"] = int(changes["max_attempts"])
        changes["max_tokens"] = None  # TinyTroupe sends max_completion_tokens, never max_tokens
        merged = base.replace(**changes)
        self._memo = (key, merged)
        return merged

    def _default_max_completion_tokens(self) -> int | None:
        return self._tt("max_completion_tokens")

    def _raw_model_call(self, model: str, chat_api_params: dict[str, Any]) -> Any:
        """TinyTroupe waits ``waiting_time`` before each API request (not before a hit), to
        stay under rate limits: so do these clients."""
        wait = self._settings().waiting_time
        if wait > 0:
            self._sleep(wait)  # type: ignore[attr-defined]
        return super()._raw_model_call(model, chat_api_params)  # type: ignore[misc]

    def _default_reasoning_effort(self) -> str | None:
        return self._tt("reasoning_effort")

    def _concurrency_limit(self) -> int | None:
        explicit = self.max_concurrent_model_calls  # type: ignore[attr-defined]
        return explicit if explicit is not None else self._tt("max_concurrent_model_calls")

    def send_message(  # noqa: PLR0913 - the seed's signature
        self,
        current_messages: list[dict[str, Any]],
        model: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        top_p: float | None = None,
        frequency_penalty: float | None = None,
        presence_penalty: float | None = None,
        *args: Any,
        max_completion_tokens: int | None = None,
        **kwargs: Any,
    ) -> Any:
        """The seed's ``send_message`` with TinyTroupe's defaults: sampling parameters only
        when TinyTroupe's configuration (or the caller) sets them; ``max_completion_tokens``
        from the configuration; never a default ``max_tokens``."""

        def tt(value: Any, key: str) -> Any:
            return value if value is not None else self._tt(key)

        if max_tokens is None and max_completion_tokens is None:
            max_completion_tokens = self._default_max_completion_tokens()
        return super().send_message(  # type: ignore[misc]
            current_messages,
            model,
            tt(temperature, "temperature"),
            max_tokens,
            tt(top_p, "top_p") if self._top_p_from_config else top_p,
            tt(frequency_penalty, "frequency_penalty"),
            tt(presence_penalty, "presence_penalty"),
            *args,
            max_completion_tokens=max_completion_tokens,
            **kwargs,
        )


class TinyTroupeOpenAIClient(TinyTroupeConfigured, OpenAIClient):
    """``api_type = "openai"``: OPENAI_API_KEY (and OPENAI_BASE_URL) as TinyTroupe uses them."""

    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        self._tt_init(config)
        kwargs.setdefault("dedent_messages", True)
        super().__init__(*args, **kwargs)


class TinyTroupeAzureClient(TinyTroupeConfigured, AzureClient):
    """``api_type = "azure"``: AZURE_OPENAI_ENDPOINT, AZURE_OPENAI_KEY or Entra ID, and
    TinyTroupe's ``AZURE_API_VERSION``."""

    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        self._tt_init(config)
        kwargs.setdefault("dedent_messages", True)
        super().__init__(*args, **kwargs)

    def _api_version(self) -> str:
        return self._tt("azure_api_version") or super()._api_version()


class TinyTroupeOllamaClient(TinyTroupeConfigured, OpenAIClient):
    """``api_type = "ollama"``: Ollama's OpenAI-compatible endpoint at TinyTroupe's
    ``base_url`` (default http://localhost:11434/v1). Ollama needs no key; OLLAMA_API_KEY is
    sent when set (a proxy in front of it may want one). TinyTroupe's ``num_ctx`` is not
    sent: that endpoint does not take it (set it on the Ollama model instead)."""

    api_type = "ollama"
    _top_p_from_config = True

    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        self._tt_init(config)
        kwargs.setdefault("dedent_messages", True)
        super().__init__(*args, **kwargs)

    def _base_url(self) -> str:
        return self._tt("base_url") or OLLAMA_BASE_URL

    def _make_sdk_client(self) -> Any:
        return openai.OpenAI(
            base_url=self._base_url(),
            api_key=os.environ.get("OLLAMA_API_KEY") or "ollama",
            max_retries=0,
        )

    def _default_max_completion_tokens(self) -> int | None:
        return None  # Ollama takes none (TinyTroupe's Ollama client ignores it too)


CLIENT_CLASSES: dict[str, type[TinyTroupeConfigured]] = {
    "openai": TinyTroupeOpenAIClient,
    "azure": TinyTroupeAzureClient,
    "ollama": TinyTroupeOllamaClient,
}

__all__ = [
    "CLIENT_CLASSES",
    "OLLAMA_BASE_URL",
    "TinyTroupeAzureClient",
    "TinyTroupeConfigured",
    "TinyTroupeOllamaClient",
    "TinyTroupeOpenAIClient",
]
