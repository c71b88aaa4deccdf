"""Cost of a call in USD, from genai-prices' bundled price data or the user's own prices.

Why bundled-only: a ledger row records which price table produced its cost
(``price_version``), so the table must not change under us mid-process, and pricing must
never touch the network. We therefore price against a snapshot built from the data that ships
inside the installed genai-prices wheel and never start its ``UpdatePrices`` downloader. That
also keeps us on bundled data if some other code in the process starts the downloader.

Speed: genai-prices' own calculation costs ~100 µs a call. For models whose current prices are
plain per-token rates we replay the same Decimal arithmetic ourselves (see "Fast path" below),
which gives the identical ``Decimal`` in a few microseconds; everything else (e.g. tiered
prices) still goes through genai-prices.

Why one module of ~650 lines: the fast path replays genai-prices' arithmetic and is checked
against it per model; it belongs beside the rule (``price_call``) whose results it must equal.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation, localcontext
from types import MappingProxyType
from typing import Any

import genai_prices
from genai_prices import Usage
from genai_prices.data_snapshot import DataSnapshot
from genai_prices.types import ModelPrice, StartDateConstraint

from .log import logger

__all__ = [
    "MODEL_MAP_ENV",
    "PRICES_ENV",
    "Cost",
    "CustomPrice",
    "PricingConfig",
    "config_from_env",
    "price_answer",
    "price_call",
    "price_version",
    "worst_case_cost",
]

log = logger

MODEL_MAP_ENV = "LLM_LEDGER_MODEL_MAP"
PRICES_ENV = "LLM_LEDGER_PRICES"
_MODEL_MAP_EXAMPLE = f'{MODEL_MAP_ENV}="prod-chat=gpt-4o-mini,other=gpt-4o"'
_PRICES_EXAMPLE = (
    f'{PRICES_ENV}=\'{{"my-model": {{"input": 1.0, "output": 2.0, "cached_input": 0.5}}}}\''
    " (USD per million tokens; cached_input is optional)"
)
_PROVIDER_ID = "openai"
_MTOK = Decimal(1_000_000)
CUSTOM_VERSION = "custom"

# "-2024-07-18", "-20240718" (Anthropic style) or "-0613" (old OpenAI snapshots).
_DATE_SUFFIX = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8}|\d{4})$")


@dataclass(frozen=True)
class CustomPrice:
    """The user's own USD-per-million-token prices for a model genai-prices lacks or misprices."""

    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cached_input_per_mtok: Decimal | None = None  # None: cached tokens cost the full input price


