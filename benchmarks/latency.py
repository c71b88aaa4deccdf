"""Per-call latency: every contender, hits and stores, repeats interleaved.

Each repeat picks one set of random seeded items (hits) and one set of fresh items
(stores) per size, and runs every contender at every size over them, interleaved in
small rounds in a rotating order, so a noisy neighbour on the machine hurts all of
them (and both sizes) alike. What a batch adds to a store
is removed after it (outside the timing), so the store keeps its nominal size. After
each batch the stub's call counter proves what happened: no API call during hits,
exactly one per store.
"""

from __future__ import annotations

import gc
import random
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from . import workload
from .contenders import Contender

FRESH = 500_000_000  # fresh (never seeded) items start here


class BenchError(AssertionError):
    """The harness measured something other than what it claims (a hit that called the API)."""


def time_batch(
    fn: Callable[..., Any],
    args: Sequence[tuple[Any, ...]],
    finish: Callable[[], None] | None = None,
) -> float:
    """Microseconds per call of ``fn(*a)`` over ``args`` (and ``finish()`` after them)."""
    t0 = time.perf_counter()
    for a in args:
        fn(*a)
    if finish is not None:
        finish()
    return (time.perf_counter() - t0) / len(args) * 1e6


def settle() -> None:
    """Collect garbage and freeze what survives, so no batch pays for an earlier one's garbage
    (and a full collection over every imported module does not run per batch)."""
    gc.collect()
    gc.freeze()


def content_of(answer: Any) -> str:
    return answer["content"] if isinstance(answer, dict) else answer.content


def check_hit(c: Contender, i: int) -> None:
    """A seeded item comes back with its seeded answer and no API call."""
    calls = c.api.calls
    with c.restoring():
        got = content_of(c.call(*c.prepare(workload.item(i))))
    want = workload.response(i)["choices"][0]["message"]["content"]
    if got != want or c.api.calls != calls:
        raise BenchError(f"{c.name}: seeded item {i} was not served from the store")


WARM = 10  # untimed hits before each timed batch


def _batch(c: Contender, items: list[int], kind: str, warm: Sequence[int] = ()) -> float:
    """Seconds for ``items`` through ``c`` (restored afterwards), checked against the stub.

    ``warm``: seeded items called first, untimed, so the batch does not pay for the page
    and statement caches another contender's batch (or a trim) just invalidated.
    """
    args = [c.prepare(workload.item(i)) for i in items]
    warm_args = [c.prepare(workload.item(i)) for i in warm] if c.hits else []
    calls = c.api.calls
    with c.restoring():
        for a in warm_args:
            c.call(*a)
        seconds = time_batch(c.call, args, c.finish) * len(args) / 1e6
    made = c.api.calls - calls
    want = 0 if kind == "hit" else len(items)
    if made != want:
        raise BenchError(f"{c.name}: {made} API calls during {len(items)} {kind}s, not {want}")
    return seconds


def _split(items: list[int], parts: int) -> list[list[int]]:
    return [items[k::parts] for k in range(parts)]


Runs = dict[str, dict[str, list[float]]]


def measure(
    groups: Mapping[int, Sequence[Contender]],
    *,
    repeats: int,
    rounds: int,
    hit_ops: int,
    store_ops_of: Callable[[Contender], int],
) -> dict[int, Runs]:
    """Per size and contender, the µs per call of each repeat: ``{size: {"hit_us": {name: [...]}}}``.

    Every repeat is cut into ``rounds``; in each round every (size, contender) pair runs its
    share of the repeat's hits and stores, in a freshly shuffled order. So a noisy minute on
    a shared machine lands on all pairs alike, sizes included, and no pair always follows
    the same other one (whose file it would always find cold in the page cache).
    """
    units = [(size, c) for size, cs in groups.items() for c in cs]
    rngs = {size: random.Random(size) for size in groups}
    order = random.Random(0)
    runs: dict[int, Runs] = {size: {"hit_us": {}, "store_us": {}} for size in groups}
    for size, c in units:  # warm-up: page caches, statement caches, lazy imports
        if c.hits:
            check_hit(c, size // 2)
            _batch(c, [rngs[size].randrange(size) for _ in range(min(hit_ops, 50))], "hit")
        if c.stores:
            _batch(c, list(range(FRESH, FRESH + min(store_ops_of(c), 20))), "store")
    for _ in range(repeats):
        settle()
        hits = {size: [rngs[size].randrange(size) for _ in range(hit_ops)] for size in groups}
        spent = {(size, c.name): [0.0, 0.0] for size, c in units}
        for k in range(rounds):
            order.shuffle(units)
            for size, c in units:
                warm = [rngs[size].randrange(size) for _ in range(WARM)]
                fresh = list(range(FRESH, FRESH + store_ops_of(c)))
                if c.hits:
                    share = _split(hits[size], rounds)[k]
                    spent[size, c.name][0] += _batch(c, share, "hit", warm)
                share = _split(fresh, rounds)[k]
                if share and c.stores:
                    spent[size, c.name][1] += _batch(c, share, "store", warm)
        for size, c in units:
            hit_s, store_s = spent[size, c.name]
            if c.hits:
                runs[size]["hit_us"].setdefault(c.name, []).append(hit_s / hit_ops * 1e6)
            if c.stores:
                runs[size]["store_us"].setdefault(c.name, []).append(
                    store_s / store_ops_of(c) * 1e6
                )
    return runs


def medians(runs: dict[str, list[float]]) -> dict[str, float]:
    return {name: round(statistics.median(v), 2) for name, v in runs.items()}
