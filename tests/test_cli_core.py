"""``llm-ledger`` info, migrate, calls, show, recover and ``--db``: exact output on a known ledger."""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

import llm_ledger
from llm_ledger.cli import app
from llm_ledger.errors import BudgetExceededError, SchemaVersionError
from llm_ledger.records import CallRecord
from llm_ledger.store import db, repository, spool

from .conftest import msgs

# (created_at, latency_ms) given to calls 1..5, so output and date filters are exact.
TIMES = [
    ("2026-05-01 09:00:00.250000", 412.5),
    ("2026-05-01 09:05:00.250000", 0.75),
    ("2026-05-02 12:00:00.250000", 38.25),
    ("2026-05-03 08:30:00.250000", 20.0),
    ("2026-05-03 23:59:59.250000", None),
]


def invoke(*args: str, input: str | None = None, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, list(args), input=input, env=env)


def build_known_ledger(client: llm_ledger.OpenAIClient, api) -> None:
    """Five calls: miss, hit, embedding batch, API error, budget refusal."""
    with llm_ledger.scope(run="r1", tags={"team": "alpha"}):
        client.send_message(msgs("What is the capital of France?"), temperature=0)
        client.send_message(msgs("What is the capital of France?"), temperature=0)
        client.get_embedding(["one", "two"])
    api.fail_next(400, message="Discounts are not a model")
    assert client.send_message(msgs("Discount 100% _now_"), model="gpt-4o", temperature=0) is None
    with llm_ledger.scope(run="r2", max_cost_usd=0), pytest.raises(BudgetExceededError):
        client.send_message(msgs("too expensive"), temperature=0)


def pin_times(location: str) -> None:
    llm_ledger.flush()  # calls are written behind them (writes="journal")
    engine = create_engine(db.normalize_url(location))
    with engine.begin() as conn:
        for call_id, (created, latency) in enumerate(TIMES, start=1):
            conn.execute(
                text("UPDATE call_log SET created_at = :t, latency_ms = :l WHERE id = :i"),
                {"t": datetime.fromisoformat(created), "l": latency, "i": call_id},
            )
    engine.dispose()


@pytest.fixture
def known(client: llm_ledger.OpenAIClient, api, db_path: Path) -> str:
    build_known_ledger(client, api)
    repository.close_all()
    pin_times(str(db_path))
    return str(db_path)


CALLS_CSV = """\
id,created_at,kind,model,cache_status,status,attempts,latency_ms,total_tokens,cost_usd,prompt
5,2026-05-03 23:59:59.250000,chat,gpt-4o-mini,miss,refused,0,,,0.0,too expensive
4,2026-05-03 08:30:00.250000,chat,gpt-4o,miss,error,1,20.0,,,Discount 100% _now_
3,2026-05-02 12:00:00.250000,embedding,text-embedding-3-small,miss,ok,1,38.25,2,0.00000004,one two
2,2026-05-01 09:05:00.250000,chat,gpt-4o-mini,hit,ok,0,0.75,18,0.0,What is the capital of France?
1,2026-05-01 09:00:00.250000,chat,gpt-4o-mini,miss,ok,1,412.5,18,0.00000675,What is the capital of France?
"""


def ids(result) -> list[int]:
    assert result.exit_code == 0, result.output
    return [row["id"] for row in json.loads(result.stdout)]


# --- calls ----------------------------------------------------------------------


def test_calls_lists_newest_first_as_csv(known: str) -> None:
    result = invoke("--db", known, "calls", "--format", "csv")
    assert result.exit_code == 0, result.output
    assert result.stdout == CALLS_CSV


