"""Secrets stay out of everything the library writes, and private data stays private.

The API key (TEST_KEY, planted as OPENAI_API_KEY / AZURE_OPENAI_API_KEY) is sent to the
test-kit server on every request, and the server is made to echo it back in error
messages; then the database (every table, and the raw file bytes), the spool, an
export bundle and the library's log events (at debug level) are searched for it.
"""

from __future__ import annotations

import copy
import logging
import os
import re
import sqlite3
import stat
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from sqlalchemy import create_engine, inspect, text
from structlog.testing import capture_logs

import llm_ledger
from llm_ledger.store import db, repository
from llm_ledger.testing import FakeOpenAIServer

from .conftest import TEST_KEY, Sleeps, msgs

CARD = "4111 1111 1111 1111"
CARD_NUMBER = re.compile(r"\d[\d ]{12,}\d")


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    """Every library event down to debug, captured (the default level is warning)."""
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        with capture_logs() as entries:
            yield entries
    finally:
        structlog.configure(**saved)


@pytest.fixture
def short_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_MS", 100)


def dump(url: str) -> str:
    """Every row of every table, as text."""
    llm_ledger.flush()  # calls are written behind them (writes="journal")
    engine = create_engine(db.normalize_url(url))
    out = []
    with engine.connect() as conn:
        for table in inspect(conn).get_table_names():
            for row in conn.execute(text(f"SELECT * FROM {table}")):
                out.append(f"{table}: {tuple(row)!r}")
    engine.dispose()
    return "\n".join(out)


def raw_bytes(db_path: Path) -> bytes:
    """Every file of the ledger: the database, its WAL, spool and journal segments."""
    return b"".join(
        p.read_bytes() for p in sorted(db_path.parent.rglob(db_path.name + "*")) if p.is_file()
    ) + b"".join(
        p.read_bytes()
        for d in db_path.parent.glob(db_path.name + "*.journal")
        for p in sorted(d.iterdir())
    )


def every_kind_of_call(client: llm_ledger.OpenAIClient, api: FakeOpenAIServer) -> None:
    """A miss, a hit, a retried 500, a 401 and an exhausted 429 that echo the key, embeddings."""
    client.send_message(msgs("one"), temperature=0)
    client.send_message(msgs("one"), temperature=0)
    api.fail_next(500, message=f"upstream rejected key {TEST_KEY}")
    client.send_message(msgs("two"), temperature=0)
    api.fail_next(401, message=f"Incorrect API key provided: {TEST_KEY}.")
    assert client.send_message(msgs("three"), temperature=0) is None
    api.fail_next(429, times=2, message=f"Rate limit reached for key {TEST_KEY}")
    assert client.send_message(msgs("four"), temperature=0, max_attempts=2) is None
    client.get_embedding("five")
    api.fail_next(401, message=f"Incorrect API key provided: {TEST_KEY}.")
    assert client.get_embedding("six") is None
    with pytest.raises(llm_ledger.InvalidRequestError) as info:
        api.fail_next(401, message=f"Incorrect API key provided: {TEST_KEY}.")
        client.send_message(msgs("seven"), temperature=0, raise_on_error=True)
    assert TEST_KEY not in str(info.value)


def sent_the_key(api: FakeOpenAIServer, header: str, value: str) -> bool:
    return all(r.headers.get(header) == value for r in api.requests)


def test_the_key_reaches_the_server_but_not_the_database_or_the_logs(
    client, api, db_path, logs
) -> None:
    every_kind_of_call(client, api)
    assert sent_the_key(api, "authorization", f"Bearer {TEST_KEY}")
    text_dump = dump(str(db_path))
    assert "Incorrect API key provided: [redacted]." in text_dump  # the error was stored...
    assert TEST_KEY not in text_dump  # ...without the key
    assert "Bearer" not in text_dump
    assert TEST_KEY.encode() not in raw_bytes(db_path)
    assert {e["event"] for e in logs} >= {"llm.call", "llm.cache_hit", "llm.retry", "llm.give_up"}
    assert TEST_KEY not in repr(logs)


