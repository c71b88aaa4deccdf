"""The drop-in SDK clients (llm_ledger.openai), sync, through the real SDK and the test kit.

Each method (chat create/parse, embeddings, responses create/parse), streamed and not:
a hit has the miss's type and value, a replayed stream has the recorded chunks, and every
call is an audit row.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import genai_prices
import openai
import pydantic
import pytest

import llm_ledger
from llm_ledger.openai import AzureOpenAI, OpenAI, wrap
from llm_ledger.testing import FakeOpenAIServer

from .conftest import TEST_KEY, msgs

MODEL = "gpt-4o-mini"


class City(pydantic.BaseModel):
    name: str
    population: int


def rows(db_path: Path, sql: str) -> list[tuple[Any, ...]]:
    llm_ledger.flush()  # calls are written behind them (writes="journal")
    if not db_path.exists():  # the ledger is opened (created) by the first recorded call
        return []
    llm_ledger.flush()  # writes="journal": this process's calls into the tables first
    con = sqlite3.connect(db_path)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.fixture
def words(api: FakeOpenAIServer) -> Iterator[FakeOpenAIServer]:
    """The test-kit server streaming two words per chunk (several chunks per answer)."""
    api.stream_words = 2
    yield api
    api.stream_words = None


@pytest.fixture
def sdk(api: FakeOpenAIServer, db_path: Path) -> Iterator[OpenAI]:
    llm_ledger.force_default_value("waiting_time", 0)
    with OpenAI(ledger=str(db_path)) as client:
        yield client


def chat(client: Any, text: str = "hello there", **kw: Any) -> Any:
    return client.chat.completions.create(model=MODEL, messages=msgs(text), temperature=0, **kw)


# --- chat ---------------------------------------------------------------------------------


def test_chat_hit_is_the_misses_type_and_value(sdk: OpenAI, api, db_path) -> None:
    miss = chat(sdk)
    hit = chat(sdk)
    assert type(hit) is type(miss) is openai.types.chat.ChatCompletion
    assert hit == miss
    assert hit.choices[0].message.content == "answer 1 to: hello there"
    assert api.request_count == 1
    assert rows(db_path, "SELECT kind, cache_status, status, stream_status FROM call_log") == [
        ("chat", "miss", "ok", None),
        ("chat", "hit", "ok", None),
    ]


def test_the_readme_example_a_second_identical_call_at_temperature_0_is_a_hit(
    sdk: OpenAI, api, db_path
) -> None:
    hi = [{"role": "user", "content": "Hi"}]
    for _ in range(2):
        sdk.chat.completions.create(model=MODEL, messages=hi, temperature=0)
    for _ in range(2):  # no temperature: the API samples, so each call takes a sample slot
        sdk.chat.completions.create(model=MODEL, messages=hi)
    assert api.request_count == 3
    assert rows(db_path, "SELECT cache_status, slot FROM call_log ORDER BY id") == [
        ("miss", 0),
        ("hit", 0),
        ("miss", 0),
        ("miss", 1),
    ]


def test_chat_parse_hit_rebuilds_parsed(sdk: OpenAI, api) -> None:
    miss = sdk.chat.completions.parse(
        model=MODEL, messages=msgs("a city"), response_format=City, temperature=0
    )
    hit = sdk.chat.completions.parse(
        model=MODEL, messages=msgs("a city"), response_format=City, temperature=0
    )
    assert type(hit) is type(miss)
    assert hit.choices[0].message.parsed == City(name="answer 1 to: a city", population=1)
    assert hit == miss
    assert api.request_count == 1


def test_with_raw_response_works_on_a_hit(sdk: OpenAI, api) -> None:
    chat(sdk)
    raw = sdk.chat.completions.with_raw_response.create(model=MODEL, messages=msgs(), temperature=0)
    assert raw.headers["x-llm-ledger-cache"] == "hit"
    assert raw.parse().choices[0].message.content == "answer 1 to: hello there"
    assert api.request_count == 1


def test_a_miss_passes_the_apis_headers_on_and_a_hit_has_only_ours(sdk: OpenAI, api) -> None:
    miss = sdk.chat.completions.with_raw_response.create(
        model=MODEL, messages=msgs("headers"), temperature=0
    )
    hit = sdk.chat.completions.with_raw_response.create(
        model=MODEL, messages=msgs("headers"), temperature=0
    )
    assert (miss.headers["x-request-id"], miss.headers["x-llm-ledger-cache"]) == ("req_1", "miss")
    assert miss.parse()._request_id == "req_1"
    assert miss.headers["content-type"] == "application/json"
    assert ("x-request-id" in hit.headers, hit.headers["x-llm-ledger-cache"]) == (False, "hit")
    assert hit.parse()._request_id is None
    assert chat(sdk, "plain miss")._request_id == "req_2"
    assert api.request_count == 2


def test_sdk_and_seed_share_cache_entries(sdk: OpenAI, api, db_path) -> None:
    seed = llm_ledger.OpenAIClient(cache_file_name=str(db_path))
    seed.send_message(msgs("shared"), temperature=0, max_tokens=50, top_p=1.0)
    params = {"temperature": 0, "max_tokens": 50, "top_p": 1.0, "frequency_penalty": 0.0}
    hit = sdk.chat.completions.create(
        model=MODEL, messages=msgs("shared"), presence_penalty=0.0, **params
    )
    assert hit.choices[0].message.content == "answer 1 to: shared"
    assert api.request_count == 1


# --- streaming ------------------------------------------------------------------------------


def test_replayed_chat_stream_is_the_recorded_chunk_sequence(sdk: OpenAI, words, db_path) -> None:
    recorded = list(chat(sdk, "one two three four five", stream=True))
    replayed = list(chat(sdk, "one two three four five", stream=True))
    assert [type(c) for c in replayed] == [type(c) for c in recorded]
    assert replayed == recorded
    assert len(recorded) == 5  # 4 content chunks + the finish chunk
    assert "".join(c.choices[0].delta.content or "" for c in recorded) == (
        "answer 1 to: one two three four five"
    )
    assert words.request_count == 1
    assert rows(db_path, "SELECT cache_status, stream_status, chunks FROM call_log") == [
        ("miss", "complete", 6),  # + the usage chunk the ledger asked for
        ("hit", "replayed", None),
    ]


def test_the_ledger_asks_for_usage_without_showing_it(sdk: OpenAI, words, db_path) -> None:
    recorded = list(chat(sdk, "count me", stream=True))
    assert words.requests[-1].body["stream_options"] == {"include_usage": True}
    assert all(c.usage is None and c.choices for c in recorded)
    assert rows(db_path, "SELECT prompt_tokens, completion_tokens FROM call_log") == [(5, 5)]
    with_usage = list(chat(sdk, "count me", stream=True, stream_options={"include_usage": True}))
    assert with_usage[-1].choices == [] and with_usage[-1].usage.total_tokens == 10
    assert with_usage[:-1] != []
    assert words.request_count == 1


def test_stream_and_non_stream_calls_share_one_answer(sdk: OpenAI, words) -> None:
    streamed = list(chat(sdk, "one two three", stream=True))
    plain = chat(sdk, "one two three")
    assert plain.choices[0].message.content == "answer 1 to: one two three"
    assert plain.id == streamed[0].id
    assert plain.usage is not None and plain.usage.total_tokens == 12
    chat(sdk, "the other way")
    again = list(chat(sdk, "the other way", stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in again) == "answer 1 to: the other way"
    assert again[-1].choices[0].finish_reason == "stop"
    assert words.request_count == 2


def test_stream_helper_works_on_miss_and_hit(sdk: OpenAI, words) -> None:
    finals = []
    for _ in range(2):
        with sdk.chat.completions.stream(model=MODEL, messages=msgs("help"), temperature=0) as s:
            finals.append(s.get_final_completion())
    assert finals[0] == finals[1]
    assert finals[1].choices[0].message.content == "answer 1 to: help"
    assert words.request_count == 1


def test_the_first_chunk_arrives_before_the_stream_ends(sdk: OpenAI, words) -> None:
    gate = words.pause_next_stream(after_chunks=1)
    stream = chat(sdk, "one two three four", stream=True)
    got: list[Any] = []
    first = threading.Event()

    def read() -> None:
        for chunk in stream:
            got.append(chunk)
            first.set()

    reader = threading.Thread(target=read)
    reader.start()
    arrived_while_held = first.wait(10)
    gate.set()
    reader.join(10)
    assert arrived_while_held
    assert len(got) == 5  # 4 content chunks + the finish chunk


def test_an_abandoned_stream_is_recorded_and_not_cached(sdk: OpenAI, words, db_path) -> None:
    stream = chat(sdk, "one two three four five six", stream=True)
    first = next(iter(stream))
    stream.close()
    assert first.choices[0].delta.content == "answer 1 "
    assert rows(
        db_path, "SELECT status, stream_status, chunks, response_id IS NULL FROM call_log"
    ) == [("ok", "abandoned", 1, 0)]
    assert rows(db_path, "SELECT COUNT(*) FROM cache_entries") == [(0,)]
    full = list(chat(sdk, "one two three four five six", stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in full).startswith("answer 2 to:")
    assert words.request_count == 2


def test_a_mid_stream_disconnect_is_an_error_row_and_never_cached(
    sdk: OpenAI, words, db_path
) -> None:
    words.drop_next(after_chunks=2)
    got = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in chat(sdk, "one two three four five six", stream=True):
            got.append(chunk)
    assert len(got) == 2
    assert rows(db_path, "SELECT status, stream_status, chunks, error_type FROM call_log") == [
        ("error", "error", 2, "RemoteProtocolError")
    ]
    assert rows(db_path, "SELECT COUNT(*) FROM cache_entries") == [(0,)]
    again = list(chat(sdk, "one two three four five six", stream=True))
    assert again[0].choices[0].delta.content == "answer 2 "
    assert words.request_count == 2


def test_an_error_event_mid_stream_is_an_error_row_and_never_cached(
    sdk: OpenAI, words, db_path
) -> None:
    words.error_next_stream(after_chunks=1, message="overloaded mid-stream")
    got = []
    with pytest.raises(openai.APIError, match="overloaded mid-stream") as caught:
        for chunk in chat(sdk, "one two three four five six", stream=True):
            got.append(chunk)
    assert type(caught.value) is openai.APIError
    assert len(got) == 1
    assert rows(
        db_path, "SELECT status, stream_status, chunks, error_type, error_message FROM call_log"
    ) == [("error", "error", 1, "APIError", "overloaded mid-stream")]
    assert rows(db_path, "SELECT COUNT(*) FROM cache_entries") == [(0,)]
    again = list(chat(sdk, "one two three four five six", stream=True))
    assert again[0].choices[0].delta.content == "answer 2 "
    assert words.request_count == 2


# --- embeddings ---------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["float", "base64"])
def test_embeddings_are_cached_per_item(sdk: OpenAI, api, db_path, encoding: str) -> None:
    kw = {} if encoding == "base64" else {"encoding_format": "float"}  # base64: the SDK default
    first = sdk.embeddings.create(model="text-embedding-3-small", input=["a", "b"], **kw)
    second = sdk.embeddings.create(model="text-embedding-3-small", input=["b", "c"], **kw)
    assert type(second) is type(first) is openai.types.CreateEmbeddingResponse
    assert second.data[0].embedding == first.data[1].embedding
    assert len(second.data[1].embedding) == 8
    assert api.requests[-1].body["input"] == ["c"]
    assert api.requests[-1].body["encoding_format"] == "float"
    assert rows(db_path, "SELECT cache_status, items_total, items_hit FROM call_log") == [
        ("miss", 2, 0),
        ("miss", 2, 1),
    ]
    hit = sdk.embeddings.create(model="text-embedding-3-small", input=["a", "b"], **kw)
    assert hit == first
    assert api.request_count == 2


def test_a_one_string_list_is_cached_under_its_string(sdk: OpenAI, api, db_path) -> None:
    """``input=["a"]`` was stored under the whole request's hash but looked up under the
    item's, so it never hit: every identical call paid again. Now its entry is the str's,
    shared with ``input="a"`` and with the seed's ``get_embedding(["a"])``."""
    kw = {"model": "text-embedding-3-small", "encoding_format": "float"}
    first = sdk.embeddings.create(input=["a"], **kw)
    again = sdk.embeddings.create(input=["a"], **kw)
    as_str = sdk.embeddings.create(input="a", **kw)
    seed = llm_ledger.OpenAIClient(cache_file_name=str(db_path)).get_embedding(["a"])
    assert api.request_count == 1
    assert again == first
    assert as_str.data[0].embedding == first.data[0].embedding == seed[0]
    assert len(seed) == 1 and len(first.data) == 1
    assert rows(db_path, "SELECT cache_status, items_total, items_hit FROM call_log") == [
        ("miss", 1, 0),
        ("hit", 1, 1),
        ("hit", 1, 1),
        ("hit", 1, 1),
    ]
    assert rows(db_path, "SELECT count(*) FROM cache_entries") == [(1,)]


