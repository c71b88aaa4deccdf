"""The pricing fast path gives exactly genai-prices' answer, and is really taken.

``price_call`` replays genai-prices' Decimal arithmetic for models with plain per-token prices
(see "Fast path" in llm_ledger/pricing.py). Every check here compares against genai-prices
itself, priced the slow way, with ``==`` and ``str`` (same value and same exponent).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import date, datetime, time, timezone
from decimal import Decimal, localcontext

import genai_prices
import pytest
from genai_prices import Usage
from genai_prices.types import (
    ConditionalPrice,
    ModelInfo,
    StartDateConstraint,
    TimeOfDateConstraint,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm_ledger import pricing
from llm_ledger.pricing import Cost, PricingConfig, price_call

VERSION = f"genai-prices {genai_prices.__version__}"

# Names an OpenAI user sends; each must resolve in the bundled data and take the fast path.
FAST_MODELS = [
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4o-2024-08-06",
    "gpt-4o-2024-05-13",
    "gpt-4o-mini-2024-07-18",
    "chatgpt-4o-latest",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-4.1-nano",
    "gpt-4-turbo",
    "gpt-3.5-turbo",
    "o1",
    "o3",  # conditional prices (a start date): resolved per UTC day
    "o3-mini",
    "o4-mini",
    "gpt-5",
    "gpt-5-mini",
    "gpt-5-nano",
    "gpt-4o-realtime-preview",  # audio prices: zero for a text usage, but they set the exponent
    "text-embedding-3-small",
    "text-embedding-3-large",
    "text-embedding-ada-002",
    "ft:gpt-4o-mini-2024-07-18:acme::abc123",
]
TIERED_MODEL = "gpt-5.4"  # input/output prices change above a token threshold

SETTINGS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@pytest.fixture(autouse=True)
def fresh_fast_cache(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, object]]:
    """Each test builds its fast-path entries from scratch."""
    cache: dict[str, object] = {}
    monkeypatch.setattr(pricing, "_fast_prices", cache)
    yield cache


@pytest.fixture
def genai_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Count genai-prices' (slow) price calculations, by model id."""
    calls: list[str] = []
    original = ModelInfo.calc_price

    def counting(self: ModelInfo, *args: object, **kwargs: object) -> object:
        calls.append(self.id)
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ModelInfo, "calc_price", counting)
    return calls


def slow_cost(
    model: str,
    prompt: int,
    cached: int,
    completion: int,
    reasoning: int,
    config: PricingConfig = PricingConfig(),  # noqa: B008
    now: datetime | None = None,
) -> Cost:
    """genai-prices' own answer, via its public snapshot API, for price_call's candidate names."""
    snapshot = pricing._bundled_snapshot()
    for name in pricing._candidate_names(model, config):
        try:
            snapshot.find_provider_model(name, None, "openai", None)
        except LookupError:
            continue
        usage = Usage(
            input_tokens=prompt,
            cache_read_tokens=cached or None,
            output_tokens=completion,
            output_reasoning_tokens=reasoning or None,
        )
        calc = snapshot.calc(usage, name, "openai", None, now or datetime.now(tz=timezone.utc))
        return Cost(calc.total_price, None, VERSION, calc.model.id)
    raise AssertionError(f"{model} is not in the bundled data")


def assert_identical(got: Cost, expected: Cost) -> None:
    assert got == expected
    assert str(got.cost_usd) == str(expected.cost_usd)  # same exponent, not just same value


@st.composite
def usages(draw: st.DrawFn) -> tuple[int, int, int, int]:
    prompt = draw(st.integers(0, 2_000_000))
    cached = draw(st.integers(0, prompt))
    completion = draw(st.integers(0, 200_000))
    reasoning = draw(st.integers(0, completion))
    return prompt, cached, completion, reasoning


FIXED_USAGES = [
    (0, 0, 0, 0),
    (1, 0, 0, 0),
    (0, 0, 1, 0),
    (1000, 0, 200, 0),
    (1000, 800, 200, 150),
    (1000, 1000, 200, 200),
    (10, 0, 1_000_000, 999_999),
    (2_000_000, 1_999_999, 200_000, 0),
    (123_456_789, 12_345, 9_876_543, 1),
]


@pytest.mark.parametrize("model", FAST_MODELS)
def test_fast_path_matches_genai_prices_on_fixed_usages(model: str) -> None:
    for prompt, cached, completion, reasoning in FIXED_USAGES:
        got = price_call(
            model,
            prompt_tokens=prompt,
            completion_tokens=completion,
            cached_tokens=cached,
            reasoning_tokens=reasoning,
        )
        assert_identical(got, slow_cost(model, prompt, cached, completion, reasoning))
    fast = pricing._fast_prices[model]
    assert fast.terms is not None, f"{model} should take the fast path"  # type: ignore[attr-defined]


