"""Export, import and copy: two machines simulated by two ledgers (SQLite file, PostgreSQL, MariaDB)."""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

import llm_ledger
from llm_ledger import bulk, transfer
from llm_ledger.cli import app
from llm_ledger.store import db, repository
from llm_ledger.store.models import Base
from llm_ledger.testing import FakeOpenAIServer
from llm_ledger.transfer import BundleError, TransferError

from .conftest import msgs

TABLES = ("requests", "responses", "cache_entries", "call_log", "call_tags")
DOCS = Path(__file__).resolve().parent.parent / "docs"


# --- helpers ------------------------------------------------------------------


def record_calls(client: llm_ledger.OpenAIClient, api: FakeOpenAIServer) -> None:
    """Five calls: a miss and its hit, an embedding batch (run r1, two tags), a gpt-4o call
    (run r2), and an API error."""
    with llm_ledger.scope(run="r1", tags={"team": "alpha", "step": "one"}):
        client.send_message(msgs("What is the capital of France?"), temperature=0)
        client.send_message(msgs("What is the capital of France?"), temperature=0)
        client.get_embedding(["one", "two"])
    with llm_ledger.scope(run="r2"):
        client.send_message(msgs("Tell me a joke"), model="gpt-4o", temperature=0)
    api.fail_next(400, message="no")
    assert client.send_message(msgs("an invalid one"), temperature=0) is None


def replay_calls(client: llm_ledger.OpenAIClient) -> None:
    """The answerable calls of record_calls again (the error would go to the API again)."""
    assert client.send_message(msgs("What is the capital of France?"), temperature=0)
    assert client.get_embedding(["one", "two"])
    assert client.send_message(msgs("Tell me a joke"), model="gpt-4o", temperature=0)


# Full export of record_calls: requests France, the batch, "one", "two", joke, invalid;
# answers France, "one", "two", joke (each with a cache entry); 5 audit rows; r1's 3 calls x 2 tags.
FULL = {"requests": 6, "responses": 4, "cache_entries": 4, "calls": 5}
FULL_TAGS = 6
FULL_ROWS = {
    "requests": 6,
    "responses": 4,
    "cache_entries": 4,
    "call_log": 5,
    "call_tags": 6,
}


def _plain(value: Any, float_digits: int | None) -> Any:
    if isinstance(value, Decimal):
        return str(value.normalize())
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, float) and float_digits is not None:
        return float(f"{value:.{float_digits}g}")
    return value


def digest(location: str, *, float_digits: int | None = None) -> dict[str, tuple[int, str]]:
    """Per table: row count and sha256 of its rows as sorted canonical JSON, surrogate ids
    replaced by the identities they stand for (so ledgers on different engines compare)."""
    llm_ledger.flush()  # calls are written behind them (writes="journal")
    tables = Base.metadata.tables
    llm_ledger.flush()  # writes="journal": this process's calls into the tables first
    engine = db.make_engine(location)
    out = {}
    with engine.connect() as conn:
        r = tables["responses"]
        answers = {
            i: [q, h]
            for i, q, h in conn.execute(select(r.c.id, r.c.request_hash, r.c.response_hash))
        }
        log = tables["call_log"]
        calls = {i: u for i, u in conn.execute(select(log.c.id, log.c.call_uuid))}
        for name in TABLES:
            rows = []
            for row in conn.execute(select(tables[name])):
                d = {k: _plain(v, float_digits) for k, v in row._mapping.items() if k != "id"}
                if "response_id" in d:
                    d["response_id"] = answers.get(d["response_id"])
                if name == "call_tags":
                    d["call_id"] = calls[d["call_id"]]
                rows.append(json.dumps(d, sort_keys=True))
            rows.sort()
            out[name] = (len(rows), hashlib.sha256("\n".join(rows).encode()).hexdigest())
    engine.dispose()
    return out


def counts(location: str) -> dict[str, int]:
    return {name: n for name, (n, _) in digest(location).items()}


