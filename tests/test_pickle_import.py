"""import-pickle: the seed's cache becomes ledger hits, and a malicious pickle never runs."""

from __future__ import annotations

import io
import os
import pickle
import uuid
from pathlib import Path
from typing import Any

import openai
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

import llm_ledger
from llm_ledger import pickles
from llm_ledger.cli import app
from llm_ledger.pickles import PickleImportError, SafeUnpickler, UnsafePickleError
from llm_ledger.store import db
from llm_ledger.store.models import Base
from llm_ledger.testing import FakeOpenAIServer

from .conftest import msgs

SEED_PARAMS = {
    "temperature": 0.5,
    "max_tokens": 1024,
    "top_p": 0,
    "frequency_penalty": 0.0,
    "presence_penalty": 0.0,
}


def seed_key(model: str, messages: list[dict[str, Any]], **overrides: Any) -> str:
    """The key the seed's OpenAIClient.send_message builds: str((model, chat_api_params))."""
    params = {
        "model": model,
        "messages": messages,
        **SEED_PARAMS,
        "stop": [],
        "timeout": 30.0,
        "stream": False,
        "n": 1,
        **overrides,
    }
    return str((model, params))


def seed_call(client: llm_ledger.OpenAIClient, messages: list[dict[str, Any]], **kw: Any) -> Any:
    """The same call made through llm_ledger, with the seed's arguments."""
    return client.send_message(messages, **SEED_PARAMS, stop=[], timeout=30.0, n=1, **kw)


@pytest.fixture
def seed_pickle(api: FakeOpenAIServer, tmp_path: Path) -> Path:
    """A seed cache: two ChatCompletion objects (one gpt-4o) and one response dict."""
    sdk = openai.OpenAI(api_key="k", base_url=api.url, max_retries=0)
    cache: dict[str, Any] = {}
    for text, model in (("first question", "gpt-4o-mini"), ("second question", "gpt-4o")):
        completion = sdk.chat.completions.create(model=model, messages=msgs(text), **SEED_PARAMS)
        cache[seed_key(model, msgs(text))] = completion
    as_dict = sdk.chat.completions.create(
        model="gpt-4o-mini", messages=msgs("third"), **SEED_PARAMS
    )
    cache[seed_key("gpt-4o-mini", msgs("third"))] = as_dict.model_dump(
        mode="json", exclude_unset=True
    )
    path = tmp_path / "openai_api_cache.pickle"
    path.write_bytes(pickle.dumps(cache))
    return path


def rows(location: str, table: str) -> list[dict[str, Any]]:
    llm_ledger.flush()  # calls are written behind them (writes="journal")
    engine = db.make_engine(location)
    with engine.connect() as conn:
        out = [dict(r._mapping) for r in conn.execute(select(Base.metadata.tables[table]))]
    engine.dispose()
    return out


def test_seed_pickle_entries_become_cache_hits(
    seed_pickle: Path, client: llm_ledger.OpenAIClient, api: FakeOpenAIServer, db_path: Path
) -> None:
    result = pickles.import_pickle(str(db_path), seed_pickle)
    before = api.request_count

    first = seed_call(client, msgs("first question"))
    second = seed_call(client, msgs("second question"), model="gpt-4o")
    third = seed_call(client, msgs("third"))

    assert api.request_count == before
    assert first["content"] == "answer 1 to: first question"
    assert second["content"] == "answer 1 to: second question"
    assert third["content"] == "answer 1 to: third"
    assert (result["entries"], result["skipped"], result["skip_reasons"]) == (3, 0, {})
    assert result["cache_entries"] == {"added": 3, "already_present": 0, "refused": 0}
    assert result["calls"] == {"added": 3, "already_present": 0, "refused": 0}


def test_imported_entries_have_a_recognisable_audit_row(seed_pickle: Path, db_path: Path) -> None:
    pickles.import_pickle(str(db_path), seed_pickle)

    calls = rows(str(db_path), "call_log")
    assert len(calls) == 3
    for call in calls:
        assert (call["api_type"], call["kind"], call["cache_status"], call["status"]) == (
            "import",
            "chat",
            "bypass",
            "ok",
        )
        assert call["error_type"] is None and call["response_id"] is not None
        assert call["slot"] == 0 and call["namespace"] == ""
        assert call["cost_usd"] == 0 and call["cost_note"] == pickles.COST_NOTE
    assert {
        r["response"]["choices"][0]["message"]["content"] for r in rows(str(db_path), "responses")
    } == {
        "answer 1 to: first question",
        "answer 1 to: second question",
        "answer 1 to: third",
    }


def test_importing_the_same_pickle_twice_adds_nothing(seed_pickle: Path, db_path: Path) -> None:
    pickles.import_pickle(str(db_path), seed_pickle)
    again = pickles.import_pickle(str(db_path), seed_pickle)

    assert (again["added"], again["already_present"], again["refused"]) == (0, 12, 0)
    assert len(rows(str(db_path), "call_log")) == 3


def test_namespace_option_puts_entries_in_that_namespace(
    seed_pickle: Path, client: llm_ledger.OpenAIClient, api: FakeOpenAIServer, db_path: Path
) -> None:
    pickles.import_pickle(str(db_path), seed_pickle, namespace="seed")
    before = api.request_count

    seed_call(client, msgs("first question"), namespace="seed")
    assert api.request_count == before
    seed_call(client, msgs("first question"))  # the default namespace has no such entry
    assert api.request_count == before + 1


