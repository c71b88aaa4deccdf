"""``client.prepare()`` (warmup.py): the process's one-time work, done when asked, with no
API request, and nothing opened that the client's settings do not use."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sqlalchemy import func, select

import llm_ledger
from llm_ledger import ConfigError, OpenAIClient, warmup
from llm_ledger.store import db
from llm_ledger.store.models import Base
from llm_ledger.testing import FakeOpenAIServer

from .conftest import msgs

LOG = Base.metadata.tables["call_log"]
ALL_STEPS = ["ledger", "sdk_client", "sdk_headers", "sdk_models", "prices", "tokenizer"]


def calls_in(path: Path) -> int:
    llm_ledger.flush()
    engine = db.make_engine(str(path))
    with engine.connect() as conn:
        n = conn.execute(select(func.count()).select_from(LOG)).scalar_one()
    engine.dispose()
    return int(n)


def test_prepare_opens_the_ledger_journal_and_sdk_client_without_a_request(
    api: FakeOpenAIServer, tmp_path: Path
) -> None:
    path = tmp_path / "ledger.db"
    client = OpenAIClient(cache_file_name=str(path))

    steps = client.prepare()

    assert list(steps) == ALL_STEPS
    assert all(isinstance(ms, float) and ms >= 0 for ms in steps.values())
    assert api.request_count == 0
    assert client._client is not None  # the SDK client, built from the environment
    assert client.ledger._writer is not None  # the journal's writer, ready
    assert calls_in(path) == 0  # nothing recorded: no call was made
    # And the calls after it are calls as before: a miss, then a hit.
    first = client.send_message(msgs("prepared"), temperature=0.0)
    again = client.send_message(msgs("prepared"), temperature=0.0)
    assert first == again and first is not None
    assert api.chat_count == 1
    assert calls_in(path) == 2


def test_prepare_in_replay_mode_needs_no_key_and_builds_no_sdk_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    client = OpenAIClient(cache_file_name=str(tmp_path / "ledger.db"), mode="replay")

    steps = client.prepare()

    assert list(steps) == ["ledger", "sdk_models", "prices", "tokenizer"]
    assert client._client is None


def test_prepare_without_a_key_says_so_before_any_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    client = OpenAIClient(cache_file_name=str(tmp_path / "ledger.db"))

    with pytest.raises(ConfigError, match="OPENAI_API_KEY is not set; export it"):
        client.prepare()


def test_prepare_opens_no_ledger_when_nothing_is_cached_or_recorded(
    api: FakeOpenAIServer, tmp_path: Path
) -> None:
    path = tmp_path / "ledger.db"
    client = OpenAIClient(cache_api_calls=False, cache_file_name=str(path), record_calls=False)

    steps = client.prepare()

    assert list(steps) == ALL_STEPS[1:]
    assert not path.exists()
    assert api.request_count == 0


def test_the_sdk_resource_classes_a_call_uses_are_imported_with_the_client() -> None:
    # openai 2.x+ made its resource packages lazy: `import openai.resources.chat.completions`
    # loaded nothing, and the first call imported the chat module and built its models.
    code = """
    import json, sys
    import llm_ledger.clients
    import openai
    sdk = openai.OpenAI(api_key="sk-not-used", base_url="http://127.0.0.1:9")
    before = set(sys.modules)
    sdk.chat.completions, sdk.embeddings
    print(json.dumps(sorted(m for m in set(sys.modules) - before if m.startswith("openai"))))
    """
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=True
    )
    assert json.loads(done.stdout.splitlines()[-1]) == []


def test_prepare_connect_opens_the_connection_with_a_free_models_request(
    api: FakeOpenAIServer, tmp_path: Path
) -> None:
    path = tmp_path / "ledger.db"
    client = OpenAIClient(cache_file_name=str(path))

    steps = client.prepare(connect=True)

    assert list(steps) == [*ALL_STEPS[:3], "connect", *ALL_STEPS[3:]]
    assert api.request_count == 1  # GET /v1/models
    assert api.chat_count == 0 and api.embedding_count == 0
    assert calls_in(path) == 0  # not an LLM call: nothing in the ledger
    assert client.send_message(msgs("after connect"), temperature=0.0) is not None
    assert api.request_count == 2


# --- the SDK's platform header, without its `uname -p` subprocess -----------------------


def _uname(system: str, release: str, machine: str) -> platform.uname_result:
    return platform.uname_result(system, "host", release, "#1", machine)


@pytest.mark.parametrize(
    ("system", "release", "machine", "want"),
    [
        ("Linux", "6.1.0-18-amd64", "x86_64", "Linux"),
        ("Linux", "5.10.81-android12-9-00001", "aarch64", "Android"),
        ("Darwin", "23.1.0", "arm64", "MacOS"),
        ("Darwin", "21.6.0", "iPhone12,1", "iOS"),
        ("Windows", "10", "AMD64", "Windows"),
        ("FreeBSD", "14.0-RELEASE", "amd64", "FreeBSD"),
        ("OpenBSD", "7.4", "amd64", "OpenBSD"),
    ],
)
def test_sdk_platform_answers_what_the_sdks_own_probe_answers(
    monkeypatch: pytest.MonkeyPatch, system: str, release: str, machine: str, want: str
) -> None:
    from openai import _base_client

    monkeypatch.setattr(platform, "uname", lambda: _uname(system, release, machine))
    monkeypatch.setattr(platform, "system", lambda: system)
    monkeypatch.setattr(platform, "platform", lambda: f"{system}-{release}-{machine}-64bit")
    monkeypatch.setattr(platform, "freedesktop_os_release", lambda: {"ID": "debian"})

    assert warmup.sdk_platform() == want
    assert str(_base_client.get_platform()) == want


def test_sdk_platform_leaves_an_unknown_system_to_the_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "uname", lambda: _uname("Haiku", "r1beta4", "x86_64"))
    sdk = type("SDK", (), {"_platform": None})()

    assert warmup.sdk_platform() is None
    assert warmup.skip_platform_probe(sdk)._platform is None  # the SDK asks itself then


def test_clients_send_the_sdks_platform_header_without_running_uname(
    api: FakeOpenAIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from openai import _base_client

    from llm_ledger.openai import OpenAI

    want = str(_base_client.get_platform())
    _base_client.platform_headers.cache_clear()
    monkeypatch.setattr(platform, "platform", _no_platform_call)
    seed = OpenAIClient(cache_file_name=str(tmp_path / "seed.db"))
    drop_in = OpenAI(ledger=str(tmp_path / "sdk.db"))

    for sdk in (seed.client, drop_in):
        assert sdk.default_headers["X-Stainless-OS"] == want
    seed.send_message(msgs("platform header"), temperature=0.0)
    drop_in.chat.completions.create(model="gpt-4o-mini", messages=msgs("platform header 2"))
    assert api.chat_count == 2


def _no_platform_call() -> str:
    raise AssertionError("platform.platform() runs `uname -p` in a subprocess")
