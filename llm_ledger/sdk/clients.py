"""``OpenAI``, ``AsyncOpenAI``, ``AzureOpenAI``, ``AsyncAzureOpenAI`` on the ledger, and
``wrap(client)``.

They are the SDK's own classes with one method overridden: ``_send_request``, the SDK's
hook between building an HTTP request and sending it. Chat completions, embeddings and
the Responses API (``POST .../chat/completions``, ``/embeddings``, ``/responses``) go
through the ledger there; every other request (files, images, audio, batches, models, ...)
is sent as the SDK would, unrecorded. Everything above that hook is the SDK's: its
argument checking, ``parse()`` and its pydantic types, ``.stream()`` helpers,
``with_raw_response``/``with_streaming_response``, Azure URL rewriting.
"""

from __future__ import annotations

from typing import Any

import httpx2
import openai

from .. import warmup
from ..clients import AzureClient, OpenAIClient
from ..errors import ConfigError
from . import wire
from .core import Core

# Ledger options a drop-in client takes besides the SDK's own arguments.
LEDGER_OPTIONS = (
    "cache_file_name",
    "cache_api_calls",
    "mode",
    "sampling",
    "namespace",
    "max_age",
    "record_calls",
    "redact",
    "pricing_config",
    "spool_dir",
)


def _core(azure: bool, options: dict[str, Any]) -> Core:
    if "ledger" in options:
        if options.get("cache_file_name") is not None:
            raise ConfigError("pass ledger= or cache_file_name=, not both (they are one setting)")
        options["cache_file_name"] = options.pop("ledger")
    unknown = set(options) - set(LEDGER_OPTIONS)
    if unknown:
        raise ConfigError(
            f"unknown ledger option(s) {', '.join(sorted(unknown))}; valid ones are: ledger, "
            f"{', '.join(LEDGER_OPTIONS)}"
        )
    seed = (AzureClient if azure else OpenAIClient)(**options)
    return Core(seed)


class _Ledgered:
    """What the four drop-in classes share: the ledger core and its copy on ``with_options``."""

    # Like the SDK's classes: no slots of its own, so wrap() can swap a client's class.
    __slots__ = ()
    _ledger_core: Core
    _ledger_azure = False

    def _ledger_init(self, options: dict[str, Any]) -> None:
        core = _core(self._ledger_azure, options)
        core.seed.client = self  # host, api key (scrubbed from errors) come from this client
        warmup.skip_platform_probe(self)  # its first request spawns no `uname -p`
        # The mixin's empty __slots__ is for layout only: the SDK class has a __dict__.
        self._ledger_core = core  # type: ignore[misc]

    @property
    def ledger(self) -> Any:
        """The :class:`~llm_ledger.store.repository.Ledger` this client records into."""
        return self._ledger_core.seed.ledger


def _copy(sdk_class: Any) -> Any:
    """``copy``/``with_options``: the SDK's copy, on the same ledger with the same options."""

    def copy(self: Any, **kwargs: Any) -> Any:
        new = sdk_class.copy(self, **kwargs)
        new._ledger_core = self._ledger_core
        return warmup.skip_platform_probe(new)

    copy.__doc__ = sdk_class.copy.__doc__
    return copy


# The SDK class comes first among the bases (the mixin adds no instance layout after it), so
# wrap() can give an existing client our class.
class OpenAI(openai.OpenAI, _Ledgered):
    """``openai.OpenAI`` whose chat, embeddings and Responses calls go through the ledger.

    Takes the SDK's arguments, plus the ledger's: ``ledger=``/``cache_file_name=`` (SQLite
    path or SQLAlchemy URL), ``mode=``, ``namespace=``, ``sampling=``, ``max_age=``,
    ``cache_api_calls=``, ``record_calls=``, ``redact=``, ``pricing_config=``, ``spool_dir=``.
    """

    __slots__ = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        options = {k: kwargs.pop(k) for k in [*LEDGER_OPTIONS, "ledger"] if k in kwargs}
        super().__init__(*args, **kwargs)
        self._ledger_init(options)

    copy = with_options = _copy(openai.OpenAI)

    def _send_request(
        self, request: httpx2.Request, *, stream: bool, **kwargs: Any
    ) -> httpx2.Response:
        route = wire.route_of(request.method, request.url.path)
        if route is None:
            return super()._send_request(request, stream=stream, **kwargs)

        def send(out: httpx2.Request, streamed: bool) -> httpx2.Response:
            return super(OpenAI, self)._send_request(out, stream=streamed, **kwargs)

        return self._ledger_core.handle(self, route, request, send)


