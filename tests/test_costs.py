"""Dollar cost on every call, savings on hits, budgets, and attribution (run, tags, template).

Everything goes through the real OpenAI SDK against the test-kit server; the figures are
hand-checked against genai-prices 0.2.3 (see tests/test_pricing.py).
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

import llm_ledger
from llm_ledger.store.models import CallLog, CallTag, Response
from llm_ledger.testing import FakeOpenAIServer

from .conftest import msgs

D = Decimal
VERSION = "genai-prices 0.2.3"
_LOG = CallLog.__table__
_RESP = Response.__table__
_TAGS = CallTag.__table__


def table(client: llm_ledger.OpenAIClient, t: Any, *columns: str) -> list[tuple]:
    llm_ledger.flush()  # calls are written behind them (writes="journal")
    with client.ledger.engine.connect() as conn:
        stmt = select(*(t.c[c] for c in columns)).order_by(*t.primary_key.columns)
        return [tuple(r) for r in conn.execute(stmt)]


# --- cost at write time ---------------------------------------------------------------


def test_chat_cost_is_on_the_call_and_the_response(client, api: FakeOpenAIServer) -> None:
    # 1000 * $0.15/M + 200 * $0.60/M
    api.set_usage(prompt_tokens=1000, completion_tokens=200)
    client.send_message(msgs(), model="gpt-4o-mini")
    assert table(client, _LOG, "cost_usd", "saved_usd", "cost_note", "price_version") == [
        (D("0.00027"), None, None, VERSION)
    ]
    assert table(client, _RESP, "cost_usd", "cost_note", "price_version") == [
        (D("0.00027"), None, VERSION)
    ]


def test_cached_prompt_tokens_are_billed_at_the_cached_price(client, api) -> None:
    # 200 * $0.15/M + 800 * $0.075/M + 200 * $0.60/M: cached tokens are part of the prompt.
    api.set_usage(prompt_tokens=1000, completion_tokens=200)
    api.set_usage_details(cached_tokens=800)
    client.send_message(msgs(), model="gpt-4o-mini")
    assert table(client, _LOG, "cached_tokens", "cost_usd") == [(800, D("0.00021"))]
    assert table(client, _RESP, "cost_usd") == [(D("0.00021"),)]


def test_embedding_cost(client, api) -> None:
    # The test server counts one token per word: 1000 * $0.02/M.
    client.get_embedding(" ".join(["word"] * 1000), model="text-embedding-3-small")
    assert table(client, _LOG, "prompt_tokens", "completion_tokens", "cost_usd") == [
        (1000, 0, D("0.00002"))
    ]
    assert table(client, _RESP, "cost_usd") == [(D("0.00002"),)]


def test_a_hit_costs_nothing_and_saves_what_the_answer_cost(client, api) -> None:
    api.set_usage(prompt_tokens=1000, completion_tokens=200)
    first = client.send_message(msgs(), model="gpt-4o-mini", temperature=0)
    again = client.send_message(msgs(), model="gpt-4o-mini", temperature=0)
    assert again == first
    assert api.request_count == 1
    assert table(client, _LOG, "cache_status", "cost_usd", "saved_usd") == [
        ("miss", D("0.00027"), None),
        ("hit", D(0), D("0.00027")),
    ]


def test_unknown_model_has_null_cost_and_a_note_naming_it(client, api) -> None:
    api.set_usage(prompt_tokens=1000, completion_tokens=200)
    client.send_message(msgs(), model="prod-chat")
    note = (
        "no price for model 'prod-chat' in genai-prices 0.2.3; map it with "
        "LLM_LEDGER_MODEL_MAP or set LLM_LEDGER_PRICES"
    )
    assert table(client, _LOG, "status", "cost_usd", "cost_note") == [("ok", None, note)]
    assert table(client, _RESP, "cost_usd", "cost_note") == [(None, note)]


def test_model_map_prices_a_deployment_at_write_time(client, api, monkeypatch) -> None:
    monkeypatch.setenv("LLM_LEDGER_MODEL_MAP", "prod-chat=gpt-4o-mini")
    api.set_usage(prompt_tokens=1000, completion_tokens=200)
    client.send_message(msgs(), model="prod-chat")
    assert table(client, _LOG, "model", "cost_usd", "cost_note") == [
        ("prod-chat", D("0.00027"), None)
    ]


# --- budgets ------------------------------------------------------------------------------


def test_call_whose_worst_case_passes_the_cap_is_refused_before_sending(client, api) -> None:
    # Worst case: 9 prompt tokens * $0.15/M + 1000 max_tokens * $0.60/M = $0.00060135.
    with llm_ledger.scope(max_cost_usd="0.0006") as sc:
        with pytest.raises(llm_ledger.BudgetExceededError) as err:
            client.send_message(msgs(), model="gpt-4o-mini", max_tokens=1000)
    assert api.request_count == 0
    assert str(err.value) == (
        "budget exceeded: spent $0 of $0.0006, and this call to 'gpt-4o-mini' could cost up "
        "to $0.00060135; raise max_cost_usd or lower max_tokens"
    )
    assert sc.budgets[0].spent == D(0)
    assert table(client, _LOG, "status", "cache_status", "error_type", "cost_usd", "attempts") == [
        ("refused", "miss", "BudgetExceededError", D(0), 0)
    ]
    assert table(client, _LOG, "error_message") == [(str(err.value),)]
    assert table(client, _RESP, "id") == []


def test_worst_case_that_fits_is_sent(client, api) -> None:
    with llm_ledger.scope(max_cost_usd="0.00060135"):
        assert client.send_message(msgs(), model="gpt-4o-mini", max_tokens=1000) is not None
    assert api.request_count == 1


def test_spend_accumulates_across_calls_until_the_cap(client, api) -> None:
    # Each call really costs $0.00027; its worst case (max_tokens=200) is about $0.00012.
    api.set_usage(prompt_tokens=1000, completion_tokens=200)
    with llm_ledger.scope(max_cost_usd="0.0006") as sc:
        client.send_message(msgs("one"), model="gpt-4o-mini", max_tokens=200)
        assert sc.budgets[0].spent == D("0.00027")
        client.send_message(msgs("two"), model="gpt-4o-mini", max_tokens=200)
        assert sc.budgets[0].spent == D("0.00054")
        with pytest.raises(
            llm_ledger.BudgetExceededError, match=r"spent \$0\.000540* of \$0\.0006,"
        ):
            client.send_message(msgs("three"), model="gpt-4o-mini", max_tokens=200)
    assert api.request_count == 2
    assert table(client, _LOG, "status", "cost_usd") == [
        ("ok", D("0.00027")),
        ("ok", D("0.00027")),
        ("refused", D(0)),
    ]


def test_cache_hits_are_served_inside_an_exhausted_budget(client, api) -> None:
    api.set_usage(prompt_tokens=1000, completion_tokens=200)
    answer = client.send_message(msgs(), model="gpt-4o-mini", temperature=0)
    with llm_ledger.scope(max_cost_usd=0) as sc:
        assert client.send_message(msgs(), model="gpt-4o-mini", temperature=0) == answer
        with pytest.raises(llm_ledger.BudgetExceededError):
            client.send_message(msgs("new"), model="gpt-4o-mini", temperature=0)
    assert sc.budgets[0].spent == D(0)
    assert api.request_count == 1
    assert table(client, _LOG, "cache_status", "status", "saved_usd") == [
        ("miss", "ok", None),
        ("hit", "ok", D("0.00027")),
        ("miss", "refused", None),
    ]


def test_every_enclosing_budget_is_checked(client, api) -> None:
    api.set_usage(prompt_tokens=1000, completion_tokens=200)
    with llm_ledger.scope(max_cost_usd="0.0003") as outer:
        with llm_ledger.scope(max_cost_usd=1) as inner:
            client.send_message(msgs("one"), model="gpt-4o-mini", max_tokens=200)
            with pytest.raises(llm_ledger.BudgetExceededError, match=r"of \$0.0003,"):
                client.send_message(msgs("two"), model="gpt-4o-mini", max_tokens=200)
    assert (outer.budgets[0].spent, inner.budgets[1].spent) == (D("0.00027"), D("0.00027"))
    assert api.request_count == 1


def test_a_failed_call_gives_its_reservation_back(client, api) -> None:
    api.fail_next(400)
    with llm_ledger.scope(max_cost_usd=1) as sc:
        assert client.send_message(msgs(), model="gpt-4o-mini", max_tokens=200) is None
    assert sc.budgets[0].spent == D(0)
    assert table(client, _LOG, "status", "error_type") == [("error", "BadRequestError")]


def test_unpriced_model_is_refused_inside_a_budget(client, api) -> None:
    with llm_ledger.scope(max_cost_usd=1):
        with pytest.raises(
            llm_ledger.BudgetExceededError,
            match="cannot estimate the cost of a call to 'prod-chat'",
        ):
            client.send_message(msgs(), model="prod-chat")
    assert api.request_count == 0
    assert table(client, _LOG, "status", "error_type") == [("refused", "BudgetExceededError")]


def test_embedding_inside_an_exhausted_budget_is_refused(client, api) -> None:
    with llm_ledger.scope(max_cost_usd=0):
        with pytest.raises(llm_ledger.BudgetExceededError):
            client.get_embedding("some text", model="text-embedding-3-small")
    assert api.request_count == 0
    assert table(client, _LOG, "kind", "status") == [("embedding", "refused")]


# --- attribution: run, tags, template -------------------------------------------------


def test_nested_scopes_merge_tags_and_the_inner_run_wins(client, api) -> None:
    with llm_ledger.scope(run="outer", tags={"team": "search", "exp": "a"}):
        with llm_ledger.scope(run="inner", tags={"exp": "b", "shard": 3}):
            client.send_message(msgs("inside"))
        client.send_message(msgs("outside"))
    client.send_message(msgs("none"))
    assert table(client, _LOG, "id", "run", "tags") == [
        (1, "inner", {"team": "search", "exp": "b", "shard": "3"}),
        (2, "outer", {"team": "search", "exp": "a"}),
        (3, None, None),
    ]
    assert table(client, _TAGS, "call_id", "name", "value") == [
        (1, "exp", "b"),
        (1, "shard", "3"),
        (1, "team", "search"),
        (2, "exp", "a"),
        (2, "team", "search"),
    ]


def test_bad_tag_name_is_a_config_error() -> None:
    with pytest.raises(llm_ledger.ConfigError, match="tag names must be non-empty str"):
        with llm_ledger.scope(tags={"": "x"}):
            pass


def test_llmcall_records_its_template_names(api, tmp_path: Path, db_path: Path) -> None:
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "system.mustache").write_text("You summarise {{topic}}.", encoding="utf-8")
    (prompts / "user.md").write_text("Summarise {{topic}} in one line.", encoding="utf-8")
    llm_ledger.force_default_value("template_dir", str(prompts))
    llm_ledger.force_default_value("cache_file_name", str(db_path))
    with llm_ledger.scope(run="docs"):
        out = llm_ledger.LLMCall("system", "user", temperature=0).call(topic="ledgers")
        llm_ledger.LLMCall("system", temperature=0).call(topic="caches")
    client = llm_ledger.client()
    client.send_message(msgs("plain"))
    assert out == "answer 1 to: Summarise ledgers in one line."
    # The test server counts words + 3 per message, and the answer's words:
    # (6 + 8) * $0.15/M + 8 * $0.60/M;  6 * $0.15/M + 6 * $0.60/M;  4 * $0.15/M + 4 * $0.60/M
    assert table(client, _LOG, "run", "template", "prompt_tokens", "cost_usd") == [
        ("docs", "system+user", 14, D("0.0000069")),
        ("docs", "system", 6, D("0.0000045")),
        (None, None, 4, D("0.000003")),
    ]