def rewrite(src: Path, dst: Path, edit: Callable[[dict[str, Any]], dict[str, Any] | None]) -> None:
    """Edit a bundle's records and give it a correct header again (as docs/bundle-format.md says):
    what a source ledger with such rows would have exported."""
    lines = src.read_bytes().splitlines(keepends=True)
    header = json.loads(lines[0])
    body = b""
    header["counts"] = dict.fromkeys(header["counts"], 0)
    names = {
        "request": "requests",
        "response": "responses",
        "cache_entry": "cache_entries",
        "call": "calls",
    }
    for line in lines[1:]:
        rec = edit(json.loads(line))
        if rec is None:
            continue
        header["counts"][names[rec["type"]]] += 1
        body += json.dumps(rec, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    header["checksum"] = hashlib.sha256(body).hexdigest()
    dst.write_bytes(json.dumps(header).encode() + b"\n" + body)


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def exported(
    client: llm_ledger.OpenAIClient, api: FakeOpenAIServer, db_path: Path, tmp_path: Path
) -> Path:
    """Machine A: record_calls on an SQLite ledger, exported to a plain bundle."""
    record_calls(client, api)
    path = tmp_path / "a.jsonl"
    transfer.export_bundle(str(db_path), path)
    return path


@pytest.fixture
def ledger_b(pg_url: str, api: FakeOpenAIServer) -> str:
    """Machine B: a PostgreSQL ledger holding one call of its own."""
    llm_ledger.OpenAIClient(cache_file_name=pg_url).send_message(
        msgs("B's own question"), temperature=0
    )
    repository.close_all()
    return pg_url


# --- the two-machine round trip ----------------------------------------------


@pytest.mark.parametrize("engine", ["postgresql", "mariadb"])
def test_calls_recorded_on_a_are_hits_on_b_after_export_and_import(
    client: llm_ledger.OpenAIClient,
    api: FakeOpenAIServer,
    db_path: Path,
    tmp_path: Path,
    engine: str,
    request: pytest.FixtureRequest,
) -> None:
    target = request.getfixturevalue("pg_url" if engine == "postgresql" else "mysql_url")
    record_calls(client, api)
    bundle = tmp_path / "a.jsonl.gz"
    exported = transfer.export_bundle(str(db_path), bundle)
    assert exported["counts"] == FULL
    assert gzip.open(bundle).readline().startswith(b'{"checksum"')

    result = transfer.import_bundle(target, bundle)

    assert {
        k: result[k]["added"] for k in ("requests", "responses", "cache_entries", "calls")
    } == FULL
    assert result["call_tags"]["added"] == FULL_TAGS
    assert (result["added"], result["already_present"], result["refused"]) == (19, 0, 0)
    float_digits = 6 if engine == "mariadb" else None  # see test_copy_to_mariadb
    assert digest(target, float_digits=float_digits) == digest(
        str(db_path), float_digits=float_digits
    )
    before = api.request_count
    replay_calls(llm_ledger.OpenAIClient(cache_file_name=target))
    assert api.request_count == before


def test_importing_a_bundle_twice_adds_nothing_the_second_time(
    exported: Path, ledger_b: str
) -> None:
    first = transfer.import_bundle(ledger_b, exported)
    after_first = digest(ledger_b)
    second = transfer.import_bundle(ledger_b, exported)

    assert first["added"] == 19
    assert (second["added"], second["already_present"], second["refused"]) == (0, 19, 0)
    assert second["call_tags"] == {"added": 0, "already_present": 6, "refused": 0}
    assert digest(ledger_b) == after_first


def test_import_keeps_audit_identity_and_remaps_response_ids(
    exported: Path, ledger_b: str, db_path: Path
) -> None:
    transfer.import_bundle(ledger_b, exported)
    tables = Base.metadata.tables
    log, resp = tables["call_log"], tables["responses"]

    def answers(location: str) -> dict[str, str | None]:
        llm_ledger.flush()  # writes="journal": this process's calls into the tables first
        engine = db.make_engine(location)
        stmt = select(log.c.call_uuid, resp.c.response_hash).outerjoin(
            resp, resp.c.id == log.c.response_id
        )
        with engine.connect() as conn:
            out = dict(conn.execute(stmt).all())
        engine.dispose()
        return out

    on_a, on_b = answers(str(db_path)), answers(ledger_b)
    assert len(on_a) == 5
    assert {u: on_b[u] for u in on_a} == on_a  # same call_uuids, each pointing at the same answer
    assert len(on_b) == 6  # B's own call is still there


def test_cli_import_reports_counts_and_says_when_nothing_is_new(
    exported: Path, ledger_b: str
) -> None:
    first = invoke("--db", ledger_b, "import", str(exported))
    second = invoke("--db", ledger_b, "import", str(exported))

    assert first.exit_code == 0, first.output
    assert first.output.splitlines()[-1] == "imported: 19 added, 0 already present, 0 refused"
    assert second.exit_code == 0, second.output
    assert second.output.splitlines()[-2:] == [
        "nothing new: all 19 records were already present",
        "imported: 0 added, 19 already present, 0 refused",
    ]
    rows = json.loads(invoke("--db", ledger_b, "import", str(exported), "-f", "json").stdout)
    assert rows[-1] == {"records": "total", "added": 0, "already_present": 19, "refused": 0}


# --- refusing bad bundles before any write -----------------------------------


def _flip_in_record(path: Path, dst: Path) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    i = next(i for i, line in enumerate(lines) if b"France" in line and i > 0)
    lines[i] = lines[i].replace(b"France", b"Frence", 1)
    dst.write_bytes(b"".join(lines))


def test_tampered_bundle_is_refused_and_the_target_is_unchanged(
    exported: Path, ledger_b: str, tmp_path: Path
) -> None:
    tampered = tmp_path / "tampered.jsonl"
    _flip_in_record(exported, tampered)
    before = digest(ledger_b)

    with pytest.raises(BundleError, match="fails its checksum.*nothing was imported"):
        transfer.import_bundle(ledger_b, tampered)

    assert digest(ledger_b) == before
    assert counts(ledger_b)["call_log"] == 1


def test_cli_refuses_a_tampered_bundle_with_exit_code_2(
    exported: Path, ledger_b: str, tmp_path: Path
) -> None:
    tampered = tmp_path / "tampered.jsonl"
    _flip_in_record(exported, tampered)
    before = digest(ledger_b)

    result = invoke("--db", ledger_b, "import", str(tampered))

    assert result.exit_code == 2
    assert result.output.startswith("error: ") and "fails its checksum" in result.output
    assert "Traceback" not in result.output
    assert digest(ledger_b) == before


def test_bundle_missing_its_last_line_is_refused(
    exported: Path, ledger_b: str, tmp_path: Path
) -> None:
    truncated = tmp_path / "truncated.jsonl"
    truncated.write_bytes(b"".join(exported.read_bytes().splitlines(keepends=True)[:-1]))
    before = digest(ledger_b)

    with pytest.raises(BundleError, match="fails its checksum"):
        transfer.import_bundle(ledger_b, truncated)
    assert digest(ledger_b) == before


def test_truncated_gzip_bundle_is_refused(exported: Path, ledger_b: str, tmp_path: Path) -> None:
    whole = tmp_path / "whole.jsonl.gz"
    whole.write_bytes(gzip.compress(exported.read_bytes()))
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(whole.read_bytes()[: len(whole.read_bytes()) // 2])
    before = digest(ledger_b)

    with pytest.raises(BundleError, match="truncated"):
        transfer.import_bundle(ledger_b, cut)
    assert digest(ledger_b) == before


def test_unknown_format_version_is_refused(exported: Path, ledger_b: str, tmp_path: Path) -> None:
    lines = exported.read_bytes().splitlines(keepends=True)
    header = json.loads(lines[0])
    header["format_version"] = 99
    newer = tmp_path / "newer.jsonl"
    newer.write_bytes(json.dumps(header).encode() + b"\n" + b"".join(lines[1:]))
    before = digest(ledger_b)

    with pytest.raises(BundleError, match=r"format version 99.*reads version 1 only; upgrade"):
        transfer.import_bundle(ledger_b, newer)
    assert digest(ledger_b) == before


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is not an llm-ledger bundle"),
        (b"PK\x03\x04 not a bundle", "is not an llm-ledger bundle"),
        (b'{"format": "something-else"}\n', "is not an llm-ledger bundle"),
    ],
)
def test_files_that_are_not_bundles_are_refused(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(content)
    with pytest.raises(BundleError, match=message):
        transfer.verify_bundle(path)


def test_invalid_record_with_a_valid_checksum_is_refused_naming_the_line(
    exported: Path, ledger_b: str, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.jsonl"
    rewrite(exported, bad, lambda r: {**r, "slot": "zero"} if r["type"] == "cache_entry" else r)
    before = digest(ledger_b)

    with pytest.raises(BundleError, match=r"line \d+: cache_entry record: slot must be an integer"):
        transfer.import_bundle(ledger_b, bad)
    assert digest(ledger_b) == before


def test_dangling_reference_is_refused(exported: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    rewrite(exported, bad, lambda r: None if r["type"] == "response" else r)
    with pytest.raises(BundleError, match="refers to response .* not in the bundle"):
        transfer.verify_bundle(bad)


# --- refusals of single records ----------------------------------------------


def test_response_not_matching_its_hash_is_refused_with_what_depends_on_it(
    exported: Path, ledger_b: str, tmp_path: Path
) -> None:
    def edit(rec: dict[str, Any]) -> dict[str, Any]:
        if rec["type"] == "response" and "France" in json.dumps(rec["response"]):
            rec["response"]["choices"][0]["message"]["content"] = "Lyon"
        return rec

    odd = tmp_path / "odd.jsonl"
    rewrite(exported, odd, edit)

    result = transfer.import_bundle(ledger_b, odd)

    assert result["responses"] == {"added": 3, "already_present": 0, "refused": 1}
    assert result["cache_entries"] == {"added": 3, "already_present": 0, "refused": 1}
    assert result["calls"] == {
        "added": 3,
        "already_present": 0,
        "refused": 2,
    }  # the miss and its hit
    assert result["refused_reasons"] == {
        "cache_entries: its response was refused or is missing": 1,
        "calls: its response was refused or is missing": 2,
        "responses: its response_hash does not match its response": 1,
    }
    assert (result["added"], result["refused"]) == (15, 4)


def test_call_uuid_already_used_by_another_call_is_refused(
    exported: Path, ledger_b: str, tmp_path: Path
) -> None:
    transfer.import_bundle(ledger_b, exported)
    moved = tmp_path / "moved.jsonl"
    requests: list[str] = []
    changed: list[str] = []

    def edit(rec: dict[str, Any]) -> dict[str, Any]:
        if rec["type"] == "request":
            requests.append(rec["request_hash"])
        elif rec["type"] == "call" and not changed:
            # the bundle's first call now claims another request than the target holds for it
            rec["request_hash"] = next(h for h in requests if h != rec["request_hash"])
            changed.append(rec["call_uuid"])
        return rec

    rewrite(exported, moved, edit)
    before = digest(ledger_b)

    result = transfer.import_bundle(ledger_b, moved)

    assert result["calls"] == {"added": 0, "already_present": 4, "refused": 1}
    assert result["refused_reasons"] == {
        "calls: its call_uuid is already in the target for another call": 1
    }
    assert digest(ledger_b) == before


# --- export ----------------------------------------------------------------------


def test_bundle_is_readable_and_checkable_without_the_library(exported: Path) -> None:
    raw = exported.read_bytes()
    header_line, _, body = raw.partition(b"\n")
    header = json.loads(header_line)
    records = [json.loads(line) for line in body.splitlines()]

    assert header["format"] == "llm-ledger-bundle" and header["format_version"] == 1
    assert header["checksum"] == hashlib.sha256(body).hexdigest()
    assert header["counts"] == FULL
    assert [r["type"] for r in records] == ["request"] * 6 + ["response"] * 4 + [
        "cache_entry"
    ] * 4 + ["call"] * 5
    assert "sk-test" not in raw.decode()  # the API key never reaches the ledger, nor a bundle


def test_cache_only_export_has_entries_and_what_they_need_but_no_audit_rows(
    client: llm_ledger.OpenAIClient, api: FakeOpenAIServer, db_path: Path, tmp_path: Path
) -> None:
    record_calls(client, api)
    result = transfer.export_bundle(str(db_path), tmp_path / "c.jsonl", cache_only=True)
    assert result["counts"] == {"requests": 4, "responses": 4, "cache_entries": 4, "calls": 0}

    target = str(tmp_path / "b.db")
    transfer.import_bundle(target, tmp_path / "c.jsonl")
    before = api.request_count
    replay_calls(llm_ledger.OpenAIClient(cache_file_name=target))
    assert api.request_count == before


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"run": "r2"}, {"requests": 1, "responses": 1, "cache_entries": 1, "calls": 1}),
        # An embedding batch's audit row does not point at its items' answers (response_id is
        # NULL), so --run takes the batch's request but not the items' entries.
        ({"run": "r1"}, {"requests": 2, "responses": 1, "cache_entries": 1, "calls": 3}),
        ({"model": "gpt-4o"}, {"requests": 1, "responses": 1, "cache_entries": 1, "calls": 1}),
        (
            {"until": datetime(2000, 1, 1)},
            {"requests": 0, "responses": 0, "cache_entries": 0, "calls": 0},
        ),
        ({"since": datetime(2000, 1, 1)}, FULL),
        (
            {"run": "r2", "cache_only": True},
            {"requests": 1, "responses": 1, "cache_entries": 1, "calls": 0},
        ),
    ],
)
def test_export_filters_select_calls_and_what_they_reference(
    client: llm_ledger.OpenAIClient,
    api: FakeOpenAIServer,
    db_path: Path,
    tmp_path: Path,
    filters: dict[str, Any],
    expected: dict[str, int],
) -> None:
    record_calls(client, api)
    path = tmp_path / "f.jsonl"
    assert transfer.export_bundle(str(db_path), path, **filters)["counts"] == expected
    transfer.verify_bundle(path)  # self-contained: every reference resolves


