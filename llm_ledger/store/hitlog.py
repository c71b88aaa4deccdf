"""Hit audit rows written in the background: ``hit_audit="background"`` (opt-in).

By default every call's audit row is committed before ``send_message`` returns. A cache
hit then spends most of its time writing its row: one insert into ``call_log`` and its
indexes, one commit. With ``LLM_LEDGER_HIT_AUDIT=background`` a hit appends its row to
the ledger's journal (``journal.py``: one ``write()`` to a local file, no ``fsync``) and
queues it; a daemon thread writes queued rows in batches, one transaction per batch,
within ``interval`` seconds. Misses, errors and refusals, and every paid answer, are
still written before the call returns.

A killed process (``SIGKILL``, ``os._exit``) loses no row: the next open of the ledger
writes what its journal holds, each row once (``call_uuid``). Only a power cut can lose
the last rows, as it can lose SQLite's last commits under ``synchronous=NORMAL``. A
normal exit, :meth:`Ledger.close` and the reports, exports and copies of the same
process write the queue first. A batch the database refuses is written row by row, and
a row it still refuses goes to the spool, like any other.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any

from ..records import CallRecord
from .journal import Journal

DEFAULT_INTERVAL_S = 0.02
MAX_PENDING = 5_000  # beyond this the caller writes the queue itself (memory stays bounded)


class HitWriter(Journal):
    """The journal of one ledger's hit rows; ``write_batch`` gets the records themselves."""

    def __init__(
        self,
        write_batch: Callable[[list[Any]], None],
        name: str,
        *,
        directory: Path,
        interval: float = DEFAULT_INTERVAL_S,
        max_pending: int = MAX_PENDING,
    ) -> None:
        super().__init__(
            directory,
            write_batch,
            interval=interval,
            max_pending=max_pending,
            name=f"llm-ledger-hits:{name}",
        )
        self.db = name

    def put(self, record: CallRecord) -> None:
        """Journal a hit's :class:`CallRecord`, then queue it."""
        self.append_line(journal_line(record), record)


_FIELDS = tuple(f.name for f in dataclasses.fields(CallRecord) if f.name != "request_text")


def journal_line(rec: CallRecord) -> str:
    """``rec`` as one JSON object, cheaply (``to_json`` deep-copies the request: ~100 µs).

    The request's canonical JSON text, when the record has it, is spliced in as is rather
    than escaped into a string; dates, decimals and usage are written the way
    :meth:`CallRecord.from_json` reads them.
    """
    data = {name: getattr(rec, name) for name in _FIELDS}
    if rec.request_text is None:
        return _encode(data)
    del data["request"]
    return _encode(data)[:-1] + ',"request":' + rec.request_text + "}"


def json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"$dt": value.isoformat()}
    if isinstance(value, Decimal):
        return {"$dec": str(value)}
    if isinstance(value, Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=json_default).encode


def from_journal(data: dict[str, Any]) -> CallRecord:
    """The :class:`CallRecord` of a journal line written by :func:`journal_line`."""
    return CallRecord.from_json(data)
