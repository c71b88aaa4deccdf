"""TinyTroupe v0.6's client surface on OpenAIClient itself, through the real SDK.

Each test is one way TinyTroupe v0.6 uses its client (tinytroupe/clients/openai_client.py,
agent/action_generator.py, validation/tiny_person_validator.py, utils/llm.py).
"""

from __future__ import annotations

import threading
from decimal import Decimal
from pathlib import Path

import pydantic
import pytest
from openai.types.chat import ChatCompletion

import llm_ledger
from llm_ledger.testing import FakeOpenAIServer

from .conftest import Sleeps, msgs, wait_for
from .test_client import rows


def _sent(api: FakeOpenAIServer) -> dict:
    """The last chat body the server received, without the messages."""
    body = dict(api.requests[-1].body or {})
    body.pop("messages")
    return body


# --- get_cost_stats / reset_cost_stats / pretty_print_cost_stats -------------------------


def test_cost_stats_count_paid_and_cached_calls_with_dollars(client, api, db_path) -> None:
    assert client.get_cost_stats() == {
        "input_tokens": 0,
        "output_tokens": 0,
        "total_tokens": 0,
        "model_calls": 0,
        "cached_calls": 0,
        "cost_usd": 0.0,
        "saved_usd": 0.0,
        "unpriced_calls": 0,
    }
    client.send_message(msgs(), temperature=0)
    client.send_message(msgs(), temperature=0)
    [(cost,)] = rows(db_path, "SELECT cost_usd FROM calls WHERE cache_status = 'miss'")
    assert Decimal(str(cost)) > 0
    # "hello there": 2 words + 3 = 5 prompt tokens; "answer 1 to: hello there": 5 completion.
    assert client.get_cost_stats() == {
        "input_tokens": 10,
        "output_tokens": 10,
        "total_tokens": 20,
        "model_calls": 1,
        "cached_calls": 1,
        "cost_usd": float(cost),
        "saved_usd": float(cost),
        "unpriced_calls": 0,
    }
    assert api.chat_count == 1


def test_cost_stats_are_per_client_and_reset(api, db_path, sleeps: Sleeps) -> None:
    a = llm_ledger.OpenAIClient(cache_file_name=str(db_path), sleep=sleeps)
    b = llm_ledger.OpenAIClient(cache_file_name=str(db_path), sleep=sleeps)
    a.send_message(msgs("one"), temperature=0)
    b.send_message(msgs("one"), temperature=0)
    assert (a.get_cost_stats()["model_calls"], a.get_cost_stats()["cached_calls"]) == (1, 0)
    assert (b.get_cost_stats()["model_calls"], b.get_cost_stats()["cached_calls"]) == (0, 1)
    a.reset_cost_stats()
    assert a.get_cost_stats()["total_tokens"] == 0
    assert a.get_cost_stats()["model_calls"] == 0
    assert b.get_cost_stats()["total_tokens"] == 4 + 4  # "one": 1 + 3; "answer 1 to: one": 4


def test_unpriced_calls_are_counted_apart(api, db_path) -> None:
    c = llm_ledger.OpenAIClient(cache_file_name=str(db_path))
    c.send_message(msgs(), model="my-local-model", temperature=0)
    stats = c.get_cost_stats()
    assert (stats["model_calls"], stats["cost_usd"], stats["unpriced_calls"]) == (1, 0.0, 1)


def test_pretty_print_cost_stats_prints_tinytroupes_lines_and_the_dollars(
    client, api, capsys
) -> None:
    client.send_message(msgs(), temperature=0)
    client.send_message(msgs(), temperature=0)
    stats = client.get_cost_stats()
    client.pretty_print_cost_stats()
    out = capsys.readouterr().out.splitlines()
    assert out[1:12] == [
        "=" * 60,
        "LLM API COST STATISTICS",
        "=" * 60,
        "Input tokens:         10",
        "Output tokens:        10",
        "Total tokens:         20",
        "Model API calls:      1",
        "Cached calls:         1",
        "Total calls:          2",
        "Avg tokens per call:  20.0",
        f"Cost (paid calls):    ${stats['cost_usd']:,.6f}",
    ]
    assert out[12] == f"Saved by the ledger:  ${stats['saved_usd']:,.6f}"


# --- send_message keywords ----------------------------------------------------------------


def test_dedent_messages_dedents_before_hashing_and_leaves_the_callers_list(client, api) -> None:
    indented = [{"role": "user", "content": "\n        Hello\n          world\n    "}]
    before = [dict(m) for m in indented]
    client.send_message(indented, temperature=0, dedent_messages=True)
    assert api.requests[-1].body["messages"] == [{"role": "user", "content": "Hello\n  world"}]
    assert indented == before
    # The hash is of what was sent: the dedented text, asked plainly, is a hit.
    client.send_message([{"role": "user", "content": "Hello\n  world"}], temperature=0)
    assert api.chat_count == 1


