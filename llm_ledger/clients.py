"""The seed's clients: ``OpenAIClient`` and ``AzureClient``, every call through the ledger.

A chat call flows one way: canonical request + hash (keys) -> plan and decision
(policy) -> lookup / record (repository). Answers the API gave are recorded
before they are returned; if the ledger cannot take them they go to the spool.
"""

from __future__ import annotations

import copy
import functools
import os
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any
from urllib.parse import urlparse

import openai
import openai.resources.chat.completions  # noqa: F401 -- the SDK loads these on first use;
import openai.resources.embeddings  # noqa: F401 -- importing them here keeps that off a call
import structlog

from . import api, flight, keys, pricing, tokens
from . import config as cfg
from ._version import __version__
from .errors import BudgetExceededError, CacheMissError, ConfigError
from .log import info_enabled
from .policy import Action, CallOptions, Decision, StoreMode, decide, plan
from .records import Answer, CallRecord, Stored, Usage
from .repository import Ledger, open_ledger
from .scope import current as current_scope

log = structlog.get_logger("llm_ledger")
Redactor = Callable[[dict[str, Any]], dict[str, Any]]
_UNSET: Any = object()


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


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
    ) -> None:
        # None means "follow the process-wide settings" (force_default_value, LLM_LEDGER_*).
        self.cache_api_calls = cache_api_calls
        self.cache_file_name = cache_file_name
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
            self._client = self._make_sdk_client()
        return self._client

    @client.setter
    def client(self, value: Any) -> None:
        self._client = value

    def set_api_cache(self, cache_api_calls: bool, cache_file_name: str | None = None) -> None:
        self.cache_api_calls = cfg._coerce("cache_api_calls", cache_api_calls)
        if cache_file_name is not None and cache_file_name != self.cache_file_name:
            self.cache_file_name = cache_file_name
            self._ledger = None

    def _settings(self) -> cfg.Settings:
        return cfg.settings()

    def _location(self) -> str:
        return self.cache_file_name or self._settings().database_url()

    @property
    def ledger(self) -> Ledger:
        location = self._location()
        if (
            self._ledger is None
            or location != self._ledger_location
            or self._ledger.pid != os.getpid()
        ):
            spool_dir = self.spool_dir or self._settings().spool_dir
            self._ledger = open_ledger(location, spool_dir=spool_dir)
            self._ledger_location = location
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
            if self.cache_api_calls is None
            else self.cache_api_calls,
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
        return self.client.chat.completions.create(model=model, **chat_api_params)

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
        no_cache: bool = False,
        no_store: bool = False,
        mode: str | None = None,
        namespace: str | None = None,
        raise_on_error: bool | None = None,
        **extra_params: Any,
    ) -> dict[str, Any] | None:
        """Send a chat request; returns the assistant message dict, or None after giving up.

        ``raise_on_error=True`` (or LLM_LEDGER_RAISE_ON_ERROR=1) raises the typed error
        instead of returning None. Replay misses and budget refusals always raise.
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
            "response_format": _response_format(response_format),
            **extra_params,
        }
        request = keys.chat_request(current_messages, model, params)
        transport = {
            "timeout": _positive("timeout", s.timeout if timeout is None else timeout),
            "max_attempts": int(
                _positive("max_attempts", s.max_attempts if max_attempts is None else max_attempts)
            ),
            "waiting_time": _positive(
                "waiting_time", s.waiting_time if waiting_time is None else waiting_time
            ),
            "factor": _positive(
                "exponential_backoff_factor",
                s.exponential_backoff_factor
                if exponential_backoff_factor is None
                else exponential_backoff_factor,
            ),
        }
        opts = self._options(mode=mode, no_cache=no_cache, no_store=no_store)
        raise_errors = (
            s.raise_on_error
            if raise_on_error is None and self.raise_on_error is None
            else bool(raise_on_error if raise_on_error is not None else self.raise_on_error)
        )
        return _ChatCall(
            self, request, opts, transport, self._namespace(namespace), raise_errors
        ).run()

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
    ) -> list[float] | list[list[float]] | None:
        """The embedding of ``text`` (a vector), or of each str of a list (vectors, in order).

        Each item is cached on its own; on a partial hit only the missing items are sent.
        """
        from .embeddings import EmbeddingCall

        s = self._settings()
        model = s.embedding_model if model is None else model
        params = {"dimensions": dimensions}
        request = keys.embedding_request(text, model, params)
        opts = self._options(mode=mode, no_cache=no_cache, no_store=no_store)
        raise_errors = bool(
            raise_on_error
            if raise_on_error is not None
            else (self.raise_on_error if self.raise_on_error is not None else s.raise_on_error)
        )
        return EmbeddingCall(
            self, request, params, opts, self._namespace(namespace), raise_errors
        ).run()

    # --- shared pieces for call objects --------------------------------------

    def _base_record(
        self, request: keys.CanonicalRequest, namespace: str, **fields: Any
    ) -> CallRecord:
        sc = current_scope()
        body, text = request.body, request.canonical_json
        if self.redact is not None:
            body, text = self.redact(copy.deepcopy(body)), None  # it may edit in place
        return CallRecord(
            call_uuid=str(uuid.uuid4()),
            created_at=_now(),
            kind=request.kind,
            api_type=self.api_type,
            endpoint_host=self._endpoint_host(),
            model=request.model,
            namespace=namespace,
            request_hash=request.request_hash,
            request=body,
            request_text=text,
            library_version=__version__,
            run=sc.run,
            template=sc.template,
            tags=dict(sc.tags) or None,
            **fields,
        )

    def _price(self, model: str, response: dict[str, Any], usage: Usage) -> pricing.Cost:
        """Price by the configured mapping, else by the model the response names (Azure names
        the real model behind a deployment), else by the requested name."""
        conf = self.pricing_config or _pricing_from_env()
        mapped = model in conf.model_map or model in conf.custom_prices
        priced = model if mapped else response.get("model") or model
        completion = usage.completion_tokens
        if completion is None and response.get("object") == "list":
            completion = 0  # embeddings have no completion
        key = (
            priced,
            usage.prompt_tokens,
            completion,
            usage.cached_tokens,
            usage.reasoning_tokens,
            id(conf),
        )
        cost = _price_memo.get(key)
        if cost is None:
            cost = pricing.price_call(
                priced,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=completion,
                cached_tokens=usage.cached_tokens,
                reasoning_tokens=usage.reasoning_tokens,
                config=conf,
            )
            if len(_price_memo) > 10_000:
                _price_memo.clear()
            _price_memo[key] = cost
        return cost

    def _reserve_budget(
        self, model: str, prompt_tokens: int | None, max_out: int, rec: CallRecord
    ) -> Decimal:
        """Hold the worst-case cost against every enclosing budget, or refuse the call."""
        budgets = current_scope().budgets
        if not budgets:
            return Decimal(0)
        conf = self.pricing_config or _pricing_from_env()
        estimate = (
            None
            if prompt_tokens is None
            else pricing.worst_case_cost(model, prompt_tokens, max_out, conf)
        )
        reason = None
        if estimate is None:
            reason = (
                f"cannot estimate the cost of a call to {model!r} (no price or no token count); "
                "map the model with LLM_LEDGER_MODEL_MAP or set LLM_LEDGER_PRICES"
            )
        else:
            held = []
            for b in budgets:
                if not b.try_reserve(estimate):
                    for h in held:
                        h.settle(estimate, Decimal(0))
                    reason = (
                        f"budget exceeded: spent ${_usd(b.spent)} of ${_usd(b.cap)}, and this call "
                        f"to {model!r} could cost up to ${_usd(estimate)}; raise max_cost_usd or "
                        "lower max_tokens"
                    )
                    break
                held.append(b)
        if reason is None:
            assert estimate is not None
            return estimate
        rec.status = "refused"
        rec.error_type, rec.error_message = "BudgetExceededError", reason
        rec.cost_usd = Decimal(0)
        self._write(rec)
        log.warning("llm.refused", request_hash=rec.request_hash, model=model, reason=reason)
        raise BudgetExceededError(reason)

    def _record_failure(
        self, rec: CallRecord, outcome: api.Outcome, reserved: Decimal, raise_errors: bool
    ) -> None:
        """Record a call that gave up (why, after how many attempts); raise the typed error
        when asked to, else return None as the seed does."""
        self._settle_budget(reserved, Decimal(0))
        assert outcome.error is not None
        rec.status = "error"
        rec.error_type = type(outcome.error).__name__
        rec.error_message = api.scrub(str(outcome.error), self._api_key())[:2000]
        self._write(rec)
        if raise_errors:
            raise api.typed_error(outcome.error, outcome.attempts, self._api_key())
        return None

    def _settle_budget(self, reserved: Decimal, actual: Decimal | None) -> None:
        for b in current_scope().budgets:
            b.settle(reserved, actual)

    def _write(self, rec: CallRecord, *, hit: bool = False) -> dict[int, Stored]:
        if not self._records():
            return {}
        if hit and self._settings().hit_audit == "background":
            self.ledger.record_later(rec)  # nothing paid, nothing to race for: queue the row
            return {}
        return self.ledger.record_or_spool(rec)

    def _lookup(self, namespace: str, request_hash: str, slot: int) -> Stored | None:
        ledger = self.ledger
        try:
            return ledger.lookup(namespace, request_hash, slot)
        except ledger.errors as exc:
            log.error(
                "ledger.read_failed",
                request_hash=request_hash,
                error=str(getattr(exc, "orig", exc))[:300],
            )
            return None


class _ChatCall:
    """One send_message, start to finish."""

    def __init__(
        self,
        owner: OpenAIClient,
        request: keys.CanonicalRequest,
        opts: CallOptions,
        transport: dict[str, Any],
        namespace: str,
        raise_errors: bool,
    ) -> None:
        self.c = owner
        self.request = request
        self.opts = opts
        self.transport = transport
        self.namespace = namespace
        self.raise_errors = raise_errors
        self.t0 = time.perf_counter()
        self.ctx = {"request_hash": request.request_hash, "model": request.model}

    def run(self) -> dict[str, Any] | None:
        r = self.request
        p = plan(self.opts, temperature=r.params.get("temperature"), n=r.params.get("n"))
        slot = (
            flight.slots.take(current_scope().run, self.namespace, r.request_hash)
            if p.use_slots
            else 0
        )
        stored = self.c._lookup(self.namespace, r.request_hash, slot) if p.read else None
        d = decide(p, stored.stored_at if stored else None, _now(), self.opts.max_age)
        if d.action is Action.SERVE:
            assert stored is not None
            return self._serve(stored, slot)
        if d.action is Action.MISS_ERROR:
            return self._replay_miss(slot)
        if d.store is StoreMode.INSERT:
            # Single-flight: identical concurrent misses wait for the first one's answer.
            with flight.flights.lead((self.namespace, r.request_hash, slot)) as leader:
                if not leader:
                    stored = self.c._lookup(self.namespace, r.request_hash, slot)
                    if stored is not None:
                        return self._serve(stored, slot)
                return self._call_api(d, slot)
        return self._call_api(d, slot)

    def _latency(self) -> float:
        return round((time.perf_counter() - self.t0) * 1000, 3)

    def _serve(self, stored: Stored, slot: int) -> dict[str, Any]:
        rec = self.c._base_record(
            self.request,
            self.namespace,
            slot=slot,
            cache_status="hit",
            status="ok",
            attempts=0,
            usage=Usage(
                stored.prompt_tokens,
                stored.completion_tokens,
                stored.cached_tokens,
                stored.reasoning_tokens,
                stored.total_tokens,
            ),
            cost_usd=Decimal(0),
            saved_usd=stored.cost_usd,
            served_response_id=stored.response_id,
        )
        rec.latency_ms = self._latency()
        self.c._write(rec, hit=True)
        if info_enabled():
            log.info("llm.cache_hit", slot=slot, latency_ms=rec.latency_ms, **self.ctx)
        return self.c._raw_model_response_extractor(stored.response)

    def _replay_miss(self, slot: int) -> None:
        err = CacheMissError(
            self.request.request_hash, self.request.model, self.request.last_message_text()
        )
        rec = self.c._base_record(
            self.request,
            self.namespace,
            slot=slot,
            cache_status="miss",
            status="error",
            error_type="CacheMissError",
            error_message=str(err),
        )
        rec.latency_ms = self._latency()
        self.c._write(rec)
        log.warning("llm.replay_miss", slot=slot, **self.ctx)
        raise err

    def _call_api(self, d: Decision, slot: int) -> dict[str, Any] | None:
        r = self.request
        rec = self.c._base_record(
            r, self.namespace, slot=slot, cache_status=d.cache_status, status="ok"
        )
        max_out = r.params.get("max_completion_tokens") or r.params.get("max_tokens") or 4096
        n = r.params.get("n") or 1
        prompt_tokens = (
            self.c._count_tokens(r.body["messages"], r.model) if current_scope().budgets else None
        )
        reserved = self.c._reserve_budget(r.model, prompt_tokens, max_out * n, rec)
        api_params = {
            "messages": r.body["messages"],
            **r.params,
            "timeout": self.transport["timeout"],
        }
        outcome = api.attempt(
            lambda: self.c._raw_model_call(r.model, dict(api_params)),
            max_attempts=self.transport["max_attempts"],
            waiting_time=self.transport["waiting_time"],
            backoff_factor=self.transport["factor"],
            sleep=self.c._sleep,
            context=self.ctx,
        )
        rec.attempts = outcome.attempts
        rec.endpoint_host = self.c._endpoint_host()
        if outcome.error is not None:
            rec.latency_ms = self._latency()
            return self.c._record_failure(rec, outcome, reserved, self.raise_errors)
        response = api.to_dict(outcome.value)
        usage = api.usage_of(response) or self._estimate_usage(response)
        cost = self.c._price(r.model, response, usage)
        self.c._settle_budget(reserved, cost.cost_usd)
        rec.usage = usage
        rec.cost_usd, rec.cost_note, rec.price_version = (
            cost.cost_usd,
            cost.note,
            cost.price_version,
        )
        rec.answers = [
            Answer(
                request_hash=r.request_hash,
                kind=r.kind,
                model=r.model,
                request=rec.request,
                response=response,
                usage=usage,
                cost_usd=cost.cost_usd,
                cost_note=cost.note,
                price_version=cost.price_version,
                store=d.store,
                namespace=self.namespace,
                slot=slot,
            )
        ]
        rec.primary_answer = 0
        rec.latency_ms = self._latency()
        winners = self.c._write(rec)
        if info_enabled():
            log.info(
                "llm.call",
                slot=slot,
                attempts=outcome.attempts,
                latency_ms=rec.latency_ms,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                cost_usd=str(cost.cost_usd) if cost.cost_usd is not None else None,
                **self.ctx,
            )
        if 0 in winners:
            # Another process stored this slot first: everyone gets that answer.
            return self.c._raw_model_response_extractor(winners[0].response)
        return self.c._raw_model_response_extractor(outcome.value)

    def _estimate_usage(self, response: dict[str, Any]) -> Usage:
        r = self.request
        prompt = self.c._count_tokens(r.body["messages"], r.model)
        completion = 0
        for choice in response.get("choices") or []:
            text = keys.message_text(choice.get("message") or {})
            counted = tokens.count_text_tokens(text, r.model)
            if counted is None:
                completion = None
                break
            completion += counted
        total = prompt + completion if prompt is not None and completion is not None else None
        return Usage(prompt, completion, None, None, total, estimated=True)


class AzureClient(OpenAIClient):
    """Azure OpenAI: the model argument is the deployment name."""

    api_type = "azure"

    def _make_sdk_client(self) -> Any:
        endpoint = os.environ.get("AZURE_OPENAI_ENDPOINT")
        key = os.environ.get("AZURE_OPENAI_API_KEY") or os.environ.get("AZURE_OPENAI_KEY")
        if not endpoint or not key:
            raise ConfigError(
                "AzureClient needs AZURE_OPENAI_ENDPOINT and AZURE_OPENAI_API_KEY (or AZURE_OPENAI_KEY); "
                "OPENAI_API_VERSION selects the API version (default 2024-06-01)"
            )
        return openai.AzureOpenAI(
            azure_endpoint=endpoint,
            api_key=key,
            api_version=os.environ.get("OPENAI_API_VERSION", "2024-06-01"),
            max_retries=0,
        )


@functools.lru_cache(maxsize=64)
def _host_of(base_url: str) -> str | None:
    netloc = urlparse(base_url).netloc
    return netloc.rpartition("@")[2] or None  # never user:password@


def _usd(amount: Decimal) -> str:
    return f"{amount.normalize():f}"


def _positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        from .errors import InvalidInputTypeError

        raise InvalidInputTypeError(f"{name} must be a number, got {type(value).__name__}")
    if value < 0 or (name == "max_attempts" and value < 1):
        from .errors import InvalidInputError

        raise InvalidInputError(f"{name}={value!r} is out of range")
    return value


def _response_format(value: Any) -> Any:
    """A pydantic model class becomes the json_schema response_format the API expects."""
    if value is None or isinstance(value, dict):
        return value
    if isinstance(value, type):
        try:
            from openai.lib._parsing._completions import type_to_response_format_param

            return dict(type_to_response_format_param(value))
        except Exception as exc:  # noqa: BLE001
            raise ConfigError(
                f"response_format {value!r} cannot be turned into a JSON schema: {exc}"
            ) from None
    raise ConfigError("response_format must be a dict or a pydantic model class")


# Pricing is a pure function of (model, token counts, config); genai-prices' lookup costs
# ~0.25 ms, more than the ledger write, so repeated shapes are priced once.
_price_memo: dict[tuple[Any, ...], pricing.Cost] = {}
_pricing_cache: dict[tuple[str | None, str | None], pricing.PricingConfig] = {}


def _pricing_from_env() -> pricing.PricingConfig:
    key = (os.environ.get("LLM_LEDGER_MODEL_MAP"), os.environ.get("LLM_LEDGER_PRICES"))
    conf = _pricing_cache.get(key)
    if conf is None:
        conf = _pricing_cache[key] = pricing.PricingConfig.from_env(os.environ)
    return conf


__all__ = ["OpenAIClient", "AzureClient"]
