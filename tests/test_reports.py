"""llm_ledger.reports: cost reports, stats and reprice, on a known ledger on every engine."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select, update

import llm_ledger
from llm_ledger import reports
from llm_ledger.errors import ConfigError, LedgerError
from llm_ledger.policy import StoreMode
from llm_ledger.pricing import PricingConfig
from llm_ledger.records import Answer, CallRecord, Usage
from llm_ledger.store.models import CallLog, Response
from llm_ledger.store.repository import Ledger

from .conftest import msgs

D = Decimal
VERSION = "genai-prices 0.2.3"
_LOG = CallLog.__table__
_RESP = Response.__table__


def record(
    ledger: Ledger,
    label: str,
    when: str,
    model: str,
    cache_status: str = "miss",
    status: str = "ok",
    *,
    run: str | None = None,
    template: str | None = None,
    tags: dict[str, str] | None = None,
    prompt: int | None = None,
    completion: int | None = None,
    cost: str | None = None,
    saved: str | None = None,
    latency: float | None = None,
    kind: str = "chat",
    served: int | None = None,
) -> int | None:
    """Write one call through the repository; a paid one stores its answer. Returns that id."""
    llm_ledger.flush()  # calls are written behind them (writes="journal")
    request_hash = hashlib.sha256(label.encode()).hexdigest()
    request = {"model": model, "messages": [{"role": "user", "content": label}]}
    usage = Usage(prompt, completion, None, None, None if prompt is None else prompt + completion)
    paid = cache_status != "hit" and status == "ok"
    rec = CallRecord(
        call_uuid=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{label}@{when}")),
        created_at=datetime.fromisoformat(when),
        kind=kind,
        api_type="openai",
        endpoint_host="127.0.0.1",
        model=model,
        namespace="",
        request_hash=request_hash,
        request=request,
        cache_status=cache_status,
        status=status,
        library_version="test",
        slot=0,
        attempts=0 if cache_status == "hit" else 1,
        latency_ms=latency,
        usage=usage,
        cost_usd=None if cost is None else D(cost),
        saved_usd=None if saved is None else D(saved),
        price_version=VERSION if paid else None,
        run=run,
        template=template,
        tags=tags,
        served_response_id=served,
    )
    if paid:
        rec.answers = [
            Answer(
                request_hash=request_hash,
                kind=kind,
                model=model,
                request=request,
                response={"model": model, "object": "chat.completion", "choices": []},
                usage=usage,
                cost_usd=rec.cost_usd,
                cost_note=None,
                price_version=VERSION,
                store=StoreMode.INSERT,
                namespace="",
                slot=0,
            )
        ]
        rec.primary_answer = 0
    ledger.record(rec)
    with ledger.engine.connect() as conn:
        return conn.execute(
            select(_LOG.c.response_id).where(_LOG.c.call_uuid == rec.call_uuid)
        ).scalar_one()


def build_known_ledger(location: str) -> Ledger:
    """Eight calls over three UTC days; the expected reports below are worked out by hand.

    r1 gpt-4o-mini miss   05-01 10:00  run a  sys    team=x        1000/200  $0.00027
    r2 gpt-4o-mini hit    05-01 11:00  run a  sys    team=x exp=1  (1000/200) saved $0.00027
    r3 gpt-4o      miss   05-02 09:00  run b  -      exp=1         2000/100  $0.006
    r4 gpt-4o      bypass 05-02 23:59:59.999999  -   -             1000/50   $0.003
    r5 gpt-4o-mini error  05-03 00:00  run b
    r6 prod-chat   miss   05-03 01:00  run b  other                10/5      unpriced
    r7 gpt-4o-mini refused 05-03 02:00 run a                                 $0
    r8 text-embedding-3-small hit 05-03 03:00 run c              (1000/0) saved $0.00002
    """
    ledger = Ledger(location)
    r1 = record(ledger, "r1", "2026-05-01 10:00:00", "gpt-4o-mini", run="a", template="sys",
                tags={"team": "x"}, prompt=1000, completion=200, cost="0.00027", latency=100)  # fmt: skip
    record(ledger, "r1", "2026-05-01 11:00:00", "gpt-4o-mini", "hit", run="a", template="sys",
           tags={"team": "x", "exp": "1"}, prompt=1000, completion=200, cost="0",
           saved="0.00027", latency=1, served=r1)  # fmt: skip
    record(ledger, "r3", "2026-05-02 09:00:00", "gpt-4o", run="b", tags={"exp": "1"},
           prompt=2000, completion=100, cost="0.006", latency=300)  # fmt: skip
    record(ledger, "r4", "2026-05-02 23:59:59.999999", "gpt-4o", "bypass",
           prompt=1000, completion=50, cost="0.003", latency=500)  # fmt: skip
    record(ledger, "r5", "2026-05-03 00:00:00", "gpt-4o-mini", status="error", run="b", latency=50)
    record(ledger, "r6", "2026-05-03 01:00:00", "prod-chat", run="b", template="other",
           prompt=10, completion=5, latency=200)  # fmt: skip
    record(ledger, "r7", "2026-05-03 02:00:00", "gpt-4o-mini", status="refused", run="a",
           cost="0")  # fmt: skip
    record(ledger, "r8", "2026-05-03 03:00:00", "text-embedding-3-small", "hit", run="c",
           prompt=1000, completion=0, cost="0", saved="0.00002", latency=2, kind="embedding")  # fmt: skip
    return ledger


def row(
    group: Any, calls: int, hits: int, prompt: int, completion: int, cost: str, saved: str
) -> dict[str, Any]:
    return {
        "group": group,
        "calls": calls,
        "hits": hits,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "cost_usd": D(cost),
        "saved_usd": D(saved),
    }


EXPECTED = {
    "model": [
        row("gpt-4o", 2, 0, 3000, 150, "0.009", "0"),
        row("gpt-4o-mini", 4, 1, 1000, 200, "0.00027", "0.00027"),
        row("prod-chat", 1, 0, 10, 5, "0", "0"),
        row("text-embedding-3-small", 1, 1, 0, 0, "0", "0.00002"),
    ],
    "day": [
        row("2026-05-02", 2, 0, 3000, 150, "0.009", "0"),
        row("2026-05-01", 2, 1, 1000, 200, "0.00027", "0.00027"),
        row("2026-05-03", 4, 1, 10, 5, "0", "0.00002"),
    ],
    "run": [
        row("b", 3, 0, 2010, 105, "0.006", "0"),
        row(None, 1, 0, 1000, 50, "0.003", "0"),
        row("a", 3, 1, 1000, 200, "0.00027", "0.00027"),
        row("c", 1, 1, 0, 0, "0", "0.00002"),
    ],
    "tag": [
        row("exp=1", 2, 1, 2000, 100, "0.006", "0.00027"),
        row("team=x", 2, 1, 1000, 200, "0.00027", "0.00027"),
    ],
    "template": [
        row(None, 5, 1, 3000, 150, "0.009", "0.00002"),
        row("sys", 2, 1, 1000, 200, "0.00027", "0.00027"),
        row("other", 1, 0, 10, 5, "0", "0"),
    ],
}


@pytest.fixture
def known(any_db: str) -> Iterator[Ledger]:
    ledger = build_known_ledger(any_db)
    yield ledger
    ledger.close()


@pytest.mark.parametrize("by", reports.GROUPINGS)
def test_costs_grouped_on_each_engine(known: Ledger, by: str) -> None:
    assert reports.costs(known, by=by) == EXPECTED[by]


def test_ties_are_ordered_by_group_with_unnamed_groups_last(db_path) -> None:
    ledger = Ledger(str(db_path))
    for i, run in enumerate(["b", None, "a"]):
        record(ledger, f"t{i}", "2026-05-01 10:00:00", "gpt-4o", status="refused", run=run,
               cost="0")  # fmt: skip
    assert [r["group"] for r in reports.costs(ledger, "run")] == ["a", "b", None]


def test_costs_with_unpriced_counts_paid_calls_without_a_price(known: Ledger) -> None:
    got = {r["group"]: r["unpriced"] for r in reports.costs(known, "model", with_unpriced=True)}
    assert got == {"gpt-4o": 0, "gpt-4o-mini": 0, "prod-chat": 1, "text-embedding-3-small": 0}


def test_until_date_includes_the_whole_day(known: Ledger) -> None:
    got = reports.costs(known, "model", since="2026-05-02", until="2026-05-02")
    assert got == [row("gpt-4o", 2, 0, 3000, 150, "0.009", "0")]


def test_until_datetime_is_exclusive_and_offsets_become_utc(known: Ledger) -> None:
    # 2026-05-03T02:00+02:00 is midnight UTC: r5 (at midnight) is out, r4 is in.
    got = reports.costs(known, "day", since="2026-05-02T10:00:00Z", until="2026-05-03T02:00+02:00")
    assert got == [row("2026-05-02", 1, 0, 1000, 50, "0.003", "0")]


def test_costs_filtered_by_run_and_model(known: Ledger) -> None:
    assert reports.costs(known, "day", run="b", model="gpt-4o") == [
        row("2026-05-02", 1, 0, 2000, 100, "0.006", "0")
    ]
    assert reports.costs(known, "tag", run="a") == [
        row("team=x", 2, 1, 1000, 200, "0.00027", "0.00027"),
        row("exp=1", 1, 1, 0, 0, "0", "0.00027"),
    ]


def test_costs_of_an_empty_range_is_empty(known: Ledger) -> None:
    assert reports.costs(known, "day", since="2027-01-01") == []


def test_stats_per_model_on_each_engine(known: Ledger) -> None:
    def s(model: str, rate: float, p50: float | None, p95: float | None) -> dict[str, Any]:
        base = next(r for r in EXPECTED["model"] if r["group"] == model)
        return {
            "model": model,
            **{k: v for k, v in base.items() if k != "group"},
            "hit_rate": rate,
            "p50_latency_ms": p50,
            "p95_latency_ms": p95,
        }

    assert reports.stats(known) == [
        s("gpt-4o", 0.0, 300.0, 500.0),
        # r2 is a hit, r5 an error, r7 refused: only r1 was answered by the API.
        s("gpt-4o-mini", 0.25, 100.0, 100.0),
        s("prod-chat", 0.0, 200.0, 200.0),
        s("text-embedding-3-small", 1.0, None, None),
    ]


def test_stats_latency_percentiles_are_nearest_rank(any_db: str) -> None:
    ledger = Ledger(any_db)
    for i in range(1, 21):  # latencies 20, 19, ..., 1 ms, recorded out of order
        record(ledger, f"c{i}", f"2026-05-01 10:00:{i:02d}", "gpt-4o", prompt=1, completion=1,
               cost="0.000012", latency=float(21 - i))  # fmt: skip
    for i in range(5):  # hits are fast and do not count
        record(ledger, f"h{i}", f"2026-05-01 11:00:0{i}", "gpt-4o", "hit", latency=0.5, cost="0")
    got = reports.stats(ledger, since="2026-05-01")
    assert (got[0]["p50_latency_ms"], got[0]["p95_latency_ms"]) == (10.0, 19.0)
    assert (got[0]["calls"], got[0]["hits"], got[0]["hit_rate"]) == (25, 5, 0.2)


def test_stats_since_until_bounds(known: Ledger) -> None:
    got = reports.stats(known, since="2026-05-03", until="2026-05-03")
    assert [(r["model"], r["calls"]) for r in got] == [
        ("gpt-4o-mini", 2),
        ("prod-chat", 1),
        ("text-embedding-3-small", 1),
    ]


@pytest.mark.parametrize(
    "since",
    ["yesterday", "2026-13-01", "2026-05-01 25:00", "01/05/2026", "2026-05", "20260501"],
)
def test_bad_dates_are_a_config_error_naming_the_format(db_path, since: str) -> None:
    ledger = Ledger(str(db_path))
    with pytest.raises(ConfigError) as err:
        reports.costs(ledger, "model", since=since)
    assert isinstance(err.value, LedgerError) and isinstance(err.value, ValueError)
    assert str(err.value) == (
        f"since={since!r} is not a date: expected YYYY-MM-DD or an ISO 8601 datetime "
        "such as 2026-05-01T12:30:00Z (UTC)"
    )


def test_reversed_range_and_unknown_grouping_are_config_errors(db_path) -> None:
    ledger = Ledger(str(db_path))
    with pytest.raises(ConfigError, match="since='2026-05-02' is not before until='2026-05-01'"):
        reports.stats(ledger, since="2026-05-02", until="2026-05-01")
    with pytest.raises(
        ConfigError, match="by='week': expected one of model, day, run, tag, template"
    ):
        reports.costs(ledger, "week")


def test_parse_time_accepts_dates_datetimes_and_objects() -> None:
    assert reports.parse_time("2026-05-01", "since") == datetime(2026, 5, 1)
    assert reports.parse_time("2026-05-01", "until", end=True) == datetime(2026, 5, 2)
    assert reports.parse_time("2026-05-01T12:30:00Z", "since") == datetime(2026, 5, 1, 12, 30)
    assert reports.parse_time("2026-05-01 12:30:00.5", "since") == datetime(
        2026, 5, 1, 12, 30, 0, 500000
    )
    assert reports.parse_time(datetime(2026, 5, 1).date(), "until", end=True) == datetime(
        2026, 5, 2
    )
    assert reports.parse_time(None, "since") is None


# --- end to end: the ledger the client writes -----------------------------------------


def test_report_of_calls_made_through_the_sdk(api, any_db: str) -> None:
    client = llm_ledger.OpenAIClient(cache_file_name=any_db)
    api.set_usage(prompt_tokens=1000, completion_tokens=200)
    with llm_ledger.scope(run="e2e", tags={"team": "x"}):
        client.send_message(msgs("one"), model="gpt-4o-mini", temperature=0)
        client.send_message(msgs("one"), model="gpt-4o-mini", temperature=0)
        client.send_message(msgs("two"), model="gpt-4o-mini", temperature=0)
    for by in ("model", "run", "tag"):
        [got] = reports.costs(client.ledger, by)
        assert {k: v for k, v in got.items() if k != "group"} == {
            "calls": 3,
            "hits": 1,
            "prompt_tokens": 2000,
            "completion_tokens": 400,
            "cost_usd": D("0.00054"),
            "saved_usd": D("0.00027"),
        }
        assert got["group"] == {"model": "gpt-4o-mini", "run": "e2e", "tag": "team=x"}[by]


# --- reprice ------------------------------------------------------------------------------


def money(ledger: Ledger, table: Any, *columns: str) -> list[tuple]:
    with ledger.engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(select(*(table.c[c] for c in columns)).order_by(table.c.id))
        ]


def test_reprice_prices_a_mapped_deployment_on_each_engine(api, any_db, monkeypatch) -> None:
    client = llm_ledger.OpenAIClient(cache_file_name=any_db)
    api.set_usage(prompt_tokens=1000, completion_tokens=200)
    client.send_message(msgs(), model="prod-chat", temperature=0)
    client.send_message(msgs(), model="prod-chat", temperature=0)  # a hit on an unpriced answer
    note = (
        "no price for model 'prod-chat' in genai-prices 0.2.3; map it with "
        "LLM_LEDGER_MODEL_MAP or set LLM_LEDGER_PRICES"
    )
    assert money(client.ledger, _LOG, "cache_status", "cost_usd", "saved_usd", "cost_note") == [
        ("miss", None, None, note),
        ("hit", D(0), None, None),
    ]
    monkeypatch.setenv("LLM_LEDGER_MODEL_MAP", "prod-chat=gpt-4o-mini")
    # the response row, the paid call and the hit
    assert reports.reprice(client.ledger) == {"examined": 3, "changed": 3}
    assert money(client.ledger, _LOG, "cost_usd", "saved_usd", "cost_note", "price_version") == [
        (D("0.00027"), None, None, VERSION),
        (D(0), D("0.00027"), None, None),
    ]
    assert money(client.ledger, _RESP, "cost_usd", "cost_note", "price_version") == [
        (D("0.00027"), None, VERSION)
    ]
    assert reports.reprice(client.ledger) == {"examined": 3, "changed": 0}


def test_reprice_with_custom_prices_and_filters(api, client) -> None:
    api.set_usage(prompt_tokens=1_000_000, completion_tokens=1_000_000)
    client.send_message(msgs("a"), model="my-model", temperature=0)
    client.send_message(msgs("b"), model="gpt-4o-mini", temperature=0)
    config = PricingConfig.from_env(
        {"LLM_LEDGER_PRICES": '{"my-model": {"input": 1.5, "output": 2}}'}
    )
    assert reports.reprice(client.ledger, model="my-model", config=config) == {
        "examined": 2,
        "changed": 2,
    }
    assert money(client.ledger, _LOG, "model", "cost_usd", "price_version") == [
        ("my-model", D("3.5"), "custom"),
        ("gpt-4o-mini", D("0.75"), VERSION),
    ]
    assert reports.reprice(client.ledger, since="2999-01-01", config=config) == {
        "examined": 0,
        "changed": 0,
    }


def test_reprice_leaves_correct_rows_alone_and_fixes_stale_ones(api, client) -> None:
    api.set_usage(prompt_tokens=1000, completion_tokens=200)
    api.set_usage_details(cached_tokens=800)
    client.send_message(msgs("chat"), model="gpt-4o-mini", temperature=0)
    client.send_message(msgs("chat"), model="gpt-4o-mini", temperature=0)
    client.get_embedding(" ".join(["word"] * 1000), model="text-embedding-3-small")
    client.get_embedding(["a b", "c"], model="text-embedding-3-small")  # two stored items
    # responses: chat, embedding, 2 items; call_log: 3 paid, 1 hit
    assert reports.reprice(client.ledger, batch_size=2) == {"examined": 8, "changed": 0}
    with client.ledger.engine.begin() as conn:
        conn.execute(update(_LOG).values(price_version="genai-prices 0.0.1"))
        conn.execute(update(_RESP).where(_RESP.c.id == 1).values(cost_usd=D("9")))
    assert reports.reprice(client.ledger, batch_size=2) == {"examined": 8, "changed": 4}
    assert money(client.ledger, _LOG, "cost_usd", "saved_usd", "price_version") == [
        (D("0.00021"), None, VERSION),
        (D(0), D("0.00021"), "genai-prices 0.0.1"),  # a hit has no price of its own
        (D("0.00002"), None, VERSION),
        (D("0.00000006"), None, VERSION),
    ]


def test_reprice_rejects_a_bad_model_map(db_path, monkeypatch) -> None:
    monkeypatch.setenv("LLM_LEDGER_MODEL_MAP", "prod-chat")
    with pytest.raises(ConfigError, match="LLM_LEDGER_MODEL_MAP: entry 'prod-chat' is not"):
        reports.reprice(Ledger(str(db_path)))