def test_cli_export_writes_a_bundle_and_reports_its_counts(
    client: llm_ledger.OpenAIClient, api: FakeOpenAIServer, db_path: Path, tmp_path: Path
) -> None:
    record_calls(client, api)
    path = tmp_path / "cli.jsonl.gz"

    result = invoke(
        "--db", str(db_path), "export", str(path), "--run", "r2", "--until", "2999-12-31"
    )

    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == f"exported: 4 records to {path}"
    assert transfer.verify_bundle(path).header["filters"]["until"] == "3000-01-01T00:00:00.000000"


def test_cli_rejects_a_date_it_cannot_read(db_path: Path, tmp_path: Path) -> None:
    result = invoke(
        "--db", str(db_path), "export", str(tmp_path / "x.jsonl"), "--since", "yesterday"
    )
    assert result.exit_code == 2
    assert result.output.startswith("error: --since: 'yesterday' is not a date")


def test_export_leaves_no_partial_file_when_it_fails(
    exported: Path, db_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real, seen = transfer.encode, []

    def failing(rtype: str, row: dict[str, Any]) -> bytes:
        seen.append(rtype)
        if rtype == "call":
            raise OSError(28, "No space left on device")
        return real(rtype, row)

    monkeypatch.setattr(transfer, "encode", failing)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(OSError, match="No space left"):
        transfer.export_bundle(str(db_path), tmp_path / "x.jsonl.gz")
    assert "request" in seen
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_export_with_progress_bar_writes_to_stderr(
    exported: Path, db_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    transfer.export_bundle(str(db_path), tmp_path / "p.jsonl", progress=True)
    transfer.import_bundle(str(tmp_path / "p.db"), tmp_path / "p.jsonl", progress=True)
    captured = capsys.readouterr()
    assert "export p.jsonl" in captured.err and "import p.jsonl" in captured.err
    assert captured.out == ""


# --- copy ----------------------------------------------------------------------


def test_copy_sqlite_to_postgresql_preserves_every_row(
    client: llm_ledger.OpenAIClient, api: FakeOpenAIServer, db_path: Path, pg_url: str
) -> None:
    record_calls(client, api)

    result = transfer.copy_ledger(str(db_path), pg_url, batch_size=2)

    assert result["rows_written"] == sum(FULL_ROWS.values())
    assert digest(pg_url) == digest(str(db_path))
    assert counts(pg_url) == FULL_ROWS


def test_copy_to_mariadb_preserves_every_row(
    client: llm_ledger.OpenAIClient, api: FakeOpenAIServer, db_path: Path, mysql_url: str
) -> None:
    record_calls(client, api)

    transfer.copy_ledger(str(db_path), mysql_url, batch_size=3)

    assert counts(mysql_url) == FULL_ROWS
    # call_log.latency_ms is a single-precision FLOAT on MariaDB (sa.Float() there), which keeps
    # about 6 significant digits; everything else is compared exactly.
    assert digest(mysql_url, float_digits=6) == digest(str(db_path), float_digits=6)


def test_copying_again_adds_nothing_and_merges_into_an_existing_ledger(
    client: llm_ledger.OpenAIClient, api: FakeOpenAIServer, db_path: Path, ledger_b: str
) -> None:
    record_calls(client, api)
    first = transfer.copy_ledger(str(db_path), ledger_b)
    after = digest(ledger_b)
    second = transfer.copy_ledger(str(db_path), ledger_b)

    assert (first["added"], first["already_present"]) == (19, 0)
    assert (second["added"], second["already_present"], second["refused"]) == (0, 19, 0)
    assert digest(ledger_b) == after
    assert counts(ledger_b)["call_log"] == 6


def test_copy_to_itself_is_refused(db_path: Path) -> None:
    repository.Ledger(str(db_path)).close()
    with pytest.raises(TransferError, match="is the source ledger itself"):
        transfer.copy_ledger(str(db_path), f"sqlite:///{db_path}")


def test_cli_copy_reports_rows_written(
    client: llm_ledger.OpenAIClient, api: FakeOpenAIServer, db_path: Path, tmp_path: Path
) -> None:
    record_calls(client, api)
    target = tmp_path / "copy.db"

    result = invoke("--db", str(db_path), "copy", "--to", str(target), "--batch-size", "2")

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[-2] == "copied: 19 added, 0 already present, 0 refused"
    assert lines[-1].startswith(f"25 rows written to sqlite:///{target} in ")
    assert digest(str(target)) == digest(str(db_path))


# --- the format is documented exactly ------------------------------------------------


def test_bundle_fields_cover_every_column_except_surrogate_ids() -> None:
    tables = Base.metadata.tables
    for rtype, table in (
        ("request", "requests"),
        ("response", "responses"),
        ("cache_entry", "cache_entries"),
        ("call", "call_log"),
    ):
        columns = {c.name for c in tables[table].c} - ({"id"} if rtype != "response" else set())
        extra = {"call_tags"} if rtype == "call" else set()
        assert set(transfer.FIELDS[rtype]) == columns | extra


def test_bundle_format_doc_names_every_field_and_the_version() -> None:
    doc = (DOCS / "bundle-format.md").read_text()
    assert f'"format_version": {transfer.FORMAT_VERSION}' in doc
    for rtype, fields in transfer.FIELDS.items():
        assert f"`{rtype}`" in doc
        for name in fields:
            assert f"`{name}`" in doc, (rtype, name)


def test_every_transfer_command_has_an_example_in_its_help() -> None:
    for command in ("export", "import", "copy", "import-pickle", "prune", "vacuum"):
        result = invoke(command, "--help")
        assert result.exit_code == 0
        assert "Example: llm-ledger" in result.output, command


def test_bulk_merge_counts_only_real_rows_for_an_empty_bundle(
    tmp_path: Path, db_path: Path
) -> None:
    repository.Ledger(str(db_path)).close()
    path = tmp_path / "empty.jsonl"
    assert transfer.export_bundle(str(db_path), path)["counts"] == dict.fromkeys(FULL, 0)
    result = transfer.import_bundle(str(tmp_path / "other.db"), path)
    assert (result["added"], result["already_present"], result["refused"]) == (0, 0, 0)
    assert bulk.MERGED == ("requests", "responses", "cache_entries", "calls", "call_tags")