class AsyncOpenAI(openai.AsyncOpenAI, _Ledgered):
    """``openai.AsyncOpenAI`` on the ledger (options as for :class:`OpenAI`)."""

    __slots__ = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        options = {k: kwargs.pop(k) for k in [*LEDGER_OPTIONS, "ledger"] if k in kwargs}
        super().__init__(*args, **kwargs)
        self._ledger_init(options)

    copy = with_options = _copy(openai.AsyncOpenAI)

    async def _send_request(
        self, request: httpx2.Request, *, stream: bool, **kwargs: Any
    ) -> httpx2.Response:
        route = wire.route_of(request.method, request.url.path)
        if route is None:
            return await super()._send_request(request, stream=stream, **kwargs)

        async def send(out: httpx2.Request, streamed: bool) -> httpx2.Response:
            return await super(AsyncOpenAI, self)._send_request(out, stream=streamed, **kwargs)

        return await self._ledger_core.ahandle(self, route, request, send)


class AzureOpenAI(OpenAI, openai.AzureOpenAI):  # type: ignore[misc]
    """``openai.AzureOpenAI`` on the ledger; ``model`` is the deployment name, as in the SDK."""

    __slots__ = ()
    _ledger_azure = True
    copy = with_options = _copy(openai.AzureOpenAI)


class AsyncAzureOpenAI(AsyncOpenAI, openai.AsyncAzureOpenAI):  # type: ignore[misc]
    """``openai.AsyncAzureOpenAI`` on the ledger."""

    __slots__ = ()
    _ledger_azure = True
    copy = with_options = _copy(openai.AsyncAzureOpenAI)


_DROP_INS: dict[type, type] = {
    openai.AzureOpenAI: AzureOpenAI,
    openai.AsyncAzureOpenAI: AsyncAzureOpenAI,
    openai.OpenAI: OpenAI,
    openai.AsyncOpenAI: AsyncOpenAI,
}
_derived: dict[type, type] = {}


def _drop_in_class(cls: type) -> type:
    """Our class for an SDK client class (a user's subclass gets one made on the fly)."""
    if cls in _DROP_INS:
        return _DROP_INS[cls]
    if cls not in _derived:
        base = next((ours for sdk, ours in _DROP_INS.items() if issubclass(cls, sdk)), None)
        if base is None:
            raise ConfigError(
                f"wrap() takes an openai.OpenAI, AsyncOpenAI, AzureOpenAI or AsyncAzureOpenAI "
                f"client, got {cls.__name__}"
            )
        _derived[cls] = type(f"Ledger{cls.__name__}", (base, cls), {"__slots__": ()})
    return _derived[cls]


def wrap(client: Any, **options: Any) -> Any:
    """The same client on the ledger: ``wrap(openai.OpenAI(...), ledger="calls.db")``.

    Returns a copy (``client.with_options()``, sharing its HTTP connection pool) whose
    chat, embeddings and Responses calls go through the ledger; ``client`` itself is
    left as it was. Ledger options as for :class:`OpenAI`.
    """
    if isinstance(client, _Ledgered):
        raise ConfigError("this client is on the ledger already; wrap() the SDK client itself")
    if not isinstance(client, (openai.OpenAI, openai.AsyncOpenAI)):
        raise ConfigError(
            f"wrap() takes an openai.OpenAI/AsyncOpenAI (or Azure) client, got "
            f"{type(client).__name__}"
        )
    new: Any = client.copy()
    new.__class__ = _drop_in_class(type(client))
    new._ledger_init(options)
    return new


__all__ = ["AsyncAzureOpenAI", "AsyncOpenAI", "AzureOpenAI", "OpenAI", "wrap"]
