"""Shared fixtures: the test-kit API server, a clean environment, and one ledger per engine.

PostgreSQL and MariaDB tests use LLM_LEDGER_TEST_PG_URL / LLM_LEDGER_TEST_MYSQL_URL
(defaults: the local servers). When a server cannot be reached the test is skipped
with the reason, unless LLM_LEDGER_REQUIRE_DBS=1 (CI), where it fails.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

import llm_ledger
from llm_ledger import config, flight, registry
from llm_ledger.store import repository
from llm_ledger.store.db import normalize_url
from llm_ledger.testing import FakeOpenAIServer

# The library no longer configures structlog at import; the tests run as an application
# that calls llm_ledger.log.configure() (warning and up, to stderr) would.
llm_ledger.log.configure()

PG_URL = os.environ.get("LLM_LEDGER_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("LLM_LEDGER_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
REQUIRE_DBS = os.environ.get("LLM_LEDGER_REQUIRE_DBS") == "1"
TEST_KEY = "sk-test-PLANTED-SECRET-0123456789"


@pytest.fixture(scope="session")
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as s:
        yield s


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Every test starts with default settings, no built clients, no open ledgers, no slots."""
    for name in list(os.environ):
        if name.startswith(("LLM_LEDGER_", "OPENAI_", "AZURE_OPENAI_")) and not name.startswith(
            "LLM_LEDGER_TEST_"
        ):
            monkeypatch.delenv(name)
    # A server ledger's spool lives under $XDG_CACHE_HOME: one test's must not reach the next.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.chdir(tmp_path)
    config.reset_settings({})
    registry.reset_clients()
    flight.reset_slots(all_runs=True)
    yield
    repository.close_all()
    registry.reset_clients()
    config.reset_settings({})
    flight.reset_slots(all_runs=True)


@pytest.fixture
def api(server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch) -> FakeOpenAIServer:
    """The test-kit server, reset, with the SDK's environment pointing at it."""
    server.reset()
    monkeypatch.setenv("OPENAI_API_KEY", TEST_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    return server


class Sleeps(list):
    """Records the waits the retry loop asks for, without waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def sync_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """``writes="sync"``: for a test about the call's own write (a locked or failing ledger,
    the spool, a full disk), which the default journal moves to the writer thread."""
    monkeypatch.setenv("LLM_LEDGER_WRITES", "sync")  # child processes too
    config.set_default("writes", "sync")


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "ledger.db"


@pytest.fixture
def client(api: FakeOpenAIServer, db_path: Path, sleeps: Sleeps) -> llm_ledger.OpenAIClient:
    return llm_ledger.OpenAIClient(cache_file_name=str(db_path), sleep=sleeps)


def _drop_everything(url: str) -> None:
    engine = create_engine(normalize_url(url))
    with engine.begin() as conn:
        for view in ("calls", "daily_usage", "model_costs", "cached_answers"):
            conn.execute(text(f"DROP VIEW IF EXISTS {view}"))
        for table in (
            "answer_search",  # migration 0008's search table (MariaDB, SQLite)
            "call_tags",
            "call_log",
            "cache_entries",
            "responses",
            "requests",
            "alembic_version",
        ):
            conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
    engine.dispose()


def server_db(url: str, name: str) -> str:
    try:
        _drop_everything(url)
    except Exception as exc:  # noqa: BLE001 - turned into a skip (or a failure in CI)
        reason = f"{name} not reachable at {url} ({type(exc).__name__}); set LLM_LEDGER_TEST_{'PG' if name == 'PostgreSQL' else 'MYSQL'}_URL"
        if REQUIRE_DBS:
            pytest.fail(reason)
        pytest.skip(reason)
    return url


@pytest.fixture
def pg_url() -> Iterator[str]:
    yield server_db(PG_URL, "PostgreSQL")
    repository.close_all()


@pytest.fixture
def mysql_url() -> Iterator[str]:
    yield server_db(MYSQL_URL, "MariaDB")
    repository.close_all()


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def any_db(request: pytest.FixtureRequest, db_path: Path) -> Iterator[str]:
    """A fresh, empty ledger location on each engine."""
    if request.param == "sqlite":
        yield str(db_path)
    elif request.param == "postgresql":
        yield server_db(PG_URL, "PostgreSQL")
    else:
        yield server_db(MYSQL_URL, "MariaDB")
    repository.close_all()


def completion(content: str = "canned", model: str = "gpt-4o-mini") -> dict[str, Any]:
    """A chat completion as a plain dict, without usage (a custom client's raw answer)."""
    return {
        "id": "x",
        "object": "chat.completion",
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
    }


class CannedClient(llm_ledger.OpenAIClient):
    """A client whose raw call answers "canned" as a plain dict, without usage."""

    def _raw_model_call(self, model: str, chat_api_params: dict[str, Any]) -> Any:
        return completion(model=model)


def msgs(text: str = "hello there") -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def wait_for(predicate: Callable[[], bool], seconds: float = 10.0) -> bool:
    """Poll ``predicate`` until it holds (True) or ``seconds`` pass (its last answer)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()