def test_seed_embeddings_serve_the_sdk(sdk: OpenAI, api, db_path) -> None:
    seed = llm_ledger.OpenAIClient(cache_file_name=str(db_path))
    vector = seed.get_embedding("Paris")
    answer = sdk.embeddings.create(
        model="text-embedding-3-small", input="Paris", encoding_format="float"
    )
    assert answer.data[0].embedding == vector
    assert api.request_count == 1


# --- Responses API ----------------------------------------------------------------------------


def test_responses_hit_is_the_misses_type_and_value(sdk: OpenAI, api, db_path) -> None:
    miss = sdk.responses.create(model=MODEL, input="hey there", temperature=0)
    hit = sdk.responses.create(model=MODEL, input="hey there", temperature=0)
    assert type(hit) is type(miss) is openai.types.responses.Response
    assert hit == miss
    assert hit.output_text == "answer 1 to: hey there"
    assert api.request_count == 1
    assert rows(
        db_path, "SELECT kind, cache_status, prompt_tokens, completion_tokens FROM call_log"
    ) == [
        ("responses", "miss", 5, 5),
        ("responses", "hit", 5, 5),
    ]


def test_responses_parse_hit_rebuilds_output_parsed(sdk: OpenAI, api) -> None:
    miss = sdk.responses.parse(model=MODEL, input="a city", text_format=City, temperature=0)
    hit = sdk.responses.parse(model=MODEL, input="a city", text_format=City, temperature=0)
    assert type(hit) is type(miss)
    assert hit.output_parsed == City(name="answer 1 to: a city", population=1)
    assert api.request_count == 1


