"""Request canonicalisation and the request hash (pure; no I/O).

What enters the hash (see docs/hashing.md): ``kind`` ("chat" or "embedding"),
``model``, the messages (chat) or the input text (embedding), and every
parameter that can change the answer, with ``None`` values dropped, numbers of
float parameters as floats, ``stop`` as a list. Keys are sorted, so the order in
which a caller wrote them does not matter.

What never enters it: transport settings (timeout, max_attempts, waiting_time,
exponential_backoff_factor), API keys, base URL, api type, namespace, run,
tags and template names. The namespace isolates caches at lookup time instead.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from .errors import InvalidInputError, InvalidInputTypeError

# Chat parameters that change the answer, and the type each must have.
CHAT_PARAMS: dict[str, tuple[type, ...]] = {
    "temperature": (float,),
    "max_tokens": (int,),
    "max_completion_tokens": (int,),
    "top_p": (float,),
    "frequency_penalty": (float,),
    "presence_penalty": (float,),
    "stop": (str, list),
    "n": (int,),
    "seed": (int,),
    "response_format": (dict,),
    "tools": (list,),
    "tool_choice": (str, dict),
    "parallel_tool_calls": (bool,),
    "logit_bias": (dict,),
    "logprobs": (bool,),
    "top_logprobs": (int,),
    "reasoning_effort": (str,),
    "verbosity": (str,),
    "modalities": (list,),
    "audio": (dict,),
    "prediction": (dict,),
}
EMBEDDING_PARAMS: dict[str, tuple[type, ...]] = {"dimensions": (int,), "user": (str,)}
# Accepted for the seed's signature, never sent and never hashed.
TRANSPORT_PARAMS = frozenset(
    {"timeout", "max_attempts", "waiting_time", "exponential_backoff_factor", "echo"}
)
ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_FLOAT_PARAMS = frozenset(k for k, v in CHAT_PARAMS.items() if v == (float,))
# What every engine's columns hold (models.py): a longer model name or deeper JSON would be
# refused by the database after the API was paid, so it is refused before sending.
MAX_MODEL_CHARS = 200
MAX_JSON_DEPTH = 31


@dataclass(frozen=True)
class CanonicalRequest:
    """A validated request: what is sent, what is stored, and its hash."""

    kind: str
    model: str
    body: dict[str, Any]  # canonical request, as stored in the ledger
    canonical_json: str
    request_hash: str

    @property
    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = self.body.get("params", {})
        return params

    def last_message_text(self) -> str:
        if self.kind == "embedding":
            text = self.body["input"]
            return text if isinstance(text, str) else " ".join(text)
        return message_text(self.body["messages"][-1])


# One encoder, made once: ``json.dumps`` with options builds a new one per call (~4 µs).
_canonical = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
).encode


def canonical_json(obj: Any) -> str:
    """Compact, sorted, NaN-free JSON: the one serialisation used for hashing and storage."""
    try:
        return _canonical(obj)
    except ValueError as exc:
        raise InvalidInputError(
            f"request cannot be stored as JSON ({exc}); replace NaN/inf floats with numbers or strings"
        ) from None
    except TypeError as exc:
        raise InvalidInputTypeError(
            f"request cannot be stored as JSON ({exc}); pass only str, numbers, bools, None, lists and dicts"
        ) from None


def hash_json(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def message_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _check_model(model: Any) -> str:
    if not isinstance(model, str):
        raise InvalidInputTypeError(f"model must be a str, got {type(model).__name__}")
    if not model.strip():
        raise InvalidInputError(
            "model name is empty; pass model='gpt-4o-mini' or set LLM_LEDGER_MODEL"
        )
    return model


def check_storable(request: CanonicalRequest) -> None:
    """What the ledger's columns cannot hold is refused before sending (the clients call it
    after building the request; the hash itself does not need it)."""
    check_label("model name", request.model, MAX_MODEL_CHARS)


def check_label(
    what: str, value: str, max_chars: int, error: type[ValueError] = InvalidInputError
) -> None:
    """Refuse a name the ledger's columns cannot hold on every engine, before anything is sent.

    A NUL character is refused by PostgreSQL's text columns, a lone surrogate cannot be
    encoded as UTF-8, and MariaDB refuses a value longer than its column (error 1406): any
    of them would fail the write *after* the API was paid.
    """
    if "\x00" in value:
        raise error(
            f"{what} {value[:60]!r} holds a NUL character (\\x00), which the ledger cannot "
            "store (PostgreSQL refuses it); remove it"
        )
    if len(value) > max_chars:
        raise error(
            f"{what} is {len(value)} characters long; the ledger stores at most {max_chars} "
            f"(it starts {value[:60]!r})"
        )
    try:
        _check_utf8(what, value)
    except InvalidInputError as exc:
        raise error(str(exc)) from None


def _check_utf8(what: str, text: str, body: Any = None) -> bytes:
    """``text`` as UTF-8; a lone surrogate (e.g. from bytes decoded with ``surrogateescape``)
    cannot be encoded, sent or stored, so it is refused, naming where it is."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start : exc.end]
        where, value = _find_unencodable(body) if body is not None else (what, text)
        at = next((i for i, c in enumerate(value) if "\ud800" <= c <= "\udfff"), 0)
        raise InvalidInputError(
            f"{where} holds a lone surrogate character "
            f"({', '.join(f'U+{ord(c):04X}' for c in bad)}) after {value[max(0, at - 30) : at]!r}, "
            "which is not valid Unicode text and cannot be sent or stored; fix the text's "
            "source (e.g. decode bytes with errors='replace')"
        ) from None