@SETTINGS
@given(model=st.sampled_from(FAST_MODELS), usage=usages())
def test_fast_path_matches_genai_prices(model: str, usage: tuple[int, int, int, int]) -> None:
    prompt, cached, completion, reasoning = usage
    got = price_call(
        model,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_tokens=cached,
        reasoning_tokens=reasoning,
    )
    assert_identical(got, slow_cost(model, prompt, cached, completion, reasoning))
    assert got.note is None and got.price_version == VERSION


@SETTINGS
@given(usage=usages())
def test_cached_and_reasoning_none_or_zero_price_alike(usage: tuple[int, int, int, int]) -> None:
    prompt, _, completion, _ = usage
    as_none = price_call("gpt-4o-mini", prompt_tokens=prompt, completion_tokens=completion)
    as_zero = price_call(
        "gpt-4o-mini",
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_tokens=0,
        reasoning_tokens=0,
    )
    assert_identical(as_none, as_zero)
    assert_identical(as_none, slow_cost("gpt-4o-mini", prompt, 0, completion, 0))


def test_every_openai_model_matches_genai_prices() -> None:
    """Each model in the bundled OpenAI table, fast or not, prices as genai-prices does."""
    snapshot = pricing._bundled_snapshot()
    openai = next(p for p in snapshot.providers if p.id == "openai")
    checked = 0
    for info in openai.models:
        if pricing._find_model(info.id) is None:
            continue  # e.g. "ft:gpt-4o": its match rule needs a longer name
        for prompt, cached, completion, reasoning in FIXED_USAGES:
            got = price_call(
                info.id,
                prompt_tokens=prompt,
                completion_tokens=completion,
                cached_tokens=cached,
                reasoning_tokens=reasoning,
            )
            try:
                expected = slow_cost(info.id, prompt, cached, completion, reasoning)
            except Exception as exc:
                assert got.cost_usd is None and got.note is not None, (info.id, exc)
            else:
                assert_identical(got, expected)
        checked += 1
    assert checked > 50


