"""Plain records passed between the client and the repository (and written to the spool)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from .policy import StoreMode


@dataclass
class Stored:
    """An answer the ledger holds for a (namespace, request, slot)."""

    response_id: int | None  # None: written by this process's journal, not in the tables yet
    response: dict[str, Any]
    stored_at: datetime
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None
    total_tokens: int | None = None
    cost_usd: Decimal | None = None


@dataclass
class Usage:
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None
    total_tokens: int | None = None
    estimated: bool = False


@dataclass
class Answer:
    """A paid API answer to store: a responses row, and a cache entry unless store is NONE."""

    request_hash: str
    kind: str
    model: str
    request: dict[str, Any]
    response: dict[str, Any]
    usage: Usage
    cost_usd: Decimal | None
    cost_note: str | None
    price_version: str | None
    store: StoreMode
    namespace: str
    slot: int
    # ``response`` as canonical JSON, fixed when the record is journaled (the caller may
    # still hold the dict and change it before the writer thread stores it).
    response_text: str | None = field(default=None, repr=False, compare=False)


def tagged(value: Any) -> Any:
    """A value as the spool and the journal write it, the way :meth:`CallRecord.from_json`
    reads it back: a datetime as ``{"$dt": iso}``, a Decimal as ``{"$dec": str}``, a
    StoreMode as its value; anything else as it is."""
    if isinstance(value, datetime):
        return {"$dt": value.isoformat()}
    if isinstance(value, Decimal):
        return {"$dec": str(value)}
    if isinstance(value, StoreMode):
        return value.value
    return value


@dataclass
class CallRecord:
    """One audit row and whatever the call adds to the cache, written in one transaction."""

    call_uuid: str
    created_at: datetime
    kind: str
    api_type: str
    endpoint_host: str | None
    model: str
    namespace: str
    request_hash: str
    request: dict[str, Any]
    cache_status: str
    status: str
    library_version: str
    slot: int | None = None
    attempts: int = 0
    latency_ms: float | None = None
    usage: Usage = field(default_factory=Usage)
    items_total: int | None = None
    items_hit: int | None = None
    error_type: str | None = None
    error_message: str | None = None
    cost_usd: Decimal | None = None
    saved_usd: Decimal | None = None
    cost_note: str | None = None
    price_version: str | None = None
    run: str | None = None
    template: str | None = None
    tags: dict[str, str] | None = None
    served_response_id: int | None = None
    stream_status: str | None = None  # streamed calls: complete | abandoned | error | replayed
    first_chunk_ms: float | None = None
    chunks: int | None = None
    answers: list[Answer] = field(default_factory=list)
    primary_answer: int | None = None  # index into answers whose id goes on the audit row
    # ``request`` as canonical JSON when the client has it (not redacted): written as is.
    request_text: str | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        def conv(value: Any) -> Any:
            if isinstance(value, dict):
                return {k: conv(v) for k, v in value.items()}
            if isinstance(value, list):
                return [conv(v) for v in value]
            return tagged(value)

        data: dict[str, Any] = conv(dataclasses.asdict(self))
        del data["request_text"]  # derived from ``request``; the spool keeps it once
        for a in data["answers"]:
            del a["response_text"]  # likewise
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CallRecord:
        def conv(value: Any) -> Any:
            if isinstance(value, dict):
                if set(value) == {"$dt"}:
                    return datetime.fromisoformat(value["$dt"])
                if set(value) == {"$dec"}:
                    return Decimal(value["$dec"])
                return {k: conv(v) for k, v in value.items()}
            if isinstance(value, list):
                return [conv(v) for v in value]
            return value

        data = conv(data)
        data["usage"] = Usage(**data["usage"])
        answers = []
        for a in data.pop("answers"):
            a["usage"] = Usage(**a["usage"])
            a["store"] = StoreMode(a["store"])
            answers.append(Answer(**a))
        return cls(**data, answers=answers)
