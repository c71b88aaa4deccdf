"""Pydantic ``response_format``: the JSON schema sent, and the answer parsed back.

A pydantic class becomes the ``json_schema`` response format the API expects (the SDK's
own conversion, as its ``.parse()`` makes it, so the hash is of what ``.parse()`` would
send). The answer's content is parsed back as TinyTroupe v0.6 does: the model instance,
or None when the content does not validate (logged; the caller keeps the message).
"""

from __future__ import annotations

import json
from typing import Any

from .errors import ConfigError
from .log import logger

log = logger


def response_format_param(value: Any) -> Any:
    """A pydantic model class becomes the json_schema response_format the API expects."""
    if value is None or isinstance(value, dict):
        return value
    if isinstance(value, type):
        try:
            from openai.lib._parsing._completions import type_to_response_format_param

            param: Any = type_to_response_format_param(value)  # a TypedDict, or Omit
            return dict(param)
        except Exception as exc:  # noqa: BLE001
            raise ConfigError(
                f"response_format {value!r} cannot be turned into a JSON schema: {exc}"
            ) from None
    raise ConfigError("response_format must be a dict or a pydantic model class")


def is_model_class(value: Any) -> bool:
    import pydantic

    return isinstance(value, type) and issubclass(value, pydantic.BaseModel)


def parse_model(message: Any, model: Any) -> Any:
    """The message content parsed as ``model``; None (logged) when it does not validate,
    where TinyTroupe's ``to_pydantic_or_sanitized_dict`` falls back to the dict."""
    import pydantic

    content = message.get("content") if isinstance(message, dict) else None
    try:
        return model.model_validate(json.loads(content or ""))
    except (ValueError, pydantic.ValidationError) as exc:
        log.warning(
            "llm.pydantic_parse_failed", response_format=model.__name__, error=str(exc)[:300]
        )
        return None


__all__ = ["is_model_class", "parse_model", "response_format_param"]
