"""The call pipeline (calls.py): what happens after the API answered, embeddings' short answers
and timeouts, what latency_ms measures, the price memo, bounded slot counters, process state."""

from __future__ import annotations

import json
import math
import multiprocessing
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

import llm_ledger
from llm_ledger import config, pricing, process
from llm_ledger.flight import SlotCounter
from llm_ledger.pricing import CustomPrice, PricingConfig
from llm_ledger.store import spool, statements
from llm_ledger.store.db import normalize_url

from .conftest import completion, msgs


def rows(url: str, sql: str) -> list[tuple]:
    llm_ledger.flush()  # calls are written behind them (writes="journal")
    engine = create_engine(normalize_url(url))
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql))]
    finally:
        engine.dispose()


def canned(content: str = "canned", **extra: Any) -> dict[str, Any]:
    return {
        **completion(content),
        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
        **extra,
    }


# --- #13.4: anything that goes wrong after the API answered spools the answer -------------


def test_an_answer_the_ledger_cannot_serialise_is_spooled_not_lost(any_db: str) -> None:
    """A custom _raw_model_call returns a NaN: canonical_json refuses it at write time."""

    class NaNClient(llm_ledger.OpenAIClient):
        def _raw_model_call(self, model, chat_api_params):
            return canned(logprob=math.nan)

    c = NaNClient(cache_file_name=any_db, raise_on_error=True)
    assert c.send_message(msgs(), temperature=0) == {"role": "assistant", "content": "canned"}
    (rec,), bad = spool.read(c.ledger.spool_path)
    assert bad == 0
    assert (rec.status, rec.cache_status, rec.answers[0].response["choices"][0]["message"]) == (
        "ok",
        "miss",
        {"role": "assistant", "content": "canned"},
    )
    assert math.isnan(rec.answers[0].response["logprob"])
    assert rows(any_db, "SELECT COUNT(*) FROM call_log") == [(0,)]