def test_dedent_is_off_by_default_on_the_seed_clients(client, api) -> None:
    client.send_message([{"role": "user", "content": "  indented "}], temperature=0)
    assert api.requests[-1].body["messages"][0]["content"] == "  indented "


def test_max_completion_tokens_replaces_the_default_max_tokens(client, api) -> None:
    client.send_message(msgs(), temperature=0, max_completion_tokens=50)
    body = _sent(api)
    assert body["max_completion_tokens"] == 50
    assert "max_tokens" not in body


def test_max_tokens_and_max_completion_tokens_together_are_refused_before_sending(
    client, api, db_path
) -> None:
    with pytest.raises(llm_ledger.InvalidInputError, match="pass only max_completion_tokens"):
        client.send_message(msgs(), max_tokens=10, max_completion_tokens=50)
    assert api.request_count == 0
    assert not db_path.exists() or rows(db_path, "SELECT count(*) FROM calls") == [(0,)]


@pytest.mark.parametrize("model", ["o3-mini", "o1", "gpt-5-mini", "gpt-5"])
def test_reasoning_models_get_what_they_accept(api, db_path, model: str) -> None:
    c = llm_ledger.OpenAIClient(cache_file_name=str(db_path), reasoning_effort="high")
    c.send_message(msgs(), model=model, temperature=0.5, max_tokens=100, top_p=0.9)
    assert _sent(api) == {
        "model": model,
        "max_completion_tokens": 100,
        "reasoning_effort": "high",
    }
    [(request,)] = rows(db_path, "SELECT request FROM requests")
    assert '"max_completion_tokens":100' in request and "temperature" not in request
    # Asked again the same way in a rerun (a reasoning model always samples: slots): the
    # same hash, served from the ledger.
    llm_ledger.reset_slots()
    c.send_message(msgs(), model=model, temperature=0.5, max_tokens=100, top_p=0.9)
    assert api.chat_count == 1


def test_non_reasoning_models_keep_their_parameters(api, db_path) -> None:
    c = llm_ledger.OpenAIClient(cache_file_name=str(db_path), reasoning_effort="high")
    c.send_message(msgs(), model="gpt-4o-mini", temperature=0.5, max_tokens=100)
    assert _sent(api) == {
        "model": "gpt-4o-mini",
        "temperature": 0.5,
        "max_tokens": 100,
        "top_p": 1.0,
        "frequency_penalty": 0.0,
        "presence_penalty": 0.0,
    }


def test_an_explicit_reasoning_effort_is_sent_whatever_the_model(client, api) -> None:
    client.send_message(msgs(), model="my-azure-deployment", reasoning_effort="low")
    assert _sent(api)["reasoning_effort"] == "low"


def test_default_max_tokens_can_be_set_to_none(client, api, monkeypatch) -> None:
    llm_ledger.force_default_value("max_tokens", None)
    client.send_message(msgs(), temperature=0)
    assert "max_tokens" not in _sent(api)
    monkeypatch.setenv("LLM_LEDGER_MAX_TOKENS", "")
    assert llm_ledger.config.reset_settings().max_tokens is None


class Verdict(pydantic.BaseModel):
    is_complete: bool
    score: float | None = None


def test_pydantic_model_return_on_a_miss_and_on_a_hit(client, api) -> None:
    api.reply_with('{"is_complete": true, "score": 0.75}')
    first = client.send_message(
        msgs(), temperature=0, response_format=Verdict, enable_pydantic_model_return=True
    )
    second = client.send_message(
        msgs(), temperature=0, response_format=Verdict, enable_pydantic_model_return=True
    )
    assert first == second == Verdict(is_complete=True, score=0.75)
    assert type(second) is Verdict
    assert api.chat_count == 1
    assert _sent(api)["response_format"]["type"] == "json_schema"


def test_pydantic_model_return_gives_the_dict_when_the_content_does_not_validate(
    client, api
) -> None:
    api.reply_with('{"score": "high"}')
    got = client.send_message(
        msgs(), temperature=0, response_format=Verdict, enable_pydantic_model_return=True
    )
    assert got == {
        "role": "assistant",
        "content": '{"score": "high"}',
        "refusal": None,
        "parsed": None,
    }


def test_without_pydantic_return_the_message_dict_has_parsed_on_a_miss_and_a_hit(
    client, api
) -> None:
    """TinyTroupe v0.6 calls the SDK's .parse(): its message dict carries "parsed"."""
    api.reply_with('{"is_complete": false}')
    first = client.send_message(msgs(), temperature=0, response_format=Verdict)
    second = client.send_message(msgs(), temperature=0, response_format=Verdict)
    assert (
        first
        == second
        == {
            "role": "assistant",
            "content": '{"is_complete": false}',
            "refusal": None,
            "parsed": {"is_complete": False, "score": None},
        }
    )
    assert api.chat_count == 1


