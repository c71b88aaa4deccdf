"""``llm_ledger.tinytroupe.install()`` against a stand-in with TinyTroupe v0.6's interface.

TinyTroupe is not on the package index, so CI cannot install it: ``fake_tinytroupe`` puts
modules named ``tinytroupe`` and ``tinytroupe.clients`` in ``sys.modules`` with the parts
``install()`` uses (``config_manager.get/update``, ``register_client``,
``_get_client_for_api_type``, ``client``, ``force_api_cache``). The last test runs
against the real TinyTroupe when it is installed, and is skipped otherwise.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest

import llm_ledger
from llm_ledger.testing import FakeOpenAIServer
from llm_ledger.tinytroupe import (
    LedgerEmbedder,
    TinyTroupeMissingError,
    TinyTroupeOllamaClient,
    TinyTroupeOpenAIClient,
    install,
)

from .conftest import Sleeps, msgs
from .test_client import rows

# TinyTroupe v0.6's config.ini defaults, as its ConfigManager holds them.
TT_DEFAULTS: dict[str, Any] = {
    "api_type": "openai",
    "azure_api_version": "2024-12-01-preview",
    "base_url": None,
    "model": "gpt-4o-mini",
    "embedding_model": "text-embedding-3-small",
    "reasoning_model": "o3-mini",
    "max_completion_tokens": 128000,
    "temperature": None,
    "top_p": None,
    "frequency_penalty": None,
    "presence_penalty": None,
    "reasoning_effort": "high",
    "timeout": 480.0,
    "max_attempts": 5.0,
    "waiting_time": 0.0,  # TinyTroupe's is 1.0 (a pause before every API request)
    "exponential_backoff_factor": 5.0,
    "max_concurrent_model_calls": 4,
    "cache_api_calls": False,
    "cache_file_name": "openai_api_cache.pickle",
}


class FakeConfigManager:
    def __init__(self) -> None:
        self._config = dict(TT_DEFAULTS)

    def get(self, key: str, default: Any = None) -> Any:
        return self._config.get(key.lower(), default)

    def update(self, key: str, value: Any) -> None:
        self._config[key.lower()] = value


class FakeOriginalClient:
    """TinyTroupe's own client, as far as install() looks at it."""

    def __init__(self, config: FakeConfigManager) -> None:
        self.cache_api_calls = config.get("cache_api_calls")
        self.cache_file_name = config.get("cache_file_name")

    def set_api_cache(self, cache_api_calls: bool, cache_file_name: str | None = None) -> None:
        self.cache_api_calls, self.cache_file_name = cache_api_calls, cache_file_name


