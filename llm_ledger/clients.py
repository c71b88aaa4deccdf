"""The seed's clients: ``OpenAIClient`` and ``AzureClient``, every call through the ledger.

Over ~450 lines because it is the seed's whole facade in one place: both clients, every
override point, the chat and embedding entries and TinyTroupe v0.6's additions to them.
What they rely on has its own room: calls.py (the pipeline), shaping.py (request rules),
structured.py (pydantic response formats), coststats.py (cost statistics).

The client is the seed's facade: signatures, settings, the ``_raw_*`` override
points, ``_load_cache``/``_save_cache``. Each call is described (canonical request
and hash from keys, options from settings) and handed to the pipeline,
``calls.run``, with a transport that makes one attempt through the override
points. Answers the API gave are recorded before they are returned; if the ledger
cannot take them they go to the spool.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

import openai

# The SDK loads its resource classes (and their response models) on first use, ~160 ms
# that would land on the first call. The classes, not their packages: from openai 2.x
# on a package's __init__ is lazy too, and importing it loads nothing.
from openai.resources.chat import Chat as _Chat  # noqa: F401
from openai.resources.chat.completions import Completions as _Completions  # noqa: F401
from openai.resources.embeddings import Embeddings as _Embeddings  # noqa: F401

from . import api, calls, flight, keys, pickles, pricing, shaping, structured, tokens, warmup
from . import config as cfg
from .calls import Redactor, positive
from .coststats import CostStats, format_stats
from .embeddings import EMBEDDING, items_of, texts
from .errors import ConfigError
from .log import logger
from .policy import CallOptions
from .records import Stored
from .scope import current as current_scope
from .store.repository import Ledger, open_ledger

log = logger
_UNSET: Any = object()


class OpenAIClient:
    """A client whose every call is answered from, or recorded in, the ledger."""

    api_type = "openai"

    def __init__(
        self,
        cache_api_calls: bool | None = None,
        cache_file_name: str | None = None,
        *,
        mode: str | None = None,
        sampling: str | None = None,
        namespace: str | None = None,
        max_age: float | None = None,
        record_calls: bool | None = None,
        raise_on_error: bool | None = None,
        redact: Redactor | None = None,
        pricing_config: pricing.PricingConfig | None = None,
        spool_dir: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        max_concurrent_model_calls: int | None = None,
        dedent_messages: bool = False,
        reasoning_effort: str | None = None,
    ) -> None:
        # None means "follow the process-wide settings" (force_default_value, LLM_LEDGER_*).
        self._cache_api_calls: bool | None = cache_api_calls
        self._cache_file_name: str | None = cache_file_name
        self.max_concurrent_model_calls = _concurrency(max_concurrent_model_calls)
        self.dedent_messages = dedent_messages
        self.reasoning_effort = reasoning_effort
        self._limiter = flight.Limiter()
        self._cost_stats = CostStats()
        self.mode = None if mode is None else cfg._coerce("mode", mode)
        self.sampling = None if sampling is None else cfg._coerce("sampling", sampling)
        self.namespace = namespace
        self.max_age = max_age
        self.record_calls = record_calls
        self.raise_on_error = raise_on_error
        self.redact = redact
        self.pricing_config = pricing_config
        self.spool_dir = spool_dir
        self._sleep = sleep
        self._client: Any = None
        self._ledger: Ledger | None = None
        self._ledger_location: str | None = None
        self._setup_from_config()

    # --- configuration ------------------------------------------------------

    def _setup_from_config(self) -> None:
        """Forget the SDK client; it is built on first use, from the environment then."""
        self._client = None

    def _make_sdk_client(self) -> Any:
        if not os.environ.get("OPENAI_API_KEY"):
            raise ConfigError(
                "OPENAI_API_KEY is not set; export it (and OPENAI_BASE_URL for a compatible "
                "server), or run in replay mode"
            )
        return openai.OpenAI(max_retries=0)

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = warmup.skip_platform_probe(self._make_sdk_client())
            # The first request goes out next: the price table loads while it is answered.
            pricing.load_in_background()
        return self._client

    @client.setter
    def client(self, value: Any) -> None:
        self._client = value

    def prepare(self, model: str | None = None, *, connect: bool = False) -> dict[str, float]:
        """Do the process's one-time work now (SDK client, ledger, journal, prices, models;
        ``connect=True``: the HTTP connection too, with a free ``GET /models``), so the
        first call is as fast as the next; milliseconds per step (warmup.py)."""
        return warmup.prepare(self, model, connect=connect)

    def set_api_cache(self, cache_api_calls: bool, cache_file_name: str | None = None) -> None:
        self._cache_api_calls = cfg._coerce("cache_api_calls", cache_api_calls)
        if cache_file_name is not None and cache_file_name != self._cache_file_name:
            self._cache_file_name = cache_file_name
            self._ledger = None

    @property
    def cache_api_calls(self) -> bool:
        """Whether the ledger serves answers: this client's setting, else the settings'."""
        if self._cache_api_calls is not None:
            return self._cache_api_calls
        return self._settings().cache_api_calls

    @cache_api_calls.setter
    def cache_api_calls(self, value: bool | None) -> None:
        self._cache_api_calls = None if value is None else cfg._coerce("cache_api_calls", value)

    @property
    def cache_file_name(self) -> str:
        """The configured ledger location in force (a ``.pickle`` name is kept as given;
        ``ledger_location`` says where the database beside it is)."""
        return self._location()

    @cache_file_name.setter
    def cache_file_name(self, value: str | None) -> None:
        self._cache_file_name = value

    @property
    def ledger_location(self) -> str:
        """Where the ledger database is (beside a ``.pickle`` cache file, never in it)."""
        return pickles.ledger_beside(self._location())[0]

    def _settings(self) -> cfg.Settings:
        return cfg.settings()

    def _location(self) -> str:
        return self._cache_file_name or self._settings().database_url()

    @property
    def ledger(self) -> Ledger:
        location = self._location()
        if (
            self._ledger is None
            or location != self._ledger_location
            or self._ledger.pid != os.getpid()
        ):
            spool_dir = self.spool_dir or self._settings().spool_dir
            db_location, pickle_path = pickles.ledger_beside(location)
            created = pickle_path is not None and not os.path.exists(db_location)
            self._ledger = open_ledger(db_location, spool_dir=spool_dir)
            self._ledger_location = location
            if pickle_path is not None:
                pickles.import_beside(self._ledger, pickle_path, created=created)
        return self._ledger

    def _load_cache(self) -> Ledger:
        """Seed compatibility: the 'cache' is the ledger, opened (and migrated) here."""
        return self.ledger

    def _save_cache(self) -> None:
        """Seed compatibility: nothing to do. Every call is committed as it happens; no file is rewritten."""

    def _options(self, *, mode: str | None, no_cache: bool, no_store: bool) -> CallOptions:
        s = self._settings()
        return CallOptions(
            mode=cfg._coerce("mode", mode) if mode is not None else (self.mode or s.mode),
            cache_enabled=s.cache_api_calls
            if self._cache_api_calls is None
            else self._cache_api_calls,
            no_cache=no_cache,
            no_store=no_store,
            sampling=self.sampling or s.sampling,
            max_age=self.max_age if self.max_age is not None else s.max_age,
        )

    def _records(self) -> bool:
        s = self._settings()
        return s.record_calls if self.record_calls is None else self.record_calls

    def _namespace(self, per_call: str | None) -> str:
        if per_call is not None:
            return per_call
        scoped = current_scope().namespace
        if scoped is not None:
            return scoped
        return self.namespace if self.namespace is not None else self._settings().namespace

    def _endpoint_host(self) -> str | None:
        if self._client is None:
            return None
        return _host_of(str(getattr(self._client, "base_url", "")))

    def _api_key(self) -> str | None:
        return getattr(self._client, "api_key", None) if self._client is not None else None

    # --- overridable raw calls (the seed's extension points) ----------------

    def _raw_model_call(self, model: str, chat_api_params: dict[str, Any]) -> Any:
        """``chat_api_params`` holds ``model`` too (as TinyTroupe v0.6 passes it)."""
        return self.client.chat.completions.create(**{"model": model, **chat_api_params})

    def _raw_model_response_extractor(self, response: Any) -> dict[str, Any]:
        return api.to_dict(response)["choices"][0]["message"]

    def _raw_embedding_model_call(self, text: str | list[str], model: str, **params: Any) -> Any:
        return self.client.embeddings.create(
            input=text, model=model, encoding_format="float", **params
        )

    def _raw_embedding_model_response_extractor(self, response: Any) -> list[float]:
        return api.to_dict(response)["data"][0]["embedding"]

    def _count_tokens(self, messages: list[dict[str, Any]], model: str) -> int | None:
        return tokens.count_message_tokens(messages, model)

    def _stored_response(self, response: dict[str, Any]) -> Any:
        """A stored answer as the extractor gets it on a miss: an SDK ``ChatCompletion`` for
        an overridden extractor (written for SDK objects); the default one takes the dict."""
        if type(self)._raw_model_response_extractor is OpenAIClient._raw_model_response_extractor:
            return response
        return api.as_sdk_response(response)

    def _is_reasoning_model(self, model: str) -> bool:
        """Whether ``model`` gets the reasoning-model request rules (see shaping.py);
        override it for a deployment name that hides the model."""
        return shaping.is_reasoning_model(model)

    def _default_reasoning_effort(self) -> str | None:
        return self.reasoning_effort

    def _concurrency_limit(self) -> int | None:
        return self.max_concurrent_model_calls

    # --- TinyTroupe v0.6's cost statistics -----------------------------------

    def get_cost_stats(self) -> dict[str, Any]:
        """Token and call counts since this client was made or last reset (TinyTroupe's
        keys), with ``cost_usd``, ``saved_usd`` and ``unpriced_calls`` beside them."""
        return self._cost_stats.snapshot()

    def reset_cost_stats(self) -> None:
        self._cost_stats.reset()

    def pretty_print_cost_stats(self) -> None:
        print(format_stats(self.get_cost_stats()))

    def _count_cost(self, result: calls.Result) -> None:
        rec = result.record
        hit = result.cache_status == "hit"
        self._cost_stats.add(rec.usage, cached=hit, cost_usd=rec.saved_usd if hit else rec.cost_usd)

    # --- chat ---------------------------------------------------------------

    def send_message(
        self,
        current_messages: list[dict[str, Any]],
        model: str | None = None,
        temperature: float | None = _UNSET,
        max_tokens: int | None = _UNSET,
        top_p: float | None = _UNSET,
        frequency_penalty: float | None = _UNSET,
        presence_penalty: float | None = _UNSET,
        stop: str | list[str] | None = None,
        timeout: float | None = None,
        max_attempts: int | None = None,
        waiting_time: float | None = None,
        exponential_backoff_factor: float | None = None,
        n: int = 1,
        echo: bool = False,
        response_format: Any = None,
        *,
        dedent_messages: bool | None = None,
        enable_pydantic_model_return: bool = False,
        max_completion_tokens: int | None = None,
        reasoning_effort: str | None = None,
        no_cache: bool = False,
        no_store: bool = False,
        mode: str | None = None,
        namespace: str | None = None,
        raise_on_error: bool | None = None,
        **extra_params: Any,
    ) -> Any:
        """Send a chat request; returns the assistant message dict, or None after giving up.

        ``raise_on_error=True`` (or LLM_LEDGER_RAISE_ON_ERROR=1) raises the typed error
        instead of returning None. Replay misses and budget refusals always raise.
        TinyTroupe v0.6's keywords: ``dedent_messages`` (None: the client's setting),
        ``enable_pydantic_model_return`` (with a pydantic ``response_format``, the parsed
        model instance), ``max_completion_tokens``, ``reasoning_effort``. With a pydantic
        ``response_format`` the message dict also has ``parsed`` (the model as a dict, None
        if the content does not validate), as TinyTroupe v0.6 returns it. The request is
        shaped (shaping.py) before it is hashed, so the hash is of what is sent.
        """
        s = self._settings()
        model = s.model if model is None else model
        params = {
            "temperature": s.temperature if temperature is _UNSET else temperature,
            "max_tokens": s.max_tokens if max_tokens is _UNSET else max_tokens,
            "top_p": s.top_p if top_p is _UNSET else top_p,
            "frequency_penalty": s.frequency_penalty
            if frequency_penalty is _UNSET
            else frequency_penalty,
            "presence_penalty": s.presence_penalty
            if presence_penalty is _UNSET
            else presence_penalty,
            "stop": stop or None,
            "n": n if n != 1 else None,
            "response_format": structured.response_format_param(response_format),
            "max_completion_tokens": max_completion_tokens,
            "reasoning_effort": reasoning_effort,
            **extra_params,
        }
        request = shaping.chat_request(
            current_messages,
            model,
            params,
            dedent=self.dedent_messages if dedent_messages is None else dedent_messages,
            reasoning=self._is_reasoning_model(model) if isinstance(model, str) else None,
            explicit_max_tokens=max_tokens is not _UNSET,
            default_reasoning_effort=self._default_reasoning_effort(),
        )
        keys.check_storable(request)
        call_timeout = positive("timeout", s.timeout if timeout is None else timeout)
        retry = calls.Retry.resolve(s, max_attempts, waiting_time, exponential_backoff_factor)
        call = calls.Call(
            endpoint=calls.CHAT,
            request=request,
            options=self._options(mode=mode, no_cache=no_cache, no_store=no_store),
            namespace=self._namespace(namespace),
            raise_errors=self._raise_errors(raise_on_error),
            retry=retry,
            items=(request,),
        )
        sent: list[Any] = []

        def transport(items: list[keys.CanonicalRequest]) -> Any:
            api_params = {
                "model": request.model,
                "messages": request.body["messages"],
                **request.params,
                "timeout": call_timeout,
            }
            with self._limiter.slot(self._concurrency_limit()):
                answer = self._raw_model_call(request.model, api_params)
            sent.append(answer)
            return answer

        result = calls.run(self._context(), call, transport)
        if result is None:
            return None
        self._count_cost(result)
        response = result.responses[0]
        if not (sent and response is sent[-1]):  # from the ledger: a hit, or another's answer
            response = self._stored_response(response)
        message = self._raw_model_response_extractor(response)
        if response_format is None or not structured.is_model_class(response_format):
            return message
        parsed = structured.parse_model(message, response_format)
        if enable_pydantic_model_return and parsed is not None:
            return parsed
        if isinstance(message, dict):  # TinyTroupe v0.6's shape: the SDK's .parse() "parsed"
            message = {**message, "parsed": None if parsed is None else parsed.model_dump()}
        return message

    # --- embeddings ---------------------------------------------------------

    def get_embedding(
        self,
        text: str | list[str],
        model: str | None = None,
        *,
        dimensions: int | None = None,
        no_cache: bool = False,
        no_store: bool = False,
        mode: str | None = None,
        namespace: str | None = None,
        raise_on_error: bool | None = None,
        timeout: float | None = None,
    ) -> list[float] | list[list[float]] | None:
        """The embedding of ``text`` (a vector), or of each str of a list (vectors, in order).

        Each item is cached on its own; on a partial hit only the missing items are sent.
        ``timeout`` (seconds per attempt) defaults to the ``timeout`` setting, as for chat.
        """
        s = self._settings()
        model = s.embedding_model if model is None else model
        params = {"dimensions": dimensions}
        request = keys.embedding_request(text, model, params)
        keys.check_storable(request)
        params = {k: v for k, v in params.items() if v is not None}
        call_timeout = positive("timeout", s.timeout if timeout is None else timeout)
        call = calls.Call(
            endpoint=EMBEDDING,
            request=request,
            items=items_of(request, params),
            options=self._options(mode=mode, no_cache=no_cache, no_store=no_store),
            namespace=self._namespace(namespace),
            raise_errors=self._raise_errors(raise_on_error),
            retry=calls.Retry.resolve(s),
        )
        single = isinstance(text, str)

        def transport(items: list[keys.CanonicalRequest]) -> Any:
            inputs = texts(items)
            with self._limiter.slot(self._concurrency_limit()):
                return self._raw_embedding_model_call(
                    inputs[0] if single else inputs, model, timeout=call_timeout, **params
                )

        result = calls.run(self._context(), call, transport)
        if result is None:
            return None
        vectors = [self._raw_embedding_model_response_extractor(r) for r in result.responses]
        return vectors[0] if single else vectors

    def _lookup(self, namespace: str, request_hash: str, slot: int) -> Stored | None:
        """The stored answer for one cache entry (the pipeline handles read failures)."""
        return self.ledger.lookup(namespace, request_hash, slot)

    def _raise_errors(self, per_call: bool | None) -> bool:
        """This call's raise_on_error: the argument, else the client's, else the settings'."""
        if per_call is not None:
            return bool(per_call)
        if self.raise_on_error is not None:
            return bool(self.raise_on_error)
        return bool(self._settings().raise_on_error)

    # --- the pipeline's view of this client -----------------------------------

    def _context(self) -> calls.Context:
        """Built once, on the first call (so a subclass's own ``__init__`` need not call ours).
        Attributes (``redact``, ``pricing_config``, the ledger location) are read at each
        call; the override points are the methods as they are at the first call."""
        ctx = self.__dict__.get("_calls_context")
        if ctx is None:
            ctx = self.__dict__["_calls_context"] = calls.Context(
                api_type=self.api_type,
                ledger=lambda: self.ledger,
                lookup=self._lookup,
                settings=self._settings,
                records=self._records,
                pricing_config=lambda: self.pricing_config or pricing.config_from_env(),
                redact=lambda: self.redact,
                endpoint_host=self._endpoint_host,
                api_key=self._api_key,
                count_tokens=self._count_tokens,
                sleep=lambda seconds: self._sleep(seconds),
            )
        return ctx


