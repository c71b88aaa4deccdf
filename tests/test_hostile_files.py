"""Hostile bundles and pickles (issue #14): refused, the target unchanged, memory bounded."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import itertools
import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import llm_ledger
from llm_ledger import transfer
from llm_ledger.cli import app
from llm_ledger.store import db, repository
from llm_ledger.store.merge import attached_batches
from llm_ledger.store.models import MAX_ID
from llm_ledger.testing import FakeOpenAIServer
from llm_ledger.transfer import BundleError

from .test_transfer import (  # noqa: F401  (fixtures)
    counts,
    digest,
    exported,
    ledger_b,
    record_calls,
    rewrite,
)

MEMORY_BOUND_MB = 256
"""Peak resident memory of a refused pickle import (a fresh interpreter is ~60 MB)."""
BUNDLE_MEMORY_BOUND_MB = 512
"""Peak of a refused bundle: at most MAX_LINE_BYTES (256 MiB) of one line, plus a chunk."""


def peak_rss_mb(code: str) -> tuple[int, str]:
    """Run code in a fresh interpreter; (its peak resident memory in MB, its stdout)."""
    probe = textwrap.dedent(code) + textwrap.dedent(
        """
        # VmHWM is this process's own peak: ru_maxrss would carry the forking
        # parent's size across exec (a large pytest process fails a tiny import).
        with open("/proc/self/status") as status:
            hwm = next(line for line in status if line.startswith("VmHWM:"))
        print(int(hwm.split()[1]) // 1024)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=300
    ).stdout.splitlines()
    return int(out[-1]), "\n".join(out[:-1])


# --- bundles -----------------------------------------------------------------------------


