"""Settings: one typed object, defaults, ``LLM_LEDGER_*`` overrides, validation.

The seed's ``default`` dict is a live view of the process-wide settings, so
``default["model"] = "gpt-4o"`` and ``force_default_value("model", "gpt-4o")``
are checked exactly like an environment variable.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass, fields
from typing import Any

from .errors import ConfigError

MODES = ("record", "replay", "refresh")
SAMPLINGS = ("auto", "slots", "first")
HIT_AUDITS = ("sync", "background")
WRITES = ("journal", "sync")
DEFAULT_DB_FILE = "llm_ledger.db"


@dataclass
class Settings:
    # The seed's keys.
    model: str = "gpt-4o-mini"
    temperature: float = 1.0
    max_tokens: int | None = 1024  # None: send no max_tokens (the model's own limit)
    top_p: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    timeout: float = 60.0
    max_attempts: int = 5
    waiting_time: float = 1.0
    exponential_backoff_factor: float = 5.0
    embedding_model: str = "text-embedding-3-small"
    cache_api_calls: bool = True
    cache_file_name: str | None = None
    # Ours.
    mode: str = "record"
    sampling: str = "auto"
    namespace: str = ""
    max_age: float | None = None
    record_calls: bool = True
    raise_on_error: bool = False
    api_type: str = "openai"
    template_dir: str = "prompts"
    spool_dir: str | None = None
    # "journal": a call's records are journaled, then written in batches (store/writebehind.py);
    # "sync": committed before the call returns.
    writes: str = "journal"
    hit_audit: str = "sync"  # with writes="sync": "background" journals hit rows only

    def __post_init__(self) -> None:
        for f in fields(self):
            setattr(self, f.name, _coerce(f.name, getattr(self, f.name)))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name in field_names():
            env = ENV_NAMES.get(name, "LLM_LEDGER_" + name.upper())
            if env in environ:
                values[name] = _coerce(name, environ[env], source=env)
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        unknown = set(changes) - set(field_names())
        if unknown:
            raise ConfigError(_unknown_message(sorted(unknown)[0]))
        return dataclasses.replace(self, **changes)

    def database_url(self) -> str:
        """The ledger location: cache_file_name, else LLM_LEDGER_URL, else ./llm_ledger.db."""
        return self.cache_file_name or os.environ.get("LLM_LEDGER_URL") or DEFAULT_DB_FILE


# cache_file_name doubles as the database URL, so its variable is LLM_LEDGER_URL.
ENV_NAMES = {"cache_file_name": "LLM_LEDGER_URL"}

_TYPES: dict[str, type] = {
    "model": str,
    "temperature": float,
    "max_tokens": int,
    "top_p": float,
    "frequency_penalty": float,
    "presence_penalty": float,
    "timeout": float,
    "max_attempts": int,
    "waiting_time": float,
    "exponential_backoff_factor": float,
    "embedding_model": str,
    "cache_api_calls": bool,
    "cache_file_name": str,
    "mode": str,
    "sampling": str,
    "namespace": str,
    "max_age": float,
    "record_calls": bool,
    "raise_on_error": bool,
    "api_type": str,
    "template_dir": str,
    "spool_dir": str,
    "writes": str,
    "hit_audit": str,
}
_NULLABLE = {"cache_file_name", "max_age", "spool_dir", "max_tokens"}
_CHOICES = {"mode": MODES, "sampling": SAMPLINGS, "hit_audit": HIT_AUDITS, "writes": WRITES}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def field_names() -> list[str]:
    return [f.name for f in fields(Settings)]


def _unknown_message(key: str) -> str:
    return f"unknown setting {key!r}; valid settings are: {', '.join(field_names())}"


def _coerce(name: str, value: Any, *, source: str | None = None) -> Any:
    where = f"{source}={value!r}" if source else f"{name}={value!r}"
    kind = _TYPES[name]
    if value is None or (source and value == "" and name in _NULLABLE):
        if name in _NULLABLE:
            return None
        raise ConfigError(f"{where}: {name} cannot be empty")
    try:
        if kind is bool:
            if isinstance(value, str):
                low = value.strip().lower()
                if low not in _TRUE | _FALSE:
                    raise ValueError
                value = low in _TRUE
            elif not isinstance(value, bool):
                raise ValueError
        elif kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            value = int(value)
        elif kind is float:
            if isinstance(value, bool):
                raise ValueError
            value = float(value)
        elif not isinstance(value, str):
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected {kind.__name__}") from None
    if name in _CHOICES and value not in _CHOICES[name]:
        raise ConfigError(f"{where}: must be one of {', '.join(_CHOICES[name])}")
    if kind in (int, float) and value < 0:
        raise ConfigError(f"{where}: must not be negative")
    if name == "max_attempts" and value < 1:
        raise ConfigError(f"{where}: must be at least 1")
    if name in ("model", "embedding_model") and not value.strip():
        raise ConfigError(f"{where}: model name cannot be empty")
    return value


_settings: Settings | None = None  # read from the environment at first use, not at import
_settings_lock = threading.Lock()


def settings() -> Settings:
    """The process-wide settings (what ``default`` shows): the environment is read at the
    first use, so a bad ``LLM_LEDGER_*`` value fails the first call (or the first look at
    ``default``) with its ``ConfigError``, not ``import llm_ledger``."""
    current = _settings
    if current is None:
        with _settings_lock:
            current = _settings
            if current is None:
                current = reset_settings()
    return current


def reset_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Re-read defaults and environment (tests use it)."""
    global _settings
    _settings = Settings.from_env(environ)
    return _settings


def set_default(key: str, value: Any) -> None:
    if key not in _TYPES:
        raise ConfigError(_unknown_message(key))
    setattr(settings(), key, _coerce(key, value))


class DefaultView(MutableMapping[str, Any]):
    """The seed's ``default`` dict, backed by :func:`settings`."""

    def __getitem__(self, key: str) -> Any:
        if key not in _TYPES:
            raise KeyError(_unknown_message(key))
        if key == "cache_file_name":
            return settings().database_url()
        return getattr(settings(), key)

    def __setitem__(self, key: str, value: Any) -> None:
        set_default(key, value)

    def __delitem__(self, key: str) -> None:
        raise ConfigError("settings cannot be deleted; set them to another value instead")

    def __iter__(self) -> Iterator[str]:
        return iter(field_names())

    def __len__(self) -> int:
        return len(_TYPES)

    def __repr__(self) -> str:
        return repr(dict(self))


default = DefaultView()
