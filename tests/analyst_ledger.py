"""A small ledger with every kind of text a call can hold, for the view, search and report tests.

c1  miss    chat: system + user; answer "Paris is the capital of France."      run geo, team=x
c2  hit     of c1                                                              run geo, team=y
c3  miss    chat: user content as parts; the answer is a tool call             run tools
c4  refused chat: the answer is a refusal
c5  miss    embedding of two strings
c6  error   chat: "What is the capital of Spain?", no answer
c7  miss    chat, three turns; the last user message is about glaciers          team=x
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from llm_ledger.policy import StoreMode
from llm_ledger.records import Answer, CallRecord, Usage
from llm_ledger.store.models import CallLog
from llm_ledger.store.repository import Ledger

_LOG = CallLog.__table__

SYSTEM = "You are a terse geography tutor."
CAPITAL_Q = "What is the capital of France?"
PARTS = [
    {"type": "text", "text": "Describe the weather"},
    {"type": "image_url", "image_url": {"url": "https://example.invalid/sky.png"}},
    {"type": "text", "text": "in Oslo, briefly"},
]
TOOL_CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "lookup_weather", "arguments": '{"city": "Oslo"}'},
}


def chat_response(message: dict[str, Any], finish: str = "stop") -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
    }


def put(
    ledger: Ledger,
    label: str,
    when: str,
    request: dict[str, Any],
    response: dict[str, Any] | None,
    *,
    cache_status: str = "miss",
    status: str = "ok",
    served: int | None = None,
    run: str | None = None,
    tags: dict[str, str] | None = None,
    cost: str | None = None,
    latency: float | None = None,
) -> int | None:
    """Write one call through the repository; returns the response id on its audit row."""
    kind = "embedding" if "input" in request else "chat"
    request_hash = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()
    usage = Usage(10, 5, None, None, 15)
    rec = CallRecord(
        call_uuid=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{label}@{when}")),
        created_at=datetime.fromisoformat(when),
        kind=kind,
        api_type="openai",
        endpoint_host="127.0.0.1",
        model=request["model"],
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
        cost_usd=None if cost is None else Decimal(0 if cache_status == "hit" else cost),
        saved_usd=Decimal(cost) if cache_status == "hit" and cost else None,
        run=run,
        tags=tags,
        served_response_id=served,
        error_type="APIConnectionError" if status == "error" else None,
        error_message="connection refused" if status == "error" else None,
    )
    if response is not None and served is None:
        rec.answers = [
            Answer(
                request_hash=request_hash,
                kind=kind,
                model=request["model"],
                request=request,
                response=response,
                usage=usage,
                cost_usd=rec.cost_usd,
                cost_note=None,
                price_version=None,
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


def build(location: str) -> Ledger:
    """The seven calls above, ids 1-7 in order."""
    ledger = Ledger(location)
    geo = {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": CAPITAL_Q},
        ],
    }
    paris = chat_response({"role": "assistant", "content": "Paris is the capital of France."})
    r1 = put(ledger, "c1", "2026-05-01 10:00:00", geo, paris, run="geo", tags={"team": "x"},
             cost="0.0003", latency=120)  # fmt: skip
    put(ledger, "c2", "2026-05-01 11:00:00", geo, paris, cache_status="hit", served=r1,
        run="geo", tags={"team": "y"}, cost="0.0003", latency=1)  # fmt: skip
    tool = chat_response(
        {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]}, "tool_calls"
    )
    put(ledger, "c3", "2026-05-02 09:00:00",
        {"model": "gpt-4o", "messages": [{"role": "user", "content": PARTS}]}, tool,
        run="tools", cost="0.002", latency=450)  # fmt: skip
    refusal = chat_response(
        {"role": "assistant", "content": None, "refusal": "I can't help with that."}
    )
    put(ledger, "c4", "2026-05-02 10:00:00",
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Pick a lock"}]},
        refusal, status="refused", cost="0.0001", latency=90)  # fmt: skip
    embedding = {
        "object": "list",
        "model": "text-embedding-3-small",
        "data": [{"object": "embedding", "index": i, "embedding": [0.1, 0.2]} for i in (0, 1)],
    }
    put(ledger, "c5", "2026-05-03 08:00:00",
        {"model": "text-embedding-3-small", "input": ["alpha text", "beta text"]}, embedding,
        cost="0.00001", latency=30)  # fmt: skip
    put(ledger, "c6", "2026-05-03 09:00:00",
        {"model": "gpt-4o-mini", "messages": [
            {"role": "user", "content": "What is the capital of Spain?"}]},
        None, status="error", latency=5)  # fmt: skip
    turns = {
        "model": "gpt-4o",
        "messages": [
            {"role": "user", "content": "A first question about rivers"},
            {"role": "assistant", "content": "Rivers flow."},
            {"role": "user", "content": "Now a follow-up about glaciers"},
        ],
    }
    put(ledger, "c7", "2026-05-03 10:00:00", turns,
        chat_response({"role": "assistant", "content": "Glaciers are slow rivers of ice."}),
        tags={"team": "x"}, cost="0.004", latency=800)  # fmt: skip
    return ledger


# What the calls view shows for c1..c7: (system_prompt, prompt, answer, finish_reason).
TEXTS = {
    1: (SYSTEM, CAPITAL_Q, "Paris is the capital of France.", "stop"),
    2: (SYSTEM, CAPITAL_Q, "Paris is the capital of France.", "stop"),
    3: (
        None,
        "Describe the weather in Oslo, briefly",
        'tool calls: lookup_weather({"city": "Oslo"})',
        "tool_calls",
    ),
    4: (None, "Pick a lock", "refusal: I can't help with that.", "stop"),
    5: (None, "alpha text beta text", None, None),
    6: (None, "What is the capital of Spain?", None, None),
    7: (None, "Now a follow-up about glaciers", "Glaciers are slow rivers of ice.", "stop"),
}
