"""Per-client cost statistics in TinyTroupe's shape, plus the dollars the ledger knows.

TinyTroupe v0.6 asks its client for ``get_cost_stats()`` (``input_tokens``,
``output_tokens``, ``total_tokens``, ``model_calls``, ``cached_calls``: ints, counted
since the client was made or last reset; a cached call's tokens count too, as
TinyTroupe counts them). The ledger also knows what each paid call cost and what each
hit saved, so the same dict carries ``cost_usd``, ``saved_usd`` and
``unpriced_calls`` (paid calls whose model has no known price). Chat calls only, as
in TinyTroupe. The counters live in memory; the ledger's reports cover history.
"""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any

from .records import Usage

KEYS = ("input_tokens", "output_tokens", "total_tokens", "model_calls", "cached_calls")


class CostStats:
    """Thread-safe counters; one per client."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._counts = dict.fromkeys(KEYS, 0)
            self._unpriced = 0
            self._cost = Decimal(0)
            self._saved = Decimal(0)

    def add(self, usage: Usage, *, cached: bool, cost_usd: Decimal | None) -> None:
        """Count one answered chat call: a hit (``cached``; ``cost_usd`` is what it saved)
        or a paid call (``cost_usd`` is what it cost, None when the price is unknown)."""
        prompt = usage.prompt_tokens or 0
        completion = usage.completion_tokens or 0
        total = usage.total_tokens if usage.total_tokens is not None else prompt + completion
        with self._lock:
            c = self._counts
            c["input_tokens"] += prompt
            c["output_tokens"] += completion
            c["total_tokens"] += total
            c["cached_calls" if cached else "model_calls"] += 1
            if cached:
                self._saved += cost_usd or 0
            elif cost_usd is None:
                self._unpriced += 1
            else:
                self._cost += cost_usd

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                **self._counts,
                "cost_usd": float(self._cost),
                "saved_usd": float(self._saved),
                "unpriced_calls": self._unpriced,
            }


def format_stats(stats: dict[str, Any]) -> str:
    """The text ``pretty_print_cost_stats`` prints: TinyTroupe's lines, then the dollars."""
    total_calls = stats["model_calls"] + stats["cached_calls"]
    lines = [
        "",
        "=" * 60,
        "LLM API COST STATISTICS",
        "=" * 60,
        f"Input tokens:         {stats['input_tokens']:,}",
        f"Output tokens:        {stats['output_tokens']:,}",
        f"Total tokens:         {stats['total_tokens']:,}",
        f"Model API calls:      {stats['model_calls']:,}",
        f"Cached calls:         {stats['cached_calls']:,}",
        f"Total calls:          {total_calls:,}",
    ]
    if stats["model_calls"] > 0:
        lines.append(f"Avg tokens per call:  {stats['total_tokens'] / stats['model_calls']:.1f}")
    cost = f"${stats['cost_usd']:,.6f}"
    if stats["unpriced_calls"]:
        cost += f" (+{stats['unpriced_calls']:,} calls of unknown price)"
    lines += [
        f"Cost (paid calls):    {cost}",
        f"Saved by the ledger:  ${stats['saved_usd']:,.6f}",
        "=" * 60,
        "",
    ]
    return "\n".join(lines)


__all__ = ["KEYS", "CostStats", "format_stats"]