def test_calls_table(known: str) -> None:
    result = invoke("--db", known, "calls", "--limit", "2", "--cache", "miss")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "┏━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━┳━━━━━━━━━━━━━┳━━━━━━━━━━━━━━┳━━━━━━━━━┳━━━━━━━━━━┳━━━━━━━━━━━━┳━━━━━━━━━━━━━━┳━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━┓\n"
        "┃ id ┃ created_at                 ┃ kind ┃ model       ┃ cache_status ┃ status  ┃ attempts ┃ latency_ms ┃ total_tokens ┃ cost_usd ┃ prompt              ┃\n"
        "┡━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━╇━━━━━━━━━━━━━╇━━━━━━━━━━━━━━╇━━━━━━━━━╇━━━━━━━━━━╇━━━━━━━━━━━━╇━━━━━━━━━━━━━━╇━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━┩\n"
        "│ 5  │ 2026-05-03 23:59:59.250000 │ chat │ gpt-4o-mini │ miss         │ refused │ 0        │            │              │ 0.0      │ too expensive       │\n"
        "│ 4  │ 2026-05-03 08:30:00.250000 │ chat │ gpt-4o      │ miss         │ error   │ 1        │ 20.0       │              │          │ Discount 100% _now_ │\n"
        "└────┴────────────────────────────┴──────┴─────────────┴──────────────┴─────────┴──────────┴────────────┴──────────────┴──────────┴─────────────────────┘\n"
    )


def test_calls_json_parses_back_to_the_rows(known: str) -> None:
    result = invoke("--db", known, "calls", "--format", "json", "--limit", "1", "--run", "r1")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [
        {
            "id": 3,
            "created_at": "2026-05-02 12:00:00.250000",
            "kind": "embedding",
            "model": "text-embedding-3-small",
            "cache_status": "miss",
            "status": "ok",
            "attempts": 1,
            "latency_ms": 38.25,
            "total_tokens": 2,
            "cost_usd": 4e-08,
            "prompt": "one two",
        }
    ]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--model", "gpt-4o"], [4]),
        (["--run", "r1"], [3, 2, 1]),
        (["--status", "error"], [4]),
        (["--status", "refused"], [5]),
        (["--cache", "hit"], [2]),
        (["--since", "2026-05-02"], [5, 4, 3]),
        (["--until", "2026-05-01"], [2, 1]),  # a date alone: that whole day
        (["--since", "2026-05-03", "--until", "2026-05-03"], [5, 4]),
        (["--until", "2026-05-01T09:05:00.250000"], [1]),  # a datetime: exclusive
        (["--since", "2026-05-01T11:01:00+02:00", "--until", "2026-05-02"], [3, 2]),
        (["--limit", "2"], [5, 4]),
        (["--limit", "0"], [5, 4, 3, 2, 1]),
    ],
)
def test_calls_filters(known: str, args: list[str], expected: list[int]) -> None:
    assert ids(invoke("--db", known, "calls", *args, "--format", "json")) == expected


@pytest.mark.parametrize(
    ("needle", "expected"),
    [
        ("CAPITAL of france", [2, 1]),  # in the request, any case
        ("answer 1 to: what", [2, 1]),  # in the answer (the hit was served the same one)
        ("100%", [4]),  # % and _ are literal text, not wildcards
        ("_now_", [4]),
        ('"input"', [3]),  # it is the request's JSON text that is searched
        ("nowhere in the ledger", []),
    ],
)
def test_calls_search_matches_prompt_or_answer(
    known: str, needle: str, expected: list[int]
) -> None:
    assert ids(invoke("--db", known, "calls", "--search", needle, "--format", "json")) == expected


def test_calls_rejects_a_bad_date_with_exit_code_2(known: str) -> None:
    result = invoke("--db", known, "calls", "--since", "May 1st")
    assert result.exit_code == 2
    assert result.stderr == (
        "error: --since 'May 1st': expected a date (2026-05-01) or a UTC datetime "
        "(2026-05-01T12:30:00, or with an offset such as +02:00)\n"
    )


def test_calls_on_a_missing_file_fails_without_creating_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.db"
    result = invoke("--db", str(missing), "calls")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: no ledger at {missing}: ")
    assert not missing.exists()


def test_calls_refuses_a_database_that_is_not_a_ledger(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    llm_ledger.flush()  # writes="journal": this process's calls into the tables first
    engine = create_engine(f"sqlite:///{other}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (a INTEGER)"))
    engine.dispose()
    result = invoke("--db", str(other), "calls")
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: sqlite:///{other} holds no ledger (no schema revision): point --db at a "
        "ledger, or create one with `llm-ledger migrate`\n"
    )


# --- show -------------------------------------------------------------------------