def test_entries_that_cannot_be_mapped_are_counted_with_their_reasons(
    api: FakeOpenAIServer, tmp_path: Path, db_path: Path
) -> None:
    good = openai.OpenAI(api_key="k", base_url=api.url, max_retries=0).chat.completions.create(
        model="gpt-4o-mini", messages=msgs("ok"), **SEED_PARAMS
    )
    cache = {
        seed_key("gpt-4o-mini", msgs("ok")): good,
        # the seed's key when response_format is a pydantic class: not a literal
        seed_key("gpt-4o-mini", msgs("a")).replace(
            "'n': 1", "'n': 1, 'response_format': <class 'x.Y'>"
        ): good,
        seed_key("gpt-4o-mini", msgs("b"), stream=True): good,
        seed_key("gpt-4o-mini", []): good,
        str(("gpt-4o-mini", "not a dict", 3)): good,
        seed_key("gpt-4o-mini", msgs("c")): "just text",
        seed_key("gpt-4o-mini", msgs("d")): {"object": "chat.completion"},
    }
    path = tmp_path / "mixed.pickle"
    path.write_bytes(pickle.dumps(cache))

    result = pickles.import_pickle(str(db_path), path)

    assert result["entries"] == 7 and result["skipped"] == 6
    assert result["skip_reasons"] == {
        "key is not a Python literal (e.g. a response_format class in the key)": 1,
        "streamed responses cannot be imported": 1,
        "not a valid chat request: messages is empty; pass at least one {'role': 'user', 'content': ...}": 1,
        "key is not a (model, params dict) tuple": 1,
        "value is a str, not a chat completion": 1,
        "value has no 'choices': not a chat completion": 1,
    }
    assert result["cache_entries"]["added"] == 1


def test_cli_reports_skipped_entries(api: FakeOpenAIServer, tmp_path: Path, db_path: Path) -> None:
    path = tmp_path / "c.pickle"
    path.write_bytes(pickle.dumps({seed_key("gpt-4o-mini", msgs("x")): "no", "junk": None}))

    result = CliRunner().invoke(app, ["--db", str(db_path), "import-pickle", str(path)])

    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-3:] == [
        "imported: 0 added, 0 already present, 0 refused",
        "skipped 2 entries: 1 × value is a str, not a chat completion; "
        "1 × key is not a Python literal (e.g. a response_format class in the key)",
        "pickle entries: 2, cache entries added: 0, skipped: 2",
    ]


# --- safety -------------------------------------------------------------------


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_does_not_run(tmp_path: Path, db_path: Path) -> None:
    marker = Path(f"/tmp/pwned-{uuid.uuid4().hex}")
    path = tmp_path / "evil.pickle"
    path.write_bytes(pickle.dumps({"('gpt-4o-mini', {})": _Evil(marker)}))

    with pytest.raises(
        UnsafePickleError, match=r"posix\.system.*could run code.*nothing in it was run"
    ):
        pickles.import_pickle(str(db_path), path)

    assert not marker.exists()
    assert not db_path.exists()  # refused before the ledger was even opened


def test_cli_refuses_a_malicious_pickle_with_exit_code_2(tmp_path: Path, db_path: Path) -> None:
    marker = Path(f"/tmp/pwned-{uuid.uuid4().hex}")
    path = tmp_path / "evil.pickle"
    path.write_bytes(pickle.dumps([_Evil(marker)]))

    result = CliRunner().invoke(app, ["--db", str(db_path), "import-pickle", str(path)])

    assert result.exit_code == 2
    assert result.output.startswith(f"error: {path}: the pickle refers to posix.system")
    assert "could run code" in result.output and "Traceback" not in result.output
    assert not marker.exists()


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("builtins", "eval"),
        ("builtins", "getattr"),
        ("subprocess", "Popen"),
        ("openai", "OpenAI"),
        ("openai.types.chat.chat_completion", "Optional"),
        ("pydantic.main", "BaseModel.model_validate"),
    ],
)
def test_unpickler_refuses_anything_but_containers_and_response_classes(
    module: str, name: str
) -> None:
    with pytest.raises(UnsafePickleError, match="could run code"):
        SafeUnpickler(io.BytesIO(b"")).find_class(module, name)


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("builtins", "dict"),
        ("copyreg", "_reconstructor"),
        ("openai.types.chat.chat_completion", "ChatCompletion"),
        ("openai.types.completion_usage", "CompletionUsage"),
    ],
)
def test_unpickler_resolves_containers_and_response_classes(module: str, name: str) -> None:
    assert SafeUnpickler(io.BytesIO(b"")).find_class(module, name).__name__ in (
        name,
        "_reconstructor",
    )


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_every_pickle_protocol_of_a_completion_loads(
    api: FakeOpenAIServer, tmp_path: Path, protocol: int
) -> None:
    completion = openai.OpenAI(
        api_key="k", base_url=api.url, max_retries=0
    ).chat.completions.create(model="gpt-4o-mini", messages=msgs("p"))
    path = tmp_path / "p.pickle"
    path.write_bytes(pickle.dumps({"k": completion}, protocol=protocol))
    assert pickles.load_cache(path)["k"].choices[0].message.content == "answer 1 to: p"


def test_response_class_this_openai_lacks_is_reported(tmp_path: Path) -> None:
    with pytest.raises(PickleImportError, match="the installed openai/pydantic does not have"):
        SafeUnpickler(io.BytesIO(b"")).find_class("openai.types.chat", "NoSuchCompletion")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a pickle at all", "is not a readable pickle"),
        (pickle.dumps(["a list"]), "holds a list, not the seed's cache dict"),
    ],
)
def test_unreadable_or_wrong_pickles_are_refused(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "x.pickle"
    path.write_bytes(content)
    with pytest.raises(PickleImportError, match=message):
        pickles.load_cache(path)
