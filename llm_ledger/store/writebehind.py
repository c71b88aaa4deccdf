"""Call records written behind the call: the default (``writes="journal"``).

A call's records (its audit row, and for a miss its paid answers and cache entries) are
safe when the call returns, and in the tables shortly after. The caller's thread appends
the record to this process's journal of the ledger (``journal.py``: one ``write()`` to a
local file, no ``fsync``) and queues it; a daemon thread writes queued records in
batches, one transaction per batch: a call that stored answers within ``interval``
seconds, a hit's (or an error's) audit row once calls pause for ``interval``, at the
latest ``MAX_DELAY_S`` after it (:func:`_weight`). On SQLite the caller that queues the
``INLINE_BATCH``-th hit since the last write writes the queue itself, if it can without
waiting (``Ledger._record_batch_now``): in a burst of hits, the caller and the thread
taking turns at the GIL cost each other more than the batch itself. Lookups in the same
process see answers still queued (``Ledger.lookup``); other processes see them once
written (a paid answer ~20 ms after its call).

A killed process (``SIGKILL``, ``os._exit``) loses nothing: the next open of the ledger
writes what its journal holds, each record once (``call_uuid``). Only a power cut can lose
the last records, as it can lose SQLite's last commits under ``synchronous=NORMAL``. A
normal exit, :meth:`Ledger.close`, :func:`llm_ledger.flush` and the reports, exports and
copies of the same process write the queue first. A batch the database refuses is written
row by row, and a row it still refuses goes to the spool, like any other.

``writes="sync"`` commits each call's records before it returns (the old default), and
``hit_audit="background"`` with it journals hit rows only.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from ..keys import canonical_json
from ..policy import StoreMode
from ..records import Answer, CallRecord, Stored, tagged
from .journal import Journal

DEFAULT_INTERVAL_S = 0.02
MAX_PENDING = 5_000  # beyond this the caller writes the queue itself (memory stays bounded)
INLINE_BATCH = 128  # a caller that queues this many writes them (a burst of calls)
MAX_DELAY_S = 0.25  # the thread writes what is queued this long even while calls go on


class RecordWriter(Journal):
    """The journal of one ledger's call records; ``write_batch`` gets the records themselves."""

    def __init__(
        self,
        write_batch: Callable[[list[Any]], None],
        name: str,
        *,
        directory: Path,
        interval: float = DEFAULT_INTERVAL_S,
        max_pending: int = MAX_PENDING,
        inline_batch: int | None = INLINE_BATCH,
        max_delay: float | None = MAX_DELAY_S,
        write_now: Callable[[list[Any]], None] | None = None,
    ) -> None:
        super().__init__(
            directory,
            write_batch,
            interval=interval,
            max_pending=max_pending,
            inline_batch=inline_batch,
            weight=_weight,
            write_now=write_now,
            max_delay=max_delay,
            name=f"llm-ledger-writer:{name}",
            entries_of=cached_answers,
        )
        self.db = name

    def put(self, record: CallRecord) -> None:
        """Journal a :class:`CallRecord`, then queue it (raises if it cannot be journaled:
        ``ValueError`` for a value JSON cannot hold, ``OSError`` for the file)."""
        self.append_line(journal_line(record), record)


def _weight(rec: CallRecord) -> int:
    """A call that stored answers weighs 0: its batch is written within ``interval``
    (another process may be about to ask for the same answer), and by the thread, beside
    the caller: it is mostly SQLite's work (answers, the search index), done with the GIL
    released. A call without (a hit, an error) weighs 1: its audit row may wait for a
    pause in calls, up to ``MAX_DELAY_S``, or go in the caller's own batch."""
    return 0 if rec.answers else 1


def cached_answers(rec: CallRecord) -> Iterator[tuple[tuple[str, str, int], Stored]]:
    """What a journaled record adds to the cache, by (namespace, request hash, slot): the
    answers a lookup in this process must see until the record is written. Their
    ``response_id`` is None (not written yet); a hit on one names its entry once written."""
    for a in rec.answers:
        if a.store is not StoreMode.NONE:
            u = a.usage
            yield (
                (a.namespace, a.request_hash, a.slot),
                Stored(
                    None,
                    a.response,
                    rec.created_at,
                    u.prompt_tokens,
                    u.completion_tokens,
                    u.cached_tokens,
                    u.reasoning_tokens,
                    u.total_tokens,
                    a.cost_usd,
                ),
            )


_ANSWER_FIELDS = tuple(
    f.name for f in dataclasses.fields(Answer) if f.name not in ("response", "response_text")
)


def journal_line(rec: CallRecord) -> str:
    """``rec`` as one JSON object, cheaply (``to_json`` deep-copies the request: ~100 µs).

    The request's and the answers' canonical JSON texts are spliced in as they are rather
    than escaped into strings; an answer's text is fixed here (``Answer.response_text``),
    so the row written later holds what the call returned even if the caller then edits
    the dict. Dates, decimals and usage are written the way :meth:`CallRecord.from_json`
    reads them.
    """
    data = rec.__dict__.copy()  # the fields in their order; converted here, not by a hook
    del data["request_text"], data["answers"]
    if rec.request_text is not None:
        del data["request"]
    data["created_at"] = tagged(rec.created_at)
    data["usage"] = rec.usage.__dict__
    data["cost_usd"] = tagged(rec.cost_usd)
    data["saved_usd"] = tagged(rec.saved_usd)
    line = _encode(data)[:-1]
    if rec.request_text is not None:
        line += ',"request":' + rec.request_text
    if rec.answers:
        parts = []
        for a in rec.answers:
            if a.response_text is None:
                a.response_text = canonical_json(a.response)
            fields = _encode({name: getattr(a, name) for name in _ANSWER_FIELDS})
            parts.append(fields[:-1] + ',"response":' + a.response_text + "}")
        line += ',"answers":[' + ",".join(parts) + "]"
    else:
        line += ',"answers":[]'
    return line + "}"


def json_default(value: Any) -> Any:
    """What the encoder cannot write itself: an answer's dates, decimals and store mode
    (:func:`records.tagged`), and its usage (a dataclass)."""
    if isinstance(value, (datetime, Decimal, StoreMode)):
        return tagged(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


_encode = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=json_default
).encode


def from_journal(data: dict[str, Any]) -> CallRecord:
    """The :class:`CallRecord` of a journal line written by :func:`journal_line`."""
    return CallRecord.from_json(data)