def normalise(output: str) -> str:
    output = re.sub(
        r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<uuid>", output
    )
    return re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:<port>", output)


def test_show_prints_the_whole_call(known: str) -> None:
    result = invoke("--db", known, "show", "4")
    assert result.exit_code == 0, result.output
    request_hash = json.loads(invoke("--db", known, "show", "4", "-f", "json").stdout)["call"][
        "request_hash"
    ]
    assert normalise(result.stdout) == (
        "call 4\n"
        "  id               4\n"
        "  call_uuid        <uuid>\n"
        "  created_at       2026-05-03 08:30:00.250000\n"
        "  kind             chat\n"
        "  api_type         openai\n"
        "  endpoint_host    127.0.0.1:<port>\n"
        "  model            gpt-4o\n"
        "  namespace\n"
        f"  request_hash     {request_hash}\n"
        "  slot             0\n"
        "  response_id      -\n"
        "  cache_status     miss\n"
        "  status           error\n"
        "  attempts         1\n"
        "  latency_ms       20.0\n"
        "  items_total      -\n"
        "  items_hit        -\n"
        "  run              -\n"
        "  template         -\n"
        "  tags             -\n"
        "  library_version  0.1.0\n"
        "usage\n"
        "  prompt_tokens      -\n"
        "  completion_tokens  -\n"
        "  cached_tokens      -\n"
        "  reasoning_tokens   -\n"
        "  total_tokens       -\n"
        "  tokens_estimated   False\n"
        "cost\n"
        "  cost_usd       -\n"
        "  saved_usd      -\n"
        "  cost_note      -\n"
        "  price_version  -\n"
        "error\n"
        "  error_type     BadRequestError\n"
        "  error_message  Error code: 400 - Discounts are not a model\n"
        "request\n"
        "  {\n"
        '    "kind": "chat",\n'
        '    "messages": [\n'
        "      {\n"
        '        "content": "Discount 100% _now_",\n'
        '        "role": "user"\n'
        "      }\n"
        "    ],\n"
        '    "model": "gpt-4o",\n'
        '    "params": {\n'
        '      "frequency_penalty": 0.0,\n'
        '      "max_tokens": 1024,\n'
        '      "presence_penalty": 0.0,\n'
        '      "temperature": 0.0,\n'
        '      "top_p": 1.0\n'
        "    }\n"
        "  }\n"
        "response\n"
        "  -\n"
    )


