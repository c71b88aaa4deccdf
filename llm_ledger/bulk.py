"""The repository's bulk side, in three rooms: ``from llm_ledger import bulk`` names them all.

``repository.Ledger`` writes one call at a time; these are the operations that move
many rows at once, on statements compiled once (statements.py):

- :mod:`llm_ledger.store.selection`: one consistent snapshot, what an export takes
  (:class:`Selection`), rows in key order (export, copy);
- :mod:`llm_ledger.store.merge`: rows from another ledger merged in by natural identity
  (import, copy, pickle import);
- :mod:`llm_ledger.store.maintenance`: ``prune``, ``vacuum`` and the ledger's size.
"""

from __future__ import annotations

from .store.maintenance import ledger_size, prune, vacuum
from .store.merge import MERGED, Merger, MergeResult, Tally
from .store.models import TABLES
from .store.selection import (
    ID_TABLES,
    Selection,
    count_selected,
    indexes_deferred,
    max_ids,
    opened,
    read_cache_entries,
    read_calls,
    read_requests,
    read_responses,
    snapshot,
)

__all__ = [
    "ID_TABLES",
    "MERGED",
    "TABLES",
    "MergeResult",
    "Merger",
    "Selection",
    "Tally",
    "count_selected",
    "indexes_deferred",
    "ledger_size",
    "max_ids",
    "opened",
    "prune",
    "read_cache_entries",
    "read_calls",
    "read_requests",
    "read_responses",
    "snapshot",
    "vacuum",
]
