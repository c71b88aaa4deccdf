"""Pricing from genai-prices' bundled data, user overrides and env parsing."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from decimal import Decimal

import genai_prices
import pytest
from genai_prices import data_snapshot, update_prices
from structlog.testing import capture_logs

from llm_ledger import pricing
from llm_ledger.pricing import Cost, CustomPrice, PricingConfig, price_call, worst_case_cost

VERSION = f"genai-prices {genai_prices.__version__}"


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every pricing test runs with the network and genai-prices' updater booby-trapped."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(update_prices.UpdatePrices, "start", refuse)
    monkeypatch.setattr(update_prices.UpdatePrices, "fetch", refuse)


def test_price_version() -> None:
    assert pricing.price_version() == VERSION
    assert VERSION == "genai-prices 0.2.3"  # the figures below were hand-checked against 0.2.3


def test_gpt_4o_mini_hand_checked() -> None:
    # 1000 * $0.15/M + 200 * $0.60/M
    cost = price_call("gpt-4o-mini", prompt_tokens=1000, completion_tokens=200)
    assert cost == Cost(Decimal("0.00027"), None, VERSION, "gpt-4o-mini")


def test_cached_tokens_are_part_of_prompt() -> None:
    # 200 * $0.15/M + 800 * $0.075/M + 200 * $0.60/M
    cost = price_call("gpt-4o-mini", prompt_tokens=1000, completion_tokens=200, cached_tokens=800)
    assert cost.cost_usd == Decimal("0.00021")
    assert cost.note is None


def test_embedding_hand_checked() -> None:
    # 1000 * $0.02/M
    cost = price_call("text-embedding-3-small", prompt_tokens=1000, completion_tokens=0)
    assert cost.cost_usd == Decimal("0.00002")
    assert cost.priced_model == "text-embedding-3-small"


def test_reasoning_tokens_are_part_of_completion() -> None:
    # o3-mini: 1000 * $1.10/M + 200 * $4.40/M, whether or not 150 of the 200 were reasoning.
    plain = price_call("o3-mini", prompt_tokens=1000, completion_tokens=200)
    reasoning = price_call(
        "o3-mini", prompt_tokens=1000, completion_tokens=200, reasoning_tokens=150
    )
    assert plain.cost_usd == reasoning.cost_usd == Decimal("0.00198")


def test_dated_snapshot_names() -> None:
    dated = price_call("gpt-4o-mini-2024-07-18", prompt_tokens=1000, completion_tokens=200)
    assert dated.cost_usd == Decimal("0.00027")
    assert dated.priced_model == "gpt-4o-mini"


def test_date_suffix_stripped_as_fallback() -> None:
    # An alias genai-prices does not know, but whose undated name it does.
    config = PricingConfig(custom_prices={"acme-chat": CustomPrice(Decimal(1), Decimal(2))})
    cost = price_call(
        "acme-chat-2031-01-01", prompt_tokens=1_000_000, completion_tokens=0, config=config
    )
    assert cost == Cost(Decimal(1), None, "custom", "acme-chat")


def test_unknown_model_is_null_with_note() -> None:
    with capture_logs() as logs:
        cost = price_call("prod-chat", prompt_tokens=1000, completion_tokens=200)
        price_call("prod-chat", prompt_tokens=1, completion_tokens=1)
    assert cost.cost_usd is None
    assert cost.priced_model is None
    assert cost.price_version == VERSION
    assert cost.note == (
        "no price for model 'prod-chat' in genai-prices 0.2.3; "
        "map it with LLM_LEDGER_MODEL_MAP or set LLM_LEDGER_PRICES"
    )
    warnings = [e for e in logs if e["event"] == "pricing.model_unpriced"]
    assert len(warnings) <= 1  # once per process (may already have fired in another test)


def test_model_map() -> None:
    config = PricingConfig(model_map={"prod-chat": "gpt-4o-mini"})
    cost = price_call("prod-chat", prompt_tokens=1000, completion_tokens=200, config=config)
    assert cost == Cost(Decimal("0.00027"), None, VERSION, "gpt-4o-mini")


def test_mapped_to_unknown_model_names_both() -> None:
    config = PricingConfig(model_map={"prod-chat": "gpt-9-ultra"})
    cost = price_call("prod-chat", prompt_tokens=1000, completion_tokens=200, config=config)
    assert cost.cost_usd is None
    assert cost.note is not None
    assert "'prod-chat' (mapped to 'gpt-9-ultra')" in cost.note


def test_custom_price_wins_over_genai_prices() -> None:
    config = PricingConfig(
        custom_prices={
            "gpt-4o-mini": CustomPrice(
                input_per_mtok=Decimal("1"),
                output_per_mtok=Decimal("2"),
                cached_input_per_mtok=Decimal("0.5"),
            )
        }
    )
    cost = price_call(
        "gpt-4o-mini", prompt_tokens=1000, completion_tokens=200, cached_tokens=800, config=config
    )
    # 200 * $1/M + 800 * $0.5/M + 200 * $2/M
    assert cost == Cost(Decimal("0.001"), None, "custom", "gpt-4o-mini")


def test_custom_price_without_cached_rate_bills_cached_at_input() -> None:
    config = PricingConfig(custom_prices={"mine": CustomPrice(Decimal("1"), Decimal("2"))})
    cost = price_call(
        "mine", prompt_tokens=1000, completion_tokens=0, cached_tokens=800, config=config
    )
    assert cost.cost_usd == Decimal("0.001")


def test_custom_price_on_alias_wins_over_mapped_genai_price() -> None:
    config = PricingConfig(
        model_map={"prod-chat": "gpt-4o-mini"},
        custom_prices={"prod-chat": CustomPrice(Decimal("10"), Decimal("10"))},
    )
    cost = price_call("prod-chat", prompt_tokens=100_000, completion_tokens=0, config=config)
    assert cost == Cost(Decimal("1"), None, "custom", "prod-chat")


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"prompt_tokens": None, "completion_tokens": 200}, "missing prompt_tokens"),
        ({"prompt_tokens": 1000, "completion_tokens": None}, "missing completion_tokens"),
        (
            {"prompt_tokens": None, "completion_tokens": None},
            "missing prompt_tokens and completion_tokens",
        ),
        ({"prompt_tokens": -1, "completion_tokens": 0}, "prompt_tokens is negative"),
        (
            {"prompt_tokens": 10, "completion_tokens": 0, "cached_tokens": 11},
            "cached_tokens (11) exceed prompt_tokens (10)",
        ),
        (
            {"prompt_tokens": 10, "completion_tokens": 5, "reasoning_tokens": 6},
            "reasoning_tokens (6) exceed completion_tokens (5)",
        ),
    ],
)
def test_bad_usage_is_null_with_note(kwargs: dict[str, int | None], fragment: str) -> None:
    cost = price_call("gpt-4o-mini", **kwargs)  # type: ignore[arg-type]
    assert cost.cost_usd is None
    assert cost.note is not None and fragment in cost.note
    assert "'gpt-4o-mini'" in cost.note


def test_worst_case_cost() -> None:
    assert worst_case_cost("gpt-4o-mini", 1000, 200) == Decimal("0.00027")
    assert worst_case_cost("prod-chat", 1000, 200) is None
    config = PricingConfig(model_map={"prod-chat": "gpt-4o-mini"})
    assert worst_case_cost("prod-chat", 1000, 200, config) == Decimal("0.00027")


def test_ignores_a_custom_genai_prices_snapshot() -> None:
    """Even if something installs updated prices process-wide, we stay on bundled data."""
    bogus = data_snapshot.DataSnapshot(providers=[], from_auto_update=True)
    data_snapshot.set_custom_snapshot(bogus)
    try:
        cost = price_call("gpt-4o-mini", prompt_tokens=1000, completion_tokens=200)
    finally:
        data_snapshot.set_custom_snapshot(None)
    assert cost.cost_usd == Decimal("0.00027")


def test_config_is_read_only_copy() -> None:
    source = {"a": "gpt-4o"}
    config = PricingConfig(model_map=source)
    source["a"] = "changed"
    assert config.model_map["a"] == "gpt-4o"
    with pytest.raises(TypeError):
        config.model_map["b"] = "x"  # type: ignore[index]


# --- environment -------------------------------------------------------------------------


def test_from_env_empty() -> None:
    config = PricingConfig.from_env({})
    assert dict(config.model_map) == {}
    assert dict(config.custom_prices) == {}
    blank = PricingConfig.from_env({"LLM_LEDGER_MODEL_MAP": " ", "LLM_LEDGER_PRICES": ""})
    assert dict(blank.model_map) == {} and dict(blank.custom_prices) == {}


def test_from_env_parses_both() -> None:
    config = PricingConfig.from_env(
        {
            "LLM_LEDGER_MODEL_MAP": "prod-chat=gpt-4o-mini, other = gpt-4o,",
            "LLM_LEDGER_PRICES": '{"my-model": {"input": 1.0, "output": 2.0, "cached_input": 0.5},'
            ' "flat": {"input": 3, "output": 0.1}}',
        }
    )
    assert dict(config.model_map) == {"prod-chat": "gpt-4o-mini", "other": "gpt-4o"}
    assert config.custom_prices["my-model"] == CustomPrice(
        Decimal("1.0"), Decimal("2.0"), Decimal("0.5")
    )
    # JSON floats become exact decimals, not binary floats.
    assert config.custom_prices["flat"] == CustomPrice(Decimal("3"), Decimal("0.1"), None)
    assert str(config.custom_prices["flat"].output_per_mtok) == "0.1"
    cost = price_call("my-model", prompt_tokens=1_000_000, completion_tokens=0, config=config)
    assert cost.cost_usd == Decimal("1")


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("prod-chat", "entry 'prod-chat' is not of the form alias=model"),
        ("prod-chat=", "entry 'prod-chat=' is not of the form alias=model"),
        ("=gpt-4o", "entry '=gpt-4o' is not of the form alias=model"),
        ("a=gpt-4o,a=gpt-4o-mini", "alias 'a' is mapped twice"),
    ],
)
def test_model_map_errors(value: str, fragment: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        PricingConfig.from_env({"LLM_LEDGER_MODEL_MAP": value})
    message = str(excinfo.value)
    assert message.startswith("LLM_LEDGER_MODEL_MAP: ")
    assert fragment in message
    assert 'e.g. LLM_LEDGER_MODEL_MAP="prod-chat=gpt-4o-mini,other=gpt-4o"' in message


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("{not json", "not valid JSON"),
        ('["my-model"]', "expected a JSON object of model -> prices, got list"),
        ('{"m": 1.0}', "prices for 'm' must be an object, got Decimal"),
        ('{"m": {"input": 1}}', "'m' is missing output"),
        ('{"m": {"input": 1, "output": 2, "cache_input": 1}}', "unknown key(s) ['cache_input']"),
        ('{"m": {"input": "1", "output": 2}}', "'m' input must be a number, got '1'"),
        ('{"m": {"input": true, "output": 2}}', "'m' input must be a number, got True"),
        ('{"m": {"input": -1, "output": 2}}', "'m' input must be a non-negative number, got -1"),
        ('{"m": {"input": NaN, "output": 2}}', "not valid JSON (NaN is not a price)"),
        ('{"": {"input": 1, "output": 2}}', "empty model name"),
    ],
)
def test_prices_errors(value: str, fragment: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        PricingConfig.from_env({"LLM_LEDGER_PRICES": value})
    message = str(excinfo.value)
    assert message.startswith("LLM_LEDGER_PRICES: ")
    assert fragment in message
    assert 'e.g. LLM_LEDGER_PRICES=\'{"my-model": {"input": 1.0' in message


# --- no network, no updater ---------------------------------------------------------------


def test_import_and_use_start_no_updater_thread_and_no_network() -> None:
    """In a fresh interpreter: block sockets, import, price; no thread may be left running."""
    code = textwrap.dedent(
        """
        import socket, threading

        def refuse(*args, **kwargs):
            raise SystemExit("network access attempted: %r" % (args,))

        socket.socket.connect = refuse
        socket.socket.connect_ex = refuse

        from decimal import Decimal
        from llm_ledger.pricing import price_call, worst_case_cost
        from genai_prices import update_prices

        cost = price_call("gpt-4o-mini", prompt_tokens=1000, completion_tokens=200)
        assert cost.cost_usd == Decimal("0.00027"), cost
        assert worst_case_cost("gpt-4o", 10, 10) is not None
        assert price_call("prod-chat", prompt_tokens=1, completion_tokens=1).cost_usd is None
        assert threading.active_count() == 1, threading.enumerate()
        assert update_prices._shared_updater.ref_count == 0
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "ok"  # structlog may print above