def _find_unencodable(body: dict[str, Any]) -> tuple[str, str]:
    """The path (``messages[0]['content']``) and value of the first string UTF-8 refuses."""
    stack: list[tuple[str, Any]] = [(k, v) for k, v in reversed(body.items())]
    while stack:
        path, node = stack.pop()
        if isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                return path, node
        elif isinstance(node, dict):
            for k, v in reversed(node.items()):
                if isinstance(k, str) and _has_surrogate(k):
                    return f"a key of {path}", k
                stack.append((f"{path}[{k!r}]", v))
        elif isinstance(node, list):
            stack.extend((f"{path}[{i}]", v) for i, v in reversed(list(enumerate(node))))
    return "the request", ""


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _check_depth(obj: Any, what: str) -> None:
    """Refuse JSON nested deeper than every engine stores (MariaDB's JSON_VALID allows 31
    levels), without recursing (5,000 levels would otherwise end in a RecursionError)."""
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise InvalidInputError(
                f"{what} is nested more than {MAX_JSON_DEPTH} levels deep (lists and objects "
                "inside each other); the ledger cannot store it (MariaDB's limit); flatten it"
            )
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values() if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node if isinstance(v, (dict, list)))


def _check_messages(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list):
        raise InvalidInputTypeError(
            f"messages must be a list of {{'role': ..., 'content': ...}} dicts, got {type(messages).__name__}"
        )
    if not messages:
        raise InvalidInputError(
            "messages is empty; pass at least one {'role': 'user', 'content': ...}"
        )
    out = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise InvalidInputTypeError(
                f"messages[{i}] must be a dict with 'role' and 'content', got {type(msg).__name__}"
            )
        role = msg.get("role")
        if role not in ROLES:
            raise InvalidInputError(
                f"messages[{i}] has role {role!r}; use one of {', '.join(sorted(ROLES))}"
            )
        if "content" not in msg and "tool_calls" not in msg:
            raise InvalidInputError(f"messages[{i}] has no 'content'")
        content = msg.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise InvalidInputTypeError(
                f"messages[{i}]['content'] must be a str or a list of content parts, got {type(content).__name__}"
            )
        out.append({k: v for k, v in msg.items() if v is not None})
    return out


