"""A TinyTroupe pickle at the cache path: never overwritten, its ledger beside it, imported once."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pydantic
import pytest
from openai import OpenAI

import llm_ledger
from llm_ledger import pickles
from llm_ledger.testing import FakeOpenAIServer

from .conftest import TEST_KEY, msgs
from .test_client import rows

TT_PARAMS = {"max_completion_tokens": 300, "timeout": 480.0, "stream": False, "n": 1}


def tt_key(model: str, messages: list[dict[str, str]]) -> str:
    """TinyTroupe v0.6's cache key: str((model, chat_api_params)), model inside the params."""
    return str((model, {"model": model, "messages": messages, **TT_PARAMS}))


@pytest.fixture(autouse=True)
def forget_imports() -> None:
    pickles._imported.clear()  # each test is a fresh process as far as "imported once" goes


@pytest.fixture
def tt_pickle(tmp_path: Path, api: FakeOpenAIServer) -> Path:
    """openai_api_cache.pickle as TinyTroupe v0.6 writes it (model_dump() of the answer)."""
    sdk = OpenAI(api_key=TEST_KEY, base_url=api.url, max_retries=0)
    cache: dict[str, Any] = {}
    for text in ("cached question", "another"):
        answer = sdk.chat.completions.create(
            model="gpt-4o-mini", messages=msgs(text), max_completion_tokens=300
        )
        cache[tt_key("gpt-4o-mini", msgs(text))] = answer.model_dump()
    path = tmp_path / "openai_api_cache.pickle"
    path.write_bytes(pickle.dumps(cache))
    api.reset()
    return path


def ask(client: llm_ledger.OpenAIClient, text: str) -> Any:
    """The call TinyTroupe's settings make (nothing but max_completion_tokens)."""
    return client.send_message(
        msgs(text),
        temperature=None,
        max_tokens=None,
        top_p=None,
        frequency_penalty=None,
        presence_penalty=None,
        max_completion_tokens=300,
    )


def test_the_ledger_opens_beside_the_pickle_and_serves_its_answers(
    tt_pickle: Path, api: FakeOpenAIServer, tmp_path: Path
) -> None:
    before = tt_pickle.read_bytes()
    c = llm_ledger.OpenAIClient(cache_file_name=str(tt_pickle))
    assert c.cache_file_name == str(tt_pickle)
    assert c.ledger_location == str(tmp_path / "openai_api_cache.ledger.db")
    assert ask(c, "cached question")["content"] == "answer 1 to: cached question"
    assert api.request_count == 0
    ask(c, "a new question")
    assert api.request_count == 1
    assert tt_pickle.read_bytes() == before
    ledger = tmp_path / "openai_api_cache.ledger.db"
    assert rows(ledger, "SELECT api_type, cache_status FROM calls ORDER BY id") == [
        ("import", "bypass"),
        ("import", "bypass"),
        ("openai", "hit"),
        ("openai", "miss"),
    ]


def test_the_pickle_is_imported_once_when_its_ledger_is_created(
    tt_pickle: Path, api: FakeOpenAIServer, tmp_path: Path
) -> None:
    ask(llm_ledger.OpenAIClient(cache_file_name=str(tt_pickle)), "cached question")
    # TinyTroupe's own client adds an entry later; reopening the ledger does not re-import.
    cache = pickles.load_cache(tt_pickle)
    cache[tt_key("gpt-4o-mini", msgs("added later"))] = next(iter(cache.values()))
    tt_pickle.write_bytes(pickle.dumps(cache))
    llm_ledger.store.repository.close_all()
    pickles._imported.clear()
    ask(llm_ledger.OpenAIClient(cache_file_name=str(tt_pickle)), "added later")
    assert api.request_count == 1
    ledger = tmp_path / "openai_api_cache.ledger.db"
    assert rows(ledger, "SELECT count(*) FROM calls WHERE api_type = 'import'") == [(2,)]


def test_no_database_is_ever_made_under_a_pickle_name(api: FakeOpenAIServer, tmp_path) -> None:
    c = llm_ledger.OpenAIClient(cache_file_name=str(tmp_path / "openai_api_cache.pickle"))
    c.send_message(msgs(), temperature=0)
    llm_ledger.store.repository.close_all()  # SQLite's -wal/-shm files go with the last connection
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("xdg")) == [
        "openai_api_cache.ledger.db"
    ]


def test_an_unsafe_pickle_is_left_alone_and_the_calls_go_on(
    api: FakeOpenAIServer, tmp_path: Path
) -> None:
    path = tmp_path / "openai_api_cache.pickle"
    evil = pickle.dumps({"k": print})  # names builtins.print: refused by the safe unpickler
    path.write_bytes(evil)
    c = llm_ledger.OpenAIClient(cache_file_name=str(path))
    assert c.send_message(msgs(), temperature=0)["content"] == "answer 1 to: hello there"
    assert path.read_bytes() == evil
    assert rows(tmp_path / "openai_api_cache.ledger.db", "SELECT api_type FROM calls") == [
        ("openai",)
    ]


@pytest.mark.parametrize(
    "location, expected",
    [
        ("openai_api_cache.pickle", ("openai_api_cache.ledger.db", True)),
        ("dir/x.pickle", ("dir/x.ledger.db", True)),
        ("sqlite:///dir/x.pickle", ("sqlite:///dir/x.ledger.db", True)),
        ("ledger.db", ("ledger.db", False)),
        ("postgresql://u@h/db", ("postgresql://u@h/db", False)),
    ],
)
def test_ledger_beside(location: str, expected: tuple[str, bool]) -> None:
    db_location, pickle_path = pickles.ledger_beside(location)
    assert (db_location, pickle_path is not None) == expected


class Verdict(pydantic.BaseModel):
    is_complete: bool


def test_a_pydantic_response_format_in_tinytroupes_key_is_imported(
    api: FakeOpenAIServer, tmp_path: Path
) -> None:
    """TinyTroupe v0.6's keys hold the response_format class itself (its repr): the class is
    found among the modules already imported and becomes the schema send_message sends."""
    api.reply_with('{"is_complete": true}')
    sdk = OpenAI(api_key=TEST_KEY, base_url=api.url, max_retries=0)
    answer = sdk.chat.completions.create(
        model="gpt-4o-mini", messages=msgs("judge"), max_completion_tokens=300
    )
    params = {"model": "gpt-4o-mini", "messages": msgs("judge"), **TT_PARAMS}
    params["response_format"] = Verdict
    key = str(("gpt-4o-mini", params))
    assert f"'response_format': <class '{__name__}.Verdict'>" in key
    path = tmp_path / "openai_api_cache.pickle"
    path.write_bytes(pickle.dumps({key: answer.model_dump()}))
    api.reset()
    c = llm_ledger.OpenAIClient(cache_file_name=str(path))
    got = c.send_message(
        msgs("judge"),
        temperature=None,
        max_tokens=None,
        top_p=None,
        frequency_penalty=None,
        presence_penalty=None,
        max_completion_tokens=300,
        response_format=Verdict,
        enable_pydantic_model_return=True,
    )
    assert got == Verdict(is_complete=True)
    assert api.request_count == 0
