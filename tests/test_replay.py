"""Reproducible runs: modes, sample slots, namespaces, freshness, single-flight, per-item embeddings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

import llm_ledger

from .conftest import msgs

RUN_SCRIPT = """
import json, sys, llm_ledger
c = llm_ledger.OpenAIClient(cache_file_name=sys.argv[1])
out = []
with llm_ledger.scope(run="sim"):
    for i in range(200):
        agent = i % 20  # 20 agents ask the same question 10 times each, at temperature 1
        m = c.send_message([{"role": "user", "content": f"agent {agent}: what now?"}], temperature=1.0)
        out.append(m["content"])
print(json.dumps(out))
"""


def run_script(db: Path, url: str, mode: str) -> list[str]:
    env = {**os.environ, "OPENAI_API_KEY": "sk-x", "OPENAI_BASE_URL": url, "LLM_LEDGER_MODE": mode}
    done = subprocess.run(
        [sys.executable, "-c", RUN_SCRIPT, str(db)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)


def q(db: Path, sql: str) -> list[tuple]:
    llm_ledger.flush()  # calls are written behind them (writes="journal")
    engine = create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        out = [tuple(r) for r in conn.execute(text(sql))]
    engine.dispose()
    return out


def test_stochastic_run_replays_call_for_call_in_a_new_process(api, db_path) -> None:
    recorded = run_script(db_path, api.url, "record")
    assert api.chat_count == 200
    assert len(set(recorded)) == 200  # every sample differs: slots, not one cached answer
    assert recorded[0] == "answer 1 to: agent 0: what now?"
    assert recorded[20] == "answer 2 to: agent 0: what now?"
    before = api.request_count
    replayed = run_script(db_path, api.url, "replay")
    assert replayed == recorded
    assert api.request_count == before
    assert q(
        db_path, "SELECT cache_status, COUNT(*) FROM calls GROUP BY cache_status ORDER BY 1"
    ) == [
        ("hit", 200),
        ("miss", 200),
    ]


def test_replay_miss_raises_before_any_request(api, db_path) -> None:
    c = llm_ledger.OpenAIClient(cache_file_name=str(db_path), mode="replay")
    with pytest.raises(llm_ledger.CacheMissError) as info:
        c.send_message(msgs("never recorded question"), temperature=0)
    assert api.request_count == 0
    err = info.value
    assert err.model == "gpt-4o-mini" and err.last_message == "never recorded question"
    assert str(err).startswith(f"replay mode: no stored answer for request {err.request_hash[:16]}")
    assert q(db_path, "SELECT cache_status, status, error_type, attempts FROM calls") == [
        ("miss", "error", "CacheMissError", 0)
    ]


def test_replay_mode_from_the_environment(api, db_path, monkeypatch) -> None:
    monkeypatch.setenv("LLM_LEDGER_MODE", "replay")
    llm_ledger.config.reset_settings()
    c = llm_ledger.OpenAIClient(cache_file_name=str(db_path))
    with pytest.raises(llm_ledger.CacheMissError):
        c.send_message(msgs(), temperature=0)
    assert api.request_count == 0


def test_refresh_stores_the_new_answer_and_keeps_the_old_in_the_audit_log(
    client, api, db_path
) -> None:
    assert client.send_message(msgs(), temperature=0)["content"] == "answer 1 to: hello there"
    assert (
        client.send_message(msgs(), temperature=0, mode="refresh")["content"]
        == "answer 2 to: hello there"
    )
    assert client.send_message(msgs(), temperature=0)["content"] == "answer 2 to: hello there"
    assert api.chat_count == 2
    assert q(db_path, "SELECT cache_status FROM calls ORDER BY id") == [
        ("miss",),
        ("bypass",),
        ("hit",),
    ]
    assert q(db_path, "SELECT COUNT(*) FROM cache_entries") == [(1,)]
    old = q(
        db_path,
        "SELECT json_extract(r.response, '$.choices[0].message.content') FROM calls c "
        "JOIN responses r ON r.id = c.response_id ORDER BY c.id",
    )
    assert old == [
        ("answer 1 to: hello there",),
        ("answer 2 to: hello there",),
        ("answer 2 to: hello there",),
    ]


def test_no_cache_skips_reading_and_no_store_skips_storing(client, api, db_path) -> None:
    client.send_message(msgs(), temperature=0)
    assert (
        client.send_message(msgs(), temperature=0, no_cache=True)["content"]
        == "answer 2 to: hello there"
    )
    assert (
        client.send_message(msgs("other"), temperature=0, no_store=True)["content"]
        == "answer 1 to: other"
    )
    assert client.send_message(msgs("other"), temperature=0)["content"] == "answer 2 to: other"
    assert api.chat_count == 4
    assert q(db_path, "SELECT cache_status FROM calls ORDER BY id") == [
        ("miss",),
        ("bypass",),
        ("miss",),
        ("miss",),
    ]


def test_slots_give_kth_request_the_kth_answer_and_append_new_ones(client, api) -> None:
    first = [client.send_message(msgs(), temperature=1.0)["content"] for _ in range(3)]
    assert first == [f"answer {k} to: hello there" for k in (1, 2, 3)]
    llm_ledger.reset_slots()
    again = [client.send_message(msgs(), temperature=1.0)["content"] for _ in range(4)]
    assert again == first + ["answer 4 to: hello there"]
    assert api.chat_count == 4


def test_an_omitted_temperature_samples_so_repeats_get_their_own_slots(client, api) -> None:
    # temperature=None sends no temperature: the API samples at its default 1.0.
    answers = [client.send_message(msgs(), temperature=None)["content"] for _ in range(3)]
    assert answers == [f"answer {k} to: hello there" for k in (1, 2, 3)]
    assert api.chat_count == 3
    assert all("temperature" not in r.body for r in api.requests)


def test_sampling_first_gives_every_identical_request_the_first_answer(api, db_path) -> None:
    c = llm_ledger.OpenAIClient(cache_file_name=str(db_path), sampling="first")
    answers = [c.send_message(msgs(), temperature=1.0)["content"] for _ in range(3)]
    assert answers == ["answer 1 to: hello there"] * 3
    assert api.chat_count == 1


def test_runs_have_their_own_slot_sequences(client, api) -> None:
    with llm_ledger.scope(run="a"):
        a = [client.send_message(msgs(), temperature=1.0)["content"] for _ in range(2)]
    with llm_ledger.scope(run="b"):
        b = [client.send_message(msgs(), temperature=1.0)["content"] for _ in range(2)]
    assert a == b == ["answer 1 to: hello there", "answer 2 to: hello there"]
    assert api.chat_count == 2


def test_slots_under_threads_are_never_served_twice(client, api, db_path) -> None:
    results: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(5):
            content = client.send_message(msgs(), temperature=1.0)["content"]
            with lock:
                results.append(content)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 40 and len(set(results)) == 40
    assert q(db_path, "SELECT COUNT(DISTINCT slot), MIN(slot), MAX(slot) FROM cache_entries") == [
        (40, 0, 39)
    ]
    # Second round, same process: every slot is served once more, again never twice.
    llm_ledger.reset_slots()
    results.clear()
    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 40
    assert api.chat_count == 40
    assert q(
        db_path, "SELECT COUNT(*), COUNT(DISTINCT slot) FROM calls WHERE cache_status = 'hit'"
    ) == [(40, 40)]


def test_single_flight_makes_one_request_for_concurrent_identical_misses(
    client, api, db_path
) -> None:
    api.delay_next(0.5)
    barrier = threading.Barrier(8)
    results: list[str] = []

    def worker() -> None:
        barrier.wait()
        results.append(client.send_message(msgs(), temperature=0)["content"])

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["answer 1 to: hello there"] * 8
    assert api.request_count == 1
    assert q(
        db_path, "SELECT cache_status, COUNT(*) FROM calls GROUP BY cache_status ORDER BY 1"
    ) == [
        ("hit", 7),
        ("miss", 1),
    ]


def test_namespaces_isolate_caches_in_one_ledger(client, api, db_path) -> None:
    client.send_message(msgs(), temperature=0, namespace="exp-a")
    client.send_message(msgs(), temperature=0, namespace="exp-b")
    with llm_ledger.scope(namespace="exp-a"):
        assert client.send_message(msgs(), temperature=0)["content"] == "answer 1 to: hello there"
    assert api.chat_count == 2
    assert q(db_path, "SELECT namespace, cache_status FROM calls ORDER BY id") == [
        ("exp-a", "miss"),
        ("exp-b", "miss"),
        ("exp-a", "hit"),
    ]
    # The namespace is part of the lookup, not of the hash.
    assert q(db_path, "SELECT COUNT(DISTINCT request_hash) FROM calls") == [(1,)]


def test_max_age_turns_old_answers_into_misses(api, db_path) -> None:
    c = llm_ledger.OpenAIClient(cache_file_name=str(db_path), max_age=3600)
    c.send_message(msgs(), temperature=0)
    llm_ledger.flush()  # writes="journal": this process's calls into the tables first
    engine = create_engine(f"sqlite:///{db_path}")
    with engine.begin() as conn:
        conn.execute(text("UPDATE cache_entries SET updated_at = '2020-01-01 00:00:00.000000'"))
    engine.dispose()
    assert c.send_message(msgs(), temperature=0)["content"] == "answer 2 to: hello there"
    assert c.send_message(msgs(), temperature=0)["content"] == "answer 2 to: hello there"
    assert q(db_path, "SELECT cache_status FROM calls ORDER BY id") == [
        ("miss",),
        ("miss",),
        ("hit",),
    ]


def test_partial_embedding_hit_sends_only_missing_items_in_order(client, api, db_path) -> None:
    a, b = client.get_embedding(["alpha", "beta"])
    api.reset()
    got = client.get_embedding(["gamma", "alpha", "delta", "beta"])
    assert [r.body["input"] for r in api.requests] == [["gamma", "delta"]]
    assert got[1] == a and got[3] == b
    assert got[0] == client.get_embedding("gamma") and got[2] == client.get_embedding("delta")
    assert api.request_count == 1
    assert q(db_path, "SELECT items_total, items_hit, cache_status FROM calls ORDER BY id") == [
        (2, 0, "miss"),
        (4, 2, "miss"),
        (1, 1, "hit"),
        (1, 1, "hit"),
    ]


def test_embedding_replay_miss_names_the_missing_item(api, db_path) -> None:
    c = llm_ledger.OpenAIClient(cache_file_name=str(db_path), mode="replay")
    with pytest.raises(llm_ledger.CacheMissError, match="'never embedded'"):
        c.get_embedding(["never embedded"])
    assert api.request_count == 0


def test_loser_of_a_cross_process_race_uses_the_winners_entry(
    api, any_db: str, sync_writes
) -> None:
    """Two processes miss the same slot at once: the unique key keeps one entry, and the
    loser returns the winner's answer while its own paid answer stays in `responses`.
    (writes="sync": only a committed write can tell; test_writebehind.py has the journal's.)"""
    winner = llm_ledger.OpenAIClient(cache_file_name=any_db)
    loser = llm_ledger.OpenAIClient(cache_file_name=any_db)
    assert winner.send_message(msgs(), temperature=0)["content"] == "answer 1 to: hello there"
    loser._lookup = lambda *args: None  # it looked before the winner committed
    assert loser.send_message(msgs(), temperature=0)["content"] == "answer 1 to: hello there"
    assert api.chat_count == 2
    with winner.ledger.engine.connect() as conn:
        entries = conn.execute(text("SELECT COUNT(*) FROM cache_entries")).scalar_one()
        responses = conn.execute(text("SELECT COUNT(*) FROM responses")).scalar_one()
        served = [r[0] for r in conn.execute(text("SELECT response_id FROM call_log ORDER BY id"))]
    assert (entries, responses) == (1, 2)
    assert served[0] == served[1]  # both audit rows name the answer their caller got