def test_replayed_responses_stream_is_the_recorded_event_sequence(
    sdk: OpenAI, words, db_path
) -> None:
    recorded = list(sdk.responses.create(model=MODEL, input="a b c d", stream=True, temperature=0))
    replayed = list(sdk.responses.create(model=MODEL, input="a b c d", stream=True, temperature=0))
    assert replayed == recorded
    assert [e.type for e in recorded][-1] == "response.completed"
    assert len(recorded) == 12  # 4 deltas and 8 other events
    plain = sdk.responses.create(model=MODEL, input="a b c d", temperature=0)
    assert plain.output_text == "answer 1 to: a b c d"
    with sdk.responses.stream(model=MODEL, input="a b c d", temperature=0) as s:
        assert s.get_final_response().output_text == "answer 1 to: a b c d"
    assert words.request_count == 1
    assert rows(db_path, "SELECT cache_status, stream_status, chunks FROM call_log") == [
        ("miss", "complete", 12),
        ("hit", "replayed", None),
        ("hit", None, None),
        ("hit", "replayed", None),
    ]


# --- modes, processes, budgets, costs -----------------------------------------------------------


def test_a_second_process_replays_with_no_request(sdk: OpenAI, words, db_path) -> None:
    recorded = list(chat(sdk, "shared stream", stream=True))
    chat(sdk, "shared plain")
    script = (
        "import json\n"
        "from llm_ledger.openai import OpenAI\n"
        f"c = OpenAI(ledger={str(db_path)!r}, mode='replay')\n"
        "m = [{'role': 'user', 'content': 'shared stream'}]\n"
        "s = c.chat.completions.create(model='gpt-4o-mini', messages=m, temperature=0, stream=True)\n"
        "print(json.dumps([x.model_dump() for x in s]))\n"
        "m = [{'role': 'user', 'content': 'shared plain'}]\n"
        "print(c.chat.completions.create(model='gpt-4o-mini', messages=m, temperature=0).id)\n"
    )
    env = {**os.environ, "OPENAI_API_KEY": "sk-other", "OPENAI_BASE_URL": words.url}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    lines = out.stdout.strip().splitlines()
    chunks = [openai.types.chat.ChatCompletionChunk.model_validate(c) for c in _json(lines[0])]
    assert chunks == recorded
    assert lines[1] == "chatcmpl-2"
    assert words.request_count == 2