def test_a_bug_while_recording_spools_the_answer(
    api, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def forgotten_key(self, rec, response_id):
        raise KeyError("cost_usd")

    # Every audit row's values pass here, in a writer's batch or alone.
    monkeypatch.setattr(statements.CallInsert, "record_params", forgotten_key)
    c = llm_ledger.OpenAIClient(cache_file_name=str(db_path))
    assert c.send_message(msgs(), temperature=0)["content"] == "answer 1 to: hello there"
    llm_ledger.flush()  # the writer's batch fails, then the row alone: spooled
    (rec,), _ = spool.read(c.ledger.spool_path)
    assert rec.answers[0].response["choices"][0]["message"]["content"] == (
        "answer 1 to: hello there"
    )
    monkeypatch.undo()
    assert c.ledger.recover()["written"] == 1
    assert rows(str(db_path), "SELECT cache_status, status FROM call_log") == [("miss", "ok")]


# --- #13.5: embeddings --------------------------------------------------------------------


class ShortEmbeddings(llm_ledger.OpenAIClient):
    """An OpenAI-compatible server that answers a batch with one vector fewer (LiteLLM's mock)."""

    def _raw_embedding_model_call(self, text, model, **params):
        answer = llm_ledger.api.to_dict(super()._raw_embedding_model_call(text, model, **params))
        answer["data"] = answer["data"][:-1]
        return answer


def test_a_short_batch_answer_is_a_ledger_error_with_an_error_row(api, db_path: Path) -> None:
    c = ShortEmbeddings(cache_file_name=str(db_path))
    with pytest.raises(llm_ledger.APICallError) as info:
        c.get_embedding(["one", "two", "three"], raise_on_error=True)
    assert str(info.value) == (
        "the API's answer is incomplete: 2 embedding(s) for 3 input(s); check the server "
        "(an OpenAI-compatible proxy or mock may drop items)"
    )
    assert (info.value.error_type, info.value.attempts) == ("ShortAnswer", 1)
    assert c.get_embedding(["one", "two", "three"]) is None  # not raising: None, as the seed
    assert (
        rows(
            str(db_path),
            "SELECT status, error_type, attempts, items_total, prompt_tokens, response_id IS NOT NULL"
            " FROM call_log ORDER BY id",
        )
        == [("error", "ShortAnswer", 1, 3, 3, 1)] * 2
    )
    # The paid answer is kept (audit only); nothing was cached from it.
    assert rows(str(db_path), "SELECT COUNT(*) FROM responses") == [(2,)]
    assert rows(str(db_path), "SELECT COUNT(*) FROM cache_entries") == [(0,)]


class Recording(llm_ledger.OpenAIClient):
    seen: list[dict[str, Any]]

    def _raw_embedding_model_call(self, text, model, **params):
        self.seen.append(params)
        return super()._raw_embedding_model_call(text, model, **params)


def test_embedding_attempts_honour_timeout(api, db_path: Path) -> None:
    config.reset_settings({"LLM_LEDGER_TIMEOUT": "7"})
    c = Recording(cache_file_name=str(db_path))
    c.seen = []
    c.get_embedding("a")
    c.get_embedding(["b", "c"], timeout=2.5)
    assert [p["timeout"] for p in c.seen] == [7.0, 2.5]


def test_embedding_attempt_times_out(api, db_path: Path) -> None:
    api.delay_next(3.0)
    config.reset_settings({"LLM_LEDGER_MAX_ATTEMPTS": "1"})
    c = llm_ledger.OpenAIClient(cache_file_name=str(db_path))
    assert c.get_embedding("slow", timeout=0.2) is None
    assert rows(str(db_path), "SELECT status, error_type, attempts FROM call_log") == [
        ("error", "APITimeoutError", 1)
    ]


class FirstTwo(llm_ledger.OpenAIClient):
    def _raw_embedding_model_response_extractor(self, response):
        return super()._raw_embedding_model_response_extractor(response)[:2]


@pytest.mark.parametrize("batch", [False, True])
def test_the_embedding_extractor_is_honoured_on_misses_too(api, db_path: Path, batch) -> None:
    c = FirstTwo(cache_file_name=str(db_path))
    text_in = ["alpha", "beta"] if batch else "alpha"
    miss = c.get_embedding(text_in)
    hit = c.get_embedding(text_in)
    assert miss == hit
    assert all(len(v) == 2 for v in (miss if batch else [miss]))
    assert rows(str(db_path), "SELECT cache_status FROM call_log ORDER BY id") == [
        ("miss",),
        ("hit",),
    ]


# --- #13.6: latency_ms is the API's time --------------------------------------------------


class Clock:
    """A perf_counter that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_latency_is_the_attempts_not_tokenizer_warm_up(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    monkeypatch.setattr(time, "perf_counter", clock)

    class Warm(llm_ledger.OpenAIClient):
        def _count_tokens(self, messages, model):
            clock.now += 1.6  # loading the tokenizer on the first budgeted call
            return super()._count_tokens(messages, model)

        def _raw_model_call(self, model, chat_api_params):
            clock.now += 0.005  # the API answering
            return canned()

    c = Warm(cache_file_name=str(db_path))
    with llm_ledger.scope(max_cost_usd=1):
        c.send_message(msgs(), temperature=0)
    assert rows(str(db_path), "SELECT latency_ms FROM call_log") == [(5.0,)]


def test_embedding_latency_excludes_token_counting(
    api, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    monkeypatch.setattr(time, "perf_counter", clock)
    real = llm_ledger.tokens.count_text_tokens

    def slow_count(text_in, model):
        clock.now += 0.8
        return real(text_in, model)

    monkeypatch.setattr(llm_ledger.tokens, "count_text_tokens", slow_count)

    class Timed(llm_ledger.OpenAIClient):
        def _raw_embedding_model_call(self, text_in, model, **params):
            clock.now += 0.003
            return super()._raw_embedding_model_call(text_in, model, **params)

    c = Timed(cache_file_name=str(db_path))
    with llm_ledger.scope(max_cost_usd=1):
        c.get_embedding("words to embed")
    assert rows(str(db_path), "SELECT latency_ms FROM call_log") == [(3.0,)]


# --- #13.8: tokens and prices -------------------------------------------------------------


def test_miss_and_hit_rows_of_one_answer_agree_on_total_tokens(db_path: Path) -> None:
    """A mock that reports total_tokens 0 (LiteLLM's does for embeddings)."""

    class Mock(llm_ledger.OpenAIClient):
        def _raw_embedding_model_call(self, text_in, model, **params):
            return {
                "object": "list",
                "data": [{"object": "embedding", "index": 0, "embedding": [0.5, 0.25]}],
                "model": model,
                "usage": {"prompt_tokens": 10, "total_tokens": 0},
            }

    c = Mock(cache_file_name=str(db_path))
    assert c.get_embedding("ten tokens") == c.get_embedding("ten tokens") == [0.5, 0.25]
    assert rows(
        str(db_path),
        "SELECT cache_status, prompt_tokens, completion_tokens, total_tokens FROM call_log"
        " ORDER BY id",
    ) == [("miss", 10, 0, 10), ("hit", 10, 0, 10)]
    assert rows(str(db_path), "SELECT total_tokens FROM responses") == [(10,)]


def _custom(price: str) -> dict[str, CustomPrice]:
    return {"my-model": CustomPrice(Decimal(price), Decimal(price))}


def test_a_new_config_never_gets_an_old_configs_price(db_path: Path) -> None:
    """The memo was keyed by id(conf): a config freed and replaced at the same address
    was served the old one's price."""

    class Canned(llm_ledger.OpenAIClient):
        def _raw_model_call(self, model, chat_api_params):
            return canned(chat_api_params["messages"][0]["content"], model=model)

    c = Canned(
        cache_file_name=str(db_path), pricing_config=PricingConfig(custom_prices=_custom("1"))
    )
    c.send_message(msgs("a"), model="my-model", temperature=0)
    prices = _custom("2")
    c.pricing_config = None  # freed: CPython hands its address to the next config
    c.pricing_config = PricingConfig(custom_prices=prices)
    c.send_message(msgs("b"), model="my-model", temperature=0)
    assert rows(str(db_path), "SELECT cost_usd FROM call_log ORDER BY id") == [
        (0.000006,),
        (0.000012,),
    ]


def test_the_price_memo_follows_the_day(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """genai-prices' prices change at UTC midnight: the memo must not carry a price over."""
    day = 86_400.0
    today = [20_000 * day + 3600]
    monkeypatch.setattr(time, "time", lambda: today[0])

    def dated_price(model, **kw):
        price = Decimal(1 if today[0] < 20_001 * day else 2)
        return pricing.Cost(price, None, "dated", model)

    monkeypatch.setattr(pricing, "price_call", dated_price)

    class Canned(llm_ledger.OpenAIClient):
        def _raw_model_call(self, model, chat_api_params):
            return canned(chat_api_params["messages"][0]["content"])

    c = Canned(cache_file_name=str(db_path))
    c.send_message(msgs("monday"), temperature=0)
    today[0] += day
    c.send_message(msgs("tuesday"), temperature=0)
    assert rows(str(db_path), "SELECT cost_usd FROM call_log ORDER BY id") == [(1,), (2,)]


# --- #12.5 / #13.8: process state ---------------------------------------------------------


def test_slot_counters_are_bounded_least_recently_used_first_out() -> None:
    counter = SlotCounter(max_keys=3)
    assert [counter.take("run", "", h) for h in ("a", "b", "c", "a")] == [0, 0, 0, 1]
    assert counter.take("run", "", "d") == 0  # a fourth key: "b" (least recently used) goes
    assert (len(counter), counter.evicted) == (3, 1)
    assert [counter.take("run", "", h) for h in ("a", "c", "d", "b")] == [2, 1, 1, 0]
    assert process.state.slots.max_keys == 100_000


def _child_uses_every_lock(db: str, out) -> None:  # runs in the forked child
    st = process.state
    locks = (st.ledgers_lock, st.recover_lock, st.spool_lock, st.slots._lock, st.flights._lock)
    out.put([lock.acquire(timeout=5) for lock in locks])


def test_a_forked_child_gets_fresh_process_state(db_path: Path) -> None:
    st = process.state
    st.slots.take(None, "", "h")
    held = [st.ledgers_lock, st.recover_lock, st.spool_lock, st.slots._lock, st.flights._lock]
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    for lock in held:
        lock.acquire()
    try:
        proc = ctx.Process(target=_child_uses_every_lock, args=(str(db_path), out))
        proc.start()
    finally:
        for lock in held:
            lock.release()
    assert out.get(timeout=60) == [True] * 5
    proc.join(timeout=60)
    assert proc.exitcode == 0


def test_importing_the_library_leaves_structlog_alone() -> None:
    script = """
import json, sys, structlog
import llm_ledger, llm_ledger.clients, llm_ledger.store.repository
from llm_ledger.log import logger, info_enabled
before = structlog.is_configured()
logger.info("llm.call", shown=False)
logger.warning("ledger.test_warning", shown=True)
enabled = info_enabled()
llm_ledger.log.configure("info", file=sys.stderr)
print(json.dumps([before, enabled, structlog.is_configured(), info_enabled()]))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(done.stdout) == [False, False, True, True]
    assert "ledger.test_warning" in done.stderr and "shown=True" in done.stderr
    assert "llm.call" not in done.stderr
