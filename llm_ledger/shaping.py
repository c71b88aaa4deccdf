"""Request shaping: what a chat request becomes before it is hashed and sent (pure; no I/O).

Why here and not in each client: the request hash must be of what is actually sent,
so every entry (``send_message``, the SDK drop-in, a pickle import) applies the same
rules, once, before ``keys.chat_request``:

* ``dedent``: TinyTroupe's ``dedent_messages`` (``textwrap.dedent`` then ``strip`` of
  each string ``content``), on a copy: the caller's messages are left as they were.
* ``max_tokens`` and ``max_completion_tokens`` are never sent together (the API
  answers 400): an explicit ``max_completion_tokens`` replaces a *default*
  ``max_tokens``; both explicit is an error before any network call.
* Reasoning models (o-series, gpt-5 family but ``gpt-5-chat``) get what they accept:
  no sampling parameters (``temperature``, ``top_p``, ``frequency_penalty``,
  ``presence_penalty``), ``max_completion_tokens`` instead of ``max_tokens``, and
  the default ``reasoning_effort`` if one is configured. An explicit per-call
  ``reasoning_effort`` is sent whatever the model (an Azure deployment name may hide
  a reasoning model).
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

from . import keys
from .errors import InvalidInputError
from .log import logger

log = logger

SAMPLING_PARAMS = ("temperature", "top_p", "frequency_penalty", "presence_penalty")
# o1, o1-mini, o3-mini, o4-mini, gpt-5, gpt-5-mini, gpt-5-nano, gpt-5.1, ...; not gpt-5-chat-*.
_REASONING = re.compile(r"^(?:[\w.-]+/)?(?:o\d+(?:$|[-.])|gpt-5(?!-chat)(?:$|[-.\d]))")


def is_reasoning_model(model: str) -> bool:
    """Whether ``model`` names an OpenAI reasoning model (o-series, gpt-5 family)."""
    return bool(_REASONING.match(model.lower()))


def dedent_messages(messages: Any) -> Any:
    """A copy of ``messages`` with each string content dedented and stripped, as TinyTroupe
    does; anything that is not a list of dicts is returned as is (keys rejects it)."""
    if not isinstance(messages, list):
        return messages
    out = []
    for m in messages:
        if isinstance(m, dict) and isinstance(m.get("content"), str):
            m = {**m, "content": textwrap.dedent(m["content"]).strip()}
        out.append(m)
    return out


def shape_chat_params(
    params: dict[str, Any],
    *,
    reasoning: bool,
    explicit_max_tokens: bool,
    default_reasoning_effort: str | None = None,
) -> dict[str, Any]:
    """The parameters to send, from those the caller and the defaults gave.

    ``explicit_max_tokens``: the caller passed ``max_tokens`` (not a default).
    ``reasoning``: the model is a reasoning model (see :func:`is_reasoning_model`).
    """
    out = dict(params)
    if out.get("max_completion_tokens") is not None and out.get("max_tokens") is not None:
        if explicit_max_tokens:
            raise InvalidInputError(
                "max_tokens and max_completion_tokens were both given; the API refuses "
                "them together: pass only max_completion_tokens"
            )
        out["max_tokens"] = None
    if not reasoning:
        return out
    dropped = [k for k in SAMPLING_PARAMS if out.get(k) is not None]
    for k in SAMPLING_PARAMS:
        out[k] = None
    if out.get("max_tokens") is not None:
        out["max_completion_tokens"] = out["max_tokens"]
        out["max_tokens"] = None
    if out.get("reasoning_effort") is None and default_reasoning_effort is not None:
        out["reasoning_effort"] = default_reasoning_effort
    if dropped:
        log.debug("llm.params_dropped", params=dropped, reason="reasoning model")
    return out


def chat_request(
    messages: Any,
    model: Any,
    params: dict[str, Any],
    *,
    dedent: bool = False,
    reasoning: bool | None = None,
    explicit_max_tokens: bool = True,
    default_reasoning_effort: str | None = None,
) -> keys.CanonicalRequest:
    """The canonical request (and hash) of what will be sent: every chat entry builds its
    request here. ``reasoning`` None: decided by :func:`is_reasoning_model`."""
    if dedent:
        messages = dedent_messages(messages)
    if isinstance(model, str):  # else keys.chat_request says what is wrong with it
        params = shape_chat_params(
            params,
            reasoning=is_reasoning_model(model) if reasoning is None else reasoning,
            explicit_max_tokens=explicit_max_tokens,
            default_reasoning_effort=default_reasoning_effort,
        )
    return keys.chat_request(messages, model, params)


__all__ = [
    "SAMPLING_PARAMS",
    "chat_request",
    "dedent_messages",
    "is_reasoning_model",
    "shape_chat_params",
]