def _json(text: str) -> Any:
    import json

    return json.loads(text)


@pytest.mark.parametrize("method", ["chat", "stream", "embeddings", "responses"])
def test_replay_mode_raises_cache_miss_before_any_request(api, db_path, method: str) -> None:
    client = OpenAI(ledger=str(db_path), mode="replay")
    with pytest.raises(llm_ledger.CacheMissError):
        if method == "chat":
            chat(client)
        elif method == "stream":
            list(chat(client, stream=True))
        elif method == "embeddings":
            client.embeddings.create(model="text-embedding-3-small", input="x")
        else:
            client.responses.create(model=MODEL, input="x", temperature=0)
    assert api.request_count == 0
    assert rows(db_path, "SELECT cache_status, status, error_type FROM call_log") == [
        ("miss", "error", "CacheMissError")
    ]


@pytest.mark.parametrize("stream", [False, True])
def test_budget_refusal_before_any_request(sdk: OpenAI, api, db_path, stream: bool) -> None:
    with llm_ledger.scope(run="capped", max_cost_usd=0.000001):
        with pytest.raises(llm_ledger.BudgetExceededError):
            result = chat(sdk, stream=stream, max_tokens=1000)
            list(result) if stream else None
    assert api.request_count == 0
    assert rows(db_path, "SELECT status, run, error_type FROM call_log") == [
        ("refused", "capped", "BudgetExceededError")
    ]