def test_cache_entry_pointing_at_another_requests_response_is_refused(
    exported: Path,  # noqa: F811
    ledger_b: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    records = [json.loads(line) for line in exported.read_bytes().splitlines()[1:]]
    answered = {r["id"]: r["request_hash"] for r in records if r["type"] == "response"}
    entry = next(r for r in records if r["type"] == "cache_entry" and r["response_id"])
    other = next(i for i, h in answered.items() if h != entry["request_hash"])

    def swap(rec: dict[str, Any]) -> dict[str, Any]:
        if rec == entry:
            return {**rec, "response_id": other}
        return rec

    bad = tmp_path / "swapped.jsonl"
    rewrite(exported, bad, swap)
    before = digest(ledger_b)
    with pytest.raises(BundleError) as info:
        transfer.import_bundle(ledger_b, bad)
    assert str(info.value).endswith(
        f"cache_entry for request {entry['request_hash']} points at response {other}, which "
        f"answered request {answered[other]}: it would serve another request's answer; "
        "nothing was imported"
    )
    assert digest(ledger_b) == before


def test_format_version_true_is_refused(exported: Path, tmp_path: Path) -> None:  # noqa: F811
    lines = exported.read_bytes().splitlines(keepends=True)
    header = json.loads(lines[0])
    header["format_version"] = True
    odd = tmp_path / "odd.jsonl"
    odd.write_bytes(json.dumps(header).encode() + b"\n" + b"".join(lines[1:]))
    with pytest.raises(BundleError, match=r"format version True; this llm-ledger .* reads version"):
        transfer.verify_bundle(odd)


def test_bundle_bigger_than_the_limit_is_refused(
    exported: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(transfer, "MAX_BUNDLE_BYTES", 2000)
    with pytest.raises(BundleError, match=r"more than 2,000 bytes once decompressed"):
        transfer.verify_bundle(exported)


def test_one_huge_gzip_line_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    """A small .jsonl.gz holding a 512 MiB line (the review's was 2 GiB and took 4.3 GB):
    refused holding at most MAX_LINE_BYTES of it."""
    bomb = tmp_path / "bomb.jsonl.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as out:
        out.write(b'{"format": "llm-ledger-bundle"')
        chunk = b" " * (8 * 1024 * 1024)
        for _ in range(64):
            out.write(chunk)
        out.write(b"}\n")
    assert bomb.stat().st_size < 3 * 1024 * 1024
    peak, printed = peak_rss_mb(
        f"""
        from llm_ledger import transfer
        from llm_ledger.transfer import BundleError
        try:
            transfer.verify_bundle({str(bomb)!r})
        except BundleError as exc:
            print(exc)
        """
    )
    assert printed == (
        f"{bomb}, line 1: longer than 268,435,456 bytes, the longest record a bundle may hold; "
        "nothing was imported"
    )
    assert peak < BUNDLE_MEMORY_BOUND_MB, peak


# --- pickles -----------------------------------------------------------------------------

BYTEARRAY_BOMB = b"c__builtin__\nbytearray\n(I8000000000\ntR."
RECONSTRUCTOR_BOMB = (
    b"ccopy_reg\n_reconstructor\n(c__builtin__\nbytearray\nc__builtin__\nbytearray\n"
    b"I8000000000\ntR."
)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (BYTEARRAY_BOMB, "calls bytearray() with a size, which could exhaust memory"),
        (b"c__builtin__\nbytes\n(I8000000000\ntR.", "calls bytes() with a size"),
        (RECONSTRUCTOR_BOMB, "rebuilds bytearray on bytearray, not object"),
    ],
)
def test_size_argument_pickles_are_refused_in_bounded_memory(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "bomb.pickle"
    path.write_bytes(content)
    assert len(content) < 120
    peak, printed = peak_rss_mb(
        f"""
        from llm_ledger import pickles
        try:
            pickles.load_cache({str(path)!r})
        except pickles.UnsafePickleError as exc:
            print(exc)
        """
    )
    assert message in printed, printed
    assert peak < MEMORY_BOUND_MB, peak


def test_a_pickle_naming_a_pydantic_module_does_not_import_it(tmp_path: Path) -> None:
    path = tmp_path / "mypy.pickle"
    path.write_bytes(b"cpydantic.mypy\nPydanticPlugin\n.")
    _, printed = peak_rss_mb(
        f"""
        import sys
        from llm_ledger import pickles
        try:
            pickles.load_cache({str(path)!r})
        except pickles.UnsafePickleError as exc:
            print("refused:", "pydantic.mypy.PydanticPlugin" in str(exc))
        print("imported:", "pydantic.mypy" in sys.modules)
        """
    )
    assert printed == "refused: True\nimported: False"


def test_deeply_nested_pickle_is_refused(tmp_path: Path) -> None:
    from llm_ledger import pickles

    # {"k": [[[...]]]} 1,000 lists deep, spelt in opcodes (pickle.dumps would recurse).
    path = tmp_path / "deep.pickle"
    path.write_bytes(b"}Vk\n" + b"]" * 1000 + b"a" * 999 + b"s.")
    with pytest.raises(pickles.PickleImportError, match="nests containers more than 200 deep"):
        pickles.load_cache(path)


# --- hostile copy sources ------------------------------------------------------------------


def _recorded(client: Any, api: Any, db_path: Path, *statements: str) -> str:
    """record_calls on the SQLite ledger at db_path, then ``statements`` run on it as an
    attacker would (sqlite3, outside the library)."""
    record_calls(client, api)
    llm_ledger.flush()
    repository.close_all()
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        for sql in statements:
            conn.execute(sql)
        conn.commit()
    return str(db_path)


def _target(request: pytest.FixtureRequest, engine: str, tmp_path: Path) -> str:
    return str(tmp_path / "copy.db") if engine == "sqlite" else request.getfixturevalue("pg_url")


def test_attached_batches_follow_the_rows_not_the_width_of_the_ids(
    client: llm_ledger.OpenAIClient,
    api: FakeOpenAIServer,
    db_path: Path,
) -> None:
    source = _recorded(client, api, db_path, f"UPDATE call_log SET id = {MAX_ID} WHERE id = 5")
    engine = db.make_engine(source)
    with engine.connect() as conn:
        batches = list(itertools.islice(attached_batches(conn, "main", "call_log", 2), 10))
    engine.dispose()
    assert [(b.after, b.upto) for b in batches] == [(None, 2), (2, 4), (4, None)]


_TOP = 2**63 - 1  # the largest id SQLite holds
HOSTILE_SOURCES = {
    "an id past the bound": (
        [
            f"UPDATE call_tags SET call_id = {_TOP} WHERE call_id = 3",
            f"UPDATE call_log SET id = {_TOP} WHERE id = 3",
        ],
        f"call_log row id {_TOP} has id {_TOP}, which must be an id from 1 to {MAX_ID}",
    ),
    "garbage values": (
        [
            "UPDATE call_log SET cost_usd = 'abc', latency_ms = 'fast', tokens_estimated = 7,"
            " status = 'pwned' WHERE id = 4"
        ],
        # the first bad value in column order
        "call_log row id 4 has status 'pwned', which must be one of ok, error, refused",
    ),
    "not a date": (
        ["UPDATE call_log SET created_at = 'not a date' WHERE id = 2"],
        "call_log row id 2 has created_at 'not a date', which must be a date-time "
        "(YYYY-MM-DD HH:MM:SS.ffffff)",
    ),
    "text for dollars": (
        ["UPDATE responses SET cost_usd = 'abc' WHERE id = 1"],
        "responses row id 1 has cost_usd 'abc', which must be null or a number of dollars "
        "below 10000000000",
    ),
    "a view for a table": (
        [
            "CREATE TABLE stolen AS SELECT * FROM requests",
            "DROP TABLE requests",
            "CREATE VIEW requests AS SELECT * FROM stolen",
        ],
        "its 'requests' is a view, not a table",
    ),
    "malformed JSON": (
        ["UPDATE call_log SET tags = '{not json' WHERE id = 1"],
        "call_log row id 1 has tags '{not json', which must be null or a JSON object",
    ),
    "a NUL character": (
        ["UPDATE call_log SET run = 'a' || char(0) || 'b' WHERE id = 1"],
        "call_log row id 1 has run 'a\\x00b', which must be null or text of at most 200 "
        "characters without NUL characters",
    ),
}


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
@pytest.mark.parametrize("case", list(HOSTILE_SOURCES))
def test_copy_refuses_a_source_the_ledger_could_not_have_written(
    client: llm_ledger.OpenAIClient,
    api: FakeOpenAIServer,
    db_path: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    engine: str,
    case: str,
) -> None:
    statements, problem = HOSTILE_SOURCES[case]
    source = _recorded(client, api, db_path, *statements)
    target = _target(request, engine, tmp_path)
    result = CliRunner().invoke(app, ["--db", source, "copy", "--to", target])
    assert result.exit_code == 2
    assert result.output == (
        f"error: the source sqlite:///{db_path} is not a ledger this llm-ledger can copy: "
        f"{problem}; nothing was copied\n"
    )
    assert set(counts(target).values()) == {0}


# --- hostile values in a bundle ------------------------------------------------------------


def _with_checksum(path: Path, lines: list[bytes]) -> None:
    """Write a bundle's lines with the checksum of the records as they are."""
    header = json.loads(lines[0])
    header["checksum"] = hashlib.sha256(b"".join(lines[1:])).hexdigest()
    path.write_bytes(json.dumps(header).encode() + b"\n" + b"".join(lines[1:]))


def _first_call(rec: dict[str, Any], **change: Any) -> dict[str, Any]:
    if rec["type"] == "call" and rec["status"] == "ok" and rec["cache_status"] == "miss":
        return {**rec, **change}
    return rec


HOSTILE_VALUES = {
    "infinity": ({"latency_ms": "INF"}, "call record: latency_ms must be a finite number"),
    "an unknown status": (
        {"status": "pwned"},
        "call record: status must be one of ok, error, refused",
    ),
    "negative attempts": ({"attempts": -5}, "call record: attempts must be from 0 to 2147483647"),
    "a NUL character": ({"run": "a\x00b"}, "call record: run must not contain a NUL character"),
    "too many decimal places": (
        {"cost_usd": "9999999999.99999999999999"},
        "call record: cost_usd must be a decimal number string below 10000000000 with at "
        "most 10 decimal places",
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE_VALUES))
def test_import_refuses_a_value_no_ledger_holds(
    exported: Path,  # noqa: F811
    ledger_b: str,  # noqa: F811
    tmp_path: Path,
    case: str,
) -> None:
    change, problem = HOSTILE_VALUES[case]
    bad = tmp_path / "bad.jsonl"
    rewrite(exported, bad, lambda rec: _first_call(rec, **change))
    if change.get("latency_ms") == "INF":  # json.dumps would write Infinity: the attacker's 1e999
        lines = bad.read_bytes().replace(b'"latency_ms":"INF"', b'"latency_ms":1e999')
        _with_checksum(bad, lines.splitlines(keepends=True))
    before = digest(ledger_b)
    with pytest.raises(BundleError) as info:
        transfer.import_bundle(ledger_b, bad)
    lineno = next(
        i
        for i, line in enumerate(bad.read_bytes().splitlines(), start=1)
        if b'"cache_status":"miss"' in line and b'"type":"call"' in line
    )
    assert str(info.value) == f"{bad}, line {lineno}: {problem}; nothing was imported"
    assert digest(ledger_b) == before


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_import_refuses_nan_and_infinity_anywhere(
    exported: Path,  # noqa: F811
    tmp_path: Path,
    constant: bytes,
) -> None:
    lines = exported.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b'"params":{', b'"params":{"temperature":' + constant + b",", 1)
    bad = tmp_path / "nan.jsonl"
    _with_checksum(bad, lines)
    with pytest.raises(BundleError) as info:
        transfer.verify_bundle(bad)
    assert str(info.value) == (
        f"{bad}, line 2: holds {constant.decode()}, which no JSON number may be (the format "
        "has none); nothing was imported"
    )


