"""The seed's API over the ledger: calls, hits, retries, errors, embeddings, registry."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

import llm_ledger
from llm_ledger import config
from llm_ledger.testing import FakeOpenAIServer

from .conftest import CannedClient, Sleeps, msgs

SEED_NAMES = [
    "OpenAIClient",
    "AzureClient",
    "LLMCall",
    "InvalidRequestError",
    "NonTerminalError",
    "register_client",
    "_get_client_for_api_type",
    "client",
    "force_api_type",
    "force_api_cache",
    "force_default_value",
    "default",
    "logger",
]


def rows(db: Path, sql: str) -> list[tuple]:
    llm_ledger.flush()  # calls are written behind them (writes="journal")
    engine = create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        result = [tuple(r) for r in conn.execute(text(sql))]
    engine.dispose()
    return result


def test_every_seed_name_is_importable() -> None:
    missing = [name for name in SEED_NAMES if not hasattr(llm_ledger, name)]
    assert missing == []
    for method in (
        "send_message",
        "get_embedding",
        "set_api_cache",
        "_setup_from_config",
        "_raw_model_call",
        "_raw_model_response_extractor",
        "_count_tokens",
        "_save_cache",
        "_load_cache",
        "_raw_embedding_model_call",
        "_raw_embedding_model_response_extractor",
    ):
        assert callable(getattr(llm_ledger.OpenAIClient, method)), method
    assert issubclass(llm_ledger.AzureClient, llm_ledger.OpenAIClient)


def test_default_has_the_seed_keys_and_env_overrides() -> None:
    config.reset_settings({"LLM_LEDGER_MODEL": "gpt-4.1", "LLM_LEDGER_MAX_ATTEMPTS": "3"})
    d = llm_ledger.default
    for key in (
        "model",
        "temperature",
        "max_tokens",
        "top_p",
        "frequency_penalty",
        "presence_penalty",
        "timeout",
        "max_attempts",
        "waiting_time",
        "exponential_backoff_factor",
        "embedding_model",
        "cache_api_calls",
        "cache_file_name",
    ):
        assert key in d
    assert (d["model"], d["max_attempts"], d["cache_file_name"]) == ("gpt-4.1", 3, "llm_ledger.db")


def test_force_default_value_rejects_unknown_key_naming_valid_ones() -> None:
    with pytest.raises(
        ValueError, match=r"unknown setting 'modle'; valid settings are: model, temperature"
    ):
        llm_ledger.force_default_value("modle", "x")
    llm_ledger.force_default_value("model", "gpt-4o")
    assert llm_ledger.default["model"] == "gpt-4o"


def test_bad_env_value_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"LLM_LEDGER_TEMPERATURE='hot': expected float"):
        config.reset_settings({"LLM_LEDGER_TEMPERATURE": "hot"})


def test_send_message_returns_assistant_message_and_records_a_miss(client, api, db_path) -> None:
    message = client.send_message(msgs(), temperature=0)
    assert message["role"] == "assistant"
    assert message["content"] == "answer 1 to: hello there"
    assert api.chat_count == 1
    assert rows(
        db_path,
        "SELECT kind, api_type, model, cache_status, status, attempts, prompt_tokens, "
        "completion_tokens, total_tokens, cached_tokens, reasoning_tokens, tokens_estimated, "
        "error_type, endpoint_host FROM calls",
    ) == [
        (
            "chat",
            "openai",
            "gpt-4o-mini",
            "miss",
            "ok",
            1,
            5,
            5,
            10,
            0,
            0,
            0,
            None,
            api.url.split("//")[1].split("/")[0],
        )
    ]


def test_repeated_request_is_answered_from_the_ledger(client, api, db_path) -> None:
    first = client.send_message(msgs(), temperature=0)
    second = client.send_message(msgs(), temperature=0)
    assert first == second
    assert api.chat_count == 1
    assert rows(
        db_path, "SELECT cache_status, attempts, prompt_tokens, cost_usd FROM calls ORDER BY id"
    ) == [
        ("miss", 1, 5, 0.00000375),  # 5 x $0.15/M + 5 x $0.60/M
        ("hit", 0, 5, 0.0),
    ]


def test_second_process_is_answered_from_the_ledger(client, api, db_path, tmp_path) -> None:
    client.send_message(msgs("shared question"), temperature=0)
    assert api.request_count == 1
    script = (
        "import llm_ledger, sys\n"
        f"c = llm_ledger.OpenAIClient(cache_file_name={str(db_path)!r})\n"
        "m = c.send_message([{'role': 'user', 'content': 'shared question'}], temperature=0)\n"
        "print(m['content'])\n"
    )
    env = {**os.environ, "OPENAI_API_KEY": "sk-other", "OPENAI_BASE_URL": api.url}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "answer 1 to: shared question"
    assert api.request_count == 1
    assert rows(db_path, "SELECT cache_status FROM calls ORDER BY id") == [("miss",), ("hit",)]


def test_retries_use_exponential_backoff_and_count_attempts(
    client, api, db_path, sleeps: Sleeps
) -> None:
    api.fail_next(500, times=2)
    message = client.send_message(
        msgs(), temperature=0, waiting_time=0.5, exponential_backoff_factor=3
    )
    assert message["content"] == "answer 1 to: hello there"
    assert sleeps == [0.5, 1.5]
    assert api.request_count == 3
    assert rows(db_path, "SELECT status, attempts FROM calls") == [("ok", 3)]


def test_rate_limit_waits_what_retry_after_says(client, api, db_path, sleeps: Sleeps) -> None:
    api.fail_next(429, retry_after=7)
    client.send_message(msgs(), temperature=0)
    assert sleeps == [7.0]
    assert rows(db_path, "SELECT status, attempts FROM calls") == [("ok", 2)]


def test_giving_up_returns_none_and_records_why(client, api, db_path, sleeps: Sleeps) -> None:
    api.fail_next(500, times=3)
    assert (
        client.send_message(
            msgs(), temperature=0, max_attempts=3, waiting_time=1, exponential_backoff_factor=2
        )
        is None
    )
    assert sleeps == [1.0, 2.0]
    [(status, attempts, error_type, message)] = rows(
        db_path, "SELECT status, attempts, error_type, error_message FROM calls"
    )
    assert (status, attempts, error_type) == ("error", 3, "InternalServerError")
    assert "500" in message


def test_bad_request_is_not_retried_and_is_recorded(client, api, db_path, sleeps: Sleeps) -> None:
    api.fail_next(400, message="bad things")
    assert client.send_message(msgs(), temperature=0) is None
    assert sleeps == []
    assert api.request_count == 1
    assert rows(db_path, "SELECT status, attempts, error_type FROM calls") == [
        ("error", 1, "BadRequestError")
    ]


def test_raise_on_error_gives_the_typed_exception(client, api) -> None:
    api.fail_next(400, message="bad things")
    with pytest.raises(llm_ledger.InvalidRequestError, match="bad things"):
        client.send_message(msgs(), temperature=0, raise_on_error=True)
    api.fail_next(429, times=2)
    with pytest.raises(llm_ledger.RateLimitError) as info:
        client.send_message(msgs(), temperature=0, max_attempts=2, raise_on_error=True)
    assert info.value.attempts == 2


def test_non_terminal_error_from_a_custom_raw_call_is_retried(api, db_path, sleeps: Sleeps) -> None:
    class Flaky(llm_ledger.OpenAIClient):
        calls = 0

        def _raw_model_call(self, model, chat_api_params):
            Flaky.calls += 1
            if Flaky.calls == 1:
                raise llm_ledger.NonTerminalError("try again")
            return super()._raw_model_call(model, chat_api_params)

    c = Flaky(cache_file_name=str(db_path), sleep=sleeps)
    assert c.send_message(msgs(), temperature=0)["content"] == "answer 1 to: hello there"
    assert Flaky.calls == 2
    assert rows(db_path, "SELECT attempts FROM calls") == [(2,)]


def test_custom_raw_call_can_return_a_plain_dict(db_path) -> None:
    c = CannedClient(cache_file_name=str(db_path))
    assert c.send_message(msgs("count these words"), temperature=0) == {
        "role": "assistant",
        "content": "canned",
    }
    # No usage in the answer: tiktoken estimates it, and the row says so.
    assert rows(
        db_path, "SELECT prompt_tokens, completion_tokens, tokens_estimated FROM calls"
    ) == [(10, 2, 1)]


def test_embeddings_are_cached_and_recorded(client, api, db_path) -> None:
    v1 = client.get_embedding("the quick brown fox")
    v2 = client.get_embedding("the quick brown fox")
    assert v1 == v2 and len(v1) == 8
    assert api.embedding_count == 1
    assert rows(
        db_path, "SELECT kind, model, cache_status, items_total, items_hit FROM calls ORDER BY id"
    ) == [
        ("embedding", "text-embedding-3-small", "miss", 1, 0),
        ("embedding", "text-embedding-3-small", "hit", 1, 1),
    ]


def test_cache_off_still_records_every_call(api, db_path) -> None:
    c = llm_ledger.OpenAIClient(cache_api_calls=False, cache_file_name=str(db_path))
    c.send_message(msgs(), temperature=0)
    c.send_message(msgs(), temperature=0)
    assert api.chat_count == 2
    assert rows(db_path, "SELECT cache_status FROM calls") == [("bypass",), ("bypass",)]
    assert rows(db_path, "SELECT COUNT(*) FROM cache_entries") == [(0,)]


def test_recording_can_be_turned_off(api, tmp_path) -> None:
    c = llm_ledger.OpenAIClient(
        cache_api_calls=False, record_calls=False, cache_file_name=str(tmp_path / "none.db")
    )
    assert c.send_message(msgs(), temperature=0)["content"] == "answer 1 to: hello there"
    assert not (tmp_path / "none.db").exists()


def test_count_tokens_uses_the_cookbook_overhead(client) -> None:
    assert (
        client._count_tokens([{"role": "user", "content": "hello world"}], "gpt-4o-mini")
        == 3 + 1 + 2 + 3
    )


def test_importing_makes_no_file_and_no_connection(tmp_path) -> None:
    script = (
        "import socket\n"
        "def no(*a, **k): raise AssertionError('network')\n"
        "socket.socket.connect = no\n"
        "import llm_ledger\n"
        "llm_ledger.client()\n"
        "import os; print(sorted(os.listdir('.')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_registry_defaults_and_unknown_type(api) -> None:
    assert isinstance(llm_ledger.client(), llm_ledger.OpenAIClient)
    assert llm_ledger._get_client_for_api_type("azure").__class__ is llm_ledger.AzureClient
    with pytest.raises(
        ValueError, match=r"no client registered for api_type 'bogus'; registered: azure, openai"
    ):
        llm_ledger._get_client_for_api_type("bogus")
    with pytest.raises(ValueError, match=r"unknown api_type 'bogus'"):
        llm_ledger.force_api_type("bogus")


def test_register_client_and_force_api_type(api, db_path) -> None:
    mine = llm_ledger.OpenAIClient(cache_file_name=str(db_path))
    llm_ledger.register_client("mine", mine)
    llm_ledger.force_api_type("mine")
    assert llm_ledger.client() is mine


def test_force_api_cache_applies_to_every_registered_client(api, tmp_path) -> None:
    a = llm_ledger._get_client_for_api_type("openai")
    b = llm_ledger._get_client_for_api_type("azure")
    llm_ledger.force_api_cache(False, str(tmp_path / "forced.db"))
    assert (a.cache_api_calls, b.cache_api_calls) == (False, False)
    assert a.cache_file_name == b.cache_file_name == str(tmp_path / "forced.db")
    a.send_message(msgs(), temperature=0)
    assert rows(tmp_path / "forced.db", "SELECT cache_status FROM calls") == [("bypass",)]


def test_azure_client_uses_deployment_and_env(api, monkeypatch, db_path) -> None:
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", api.azure_endpoint)
    monkeypatch.setenv("AZURE_OPENAI_KEY", "azure-key-123456")
    monkeypatch.setenv("OPENAI_API_VERSION", "2024-06-01")
    c = llm_ledger.AzureClient(cache_file_name=str(db_path))
    assert (
        c.send_message(msgs(), model="prod-chat", temperature=0)["content"]
        == "answer 1 to: hello there"
    )
    req = api.requests[-1]
    assert req.path.startswith("/openai/deployments/prod-chat/chat/completions")
    assert req.headers["api-key"] == "azure-key-123456"
    assert rows(db_path, "SELECT api_type, model, cost_usd, cost_note IS NOT NULL FROM calls") == [
        ("azure", "prod-chat", None, 1)
    ]


def test_azure_client_without_endpoint_says_what_to_set(db_path) -> None:
    c = llm_ledger.AzureClient(cache_file_name=str(db_path))
    with pytest.raises(
        llm_ledger.ConfigError, match="AZURE_OPENAI_ENDPOINT and AZURE_OPENAI_API_KEY"
    ):
        c.send_message(msgs(), model="prod-chat", temperature=0)


def test_llmcall_renders_mustache_and_records_template_names(api, tmp_path, db_path) -> None:
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "sys.mustache").write_text("You are {{role}}.")
    (tmp_path / "prompts" / "user.md").write_text("List: {{#items}}{{.}} {{/items}}")
    llm_ledger.force_default_value("template_dir", str(tmp_path / "prompts"))
    llm_ledger.force_api_cache(True, str(db_path))
    call = llm_ledger.LLMCall("sys", "user", temperature=0)
    assert call.call(role="a pirate", items=["a", "b"]) == "answer 1 to: List: a b "
    assert call.messages == [
        {"role": "system", "content": "You are a pirate."},
        {"role": "user", "content": "List: a b "},
    ]
    assert rows(db_path, "SELECT template FROM calls") == [("sys+user",)]


def test_missing_api_key_is_a_clear_error_before_any_request(db_path) -> None:
    c = llm_ledger.OpenAIClient(cache_file_name=str(db_path))
    with pytest.raises(llm_ledger.ConfigError, match="OPENAI_API_KEY is not set"):
        c.send_message(msgs(), temperature=0)


def test_stored_response_is_the_sdk_json(client, db_path, api: FakeOpenAIServer) -> None:
    client.send_message(msgs(), temperature=0)
    [(response,)] = rows(db_path, "SELECT response FROM responses")
    assert '"object":"chat.completion"' in response and '"system_fingerprint":"fp_test"' in response


def test_stored_request_and_response_texts_are_what_their_hashes_name(any_db, api) -> None:
    """Each JSON text is serialised once for its hash and its column: they must agree."""
    import hashlib
    import json

    from sqlalchemy import select

    from llm_ledger import keys
    from llm_ledger.store.models import Request, Response

    c = llm_ledger.OpenAIClient(cache_file_name=any_db)
    c.send_message(msgs("é ü 😀"), temperature=0)
    ledger = c.ledger
    with ledger.engine.connect() as conn:
        ((request_hash, request),) = conn.execute(select(Request.request_hash, Request.request))
        ((response_hash, response),) = conn.execute(
            select(Response.response_hash, Response.response)
        )
    assert request["messages"] == msgs("é ü 😀")
    assert hashlib.sha256(keys.canonical_json(request).encode()).hexdigest() == request_hash
    assert hashlib.sha256(keys.canonical_json(response).encode()).hexdigest() == response_hash
    assert json.loads(keys.canonical_json(response))["choices"][0]["message"]["content"] == (
        "answer 1 to: é ü 😀"
    )