def _genai_cost(model: str, inp: int, out: int, cached: int = 0) -> Decimal:
    usage = genai_prices.Usage(input_tokens=inp, cache_read_tokens=cached, output_tokens=out)
    return Decimal(str(genai_prices.calc_price(usage, model, provider_id="openai").total_price))


@pytest.mark.parametrize("stream", [False, True])
def test_chat_cost_is_genai_prices_figure(sdk: OpenAI, api, db_path, stream: bool) -> None:
    api.set_usage(prompt_tokens=1000, completion_tokens=300)
    api.set_usage_details(cached_tokens=400, reasoning_tokens=100)
    result = chat(sdk, stream=stream)
    if stream:
        list(result)
    cost = rows(db_path, "SELECT cost_usd, cached_tokens, reasoning_tokens FROM call_log")
    assert Decimal(str(cost[0][0])) == _genai_cost(MODEL, 1000, 300, cached=400)
    assert cost[0][1:] == (400, 100)


def test_responses_cost_is_genai_prices_figure(sdk: OpenAI, api, db_path) -> None:
    api.set_usage(prompt_tokens=2000, completion_tokens=500)
    api.set_usage_details(cached_tokens=1000)
    sdk.responses.create(model=MODEL, input="priced", temperature=0)
    cost = rows(db_path, "SELECT cost_usd, prompt_tokens, cached_tokens FROM call_log")
    assert Decimal(str(cost[0][0])) == _genai_cost(MODEL, 2000, 500, cached=1000)
    assert cost[0][1:] == (2000, 1000)


# --- errors and retries ------------------------------------------------------------------------


def test_api_errors_are_the_sdks_after_the_ledgers_retries(sdk: OpenAI, api, db_path) -> None:
    api.fail_next(500, times=2)
    assert chat(sdk).choices[0].message.content == "answer 1 to: hello there"
    assert api.request_count == 3
    api.fail_next(400, message="bad thing")
    with pytest.raises(openai.BadRequestError, match="bad thing"):
        chat(sdk, "other")
    assert rows(db_path, "SELECT status, attempts, error_type FROM call_log") == [
        ("ok", 3, None),
        ("error", 1, "BadRequestError"),
    ]


def test_a_broken_json_answer_raises_the_sdks_json_error_and_is_not_cached(
    sdk: OpenAI, api, db_path
) -> None:
    import json

    api.reply_raw_next(b'{"id": "x", "choices": [ {broken')
    with pytest.raises(json.JSONDecodeError):
        chat(sdk)
    assert rows(db_path, "SELECT status, attempts, error_type, response_id FROM call_log") == [
        ("error", 1, "JSONDecodeError", None)
    ]
    assert rows(db_path, "SELECT COUNT(*) FROM cache_entries") == [(0,)]
    assert chat(sdk).choices[0].message.content == "answer 1 to: hello there"
    assert api.request_count == 2