def test_a_ledger_written_with_a_redact_hook_exports_imports_and_copies(
    api: FakeOpenAIServer, tmp_path: Path
) -> None:
    """A ``redact`` hook stores another text than the one hashed (docs/hashing.md), so a
    request's text is not checked against its hash: a check refused every such ledger's
    bundle and copy (and stopped no poisoning: a bundle's answers are trusted either way,
    docs/transfer.md)."""

    def redact(body: dict[str, Any]) -> dict[str, Any]:
        for m in body["messages"]:
            m["content"] = m["content"].replace("secret", "[x]")
        return body

    src = tmp_path / "src.db"
    client = llm_ledger.OpenAIClient(cache_file_name=str(src), redact=redact)
    client.send_message([{"role": "user", "content": "my secret plan"}], temperature=0)
    repository.close_all()
    bundle = tmp_path / "b.jsonl"
    for args in (
        ["--db", str(src), "export", str(bundle)],
        ["--db", str(tmp_path / "imported.db"), "import", str(bundle)],
        ["--db", str(src), "copy", "--to", str(tmp_path / "copied.db")],
    ):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
    for name in ("src.db", "imported.db", "copied.db"):
        with contextlib.closing(sqlite3.connect(tmp_path / name)) as conn:
            [(text,)] = conn.execute("SELECT request FROM requests").fetchall()
            assert json.loads(text)["messages"] == [{"content": "my [x] plan", "role": "user"}]


def test_deeply_nested_json_is_refused_not_a_traceback(
    exported: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    lines = exported.read_bytes().splitlines(keepends=True)
    deep = b"[" * 100_000 + b"]" * 100_000
    lines[1] = lines[1].replace(b'"params":{', b'"params":{"d":' + deep + b",", 1)
    bad = tmp_path / "deep.jsonl"
    _with_checksum(bad, lines)
    result = CliRunner().invoke(app, ["--db", str(tmp_path / "t.db"), "import", str(bad)])
    assert result.exit_code == 2
    assert result.output == (
        f"error: {bad}, line 2: nests JSON too deep to read; nothing was imported\n"
    )