def test_show_json_is_one_object(known: str) -> None:
    result = invoke("--db", known, "show", "2", "--format", "json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert list(doc) == ["call", "usage", "cost", "error", "request", "response"]
    assert doc["call"]["id"] == 2
    assert doc["call"]["cache_status"] == "hit"
    assert doc["call"]["tags"] == {"team": "alpha"}
    assert doc["usage"] == {
        "prompt_tokens": 9,
        "completion_tokens": 9,
        "cached_tokens": 0,
        "reasoning_tokens": 0,
        "total_tokens": 18,
        "tokens_estimated": False,
    }
    assert doc["cost"] == {
        "cost_usd": 0.0,
        "saved_usd": 6.75e-06,
        "cost_note": None,
        "price_version": None,
    }
    assert doc["error"] is None
    assert doc["request"]["messages"] == msgs("What is the capital of France?")
    assert doc["response"]["choices"][0]["message"]["content"] == (
        "answer 1 to: What is the capital of France?"
    )


def test_show_finds_a_call_by_its_uuid(known: str) -> None:
    by_id = json.loads(invoke("--db", known, "show", "3", "-f", "json").stdout)
    by_uuid = invoke("--db", known, "show", by_id["call"]["call_uuid"], "-f", "json")
    assert json.loads(by_uuid.stdout) == by_id


def test_show_an_unknown_call_exits_2(known: str) -> None:
    result = invoke("--db", known, "show", "99")
    assert result.exit_code == 2
    assert (
        result.stderr == f"error: no call 99 in sqlite:///{known}; `llm-ledger calls` lists them\n"
    )


# --- info ---------------------------------------------------------------------------


def test_info_json(known: str) -> None:
    result = invoke("--db", known, "info", "--format", "json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    wal = Path(known + "-wal")
    file_bytes, wal_bytes = Path(known).stat().st_size, wal.stat().st_size if wal.exists() else 0
    assert info == {
        "database": f"sqlite:///{known}",
        "engine": "sqlite",
        "revision": db.head_revision(),
        "head": db.head_revision(),
        "current": True,
        "rows": {"requests": 6, "responses": 3, "cache_entries": 3, "call_log": 5, "call_tags": 3},
        "views": ["calls", "daily_usage", "model_costs", "cached_answers"],
        "size_bytes": file_bytes + wal_bytes,
        "file_bytes": file_bytes,
        "wal_bytes": wal_bytes,
    }


def test_info_text(known: str) -> None:
    result = invoke("--db", known, "info")
    assert result.exit_code == 0, result.output
    size = re.compile(r"  size      \d+\.\d KiB \([\d,]+ bytes: file [\d,]+ \+ WAL [\d,]+\)\n")
    assert size.search(result.stdout)
    assert size.sub("  size      <size>\n", result.stdout) == (
        "ledger\n"
        f"  database  sqlite:///{known}\n"
        "  engine    sqlite\n"
        f"  revision  {db.head_revision()} (current)\n"
        "  size      <size>\n"
        "  views     calls, daily_usage, model_costs, cached_answers\n"
        "rows\n"
        "  requests       6\n"
        "  responses      3\n"
        "  cache_entries  3\n"
        "  call_log       5\n"
        "  call_tags      3\n"
    )


def test_info_hides_the_password(pg_url: str) -> None:
    url = pg_url.replace("postgres@", "postgres:s3cret-pw@", 1)
    llm_ledger.Ledger(pg_url).close()
    result = invoke("--db", url, "info", "--format", "json")
    assert "s3cret-pw" not in result.output
    if result.exit_code == 0:  # the server may or may not check passwords
        info = json.loads(result.stdout)
        assert info["database"] == db.describe(db.normalize_url(url))
        assert "***" in info["database"]
        assert info["rows"]["call_log"] == 0
        assert info["size_bytes"] > 0 and info["database_bytes"] >= info["size_bytes"]


def test_info_on_an_empty_database_says_so(any_db: str) -> None:
    if "://" not in any_db:
        Path(any_db).touch()
    result = invoke("--db", any_db, "info", "--format", "json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert (info["revision"], info["current"], info["rows"], info["views"]) == (None, False, {}, [])


def test_info_sizes_on_every_engine(any_db: str) -> None:
    llm_ledger.Ledger(any_db).close()
    result = invoke("--db", any_db, "info", "--format", "json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["current"] is True
    assert info["rows"] == {
        t: 0 for t in ("requests", "responses", "cache_entries", "call_log", "call_tags")
    }
    assert info["size_bytes"] > 0


# --- migrate --------------------------------------------------------------------------


def test_migrate_creates_the_schema_then_has_nothing_to_do(any_db: str) -> None:
    where = db.describe(db.normalize_url(any_db))
    head = db.head_revision()
    first = invoke("--db", any_db, "migrate")
    assert (first.exit_code, first.stdout) == (0, f"migrated {where} from empty to {head}\n")
    again = invoke("--db", any_db, "migrate")
    assert (again.exit_code, again.stdout) == (0, f"already at {head} ({where})\n")


def test_migrate_upgrades_an_old_postgresql_schema_ledger_refuses(pg_url: str) -> None:
    base = next(r for r in db.known_revisions() if _down(r) is None)
    if base == db.head_revision():
        pytest.skip("only one schema revision so far")
    llm_ledger.flush()  # writes="journal": this process's calls into the tables first
    engine = db.make_engine(pg_url)
    db.upgrade(engine, base)
    engine.dispose()
    with pytest.raises(SchemaVersionError):
        llm_ledger.Ledger(pg_url)
    result = invoke("--db", pg_url, "migrate")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"migrated {db.describe(db.normalize_url(pg_url))} from {base} to {db.head_revision()}\n"
    )
    assert llm_ledger.Ledger(pg_url).revision == db.head_revision()


def _down(revision: str) -> str | None:
    return db._script().get_revision(revision).down_revision  # type: ignore[union-attr,return-value]


def test_migrate_refuses_another_applications_sqlite_file(tmp_path: Path) -> None:
    other = tmp_path / "app.db"
    llm_ledger.flush()  # writes="journal": this process's calls into the tables first
    engine = create_engine(f"sqlite:///{other}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE users (id INTEGER)"))
    engine.dispose()
    result = invoke("--db", str(other), "migrate")
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: sqlite:///{other} is an SQLite database of another application "
        "(tables: users); point cache_file_name / LLM_LEDGER_URL (or llm-ledger --db) at a new file\n"
    )


# --- recover ----------------------------------------------------------------------------


def spooled(n: int) -> CallRecord:
    return CallRecord(
        call_uuid=str(uuid.UUID(int=n)),
        created_at=datetime(2026, 5, 4, 10, 0, n),
        kind="chat",
        api_type="openai",
        endpoint_host=None,
        model="gpt-4o-mini",
        namespace="",
        request_hash=f"{n:064x}",
        request={"kind": "chat", "model": "gpt-4o-mini", "messages": msgs(f"spooled {n}")},
        cache_status="miss",
        status="error",
        library_version="0.1.0",
        error_type="APIConnectionError",
        error_message="the ledger was down",
    )


def test_recover_writes_each_spooled_call_once(known: str) -> None:
    path = spool.default_spool_path(db.normalize_url(known))
    for record in (spooled(1), spooled(2), spooled(1)):
        spool.append(path, record)
    result = invoke("--db", known, "recover")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"recovered {path} into sqlite:///{known}: 2 written, 1 already present, "
        "0 unreadable, 0 pending\n"
    )
    assert not path.exists()
    assert ids(invoke("--db", known, "calls", "--format", "json", "--status", "error")) == [
        7,
        6,
        4,
    ]