@dataclass(frozen=True)
class PricingConfig:
    """Which name to price a deployment as, and prices that override genai-prices."""

    model_map: Mapping[str, str] = field(default_factory=dict)
    custom_prices: Mapping[str, CustomPrice] = field(default_factory=dict)
    # Its contents as a hashable value: what the price memo is keyed by (never its id).
    key: tuple[Any, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Read-only copies: the default instance is shared, and callers' dicts may change later.
        object.__setattr__(self, "model_map", MappingProxyType(dict(self.model_map)))
        object.__setattr__(self, "custom_prices", MappingProxyType(dict(self.custom_prices)))
        object.__setattr__(
            self,
            "key",
            (tuple(sorted(self.model_map.items())), tuple(sorted(self.custom_prices.items()))),
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> PricingConfig:
        """Read LLM_LEDGER_MODEL_MAP and LLM_LEDGER_PRICES; ValueError explains any mistake."""
        return cls(
            model_map=_parse_model_map(environ.get(MODEL_MAP_ENV, "")),
            custom_prices=_parse_prices(environ.get(PRICES_ENV, "")),
        )


@dataclass(frozen=True)
class Cost:
    """A priced call; ``cost_usd`` is None when it could not be priced, and ``note`` says why."""

    cost_usd: Decimal | None
    note: str | None
    price_version: str
    priced_model: str | None


def price_version() -> str:
    """Identify the genai-prices price table in use, e.g. ``"genai-prices 0.2.3"``."""
    return f"genai-prices {genai_prices.__version__}"


@functools.cache
def _bundled_snapshot() -> DataSnapshot:
    """The price table bundled in the installed wheel: no download, no auto-update."""
    from genai_prices.data import providers

    return DataSnapshot(providers=providers, from_auto_update=False)


_warm_lock = threading.Lock()
_warming: dict[int, threading.Thread] = {}  # by pid: a forked child loads its own


def load_started() -> bool:
    """Whether genai-prices' table is loaded, or loading, in this process."""
    return bool(_bundled_snapshot.cache_info().currsize) or os.getpid() in _warming


def load_in_background(model: str | None = None, config: PricingConfig | None = None) -> None:
    """Start loading genai-prices' table on a daemon thread, if it is not loaded (and
    ``model``, if given, is not custom-priced): called as a call goes out, so the ~130 ms
    load overlaps the wait for the API's answer instead of following it. The thread ends
    once it is loaded; once per process."""
    if load_started():
        return
    if model is not None and config is not None:
        if any(name in config.custom_prices for name in _candidate_names(model, config)):
            return
    with _warm_lock:
        if os.getpid() in _warming:
            return
        thread = threading.Thread(target=_load_quietly, name="llm-ledger-prices", daemon=True)
        _warming[os.getpid()] = thread
        thread.start()


def _load_quietly() -> None:
    try:
        _bundled_snapshot()
    except Exception:  # noqa: BLE001 -- the call's own pricing will load it and report
        pass


@functools.lru_cache(maxsize=4096)
def _find_model(name: str) -> tuple[Any, Any] | None:
    """genai-prices' model matching, once per name: it costs more than the price itself."""
    try:
        return _bundled_snapshot().find_provider_model(name, None, _PROVIDER_ID, None)
    except LookupError:
        return None


_warned_unpriced: set[str] = set()
_warned_lock = threading.Lock()


def price_call(
    model: str,
    *,
    prompt_tokens: int | None,
    completion_tokens: int | None,
    cached_tokens: int | None = None,
    reasoning_tokens: int | None = None,
    config: PricingConfig = PricingConfig(),  # noqa: B008 -- immutable, shared on purpose
) -> Cost:
    """Price one call from its OpenAI usage; never raises.

    OpenAI semantics: ``prompt_tokens`` includes ``cached_tokens`` and ``completion_tokens``
    includes ``reasoning_tokens``. genai-prices reads usage the same way (cache reads are a part
    of input, reasoning a part of output, billed at the output price unless the model has a
    separate reasoning price).
    """
    version = price_version()
    problem = _usage_problem(prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens)
    if problem is not None:
        return Cost(None, f"cannot price {model!r}: {problem}", version, None)
    assert prompt_tokens is not None and completion_tokens is not None
    cached = cached_tokens or 0
    reasoning = reasoning_tokens or 0

    candidates = _candidate_names(model, config)
    for name in candidates:
        custom = config.custom_prices.get(name)
        if custom is not None:
            cost = _custom_cost(custom, prompt_tokens, cached, completion_tokens)
            return Cost(cost, None, CUSTOM_VERSION, name)

    # Plain ints (the normal case) cannot make genai-prices' Usage raise, so it is only built
    # when the slow path needs it; anything else is validated up front, as it always was.
    plain_ints = (
        type(prompt_tokens) is int
        and type(completion_tokens) is int
        and type(cached) is int
        and type(reasoning) is int
    )
    usage = (
        None if plain_ints else _genai_usage(prompt_tokens, cached, completion_tokens, reasoning)
    )
    for name in candidates:
        if plain_ints:
            fast = _fast_prices.get(name)
            if fast is None or not fast.since <= time.time() < fast.until:
                found = _find_model(name)
                if found is None:
                    continue
                fast = _build_fast_price(name, *found)
            if fast.terms is not None:
                total = _fast_total(fast.terms, prompt_tokens, cached, completion_tokens, reasoning)
                return Cost(total, None, version, fast.model_id)
        found = _find_model(name)
        if found is None:
            continue
        provider, priced = found
        if usage is None:
            usage = _genai_usage(prompt_tokens, cached, completion_tokens, reasoning)
        try:
            calc = priced.calc_price(
                usage,
                provider,
                genai_request_timestamp=datetime.now(tz=timezone.utc),
                auto_update_timestamp=None,
            )
        except Exception as exc:  # a ledger write must not fail on pricing
            note = f"genai-prices could not price {name!r}: {type(exc).__name__}: {exc}"
            return Cost(None, note, version, None)
        return Cost(calc.total_price, None, version, calc.model.id)

    mapped = config.model_map.get(model)
    shown = f"{model!r} (mapped to {mapped!r})" if mapped else repr(model)
    note = (
        f"no price for model {shown} in {version}; map it with {MODEL_MAP_ENV} or set {PRICES_ENV}"
    )
    _warn_unpriced_once(model, mapped)
    return Cost(None, note, version, None)


def price_answer(
    model: str,
    response: dict[str, Any],
    usage: Any,
    config: PricingConfig | None = None,
) -> Cost:
    """The cost of one API answer: the one pricing rule of the client, pickles and reprice.

    Priced as the configured mapping (or custom price) says, else as the model the response
    names (Azure names the real model behind a deployment), else as the requested name.
    Embeddings (``"object": "list"``) have no completion tokens. ``usage`` is a
    ``records.Usage``. ``config`` defaults to LLM_LEDGER_MODEL_MAP / LLM_LEDGER_PRICES.

    Repeated shapes are priced once: the memo is keyed by the config's contents and the UTC
    day (genai-prices' prices change at UTC midnight), so neither a new config nor a new day
    is ever given an old price.
    """
    conf = config_from_env() if config is None else config
    mapped = model in conf.model_map or model in conf.custom_prices
    priced = model if mapped else response.get("model") or model
    completion = usage.completion_tokens
    if completion is None and response.get("object") == "list":
        completion = 0
    key = (
        priced,
        usage.prompt_tokens,
        completion,
        usage.cached_tokens,
        usage.reasoning_tokens,
        conf.key,
        int(time.time() // 86_400),
    )
    cost = _answer_memo.get(key)
    if cost is None:
        cost = price_call(
            priced,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=completion,
            cached_tokens=usage.cached_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            config=conf,
        )
        if len(_answer_memo) >= _ANSWER_MEMO_MAX:
            _answer_memo.clear()
        _answer_memo[key] = cost
    return cost


# genai-prices' lookup costs more than the ledger write: repeated shapes are priced once.
_ANSWER_MEMO_MAX = 10_000
_answer_memo: dict[tuple[Any, ...], Cost] = {}
_env_configs: dict[tuple[str | None, str | None], PricingConfig] = {}


def config_from_env(environ: Mapping[str, str] | None = None) -> PricingConfig:
    """The config LLM_LEDGER_MODEL_MAP / LLM_LEDGER_PRICES describe, parsed once per value."""
    env = os.environ if environ is None else environ
    key = (env.get(MODEL_MAP_ENV), env.get(PRICES_ENV))
    conf = _env_configs.get(key)
    if conf is None:
        conf = _env_configs[key] = PricingConfig.from_env(env)
    return conf


def worst_case_cost(
    model: str,
    prompt_tokens: int,
    max_tokens: int,
    config: PricingConfig = PricingConfig(),  # noqa: B008 -- immutable, shared on purpose
) -> Decimal | None:
    """Upper bound of a call's cost before sending it: nothing cached, all ``max_tokens`` used."""
    return price_call(
        model, prompt_tokens=prompt_tokens, completion_tokens=max_tokens, config=config
    ).cost_usd


def _genai_usage(prompt: Any, cached: Any, completion: Any, reasoning: Any) -> Usage:
    """The usage as genai-prices reads it: cache reads within input, reasoning within output."""
    return Usage(
        input_tokens=prompt,
        cache_read_tokens=cached or None,
        output_tokens=completion,
        output_reasoning_tokens=reasoning or None,
    )


# --- Fast path ----------------------------------------------------------------------------
# genai-prices' ModelInfo.calc_price (unit registry, usage inference, leaf decomposition) costs
# ~100 µs, and real usages rarely repeat, so caching results would not help. But when a model's
# active prices are all plain Decimals, its total is a fixed sequence of Decimal operations:
# start at Decimal(0) and, for each price key in the ModelPrice's own order, add
# ``price * Decimal(count) / unit.per``, where each count is a linear function of (prompt,
# cached, completion, reasoning) -- e.g. input = prompt - cached once cache reads are priced.
# _build_fast_price derives that sequence once per model name from genai-prices' own unit
# registry (mirroring genai_prices.decompose.compute_leaf_values), checks it against
# genai-prices on sample usages, and price_call then replays it: same operations, same order,
# same decimal context, hence the identical Decimal (value and exponent). Tiered prices,
# time-of-day prices, unknown price keys, non-int usage or a failed check use the slow path.
# Conditional prices with only start dates are resolved per UTC day (they cannot change
# within one) and rebuilt when the day changes.

_FAST_CACHE_MAX = 4096  # like _find_model's cache: model names come from callers
_TOKEN_VECTORS: dict[str, tuple[int, int, int, int]] = {
    # genai-prices usage key -> its count in terms of (prompt, cached, completion, reasoning)
    "input_tokens": (1, 0, 0, 0),
    "cache_read_tokens": (0, 1, 0, 0),
    "output_tokens": (0, 0, 1, 0),
    "output_reasoning_tokens": (0, 0, 0, 1),
}
# Leaf counts the fast path supports -> index into the counts tuple built in _fast_total.
_COUNT_INDEX: dict[tuple[int, int, int, int], int] = {
    (1, 0, 0, 0): 0,  # prompt (input when cache reads are not priced separately)
    (0, 1, 0, 0): 1,  # cached
    (0, 0, 1, 0): 2,  # completion (output when reasoning is not priced separately)
    (0, 0, 0, 1): 3,  # reasoning
    (1, -1, 0, 0): 4,  # prompt - cached
    (0, 0, 1, -1): 5,  # completion - reasoning
}
_ONE_REQUEST = 6  # genai-prices bills a per-request price for one request
# (prompt, cached, completion, reasoning) usages the fast path must price like genai-prices.
_SELF_CHECK_USAGES = (
    (0, 0, 0, 0),
    (1, 0, 1, 0),
    (1, 1, 1, 1),
    (1000, 0, 200, 0),
    (1000, 800, 200, 150),
    (123_457, 99_999, 7_531, 7_530),
    (2_000_000, 1_234_567, 200_000, 150_001),
    (1_000_000_007, 3, 100_000_009, 5),
)

# A term: (price, per, count index, None), or (None, None, None, zero) for a priced unit whose
# count is always 0 here (e.g. web searches): its zero still sets the total's exponent.
_Term = tuple[Any, Any, Any, Any]


@dataclass(frozen=True)
class _FastPrice:
    """How to price one model name without genai-prices, valid while since <= time() < until."""

    model_id: str
    terms: tuple[_Term, ...] | None  # None: this model takes the slow path
    since: float = -math.inf
    until: float = math.inf


_fast_prices: dict[str, _FastPrice] = {}


def _fast_total(
    terms: tuple[_Term, ...], prompt: int, cached: int, completion: int, reasoning: int
) -> Decimal:
    """genai-prices' total for a valid usage (see _usage_problem), with the same operations.

    ``price * count`` with an int count is exactly ``price * Decimal(count)``, and dividing by
    ``Decimal(per)`` exactly dividing by the int ``per``, as genai-prices does; only faster.
    """
    counts = (prompt, cached, completion, reasoning, prompt - cached, completion - reasoning, 1)
    total = Decimal(0)
    for price, per, index, zero in terms:
        if price is None:
            total += zero
        else:
            total += price * counts[index] / per
    return total


def _build_fast_price(
    name: str, provider: Any, priced: Any, now: datetime | None = None
) -> _FastPrice:
    """Derive, check and cache the fast-path terms for ``name``; terms None if not eligible.

    ``now`` (default: the current time) picks the conditional prices; tests pass other dates.
    The check runs in a default decimal context, so a caller's odd context (tiny precision,
    trapped Inexact) cannot disable the fast path; priced calls then use the caller's
    context, exactly as genai-prices would.
    """
    now = now or datetime.now(tz=timezone.utc)
    since, until = -math.inf, math.inf
    terms: tuple[_Term, ...] | None = None
    try:
        prices = priced.prices
        eligible = provider.id == _PROVIDER_ID  # genai-prices special-cases some other providers
        if not isinstance(prices, ModelPrice):
            # Start dates switch prices at UTC midnight, so today's prices hold all day.
            # Time-of-day (off-peak) or unknown constraints: slow path.
            eligible = eligible and all(
                conditional.constraint is None
                or type(conditional.constraint) is StartDateConstraint
                for conditional in prices
            )
            today = now.date()
            since = datetime(today.year, today.month, today.day, tzinfo=timezone.utc).timestamp()
            until = since + 86_400
        with localcontext(Context(prec=28, rounding=ROUND_HALF_EVEN)):
            if eligible:
                terms = _fast_terms(priced.get_prices(now))
            if terms is not None and not _agrees_with_genai_prices(terms, provider, priced, now):
                terms = None
    except Exception:  # any surprise in genai-prices' internals: just use the slow path
        terms = None
    fast = _FastPrice(priced.id, terms, since, until)
    if len(_fast_prices) >= _FAST_CACHE_MAX:
        _fast_prices.clear()
    _fast_prices[name] = fast
    return fast


def _fast_terms(model_price: Any) -> tuple[_Term, ...] | None:
    """The fast-path terms for a resolved ModelPrice, or None if it is not plain Decimal rates."""
    from genai_prices.decompose import is_descendant_or_self
    from genai_prices.units import _get_registry

    if type(model_price) is not ModelPrice:
        return None
    registry = _get_registry()
    # A usage reporting every count we pass: a priced key outside _TOKEN_VECTORS must read as 0
    # from it, as genai-prices infers; if it does here, it does for any subset of these counts.
    probe = _genai_usage(1, 1, 1, 1)
    priced_units = []
    for key, price in model_price.__dict__.items():
        if key.startswith("_") or price is None:
            continue
        if type(price) is not Decimal or not price.is_finite() or price < 0:
            return None  # tiered, or a value genai-prices would reject
        unit = registry.unit_for_price_key(key)  # KeyError (unknown key): slow path
        if unit.usage_key != "requests" and unit.usage_key not in _TOKEN_VECTORS:
            if getattr(probe, unit.usage_key) != 0:
                return None
        priced_units.append((unit, price))

    # Leaf counts as in genai_prices.decompose.compute_leaf_values: a unit's own count minus
    # the leaf counts of its priced descendants (most specific units first).
    token_units = sorted(
        (unit for unit, _ in priced_units if unit.usage_key != "requests"),
        key=lambda unit: (-len(unit.dimensions), unit.usage_key),
    )
    leaves: dict[str, tuple[int, int, int, int]] = {}
    for unit in token_units:
        a, b, c, d = _TOKEN_VECTORS.get(unit.usage_key, (0, 0, 0, 0))
        for other in token_units:
            if other is not unit and is_descendant_or_self(unit, other):
                oa, ob, oc, od = leaves[other.usage_key]
                a, b, c, d = a - oa, b - ob, c - oc, d - od
        leaves[unit.usage_key] = (a, b, c, d)

    terms: list[_Term] = []
    for unit, price in priced_units:
        if unit.usage_key == "requests":
            terms.append((price, Decimal(unit.per), _ONE_REQUEST, None))
        elif any(leaves[unit.usage_key]):
            index = _COUNT_INDEX.get(leaves[unit.usage_key])
            if index is None:
                return None  # an unusual decomposition: let genai-prices do it
            terms.append((price, Decimal(unit.per), index, None))
        else:
            terms.append((None, None, None, price * Decimal(0) / unit.per))
    return tuple(terms)


def _agrees_with_genai_prices(
    terms: tuple[_Term, ...], provider: Any, priced: Any, now: datetime
) -> bool:
    """Whether the terms reproduce genai-prices exactly (value and representation)."""
    for prompt, cached, completion, reasoning in _SELF_CHECK_USAGES:
        usage = _genai_usage(prompt, cached, completion, reasoning)
        calc = priced.calc_price(
            usage, provider, genai_request_timestamp=now, auto_update_timestamp=None
        )
        fast = _fast_total(terms, prompt, cached, completion, reasoning)
        if (
            fast != calc.total_price
            or str(fast) != str(calc.total_price)
            or calc.model.id != priced.id
        ):
            return False
    return True


def _candidate_names(model: str, config: PricingConfig) -> tuple[str, ...]:
    """Names to try, best first: the mapped name, the name itself, then without a date suffix."""
    return _candidates_for(model, config.model_map.get(model))


@functools.lru_cache(maxsize=4096)
def _candidates_for(model: str, mapped: str | None) -> tuple[str, ...]:
    names: list[str] = []
    for name in (mapped, model):
        if name:
            for candidate in (name, _DATE_SUFFIX.sub("", name)):
                if candidate and candidate not in names:
                    names.append(candidate)
    return tuple(names)


def _usage_problem(
    prompt: int | None, completion: int | None, cached: int | None, reasoning: int | None
) -> str | None:
    """Say what is wrong with the usage numbers, or None when they can be priced."""
    if prompt is None or completion is None:
        missing = [
            n
            for n, v in (("prompt_tokens", prompt), ("completion_tokens", completion))
            if v is None
        ]
        return f"usage is missing {' and '.join(missing)}"
    for label, value in (
        ("prompt_tokens", prompt),
        ("completion_tokens", completion),
        ("cached_tokens", cached),
        ("reasoning_tokens", reasoning),
    ):
        if value is not None and value < 0:
            return f"{label} is negative ({value})"
    if cached is not None and cached > prompt:
        return f"cached_tokens ({cached}) exceed prompt_tokens ({prompt})"
    if reasoning is not None and reasoning > completion:
        return f"reasoning_tokens ({reasoning}) exceed completion_tokens ({completion})"
    return None


def _custom_cost(price: CustomPrice, prompt: int, cached: int, completion: int) -> Decimal:
    """Cost with the user's prices; cached tokens are the part of the prompt billed differently."""
    cached_rate = (
        price.cached_input_per_mtok
        if price.cached_input_per_mtok is not None
        else price.input_per_mtok
    )
    total = (
        (prompt - cached) * price.input_per_mtok
        + cached * cached_rate
        + completion * price.output_per_mtok
    )
    return total / _MTOK


def _warn_unpriced_once(model: str, mapped: str | None) -> None:
    """Log each unpriced model once per process; the note on every row carries the detail."""
    with _warned_lock:
        if model in _warned_unpriced:
            return
        _warned_unpriced.add(model)
    log.warning(
        "pricing.model_unpriced",
        model=model,
        mapped_to=mapped,
        price_version=price_version(),
    )


def _parse_model_map(raw: str) -> dict[str, str]:
    """Parse ``alias=model,alias2=model2``."""
    result: dict[str, str] = {}
    for entry in raw.split(","):
        entry = entry.strip()
        if not entry:
            continue
        alias, sep, target = (part.strip() for part in entry.partition("="))
        if not sep or not alias or not target:
            raise ValueError(
                f"{MODEL_MAP_ENV}: entry {entry!r} is not of the form alias=model; "
                f"expected comma-separated alias=model pairs, e.g. {_MODEL_MAP_EXAMPLE}"
            )
        if alias in result and result[alias] != target:
            raise ValueError(
                f"{MODEL_MAP_ENV}: alias {alias!r} is mapped twice "
                f"({result[alias]!r} and {target!r}); e.g. {_MODEL_MAP_EXAMPLE}"
            )
        result[alias] = target
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a price")


def _parse_prices(raw: str) -> dict[str, CustomPrice]:
    """Parse the JSON object of per-model USD-per-million-token prices."""
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw, parse_float=Decimal, parse_constant=_reject_constant)
    except ValueError as exc:
        raise ValueError(f"{PRICES_ENV}: not valid JSON ({exc}); e.g. {_PRICES_EXAMPLE}") from None
    if not isinstance(data, dict):
        raise ValueError(
            f"{PRICES_ENV}: expected a JSON object of model -> prices, "
            f"got {type(data).__name__}; e.g. {_PRICES_EXAMPLE}"
        )
    prices: dict[str, CustomPrice] = {}
    for model, entry in data.items():
        if not model.strip():
            raise ValueError(f"{PRICES_ENV}: empty model name; e.g. {_PRICES_EXAMPLE}")
        if not isinstance(entry, dict):
            raise ValueError(
                f"{PRICES_ENV}: prices for {model!r} must be an object, "
                f"got {type(entry).__name__}; e.g. {_PRICES_EXAMPLE}"
            )
        unknown = sorted(set(entry) - {"input", "output", "cached_input"})
        if unknown:
            raise ValueError(
                f"{PRICES_ENV}: unknown key(s) {unknown} for {model!r} "
                f"(allowed: input, output, cached_input); e.g. {_PRICES_EXAMPLE}"
            )
        missing = [key for key in ("input", "output") if key not in entry]
        if missing:
            raise ValueError(
                f"{PRICES_ENV}: {model!r} is missing {' and '.join(missing)}; e.g. {_PRICES_EXAMPLE}"
            )
        cached = entry.get("cached_input")
        prices[model] = CustomPrice(
            input_per_mtok=_price(model, "input", entry["input"]),
            output_per_mtok=_price(model, "output", entry["output"]),
            cached_input_per_mtok=None if cached is None else _price(model, "cached_input", cached),
        )
    return prices


def _price(model: str, key: str, value: object) -> Decimal:
    """A finite, non-negative number as an exact Decimal (JSON floats arrive as Decimal)."""
    if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
        raise ValueError(
            f"{PRICES_ENV}: {model!r} {key} must be a number, got {value!r}; e.g. {_PRICES_EXAMPLE}"
        )
    try:
        number = Decimal(value)
    except InvalidOperation:  # pragma: no cover -- json only yields valid numbers
        raise ValueError(f"{PRICES_ENV}: {model!r} {key} is not a number") from None
    if not number.is_finite() or number < 0:
        raise ValueError(
            f"{PRICES_ENV}: {model!r} {key} must be a non-negative number, got {value}; "
            f"e.g. {_PRICES_EXAMPLE}"
        )
    return number
