"""Cache policy: settings + request + what the ledger holds -> read / call / store.

Pure functions on plain values, tested without any I/O (tests/test_policy.py).

``cache_status`` on the audit row: ``hit`` (served from the ledger), ``miss``
(looked up, nothing usable, the API answered), ``bypass`` (the ledger was not
consulted: caching off, ``no_cache``, or refresh mode).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from .errors import ConfigError


@dataclass(frozen=True)
class CallOptions:
    mode: str = "record"  # record | replay | refresh
    cache_enabled: bool = True  # the seed's cache_api_calls
    no_cache: bool = False  # this call: do not read the ledger
    no_store: bool = False  # this call: do not store the answer as a cache entry
    sampling: str = "auto"  # auto | slots | first
    max_age: float | None = None  # seconds; older stored answers count as misses


class StoreMode(str, enum.Enum):
    NONE = "none"  # keep the answer in the audit log only
    INSERT = "insert"  # new cache entry; if another writer won the race, use theirs
    REPLACE = "replace"  # make this answer the current one (refresh, no_cache, stale)


@dataclass(frozen=True)
class Plan:
    read: bool
    store: StoreMode
    offline: bool  # replay: never call the API
    use_slots: bool


class Action(str, enum.Enum):
    SERVE = "serve"
    CALL = "call"
    MISS_ERROR = "miss_error"


@dataclass(frozen=True)
class Decision:
    action: Action
    store: StoreMode
    cache_status: str  # what the audit row will say if the action completes


# What the API samples at when a request names no temperature (OpenAI's documented default).
API_DEFAULT_TEMPERATURE = 1.0


def uses_slots(sampling: str, temperature: float | None, n: int | None) -> bool:
    """``auto``: slots when the answer is sampled. ``temperature=None`` means the request sends
    none, so the API samples at its default (1.0): that is sampling too, not determinism."""
    if sampling == "slots":
        return True
    if sampling == "first":
        return False
    t = API_DEFAULT_TEMPERATURE if temperature is None else temperature
    return t > 0 or (n or 1) > 1


def plan(opts: CallOptions, *, temperature: float | None = 0.0, n: int | None = None) -> Plan:
    """``temperature``: the request's, None when it sends none; the default 0 is for requests
    that do not sample (embeddings)."""
    use_slots = uses_slots(opts.sampling, temperature, n)
    if opts.mode == "replay":
        if opts.no_cache:
            raise ConfigError("no_cache cannot be used in replay mode: the call would need the API")
        return Plan(read=True, store=StoreMode.NONE, offline=True, use_slots=use_slots)
    if opts.mode == "refresh":
        store = StoreMode.NONE if opts.no_store or not opts.cache_enabled else StoreMode.REPLACE
        return Plan(read=False, store=store, offline=False, use_slots=use_slots)
    if opts.mode != "record":
        raise ConfigError(f"mode={opts.mode!r}: must be one of record, replay, refresh")
    if not opts.cache_enabled:
        return Plan(read=False, store=StoreMode.NONE, offline=False, use_slots=use_slots)
    read = not opts.no_cache
    if opts.no_store:
        store = StoreMode.NONE
    else:
        store = StoreMode.INSERT if read else StoreMode.REPLACE
    return Plan(read=read, store=store, offline=False, use_slots=use_slots)


def is_fresh(stored_at: datetime, now: datetime, max_age: float | None) -> bool:
    return max_age is None or (now - stored_at).total_seconds() <= max_age


def decide(
    p: Plan, stored_at: datetime | None, now: datetime, max_age: float | None = None
) -> Decision:
    """``stored_at``: when the stored answer was written, or None when there is none."""
    if not p.read:
        return Decision(Action.CALL, p.store, "bypass")
    if stored_at is not None and is_fresh(stored_at, now, max_age):
        return Decision(Action.SERVE, StoreMode.NONE, "hit")
    if p.offline:
        return Decision(Action.MISS_ERROR, StoreMode.NONE, "miss")
    # A stale entry is replaced by the new answer rather than kept beside it.
    store = (
        StoreMode.REPLACE if stored_at is not None and p.store is not StoreMode.NONE else p.store
    )
    return Decision(Action.CALL, store, "miss")