@pytest.mark.parametrize(
    ("method", "payload"),
    [
        ("chat", b"{}"),
        ("chat", b'{"id": "c1", "object": "chat.completion", "choices": null}'),
        ("chat", b'{"choices": [{"index": 0}]}'),
        ("responses", b"{}"),
        ("embeddings", b'{"object": "list", "data": null}'),
    ],
)
def test_a_200_that_is_not_an_answer_is_an_error_row_never_a_cache_entry(
    sdk: OpenAI, api, db_path, method: str, payload: bytes
) -> None:
    def call() -> Any:
        if method == "chat":
            return chat(sdk)
        if method == "responses":
            return sdk.responses.create(model=MODEL, input="hi", temperature=0)
        return sdk.embeddings.create(model="text-embedding-3-small", input="a")

    api.reply_raw_next(payload)
    with pytest.raises(openai.APIResponseValidationError, match="200 answer is not a"):
        call()
    assert rows(db_path, "SELECT status, attempts, error_type, response_id FROM call_log") == [
        ("error", 1, "APIResponseValidationError", None)
    ]
    assert rows(db_path, "SELECT COUNT(*) FROM cache_entries") == [(0,)]
    call()  # asked again, and answered
    call()  # now a hit
    assert api.request_count == 2
    assert rows(db_path, "SELECT cache_status, status FROM call_log ORDER BY id") == [
        ("miss", "error"),
        ("miss", "ok"),
        ("hit", "ok"),
    ]


def test_bad_input_is_refused_before_any_request(sdk: OpenAI, api, db_path) -> None:
    with pytest.raises(llm_ledger.InvalidInputError, match="role"):
        sdk.chat.completions.create(model=MODEL, messages=[{"role": "robot", "content": "x"}])
    assert api.request_count == 0
    assert rows(db_path, "SELECT COUNT(*) FROM call_log") == []


# --- surface ----------------------------------------------------------------------------------


def test_other_endpoints_pass_through_unrecorded(sdk: OpenAI, api, db_path) -> None:
    assert [m.id for m in sdk.models.list()] == ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small"]
    assert api.request_count == 1
    assert rows(db_path, "SELECT COUNT(*) FROM call_log") == []


def test_wrap_puts_an_existing_client_on_the_ledger(api, db_path) -> None:
    original = openai.OpenAI(api_key=TEST_KEY, base_url=api.url, max_retries=0)
    wrapped = wrap(original, ledger=str(db_path))
    assert isinstance(wrapped, openai.OpenAI) and wrapped is not original
    assert llm_ledger.wrap is not None
    chat(wrapped)
    chat(wrapped)
    assert api.request_count == 1
    chat(original)  # the client passed in is left as it was
    assert api.request_count == 2
    assert rows(db_path, "SELECT cache_status FROM call_log") == [("miss",), ("hit",)]
    again = wrapped.with_options(timeout=5)
    chat(again)
    assert api.request_count == 2


def test_azure_drop_in_records_deployments(api, db_path) -> None:
    client = AzureOpenAI(
        api_key=TEST_KEY,
        azure_endpoint=api.azure_endpoint,
        api_version="2024-06-01",
        ledger=str(db_path),
    )
    first = client.chat.completions.create(model="prod-chat", messages=msgs(), temperature=0)
    second = client.chat.completions.create(model="prod-chat", messages=msgs(), temperature=0)
    assert first == second
    assert api.requests[0].path.startswith("/openai/deployments/prod-chat/chat/completions")
    assert rows(db_path, "SELECT api_type, model, cache_status FROM call_log") == [
        ("azure", "prod-chat", "miss"),
        ("azure", "prod-chat", "hit"),
    ]


def test_unknown_ledger_option_is_refused(api) -> None:
    with pytest.raises(TypeError, match="cache_file"):  # the SDK's own check
        OpenAI(api_key="k", cache_file="x.db")
    with pytest.raises(llm_ledger.ConfigError, match="not both"):
        OpenAI(api_key="k", ledger="a.db", cache_file_name="b.db")
    with pytest.raises(llm_ledger.ConfigError, match="mode"):
        OpenAI(api_key="k", mode="sometimes")


def test_namespace_and_scope_reach_the_rows(api, db_path) -> None:
    client = OpenAI(ledger=str(db_path), namespace="team-a")
    with llm_ledger.scope(run="r1", tags={"exp": "x"}):
        chat(client)
    other = OpenAI(ledger=str(db_path), namespace="team-b")
    chat(other)
    assert api.request_count == 2
    assert rows(db_path, "SELECT namespace, run, tags FROM call_log") == [
        ("team-a", "r1", '{"exp":"x"}'),
        ("team-b", None, None),
    ]