def _check_param(name: str, value: Any, allowed: dict[str, tuple[type, ...]]) -> Any:
    types = allowed[name]
    if float in types and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if int in types and isinstance(value, bool):
        raise InvalidInputTypeError(f"{name} must be an int, got bool")
    if not isinstance(value, types):
        expected = " or ".join(t.__name__ for t in types)
        raise InvalidInputTypeError(f"{name} must be {expected}, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInputError(f"{name} must be a finite number, got {value!r}")
    if name == "stop" and isinstance(value, str):
        value = [value]
    if name == "n" and value < 1:
        raise InvalidInputError(f"n must be at least 1, got {value}")
    return value


def _params(raw: dict[str, Any], allowed: dict[str, tuple[type, ...]]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name, value in raw.items():
        if name in TRANSPORT_PARAMS or value is None:
            continue
        if name not in allowed:
            raise InvalidInputError(
                f"unknown parameter {name!r}; valid ones are: {', '.join(sorted(allowed))} "
                f"(and the transport settings {', '.join(sorted(TRANSPORT_PARAMS))})"
            )
        params[name] = _check_param(name, value, allowed)
    return params


def _build(kind: str, model: str, payload: dict[str, Any]) -> CanonicalRequest:
    body = {"kind": kind, "model": model, **payload}
    try:
        text = canonical_json(body)
    except (RecursionError, ValueError, TypeError):  # too deep says so first, as before
        _check_depth(body, "the request")
        raise
    if text.count("{") + text.count("[") > MAX_JSON_DEPTH:
        # Only then can it nest too deep (each level opens one): walk it (~10 µs).
        _check_depth(body, "the request")
    data = _check_utf8("the request", text, body)
    # The body is stored with the same serialisation, so it is exactly what was hashed.
    return CanonicalRequest(kind, model, body, text, hashlib.sha256(data).hexdigest())


def chat_request(messages: Any, model: Any, params: dict[str, Any]) -> CanonicalRequest:
    model = _check_model(model)
    msgs = _check_messages(messages)
    return _build("chat", model, {"messages": msgs, "params": _params(params, CHAT_PARAMS)})


def embedding_request(
    text: Any, model: Any, params: dict[str, Any] | None = None
) -> CanonicalRequest:
    """One embedding request; ``text`` is a str or a list of str."""
    model = _check_model(model)
    items = [text] if isinstance(text, str) else text
    if not isinstance(items, list) or not items:
        raise InvalidInputTypeError("embedding input must be a str or a non-empty list of str")
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise InvalidInputTypeError(
                f"embedding input[{i}] must be a str, got {type(item).__name__}"
            )
        if not item:
            raise InvalidInputError(f"embedding input[{i}] is an empty string; the API rejects it")
    return _build(
        "embedding", model, {"input": text, "params": _params(params or {}, EMBEDDING_PARAMS)}
    )


# --- the OpenAI SDK's request bodies (llm_ledger.openai drop-in clients) -------------------

# How an answer is delivered, not what it says: never hashed, so a streamed and an unstreamed
# call share one cache entry. (``encoding_format`` is how vectors are written; the ledger
# always asks for floats.)
SDK_DELIVERY_PARAMS = frozenset({"stream", "stream_options", "encoding_format"})
# Responses API parameters whose type is checked like the chat ones (others are hashed as given).
RESPONSES_PARAMS: dict[str, tuple[type, ...]] = {
    "instructions": (str, list),
    "temperature": (float,),
    "top_p": (float,),
    "max_output_tokens": (int,),
    "max_tool_calls": (int,),
    "top_logprobs": (int,),
    "parallel_tool_calls": (bool,),
    "previous_response_id": (str,),
    "tools": (list,),
    "tool_choice": (str, dict),
    "text": (dict,),
    "reasoning": (dict,),
    "truncation": (str,),
    "include": (list,),
}


def _sdk_params(
    body: dict[str, Any], skip: frozenset[str], checked: dict[str, tuple[type, ...]]
) -> dict[str, Any]:
    """Every body parameter that can change the answer: the known ones type-checked and
    normalised as for the seed API, any other one (new API parameters, ``extra_body``) hashed
    as given. ``None`` values are dropped."""
    params: dict[str, Any] = {}
    for name, value in body.items():
        if name in skip or name in SDK_DELIVERY_PARAMS or value is None:
            continue
        params[name] = _check_param(name, value, checked) if name in checked else value
    return params


def sdk_chat_request(body: dict[str, Any]) -> CanonicalRequest:
    """The canonical form of a ``chat.completions`` body sent by the SDK.

    Equal to :func:`chat_request` for the same messages, model and parameters (the seed's
    ``send_message`` and the SDK share cache entries); ``stream``/``stream_options`` are left
    out, as is ``n=1`` (the default).
    """
    if not isinstance(body, dict):
        raise InvalidInputTypeError("a chat.completions request body must be a JSON object")
    model = _check_model(body.get("model"))
    msgs = _check_messages(body.get("messages"))
    params = _sdk_params(body, frozenset({"model", "messages"}), CHAT_PARAMS)
    if params.get("n") == 1:
        del params["n"]
    return _build("chat", model, {"messages": msgs, "params": params})


def sdk_embedding_request(body: dict[str, Any]) -> CanonicalRequest:
    """The canonical form of an ``embeddings`` body: the seed's :func:`embedding_request`
    (``encoding_format`` left out: the ledger stores floats and writes what was asked)."""
    if not isinstance(body, dict):
        raise InvalidInputTypeError("an embeddings request body must be a JSON object")
    extra = set(body) - {"input", "model", "dimensions", "user"} - SDK_DELIVERY_PARAMS
    if extra:
        raise InvalidInputError(
            f"unknown embeddings parameter(s) {', '.join(sorted(extra))}; the ledger knows "
            "input, model, dimensions, user and encoding_format"
        )
    params = {k: body.get(k) for k in ("dimensions", "user")}
    return embedding_request(body.get("input"), body.get("model"), params)


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def response_input_text(item: Any) -> str:
    """The text of one Responses API input item (a message; its text parts joined)."""
    if isinstance(item, str):
        return item
    if not isinstance(item, dict):
        return ""
    content = item.get("content")
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and "text" in p)
    return content if isinstance(content, str) else str(item.get("output") or "")


@dataclass(frozen=True)
class ResponsesRequest(CanonicalRequest):
    """A Responses API request: ``input`` instead of ``messages``."""

    def last_message_text(self) -> str:
        items = self.body["input"]
        if not items:
            return ""
        return response_input_text(items if isinstance(items, str) else items[-1])

    def as_messages(self) -> list[dict[str, Any]]:
        """Instructions and input as chat messages, for token counts (budget, estimates)."""
        items = self.body["input"]
        out = []
        instructions = self.params.get("instructions")
        if isinstance(instructions, str):
            out.append({"role": "system", "content": instructions})
        for item in [items] if isinstance(items, str) else items or []:
            role = item.get("role", "user") if isinstance(item, dict) else "user"
            out.append({"role": role, "content": response_input_text(item)})
        return out


def responses_request(body: dict[str, Any]) -> ResponsesRequest:
    """The canonical form of a Responses API body (``responses.create`` / ``parse``).

    ``{"kind": "responses", "model": ..., "input": ..., "params": {...}}``: ``input`` as
    given (a str, or the list of input items with ``None``-valued keys dropped; a str and
    the one-message list saying the same are different requests, as they are to the API),
    ``params`` every other parameter but ``stream``/``stream_options`` (docs/hashing.md).
    """
    if not isinstance(body, dict):
        raise InvalidInputTypeError("a responses request body must be a JSON object")
    model = _check_model(body.get("model"))
    items = body.get("input")
    if isinstance(items, list):
        if not items:
            raise InvalidInputError("input is an empty list; pass a str or at least one item")
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise InvalidInputTypeError(
                    f"input[{i}] must be an input item (a dict), got {type(item).__name__}"
                )
        items = _drop_none(items)
    elif not isinstance(items, str) and not (items is None and body.get("previous_response_id")):
        raise InvalidInputTypeError(
            f"input must be a str or a list of input items, got {type(items).__name__}"
        )
    params = _drop_none(_sdk_params(body, frozenset({"model", "input"}), RESPONSES_PARAMS))
    payload = {"input": items, "params": params}
    text = canonical_json({"kind": "responses", "model": model, **payload})
    return ResponsesRequest(
        "responses", model, {"kind": "responses", "model": model, **payload}, text, hash_json(text)
    )