def test_the_price_table_loads_behind_the_first_call_and_the_thread_ends() -> None:
    """A call going out starts the table's load on a thread (once), so it overlaps the
    wait for the answer; a custom-priced model never loads it; the thread does not stay."""
    code = textwrap.dedent(
        """
        import threading
        from llm_ledger import pricing

        loaded = pricing._bundled_snapshot.cache_info
        custom = pricing.PricingConfig(custom_prices={"mine": pricing.CustomPrice(1, 2)})
        pricing.load_in_background("mine", custom)
        assert threading.active_count() == 1 and loaded().currsize == 0
        pricing.load_in_background("gpt-4o-mini", pricing.PricingConfig())
        pricing.load_in_background("gpt-4o-mini", pricing.PricingConfig())  # no second thread
        (thread,) = [t for t in threading.enumerate() if t.name == "llm-ledger-prices"]
        assert thread.daemon
        thread.join(30)
        assert threading.active_count() == 1 and loaded().currsize == 1
        pricing.load_in_background("gpt-4o", pricing.PricingConfig())  # loaded: nothing
        assert threading.active_count() == 1
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "ok", done.stderr


def test_a_client_starts_the_load_as_its_first_request_goes_out(tmp_path) -> None:
    """The seed client starts it once its SDK client exists (the request goes out next),
    not at import or construction."""
    code = textwrap.dedent(
        f"""
        import os, threading
        from llm_ledger.testing import FakeOpenAIServer
        with FakeOpenAIServer() as server:
            os.environ["OPENAI_API_KEY"] = "sk-test"
            os.environ["OPENAI_BASE_URL"] = server.url
            from llm_ledger import OpenAIClient, pricing
            c = OpenAIClient(cache_file_name={str(tmp_path / "l.db")!r})
            assert not pricing._warming and threading.active_count() == 2  # the server's
            c.send_message([{{"role": "user", "content": "q"}}], temperature=0)
            assert list(pricing._warming) == [os.getpid()], pricing._warming
            pricing._warming[os.getpid()].join(30)
            assert pricing._bundled_snapshot.cache_info().currsize == 1
            c.close() if hasattr(c, "close") else None
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip().splitlines()[-1:] == ["ok"], done.stderr