@pytest.fixture
def tt(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    config = FakeConfigManager()
    registry: dict[str, Any] = {}
    package = types.ModuleType("tinytroupe")
    package.config_manager = config  # type: ignore[attr-defined]
    clients = types.ModuleType("tinytroupe.clients")

    def _get_client_for_api_type(api_type: str) -> Any:
        try:
            return registry[api_type]
        except KeyError:
            raise ValueError(f"API type {api_type} is not supported.") from None

    def force_api_cache(cache_api_calls: bool, cache_file_name: str | None = None) -> None:
        for c in registry.values():
            c.set_api_cache(cache_api_calls, cache_file_name or config.get("cache_file_name"))

    clients.register_client = registry.__setitem__  # type: ignore[attr-defined]
    clients._get_client_for_api_type = _get_client_for_api_type  # type: ignore[attr-defined]
    clients.client = lambda: _get_client_for_api_type(config.get("api_type"))  # type: ignore[attr-defined]
    clients.force_api_cache = force_api_cache  # type: ignore[attr-defined]
    package.clients = clients  # type: ignore[attr-defined]
    for api_type in ("openai", "azure", "ollama"):
        registry[api_type] = FakeOriginalClient(config)
    monkeypatch.setitem(sys.modules, "tinytroupe", package)
    monkeypatch.setitem(sys.modules, "tinytroupe.clients", clients)
    return types.SimpleNamespace(config=config, clients=clients, registry=registry)


def _sent(api: FakeOpenAIServer) -> dict:
    body = dict(api.requests[-1].body or {})
    body.pop("messages")
    return body


def test_install_without_tinytroupe_names_the_missing_package(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "tinytroupe", None)
    with pytest.raises(TinyTroupeMissingError, match="tinytroupe cannot be imported"):
        install(embeddings=False)


def test_install_registers_ledger_clients_and_is_idempotent(tt) -> None:
    first = install(embeddings=False)
    assert sorted(first) == ["azure", "ollama", "openai"]
    assert type(tt.clients.client()) is TinyTroupeOpenAIClient
    assert type(tt.registry["ollama"]) is TinyTroupeOllamaClient
    second = install(embeddings=False)
    assert all(second[t] is first[t] for t in first)
    assert all(tt.registry[t] is first[t] for t in first)


def test_install_rejects_an_unknown_api_type(tt) -> None:
    with pytest.raises(llm_ledger.ConfigError, match="valid ones are: openai, azure, ollama"):
        install(api_types=("openai", "bedrock"), embeddings=False)
    assert type(tt.registry["openai"]) is FakeOriginalClient


def test_tinytroupes_configuration_shapes_the_request(tt, api, tmp_path: Path) -> None:
    install(embeddings=False)
    tt.clients.client().send_message(msgs(), dedent_messages=True)
    assert _sent(api) == {"model": "gpt-4o-mini", "max_completion_tokens": 128000}
    tt.config.update("model", "gpt-4o")
    tt.config.update("max_completion_tokens", 300)
    tt.config.update("temperature", 0.7)
    tt.clients.client().send_message(msgs())
    assert _sent(api) == {"model": "gpt-4o", "max_completion_tokens": 300, "temperature": 0.7}
    # A reasoning model gets TinyTroupe's REASONING_EFFORT and no sampling parameters.
    tt.clients.client().send_message(msgs(), model="o3-mini", temperature=1.0)
    assert _sent(api) == {
        "model": "o3-mini",
        "max_completion_tokens": 300,
        "reasoning_effort": "high",
    }


def test_tinytroupes_cache_settings_and_file_are_honoured(tt, api, tmp_path: Path) -> None:
    install(embeddings=False)
    c = tt.clients.client()
    assert (c.cache_api_calls, c.cache_file_name) == (False, "openai_api_cache.pickle")
    c.send_message(msgs())
    c.send_message(msgs())
    assert api.chat_count == 2  # CACHE_API_CALLS=False: recorded, not served
    tt.config.update("cache_api_calls", True)
    # TinyTroupe sends no temperature: the API samples, so each repeat within a run has its
    # own sample slot; a rerun (a new process, or reset_slots) is served the same samples.
    llm_ledger.reset_slots()
    c.send_message(msgs())
    llm_ledger.reset_slots()
    c.send_message(msgs())
    assert api.chat_count == 3
    ledger = tmp_path / "openai_api_cache.ledger.db"
    assert rows(ledger, "SELECT cache_status FROM calls ORDER BY id") == [
        ("bypass",),
        ("bypass",),
        ("miss",),
        ("hit",),
    ]
    assert not (tmp_path / "openai_api_cache.pickle").exists()


def test_force_api_cache_reaches_the_installed_clients(tt, api, tmp_path: Path) -> None:
    install(embeddings=False)
    tt.clients.force_api_cache(True, str(tmp_path / "sim.pickle"))
    c = tt.clients.client()
    assert (c.cache_api_calls, c.cache_file_name) == (True, str(tmp_path / "sim.pickle"))
    c.send_message(msgs())
    llm_ledger.reset_slots()  # a rerun
    c.send_message(msgs())
    assert api.chat_count == 1
    assert rows(tmp_path / "sim.ledger.db", "SELECT count(*) FROM calls") == [(2,)]


def test_retry_settings_come_from_tinytroupe(tt, api, sleeps: Sleeps) -> None:
    install(embeddings=False, sleep=sleeps)
    tt.config.update("max_attempts", 3.0)
    tt.config.update("waiting_time", 0.5)
    tt.config.update("exponential_backoff_factor", 3.0)
    api.fail_next(500, times=3)
    assert tt.clients.client().send_message(msgs()) is None
    assert api.chat_count == 0 and api.request_count == 3
    # TinyTroupe's pause before each request, and the backoff between attempts.
    assert sleeps == [0.5, 0.5, 0.5, 1.5, 0.5]


def test_the_pause_before_a_request_is_not_made_before_a_hit(tt, api, sleeps: Sleeps) -> None:
    tt.config.update("cache_api_calls", True)
    tt.config.update("waiting_time", 2.0)
    c = install(embeddings=False, sleep=sleeps)["openai"]
    c.send_message(msgs())
    llm_ledger.reset_slots()  # a rerun
    c.send_message(msgs())
    assert (sleeps, api.chat_count) == ([2.0], 1)


def test_timeout_and_models_come_from_tinytroupe_at_each_call(tt) -> None:
    c = install(embeddings=False)["openai"]
    s = c._settings()
    assert (s.timeout, s.max_attempts, s.model, s.embedding_model, s.max_tokens) == (
        480.0,
        5,
        "gpt-4o-mini",
        "text-embedding-3-small",
        None,
    )
    tt.config.update("timeout", 30.0)
    tt.config.update("embedding_model", "text-embedding-3-large")
    assert (c._settings().timeout, c._settings().embedding_model) == (
        30.0,
        "text-embedding-3-large",
    )
    # The ledger's own settings are untouched when TinyTroupe is not involved.
    assert llm_ledger.settings().timeout == 60.0
    assert llm_ledger.OpenAIClient()._settings().max_tokens == 1024


def test_max_concurrent_model_calls_follows_tinytroupes_setting(tt) -> None:
    c = install(embeddings=False)["openai"]
    assert c._concurrency_limit() == 4
    tt.config.update("max_concurrent_model_calls", None)  # TinyTroupe's "NONE": no limit
    assert c._concurrency_limit() is None
    assert install(embeddings=False)["openai"] is c


def test_ollama_goes_to_tinytroupes_base_url_and_is_recorded(tt, api, tmp_path: Path) -> None:
    tt.config.update("base_url", api.url)
    tt.config.update("model", "gemma3:1b")
    tt.config.update("top_p", 0.8)
    tt.config.update("cache_file_name", str(tmp_path / "ollama.db"))
    c = install(embeddings=False)["ollama"]
    assert c.send_message(msgs())["content"] == "answer 1 to: hello there"
    assert api.requests[-1].path == "/v1/chat/completions"
    assert api.requests[-1].headers["authorization"] == "Bearer ollama"
    assert _sent(api) == {"model": "gemma3:1b", "top_p": 0.8}
    assert rows(tmp_path / "ollama.db", "SELECT api_type, model FROM calls") == [
        ("ollama", "gemma3:1b")
    ]


def test_azure_without_a_key_signs_in_with_entra_id(tt, api, monkeypatch, tmp_path) -> None:
    asked: list[str] = []
    identity = types.ModuleType("azure.identity")

    class DefaultAzureCredential:
        pass

    def get_bearer_token_provider(credential: Any, scope: str) -> Any:
        assert isinstance(credential, DefaultAzureCredential)
        asked.append(scope)
        return lambda: "entra-token-123"

    identity.DefaultAzureCredential = DefaultAzureCredential  # type: ignore[attr-defined]
    identity.get_bearer_token_provider = get_bearer_token_provider  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "azure", types.ModuleType("azure"))
    monkeypatch.setitem(sys.modules, "azure.identity", identity)
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", api.azure_endpoint)
    tt.config.update("cache_file_name", str(tmp_path / "az.db"))
    c = install(embeddings=False)["azure"]
    c.send_message(msgs(), model="prod-chat")
    req = api.requests[-1]
    assert (
        req.path == "/openai/deployments/prod-chat/chat/completions?api-version=2024-12-01-preview"
    )
    assert req.headers["authorization"] == "Bearer entra-token-123"
    assert "api-key" not in req.headers
    assert asked == ["https://cognitiveservices.azure.com/.default"]
    assert rows(tmp_path / "az.db", "SELECT api_type, model FROM calls") == [("azure", "prod-chat")]


