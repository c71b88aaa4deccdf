"""``client.prepare()``: a process's one-time work, done when asked instead of by its first call.

A fresh process's first call pays for what the next ones find done (measured against the
test kit on 127.0.0.1, docs/benchmarks.md): the SDK client (its HTTP stack and TLS
context, ~35-50 ms), pydantic building the SDK's response models (~20 ms), the ledger
opened and migrated-or-checked, its journal and writer thread, the price table
(~130 ms, otherwise loaded on a daemon thread while the first request is out) and the
model's price, and the tokenizer (only a budget needs it); and the HTTP connection (against
a real API a TCP and TLS handshake, ~100 ms or more), opened only with ``connect=True``.
A service that wants its first request answered as fast as the next calls ``prepare()``
at start-up; nothing else does: constructing a client stays free (TinyTroupe builds
three at import). The SDK's platform headers cost nothing here: our clients fill them
without the SDK's ``uname -p`` subprocess (:func:`skip_platform_probe`).
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from typing import Any

from . import pricing, tokens

# The smallest answers the SDK parses, to let pydantic build the models a call's parse uses.
_CHAT: dict[str, Any] = {
    "id": "chatcmpl-prepare",
    "object": "chat.completion",
    "created": 0,
    "model": "prepare",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": ""},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}
_EMBEDDING: dict[str, Any] = {
    "object": "list",
    "model": "prepare",
    "data": [{"object": "embedding", "index": 0, "embedding": [0.0]}],
    "usage": {"prompt_tokens": 1, "total_tokens": 1},
}


def sdk_platform() -> str | None:
    """The SDK's ``X-Stainless-OS`` header, as its ``get_platform()`` answers it, without
    ``platform.platform()``: on Linux that runs ``uname -p`` in a subprocess for a field
    the answer does not use (65-100 ms in a process that has the SDK loaded, measured:
    the larger part of a first call). The same checks, on ``os.uname()``'s fields
    (``platform.uname()`` computes the processor only when asked). None where the SDK's
    own answer would need ``platform.platform()`` (an unknown system): it asks then."""
    try:
        u = platform.uname()
    except Exception:  # noqa: BLE001 -- the SDK's own probe answers then
        return None
    system = u.system.lower()
    name = f"{u.release}-{u.machine}".lower()
    if "iphone" in name or "ipad" in name:
        return "iOS"
    if system == "darwin":
        return "MacOS"
    if system == "windows":
        return "Windows"
    if "android" in name:
        return "Android"
    if system in _BSDS:
        return _BSDS[system]
    if system == "linux":
        try:
            distro = platform.freedesktop_os_release().get("ID", "").lower()
        except OSError:
            distro = ""
        return _BSDS.get(distro, "Linux")
    return None


_BSDS = {"freebsd": "FreeBSD", "openbsd": "OpenBSD"}  # by system, or a Linux's os-release ID


def skip_platform_probe(sdk_client: Any) -> Any:
    """Give an SDK client its platform header up front (:func:`sdk_platform`), so its first
    request does not spawn ``uname -p``. A client that has one, or an SDK without the
    attribute, is left as it is. Returns the client."""
    if getattr(sdk_client, "_platform", False) is None:
        sdk_client._platform = sdk_platform()
    return sdk_client


def _sdk_models() -> None:
    from openai.types import CreateEmbeddingResponse, embedding_create_params
    from openai.types.chat import ChatCompletion, completion_create_params

    # model_construct is how the SDK itself turns an answer into its objects.
    ChatCompletion.model_construct(**_CHAT)
    CreateEmbeddingResponse.model_construct(**_EMBEDDING)
    # And a request's parameters go through its transform, which reads (and caches) the
    # type hints of every TypedDict they touch. A private helper: if a later SDK moves
    # it, this step does nothing and the first call pays for it, as it did.
    try:
        from openai._utils import maybe_transform
    except ImportError:
        return
    chat = {"model": "prepare", "messages": [{"role": "user", "content": "x"}], "temperature": 0}
    maybe_transform(chat, completion_create_params.CompletionCreateParamsNonStreaming)
    maybe_transform(
        {"input": "x", "model": "prepare"}, embedding_create_params.EmbeddingCreateParams
    )


def prepare(client: Any, model: str | None = None, *, connect: bool = False) -> dict[str, float]:
    """Do ``client``'s one-time work now; milliseconds per step, in the order taken.

    Raises what the first call would for a missing API key (``ConfigError``), unless the
    client is in replay mode (it never builds an SDK client then). ``connect=True`` also
    opens the HTTP connection the first call will use, with ``GET /models`` (no tokens, no
    cost, not a ledger call): a new connection is a TCP and TLS handshake, the largest
    one-time cost against a real API. Its error, if the API refuses it (a bad key), is
    the SDK's, raised as is.
    """
    settings = client._settings()
    model = model or settings.model
    options = client._options(mode=None, no_cache=False, no_store=False)
    steps: dict[str, float] = {}

    def timed(name: str, step: Callable[[], Any]) -> None:
        t0 = time.perf_counter()
        step()
        steps[name] = round((time.perf_counter() - t0) * 1e3, 2)

    if options.cache_enabled or client._records():
        timed("ledger", lambda: client.ledger.prepare(client._namespace(None)))
    if options.mode != "replay":
        timed("sdk_client", lambda: client.client)
        timed("sdk_headers", lambda: client.client.default_headers)
        if connect:
            timed("connect", lambda: client.client.models.list())
    timed("sdk_models", _sdk_models)
    config = client._context().pricing_config()  # the pricing settings a call would use
    timed(
        "prices",
        lambda: pricing.price_call(model, prompt_tokens=1, completion_tokens=1, config=config),
    )
    timed(
        "tokenizer", lambda: tokens.count_message_tokens([{"role": "user", "content": "x"}], model)
    )
    return steps