def test_a_plain_response_format_adds_no_parsed_key(client, api) -> None:
    api.reply_with('{"a": 1}')
    got = client.send_message(msgs(), temperature=0, response_format={"type": "json_object"})
    assert got == {"role": "assistant", "content": '{"a": 1}', "refusal": None}


# --- overridable raw calls, as TinyTroupe v0.6 subclasses them -----------------------------


def test_raw_model_call_gets_model_inside_chat_api_params(api, db_path) -> None:
    seen: list[dict] = []

    class Spy(llm_ledger.OpenAIClient):
        def _raw_model_call(self, model, chat_api_params):
            seen.append(dict(chat_api_params))
            return self.client.chat.completions.create(**chat_api_params)

    Spy(cache_file_name=str(db_path)).send_message(msgs(), model="gpt-4o", temperature=0)
    assert seen[0]["model"] == "gpt-4o"
    assert api.requests[-1].body["model"] == "gpt-4o"


def test_response_extractor_gets_an_sdk_chat_completion_on_a_hit_too(api, db_path) -> None:
    kinds: list[type] = []

    class SdkExtractor(llm_ledger.OpenAIClient):
        def _raw_model_response_extractor(self, response):
            kinds.append(type(response))
            return response.choices[0].message.to_dict()  # an SDK-only method

    c = SdkExtractor(cache_file_name=str(db_path))
    first = c.send_message(msgs(), temperature=0)
    second = c.send_message(msgs(), temperature=0)
    assert first == second
    assert first["content"] == "answer 1 to: hello there"
    assert kinds == [ChatCompletion, ChatCompletion]
    assert api.chat_count == 1


# --- max_concurrent_model_calls ------------------------------------------------------------


def test_max_concurrent_model_calls_bounds_api_calls_and_hits_never_wait(api, db_path) -> None:
    gate = threading.Event()
    lock = threading.Lock()
    state = {"in_flight": 0, "peak": 0, "entered": 0}

    class Gated(llm_ledger.OpenAIClient):
        def _raw_model_call(self, model, chat_api_params):
            with lock:
                state["in_flight"] += 1
                state["entered"] += 1
                state["peak"] = max(state["peak"], state["in_flight"])
            gate.wait(30)
            try:
                return super()._raw_model_call(model, chat_api_params)
            finally:
                with lock:
                    state["in_flight"] -= 1

    c = Gated(cache_file_name=str(db_path), max_concurrent_model_calls=2)
    gate.set()
    c.send_message(msgs("stored before"), temperature=0)
    gate.clear()
    state.update(peak=0, entered=0)
    threads = [
        threading.Thread(target=c.send_message, args=(msgs(f"q{i}"),), kwargs={"temperature": 0})
        for i in range(4)
    ]
    for t in threads:
        t.start()
    assert wait_for(lambda: state["in_flight"] == 2)
    # Two calls hold both places: a hit is still answered at once.
    assert c.send_message(msgs("stored before"), temperature=0)["content"].startswith("answer 1")
    assert state["entered"] == 2
    gate.set()
    for t in threads:
        t.join(30)
    assert (state["peak"], state["entered"]) == (2, 4)
    assert api.chat_count == 5


def test_max_concurrent_model_calls_rejects_a_non_int() -> None:
    with pytest.raises(llm_ledger.ConfigError, match="max_concurrent_model_calls must be an int"):
        llm_ledger.OpenAIClient(max_concurrent_model_calls="four")  # type: ignore[arg-type]
    assert llm_ledger.OpenAIClient(max_concurrent_model_calls=0).max_concurrent_model_calls is None


# --- .cache_api_calls / .cache_file_name --------------------------------------------------


def test_cache_attributes_read_the_values_in_force(tmp_path: Path) -> None:
    c = llm_ledger.client()
    assert (c.cache_api_calls, c.cache_file_name) == (True, "llm_ledger.db")
    llm_ledger.force_api_cache(False, str(tmp_path / "forced.db"))
    assert (c.cache_api_calls, c.cache_file_name) == (False, str(tmp_path / "forced.db"))
    c.set_api_cache(True, str(tmp_path / "mine.db"))
    assert (c.cache_api_calls, c.cache_file_name) == (True, str(tmp_path / "mine.db"))
    fresh = llm_ledger.OpenAIClient()
    assert (fresh.cache_api_calls, fresh.cache_file_name) == (False, str(tmp_path / "forced.db"))
