"""Secrets out of everything stored or logged: the API key, key-looking tokens, auth headers.

The exact key is not enough: a server may echo another key, a proxy token, or the
``Authorization`` header it received. So besides the key, any ``sk-...``-looking token,
any ``Bearer`` token and the values of ``Authorization`` / ``api-key`` headers are
replaced by ``[redacted]``. The SDK error kept on ``APICallError.sdk_error`` is a copy
with its message, body, request and response scrubbed the same way.
"""

from __future__ import annotations

import re
from typing import Any

REDACTED = "[redacted]"
# Header names whose values are credentials (compared lower-case).
SECRET_HEADERS = frozenset(
    {"authorization", "api-key", "x-api-key", "openai-api-key", "proxy-authorization"}
)
_TOKEN = re.compile(r"\bsk-[A-Za-z0-9_\-*]{8,}")
_BEARER = re.compile(r"(\bBearer\s+)[^\s'\",}]+", re.I)
_HEADER_VALUE = re.compile(
    r"((?:proxy-)?authorization|(?:x-|openai-)?api-key)(['\"]?\s*[:=]\s*['\"]?)"
    r"(?:(?:Bearer|Basic)\s+)?[^\s'\",}]+",
    re.I,
)


def scrub(text: str, key: str | None = None) -> str:
    """The text without the key, key-looking tokens, or auth header values."""
    if key and len(key) >= 6:
        text = text.replace(key, REDACTED)
    text = _TOKEN.sub(REDACTED, text)
    text = _BEARER.sub(lambda m: m.group(1) + REDACTED, text)
    return _HEADER_VALUE.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)


def scrub_obj(obj: Any, key: str | None = None) -> Any:
    """A JSON-like value scrubbed: header-named keys hidden, every string scrubbed."""
    if isinstance(obj, str):
        return scrub(obj, key)
    if isinstance(obj, dict):
        return {
            k: REDACTED if str(k).lower() in SECRET_HEADERS else scrub_obj(v, key)
            for k, v in obj.items()
        }
    if isinstance(obj, list | tuple):
        return type(obj)(scrub_obj(v, key) for v in obj)
    return obj


def _headers(headers: Any) -> list[tuple[str, str]]:
    return [(k, REDACTED if k.lower() in SECRET_HEADERS else scrub(v)) for k, v in headers.items()]


def sdk_error_copy(exc: BaseException, key: str | None = None) -> BaseException:
    """The SDK error with every field that could hold a secret scrubbed (a new object).

    Same class and attributes (``status_code``, ``body``, ``code``, ``response.headers``
    for retry-after...), so callers inspect it as before; the original is dropped.
    """
    new = exc.__class__.__new__(exc.__class__)
    fields = dict(getattr(exc, "__dict__", {}))
    request, response = fields.get("request"), fields.get("response")
    # The SDK's HTTP objects (httpx-like): rebuilt from their own classes, scrubbed.
    if request is not None and hasattr(request, "headers"):
        try:
            fields["request"] = type(request)(
                request.method, scrub(str(request.url), key), headers=_headers(request.headers)
            )
        except Exception:  # noqa: BLE001 - an unknown shape: keep nothing rather than a secret
            fields["request"] = None
    if response is not None and hasattr(response, "headers"):
        try:
            content = scrub(response.text, key).encode()
        except Exception:  # noqa: BLE001 - not read, or not text
            content = b""
        try:
            fields["response"] = type(response)(
                response.status_code,
                headers=_headers(response.headers),
                content=content,
                request=fields["request"],
            )
        except Exception:  # noqa: BLE001
            fields["response"] = None
    for name, value in list(fields.items()):
        if name not in ("request", "response"):
            fields[name] = scrub_obj(value, key)
    new.__dict__.update(fields)
    new.args = tuple(scrub_obj(a, key) for a in exc.args)
    return new
