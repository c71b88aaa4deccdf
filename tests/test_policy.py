"""The cache decision table, without any I/O."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from llm_ledger.errors import ConfigError
from llm_ledger.policy import Action, CallOptions, Plan, StoreMode, decide, plan, uses_slots

NOW = datetime(2026, 1, 2, 12, 0, 0)
OLD = NOW - timedelta(hours=2)


@pytest.mark.parametrize(
    ("opts", "expected"),
    [
        (CallOptions(), Plan(read=True, store=StoreMode.INSERT, offline=False, use_slots=False)),
        (
            CallOptions(mode="replay"),
            Plan(read=True, store=StoreMode.NONE, offline=True, use_slots=False),
        ),
        (
            CallOptions(mode="refresh"),
            Plan(read=False, store=StoreMode.REPLACE, offline=False, use_slots=False),
        ),
        (
            CallOptions(cache_enabled=False),
            Plan(read=False, store=StoreMode.NONE, offline=False, use_slots=False),
        ),
        (
            CallOptions(no_cache=True),
            Plan(read=False, store=StoreMode.REPLACE, offline=False, use_slots=False),
        ),
        (
            CallOptions(no_store=True),
            Plan(read=True, store=StoreMode.NONE, offline=False, use_slots=False),
        ),
        (
            CallOptions(mode="refresh", no_store=True),
            Plan(read=False, store=StoreMode.NONE, offline=False, use_slots=False),
        ),
        (
            CallOptions(mode="replay", cache_enabled=False),
            Plan(read=True, store=StoreMode.NONE, offline=True, use_slots=False),
        ),
    ],
)
def test_plan_for_each_setting(opts: CallOptions, expected: Plan) -> None:
    assert plan(opts, temperature=0, n=1) == expected


def test_replay_with_no_cache_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no_cache cannot be used in replay mode"):
        plan(CallOptions(mode="replay", no_cache=True))


@pytest.mark.parametrize(
    ("sampling", "temperature", "n", "slots"),
    [
        ("auto", 0, 1, False),
        ("auto", 0.0, None, False),
        ("auto", 0.7, 1, True),
        ("auto", 0, 3, True),
        ("auto", None, None, True),  # none sent: the API samples at its default 1.0
        ("auto", None, 1, True),
        ("first", 1.0, 4, False),
        ("slots", 0, 1, True),
    ],
)
def test_slots_follow_sampling_temperature_and_n(
    sampling: str, temperature: float | None, n: int | None, slots: bool
) -> None:
    assert uses_slots(sampling, temperature, n) is slots


def test_stored_answer_is_served() -> None:
    d = decide(plan(CallOptions()), OLD, NOW)
    assert (d.action, d.store, d.cache_status) == (Action.SERVE, StoreMode.NONE, "hit")


def test_missing_answer_is_fetched_and_inserted() -> None:
    d = decide(plan(CallOptions()), None, NOW)
    assert (d.action, d.store, d.cache_status) == (Action.CALL, StoreMode.INSERT, "miss")


def test_replay_miss_never_calls() -> None:
    d = decide(plan(CallOptions(mode="replay")), None, NOW)
    assert (d.action, d.cache_status) == (Action.MISS_ERROR, "miss")


def test_stale_answer_is_a_miss_that_replaces_it() -> None:
    d = decide(plan(CallOptions()), OLD, NOW, max_age=3600)
    assert (d.action, d.store, d.cache_status) == (Action.CALL, StoreMode.REPLACE, "miss")


def test_fresh_answer_within_max_age_is_served() -> None:
    d = decide(plan(CallOptions()), OLD, NOW, max_age=3 * 3600)
    assert d.action is Action.SERVE


def test_stale_answer_in_replay_is_a_miss_error() -> None:
    d = decide(plan(CallOptions(mode="replay")), OLD, NOW, max_age=60)
    assert d.action is Action.MISS_ERROR


def test_refresh_ignores_stored_answer_and_replaces_it() -> None:
    d = decide(plan(CallOptions(mode="refresh")), OLD, NOW)
    assert (d.action, d.store, d.cache_status) == (Action.CALL, StoreMode.REPLACE, "bypass")


def test_cache_off_calls_and_stores_nothing() -> None:
    d = decide(plan(CallOptions(cache_enabled=False)), OLD, NOW)
    assert (d.action, d.store, d.cache_status) == (Action.CALL, StoreMode.NONE, "bypass")


def test_no_store_serves_hits_but_keeps_new_answers_out_of_the_cache() -> None:
    p = plan(CallOptions(no_store=True))
    assert decide(p, OLD, NOW).action is Action.SERVE
    d = decide(p, None, NOW)
    assert (d.action, d.store) == (Action.CALL, StoreMode.NONE)