def test_azure_api_key_header_never_reaches_the_database(
    api, db_path, monkeypatch: pytest.MonkeyPatch, sleeps: Sleeps, logs
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", api.azure_endpoint)
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", TEST_KEY)
    client = llm_ledger.AzureClient(cache_file_name=str(db_path), sleep=sleeps)
    every_kind_of_call(client, api)
    assert sent_the_key(api, "api-key", TEST_KEY)
    text_dump = dump(str(db_path))
    assert "Incorrect API key provided: [redacted]." in text_dump
    assert TEST_KEY not in text_dump
    assert TEST_KEY.encode() not in raw_bytes(db_path)
    assert TEST_KEY not in repr(logs)


def test_the_key_never_reaches_the_spool(
    client, api, db_path, short_busy, logs, sync_writes
) -> None:
    client.send_message(msgs("first"), temperature=0)
    llm_ledger.flush()  # writes="journal": this process's calls into the tables first
    lock = sqlite3.connect(db_path, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        every_kind_of_call(client, api)
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    spooled = client.ledger.spool_path.read_text()
    assert "Incorrect API key provided: [redacted]." in spooled
    assert TEST_KEY not in spooled
    assert TEST_KEY not in repr(logs)
    assert client.ledger.recover()["written"] == 8
    assert TEST_KEY not in dump(str(db_path))


def test_the_key_never_reaches_an_export_bundle(client, api, db_path, tmp_path) -> None:
    transfer = pytest.importorskip("llm_ledger.transfer")
    if not hasattr(transfer, "export_bundle"):
        pytest.skip("llm_ledger.transfer.export_bundle does not exist yet")
    every_kind_of_call(client, api)
    bundle = tmp_path / "out.jsonl"
    transfer.export_bundle(str(db_path), bundle)
    content = bundle.read_text()
    assert "Incorrect API key provided: [redacted]." in content
    assert TEST_KEY not in content
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o600


def test_the_key_is_not_in_the_traceback_of_a_raised_error(client, api) -> None:
    api.fail_next(401, message=f"Incorrect API key provided: {TEST_KEY}.")
    with pytest.raises(llm_ledger.InvalidRequestError) as info:
        client.send_message(msgs(), temperature=0, raise_on_error=True)
    assert TEST_KEY not in "".join(traceback.format_exception(info.value))


def test_credentials_in_the_base_url_never_reach_the_database(
    api, db_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", api.url.replace("http://", f"http://user:{TEST_KEY}@"))
    client = llm_ledger.OpenAIClient(cache_file_name=str(db_path))
    assert client.send_message(msgs(), temperature=0) is not None
    assert TEST_KEY not in dump(str(db_path))


# --- the redaction hook --------------------------------------------------------------------


def scrub_card(body: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(body)
    for m in out["messages"]:
        m["content"] = CARD_NUMBER.sub("[card]", m["content"])
    return out


def card_messages(card: str = CARD) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": f"The customer's card is {card}."},
        {"role": "user", "content": "Charge it."},
    ]


def stored_requests(db_path: Path) -> list[tuple[str, str]]:
    llm_ledger.flush()  # calls are written behind them (writes="journal")
    con = sqlite3.connect(db_path)
    rows = con.execute("SELECT request_hash, request FROM requests ORDER BY created_at").fetchall()
    con.close()
    return rows


def test_redact_scrubs_the_stored_request_but_the_hash_is_of_the_real_one(
    api, db_path, short_busy, sync_writes
) -> None:
    client = llm_ledger.OpenAIClient(cache_file_name=str(db_path), redact=scrub_card)
    first = client.send_message(card_messages(), temperature=0)
    assert client.send_message(card_messages(), temperature=0) == first  # a hit
    assert api.chat_count == 1
    assert api.requests[0].body["messages"][0]["content"] == f"The customer's card is {CARD}."

    # Another card redacts to the same text, yet is another request: a miss.
    client.send_message(card_messages("5500 0000 0000 0004"), temperature=0)
    assert api.chat_count == 2
    (h1, body1), (h2, body2) = stored_requests(db_path)
    assert h1 != h2
    assert body1 == body2
    assert '"content":"The customer\'s card is [card]."' in body1
    assert CARD not in dump(str(db_path))

    # A spooled record holds the redacted request too.
    llm_ledger.flush()  # writes="journal": this process's calls into the tables first
    lock = sqlite3.connect(db_path, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        client.send_message(card_messages("3400 0000 0000 009"), temperature=0)
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    spooled = client.ledger.spool_path.read_text()
    assert "[card]" in spooled
    assert "3400 0000 0000 009" not in spooled


def test_a_redactor_editing_in_place_does_not_change_what_is_sent(api, db_path) -> None:
    def in_place(body: dict[str, Any]) -> dict[str, Any]:
        for m in body["messages"]:
            m["content"] = m["content"].replace(CARD, "[card]")
        return body

    client = llm_ledger.OpenAIClient(cache_file_name=str(db_path), redact=in_place)
    client.send_message(card_messages(), temperature=0)
    assert api.requests[0].body["messages"][0]["content"] == f"The customer's card is {CARD}."


# --- file permissions ------------------------------------------------------------------------


@pytest.fixture
def open_umask() -> Iterator[None]:
    """Files must be private whatever the process umask says."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_new_sqlite_ledger_and_its_wal_files_are_owner_only(
    client, api, db_path, open_umask
) -> None:
    client.send_message(msgs(), temperature=0)
    names = sorted(p.name for p in db_path.parent.iterdir() if p.name.startswith(db_path.name))
    # The journal (writes="journal") holds requests and answers until they are written.
    assert names == ["ledger.db", "ledger.db-shm", "ledger.db-wal", "ledger.db.journal"]
    modes = {n: stat.S_IMODE((db_path.parent / n).stat().st_mode) for n in names}
    assert modes == {**dict.fromkeys(names, 0o600), "ledger.db.journal": 0o700}
    segments = list((db_path.parent / "ledger.db.journal").iterdir())
    assert len(segments) == 1
    assert stat.S_IMODE(segments[0].stat().st_mode) == 0o600


def test_ledger_in_a_new_directory_is_owner_only(api, tmp_path, open_umask) -> None:
    path = tmp_path / "deep" / "er" / "ledger.db"
    repository.open_ledger(str(path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_spool_file_is_owner_only(
    client, api, db_path, short_busy, open_umask, sync_writes
) -> None:
    client.send_message(msgs("first"), temperature=0)
    llm_ledger.flush()  # writes="journal": this process's calls into the tables first
    lock = sqlite3.connect(db_path, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        client.send_message(msgs("during"), temperature=0)
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert stat.S_IMODE(client.ledger.spool_path.stat().st_mode) == 0o600


OTHER_TOKEN = "sk-proj-" + "Z9y8X7w6V5u4T3s2R1q0"


def test_sdk_error_is_a_scrubbed_copy(client, api) -> None:
    """Issue #14: sdk_error kept the raw SDK error, whose text, body and request hold keys."""
    import openai

    api.fail_next(401, message=f"Incorrect API key provided: {TEST_KEY}; also {OTHER_TOKEN}")
    with pytest.raises(llm_ledger.InvalidRequestError) as info:
        client.send_message(msgs(), temperature=0, raise_on_error=True)
    sdk = info.value.sdk_error
    assert isinstance(sdk, openai.AuthenticationError)
    assert sdk.status_code == 401
    seen = " ".join(
        [
            repr(sdk.args),
            str(sdk),
            repr(sdk.body),
            sdk.response.text,
            repr(dict(sdk.response.headers)),
            repr(dict(sdk.request.headers)),
            str(sdk.request.url),
            repr(vars(sdk)),
        ]
    )
    assert TEST_KEY not in seen
    assert OTHER_TOKEN not in seen
    assert sdk.request.headers["authorization"] == "[redacted]"
    assert "Incorrect API key provided: [redacted]; also [redacted]" in str(sdk)


def test_key_looking_tokens_and_auth_headers_never_reach_the_database_or_logs(
    client, api, db_path, logs
) -> None:
    echoed = (
        f"bad token {OTHER_TOKEN}; got {{'Authorization': 'Bearer abc.def.ghi', "
        "'api-key': 'azure-secret-1'}"
    )
    api.fail_next(400, message=echoed)
    assert client.send_message(msgs(), temperature=0) is None
    text_dump = dump(str(db_path))
    for secret in (OTHER_TOKEN, "abc.def.ghi", "azure-secret-1"):
        assert secret not in text_dump
        assert secret not in repr(logs)
    assert "bad token [redacted]; got {'Authorization': '[redacted]', 'api-key': '[redacted]'}" in (
        text_dump
    )


def test_scrub_hides_tokens_and_header_values() -> None:
    from llm_ledger.redaction import scrub, scrub_obj

    assert scrub("Authorization: Bearer eyJ.abc key=sk-abcdefgh12345678 api-key: zz9") == (
        "Authorization: [redacted] key=[redacted] api-key: [redacted]"
    )
    assert scrub_obj({"headers": {"Api-Key": "zz9", "x": [f"use {OTHER_TOKEN}"]}}) == {
        "headers": {"Api-Key": "[redacted]", "x": ["use [redacted]"]}
    }


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres@127.0.0.1:1/llm_ledger_x?password=hunter2secret",
        "mysql://root@127.0.0.1:1/llm_ledger_x?password=hunter2secret",
        "postgresql://postgres:hunter2secret@127.0.0.1:1/x?sslpassword=hunter2secret&sslmode=disable",
    ],
)
def test_url_credentials_never_print(url: str, logs) -> None:
    """Issue #14: a password in the query string was printed by info and open errors."""
    from typer.testing import CliRunner

    from llm_ledger.cli import app

    for command in (["info"], ["calls"], ["sql", "SELECT 1"]):
        result = CliRunner().invoke(app, ["--db", url, *command])
        assert result.exit_code == 2, result.output
        assert "hunter2secret" not in result.output
        assert "password=***" in result.stderr or ":***@" in result.stderr, result.stderr
    with pytest.raises(llm_ledger.LedgerError) as info:
        repository.open_ledger(url)
    assert "hunter2secret" not in str(info.value)
    assert "hunter2secret" not in repr(logs)
    assert db.describe(url).count("***") == url.count("hunter2secret")


def test_info_hides_a_query_string_password(pg_url: str, api) -> None:
    from typer.testing import CliRunner

    from llm_ledger.cli import app

    repository.open_ledger(pg_url)
    repository.close_all()
    url = pg_url + "?password=hunter2secret"
    result = CliRunner().invoke(app, ["--db", url, "info", "-f", "json"])
    assert result.exit_code == 0, result.output
    assert "hunter2secret" not in result.output
    assert "?password=***" in result.output