class AzureClient(OpenAIClient):
    """Azure OpenAI: the model argument is the deployment name."""

    api_type = "azure"

    def _api_version(self) -> str:
        return os.environ.get("OPENAI_API_VERSION", "2024-06-01")

    def _make_sdk_client(self) -> Any:
        endpoint = os.environ.get("AZURE_OPENAI_ENDPOINT")
        key = os.environ.get("AZURE_OPENAI_API_KEY") or os.environ.get("AZURE_OPENAI_KEY")
        if not endpoint:
            raise ConfigError(
                "AzureClient needs AZURE_OPENAI_ENDPOINT and AZURE_OPENAI_API_KEY (or AZURE_OPENAI_KEY); "
                "without a key it signs in with Entra ID (pip install 'llm-ledger[azure]'); "
                "OPENAI_API_VERSION selects the API version (default 2024-06-01)"
            )
        auth: dict[str, Any] = (
            {"api_key": key} if key else {"azure_ad_token_provider": _entra_token_provider()}
        )
        return openai.AzureOpenAI(
            azure_endpoint=endpoint, api_version=self._api_version(), max_retries=0, **auth
        )


ENTRA_SCOPE = "https://cognitiveservices.azure.com/.default"


def _entra_token_provider() -> Callable[[], str]:
    """Entra ID sign-in (``DefaultAzureCredential``: environment, managed identity, az login),
    as TinyTroupe does when AZURE_OPENAI_KEY is not set."""
    try:
        from azure.identity import DefaultAzureCredential, get_bearer_token_provider
    except ImportError:
        raise ConfigError(
            "AZURE_OPENAI_API_KEY (or AZURE_OPENAI_KEY) is not set, and Entra ID sign-in needs "
            "azure-identity: pip install 'llm-ledger[azure]', or set the key"
        ) from None
    log.info("llm.azure_entra_id", scope=ENTRA_SCOPE)
    provider: Callable[[], str] = get_bearer_token_provider(DefaultAzureCredential(), ENTRA_SCOPE)
    return provider


@functools.lru_cache(maxsize=64)
def _host_of(base_url: str) -> str | None:
    netloc = urlparse(base_url).netloc
    return netloc.rpartition("@")[2] or None  # never user:password@


def _concurrency(value: Any) -> int | None:
    """TinyTroupe's rule: None, 0 or less means no limit."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(
            f"max_concurrent_model_calls must be an int (0 or None: no limit), got {value!r}"
        )
    return value if value > 0 else None


__all__ = ["OpenAIClient", "AzureClient"]
