"""Cost of a call in USD, from genai-prices' bundled price data or the user's own prices.

Why bundled-only: a ledger row records which price table produced its cost
(``price_version``), so the table must not change under us mid-process, and pricing must
never touch the network. We therefore price against a snapshot built from the data that ships
inside the installed genai-prices wheel and never start its ``UpdatePrices`` downloader. That
also keeps us on bundled data if some other code in the process starts the downloader.
"""

from __future__ import annotations

import functools
import json
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any

import genai_prices
import structlog
from genai_prices import Usage
from genai_prices.data_snapshot import DataSnapshot

__all__ = [
    "MODEL_MAP_ENV",
    "PRICES_ENV",
    "Cost",
    "CustomPrice",
    "PricingConfig",
    "price_call",
    "price_version",
    "worst_case_cost",
]

log = structlog.get_logger("llm_ledger")

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

    def __post_init__(self) -> None:
        # Read-only copies: the default instance is shared, and callers' dicts may change later.
        object.__setattr__(self, "model_map", MappingProxyType(dict(self.model_map)))
        object.__setattr__(self, "custom_prices", MappingProxyType(dict(self.custom_prices)))

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

    candidates = _candidate_names(model, config)
    for name in candidates:
        custom = config.custom_prices.get(name)
        if custom is not None:
            cost = _custom_cost(custom, prompt_tokens, cached, completion_tokens)
            return Cost(cost, None, CUSTOM_VERSION, name)

    usage = Usage(
        input_tokens=prompt_tokens,
        cache_read_tokens=cached or None,
        output_tokens=completion_tokens,
        output_reasoning_tokens=reasoning_tokens or None,
    )
    for name in candidates:
        found = _find_model(name)
        if found is None:
            continue
        provider, priced = found
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


def _candidate_names(model: str, config: PricingConfig) -> list[str]:
    """Names to try, best first: the mapped name, the name itself, then without a date suffix."""
    names: list[str] = []
    for name in (config.model_map.get(model), model):
        if name:
            for candidate in (name, _DATE_SUFFIX.sub("", name)):
                if candidate and candidate not in names:
                    names.append(candidate)
    return names


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