@pytest.mark.parametrize(("prompt", "completion"), [(1000, 200), (300_000, 50_000)])
def test_tiered_model_via_model_map_takes_the_slow_path(
    prompt: int, completion: int, genai_calls: list[str]
) -> None:
    config = PricingConfig(model_map={"prod-chat": TIERED_MODEL})
    got = price_call(
        "prod-chat",
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_tokens=prompt // 2,
        config=config,
    )
    assert genai_calls == [TIERED_MODEL]  # no self-check for a tiered model, one slow price
    assert_identical(got, slow_cost("prod-chat", prompt, prompt // 2, completion, 0, config))
    assert got.priced_model == TIERED_MODEL
    assert pricing._fast_prices[TIERED_MODEL].terms is None  # type: ignore[attr-defined]


def test_tiered_prices_really_are_not_linear() -> None:
    """What the fast path must not do: scale one call's price to a bigger one."""
    small = price_call(TIERED_MODEL, prompt_tokens=100_000, completion_tokens=0)
    big = price_call(TIERED_MODEL, prompt_tokens=300_000, completion_tokens=0)
    assert small.cost_usd is not None and big.cost_usd is not None
    assert big.cost_usd != 3 * small.cost_usd
    assert_identical(big, slow_cost(TIERED_MODEL, 300_000, 0, 0, 0))


def test_fast_path_skips_genai_prices_after_the_first_call(genai_calls: list[str]) -> None:
    first = price_call("gpt-4o-mini", prompt_tokens=1000, completion_tokens=200)
    assert first == Cost(Decimal("0.00027"), None, VERSION, "gpt-4o-mini")
    # Building the entry checked it against genai-prices once per sample usage...
    assert genai_calls == ["gpt-4o-mini"] * len(pricing._SELF_CHECK_USAGES)
    genai_calls.clear()
    for i in range(200):
        price_call(
            "gpt-4o-mini",
            prompt_tokens=1000 + i,
            completion_tokens=i,
            cached_tokens=i // 2,
            reasoning_tokens=i // 3,
        )
        price_call("gpt-4o-mini-2024-07-18", prompt_tokens=i, completion_tokens=i)
    # ... and after that nothing reaches genai-prices but the dated name's own first build.
    assert genai_calls == ["gpt-4o-mini"] * len(pricing._SELF_CHECK_USAGES)


def test_custom_prices_and_bad_usage_still_come_first(genai_calls: list[str]) -> None:
    config = pricing.PricingConfig.from_env(
        {"LLM_LEDGER_PRICES": '{"gpt-4o-mini": {"input": 1, "output": 2}}'}
    )
    custom = price_call("gpt-4o-mini", prompt_tokens=1_000_000, completion_tokens=0, config=config)
    assert custom == Cost(Decimal(1), None, "custom", "gpt-4o-mini")
    bad = price_call("gpt-4o-mini", prompt_tokens=10, completion_tokens=0, cached_tokens=11)
    assert bad.cost_usd is None and bad.note is not None and "exceed" in bad.note
    assert genai_calls == [] and pricing._fast_prices == {}


def test_non_int_usage_takes_the_slow_path(genai_calls: list[str]) -> None:
    got = price_call("gpt-4o-mini", prompt_tokens=1000.0, completion_tokens=200)  # type: ignore[arg-type]
    assert genai_calls == ["gpt-4o-mini"]  # straight to genai-prices, no fast-path build
    assert pricing._fast_prices == {}
    usage = Usage(input_tokens=1000.0, output_tokens=200)
    calc = pricing._bundled_snapshot().calc(usage, "gpt-4o-mini", "openai", None, None)
    assert_identical(got, Cost(calc.total_price, None, VERSION, "gpt-4o-mini"))


def test_caller_decimal_context_is_honoured_like_genai_prices() -> None:
    with localcontext() as ctx:
        ctx.prec = 4
        got = price_call(
            "gpt-4o", prompt_tokens=1_234_567, completion_tokens=98_765, cached_tokens=4_321
        )
        expected = slow_cost("gpt-4o", 1_234_567, 4_321, 98_765, 0)
    assert pricing._fast_prices["gpt-4o"].terms is not None  # type: ignore[attr-defined]
    assert_identical(got, expected)
    assert len(got.cost_usd.as_tuple().digits) <= 4  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("day", "input_usd"),
    [(date(2025, 6, 9), Decimal("10")), (date(2025, 6, 10), Decimal("2"))],
)
def test_start_date_prices_are_resolved_for_one_utc_day(day: date, input_usd: Decimal) -> None:
    provider, o3 = pricing._find_model("o3")  # type: ignore[misc]
    noon = datetime.combine(day, time(12), tzinfo=timezone.utc)
    fast = pricing._build_fast_price("o3", provider, o3, now=noon)
    assert fast.terms is not None
    midnight = datetime.combine(day, time(0), tzinfo=timezone.utc).timestamp()
    assert (fast.since, fast.until) == (midnight, midnight + 86_400)
    total = pricing._fast_total(fast.terms, 1_000_000, 0, 0, 0)
    assert total == input_usd
    for usage in FIXED_USAGES:
        prompt, cached, completion, reasoning = usage
        expected = slow_cost("o3", prompt, cached, completion, reasoning, now=noon)
        got = pricing._fast_total(fast.terms, prompt, cached, completion, reasoning)
        assert got == expected.cost_usd and str(got) == str(expected.cost_usd)


def test_expired_entry_is_rebuilt(fresh_fast_cache: dict[str, object]) -> None:
    bogus = pricing._FastPrice("bogus", ((Decimal(1), Decimal(1), 0, None),), since=0, until=1)
    fresh_fast_cache["gpt-4o-mini"] = bogus
    got = price_call("gpt-4o-mini", prompt_tokens=1000, completion_tokens=200)
    assert got == Cost(Decimal("0.00027"), None, VERSION, "gpt-4o-mini")
    rebuilt = fresh_fast_cache["gpt-4o-mini"]
    assert rebuilt is not bogus
    assert (rebuilt.since, rebuilt.until) == (-math.inf, math.inf)  # type: ignore[attr-defined]


def test_time_of_day_prices_take_the_slow_path() -> None:
    """Off-peak pricing (deepseek style) can change within a day: never cached."""
    provider, mini = pricing._find_model("gpt-4o-mini")  # type: ignore[misc]
    plain = mini.prices
    off_peak = ModelInfo(
        id="off-peak-model",
        match=mini.match,
        prices=[
            ConditionalPrice(prices=plain),
            ConditionalPrice(
                constraint=TimeOfDateConstraint(start_time=time(16, 30), end_time=time(0, 30)),
                prices=plain,
            ),
        ],
    )
    assert pricing._build_fast_price("off-peak-model", provider, off_peak).terms is None
    start_dated = ModelInfo(
        id="start-dated-model",
        match=mini.match,
        prices=[
            ConditionalPrice(prices=plain),
            ConditionalPrice(constraint=StartDateConstraint(date(2020, 1, 1)), prices=plain),
        ],
    )
    assert pricing._build_fast_price("start-dated-model", provider, start_dated).terms is not None


def test_a_failed_self_check_disables_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def wrong_terms(model_price: object) -> tuple[object, ...]:
        return ((Decimal(1), Decimal(1), 0, None),)  # $1 per prompt token: not gpt-4o's price

    monkeypatch.setattr(pricing, "_fast_terms", wrong_terms)
    got = price_call("gpt-4o", prompt_tokens=1000, completion_tokens=200)
    assert pricing._fast_prices["gpt-4o"].terms is None  # type: ignore[attr-defined]
    assert_identical(got, slow_cost("gpt-4o", 1000, 0, 200, 0))


def test_unknown_model_is_not_cached(fresh_fast_cache: dict[str, object]) -> None:
    got = price_call("prod-chat-unknown", prompt_tokens=1, completion_tokens=1)
    assert got.cost_usd is None and got.note is not None
    assert fresh_fast_cache == {}