def test_streams_round_trip_on_every_engine(api, any_db: str) -> None:
    from sqlalchemy import create_engine, text

    from llm_ledger.store.db import normalize_url

    api.stream_words = 2
    try:
        client = OpenAI(ledger=any_db)
        recorded = list(chat(client, "one two three four", stream=True))
        replayed = list(chat(client, "one two three four", stream=True))
        events = list(
            client.responses.create(model=MODEL, input="a b c", stream=True, temperature=0)
        )
        again = list(
            client.responses.create(model=MODEL, input="a b c", stream=True, temperature=0)
        )
    finally:
        api.stream_words = None
    assert replayed == recorded and again == events
    assert api.request_count == 2
    llm_ledger.flush()  # writes="journal": this process's calls into the tables first
    engine = create_engine(normalize_url(any_db))
    try:
        with engine.connect() as conn:
            got = conn.execute(
                text("SELECT kind, cache_status, stream_status, chunks FROM call_log ORDER BY id")
            ).all()
    finally:
        engine.dispose()
    assert [tuple(r) for r in got] == [
        ("chat", "miss", "complete", 6),
        ("chat", "hit", "replayed", None),
        ("responses", "miss", "complete", 11),
        ("responses", "hit", "replayed", None),
    ]


def test_a_stream_ending_while_the_ledger_is_locked_is_spooled_then_recovered(
    words, db_path, monkeypatch: pytest.MonkeyPatch, sync_writes
) -> None:
    from llm_ledger.store import db

    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_MS", 100)
    client = OpenAI(ledger=str(db_path))
    chat(client, "first")  # the ledger exists
    llm_ledger.flush()  # writes="journal": this process's calls into the tables first
    lock = sqlite3.connect(db_path, timeout=5, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        recorded = list(chat(client, "one two three", stream=True))
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert len(recorded) == 4
    assert rows(db_path, "SELECT COUNT(*) FROM call_log") == [(1,)]
    assert client.ledger.recover()["written"] == 1
    assert rows(db_path, "SELECT stream_status, chunks FROM call_log ORDER BY id") == [
        (None, None),
        ("complete", 5),
    ]
    assert list(chat(client, "one two three", stream=True)) == recorded
    assert words.request_count == 2


def test_a_stream_dropped_without_close_is_recorded_as_abandoned(
    sdk: OpenAI, words, db_path
) -> None:
    import gc

    for _chunk in chat(sdk, "one two three four five six", stream=True):
        break
    gc.collect()
    assert rows(db_path, "SELECT stream_status, chunks FROM call_log") == [("abandoned", 1)]
    assert rows(db_path, "SELECT COUNT(*) FROM cache_entries") == [(0,)]


def test_a_stream_dropped_unread_is_recorded_as_abandoned(sdk: OpenAI, words, db_path) -> None:
    import gc

    stream = chat(sdk, "one two three four five six", stream=True)
    del stream
    gc.collect()
    assert rows(db_path, "SELECT status, stream_status, chunks FROM call_log") == [
        ("ok", "abandoned", 0)
    ]
    assert rows(db_path, "SELECT COUNT(*) FROM cache_entries") == [(0,)]
    assert words.request_count == 1


def test_a_stream_abandoned_before_its_first_chunk_has_its_prompt_priced(
    sdk: OpenAI, words, db_path
) -> None:
    chat(sdk, "one two three four five six", stream=True).close()
    tokens = "SELECT prompt_tokens, completion_tokens, total_tokens, tokens_estimated FROM call_log"
    assert rows(db_path, tokens) == [(13, 0, 13, 1)]
    cost = rows(db_path, "SELECT cost_usd, response_id FROM call_log")
    assert (Decimal(str(cost[0][0])), cost[0][1]) == (_genai_cost(MODEL, 13, 0), None)


def test_a_stream_held_at_exit_is_recorded_as_abandoned(words, db_path) -> None:
    script = (
        "from llm_ledger.openai import OpenAI\n"
        f"c = OpenAI(ledger={str(db_path)!r})\n"
        "m = [{'role': 'user', 'content': 'one two three four five six'}]\n"
        "s = c.chat.completions.create(model='gpt-4o-mini', messages=m, temperature=0,"
        " stream=True)\n"
        "next(iter(s))\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True)
    assert rows(db_path, "SELECT status, stream_status, chunks FROM call_log") == [
        ("ok", "abandoned", 1)
    ]


def test_a_stream_left_at_its_finish_chunk_survives_sigkill(api, db_path) -> None:
    """The caller stops at the finish chunk (before usage and [DONE]) and is killed: the
    answer was recorded before that chunk reached it, and is a cache entry."""
    import signal

    script = (
        "import sys, time\n"
        "from llm_ledger.openai import OpenAI\n"
        f"c = OpenAI(ledger={str(db_path)!r})\n"
        "m = [{'role': 'user', 'content': 'one two three'}]\n"
        "s = c.chat.completions.create(model='gpt-4o-mini', messages=m, temperature=0,"
        " stream=True)\n"
        "for chunk in s:\n"
        "    if chunk.choices and chunk.choices[0].finish_reason:\n"
        "        break\n"
        "print('finished', flush=True)\n"
        "time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "finished\n"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    OpenAI(ledger=str(db_path)).ledger.recover()  # the next open replays the journal
    assert rows(
        db_path,
        "SELECT status, stream_status, chunks, total_tokens, tokens_estimated FROM call_log",
    ) == [("ok", "complete", 3, 12, 0)]
    assert rows(db_path, "SELECT COUNT(*) FROM cache_entries") == [(1,)]


def test_show_has_a_stream_section_for_streamed_calls_only(sdk: OpenAI, words, db_path) -> None:
    from typer.testing import CliRunner

    from llm_ledger.cli import app

    list(chat(sdk, "one two three", stream=True))
    chat(sdk, "plain")
    streamed = CliRunner().invoke(app, ["--db", str(db_path), "show", "1", "-f", "json"])
    doc = _json(streamed.stdout)
    assert list(doc) == ["call", "usage", "cost", "error", "stream", "request", "response"]
    assert doc["stream"]["stream_status"] == "complete"
    assert doc["stream"]["chunks"] == 5
    assert doc["stream"]["first_chunk_ms"] > 0
    assert len(doc["response"]["llm_ledger_stream"]) == 5
    plain = _json(CliRunner().invoke(app, ["--db", str(db_path), "show", "2", "-f", "json"]).stdout)
    assert "stream" not in plain and "stream_status" not in plain["call"]


def test_a_streamed_call_travels_in_a_bundle_and_replays_there(
    sdk: OpenAI, words, db_path, tmp_path: Path
) -> None:
    from llm_ledger import transfer

    recorded = list(chat(sdk, "one two three", stream=True))
    transfer.export_bundle(str(db_path), tmp_path / "b.jsonl")
    other = tmp_path / "other.db"
    transfer.import_bundle(str(other), tmp_path / "b.jsonl")
    assert rows(other, "SELECT stream_status, chunks FROM call_log") == [("complete", 5)]
    replayer = OpenAI(ledger=str(other), mode="replay")
    assert list(chat(replayer, "one two three", stream=True)) == recorded
    assert words.request_count == 1


def test_a_call_record_from_before_the_stream_columns_reads_them_as_null() -> None:
    import json

    from llm_ledger import transfer

    spec = transfer.FIELDS["call"]
    line = {"type": "call", **{name: None for name in spec}}
    line.update(
        call_uuid="00000000-0000-0000-0000-000000000001",
        created_at="2026-01-01T00:00:00.000000",
        kind="chat",
        api_type="openai",
        model="m",
        namespace="",
        request_hash="0" * 64,
        cache_status="miss",
        status="ok",
        attempts=1,
        tokens_estimated=False,
        library_version="0.1.0",
        call_tags={},
    )
    for name in ("stream_status", "first_chunk_ms", "chunks"):
        del line[name]
    rtype, row = transfer.decode(json.dumps(line).encode())
    assert rtype == "call"
    assert (row["stream_status"], row["first_chunk_ms"], row["chunks"]) == (None, None, None)


def test_a_miss_stored_between_a_lookup_and_its_flight_is_not_asked_again(
    client, api, db_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race behind 2 requests for 100 identical awaits on PostgreSQL: a caller looks up
    (nothing), another identical call runs start to finish, then the first leads a flight."""
    from llm_ledger import calls

    real = calls._lookup
    seen = []

    def lookup(ctx: Any, call: Any, slot: int) -> Any:
        found = real(ctx, call, slot)
        seen.append(bool(found))
        if len(seen) == 1:  # the first caller's lookup: the other call happens meanwhile
            other = threading.Thread(
                target=client.send_message, args=(msgs("race"),), kwargs={"temperature": 0}
            )
            other.start()
            other.join()
        return found

    monkeypatch.setattr(calls, "_lookup", lookup)
    assert client.send_message(msgs("race"), temperature=0)["content"] == "answer 1 to: race"
    assert api.request_count == 1
    assert seen == [False, False, True]
    assert rows(db_path, "SELECT cache_status FROM call_log ORDER BY id") == [("miss",), ("hit",)]