def test_recover_without_a_spool_has_nothing_to_do(known: str) -> None:
    path = spool.default_spool_path(db.normalize_url(known))
    result = invoke("--db", known, "recover")
    assert (result.exit_code, result.stdout) == (
        0,
        f"nothing to recover: no spool file at {path}\n",
    )


# --- --db, LLM_LEDGER_URL, ./llm_ledger.db -------------------------------------------------


def test_db_option_beats_environment_beats_default(tmp_path: Path) -> None:
    default, env, option = (tmp_path / n for n in ("llm_ledger.db", "env.db", "option.db"))
    for path in (default, env, option):
        llm_ledger.Ledger(str(path)).close()

    def database(*args: str, env_url: str | None = None) -> str:
        result = invoke(*args, "info", "--format", "json", env={"LLM_LEDGER_URL": env_url})
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)["database"]

    assert database() == f"sqlite:///{default}"
    assert database(env_url=str(env)) == f"sqlite:///{env}"
    assert database("--db", str(option), env_url=str(env)) == f"sqlite:///{option}"


def test_calls_and_show_on_every_engine(any_db: str, api) -> None:
    client = llm_ledger.OpenAIClient(cache_file_name=any_db)
    with llm_ledger.scope(run="r1"):
        client.send_message(msgs("What is the capital of France?"), temperature=0)
        client.send_message(msgs("What is the capital of France?"), temperature=0)
        client.send_message(msgs("And of Italy?"), temperature=0)
    repository.close_all()
    assert ids(invoke("--db", any_db, "calls", "--format", "json")) == [3, 2, 1]
    assert ids(invoke("--db", any_db, "calls", "--search", "FRANCE", "-f", "json")) == [2, 1]
    assert ids(invoke("--db", any_db, "calls", "--search", "answer 1 to: and", "-f", "json")) == [3]
    assert ids(invoke("--db", any_db, "calls", "--cache", "hit", "-f", "json")) == [2]
    shown = json.loads(invoke("--db", any_db, "show", "2", "--format", "json").stdout)
    assert (shown["call"]["cache_status"], shown["cost"]["saved_usd"]) == ("hit", 6.75e-06)
    assert shown["response"]["choices"][0]["message"]["content"] == (
        "answer 1 to: What is the capital of France?"
    )