def test_azure_without_key_or_azure_identity_says_what_to_install(api, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "azure.identity", None)
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", api.azure_endpoint)
    c = llm_ledger.AzureClient(raise_on_error=True)
    with pytest.raises(llm_ledger.ConfigError, match=r"pip install 'llm-ledger\[azure\]'"):
        c.send_message(msgs(), model="prod-chat", temperature=0)
    assert api.request_count == 0


def test_the_embedder_goes_through_the_ledgers_embedding_cache(tt, api, tmp_path) -> None:
    tt.config.update("cache_api_calls", True)
    tt.config.update("cache_file_name", str(tmp_path / "emb.db"))
    embedder = LedgerEmbedder(install(embeddings=False)["openai"])
    assert embedder.model_name() == "text-embedding-3-small"
    first = embedder.embed(["alpha", "beta"])
    assert embedder.embed(["beta", "alpha"]) == [first[1], first[0]]
    assert len(first[0]) == api.embedding_dim
    assert api.embedding_count == 1
    assert rows(tmp_path / "emb.db", "SELECT kind, items_total, items_hit FROM calls") == [
        ("embedding", 2, 0),
        ("embedding", 2, 2),
    ]


def test_llama_index_settings_get_the_ledger_model(tt, api, tmp_path) -> None:
    core = pytest.importorskip("llama_index.core", reason="llama-index-core is not installed")
    tt.config.update("cache_api_calls", True)
    tt.config.update("cache_file_name", str(tmp_path / "li.db"))
    install()
    model = core.Settings.embed_model
    assert type(model).__name__ == "LedgerEmbedding"
    assert model.get_text_embedding("alpha") == model.get_query_embedding("alpha")
    assert api.embedding_count == 1
    assert install() and core.Settings.embed_model is model


def test_the_real_tinytroupe_gets_ledger_clients(monkeypatch, api, tmp_path) -> None:
    pytest.importorskip(
        "tinytroupe", reason="TinyTroupe is not installed (it is not on the package index)"
    )
    import tinytroupe.clients

    installed = install(embeddings=False)
    assert tinytroupe.clients.client() is installed[tinytroupe.config_manager.get("api_type")]
    assert isinstance(tinytroupe.clients.client(), llm_ledger.OpenAIClient)
