"""The test kit's streamed answers and Responses API answers (used by testing.py).

Why a module of its own: testing.py owns the HTTP server (routing, faults, counters); this one
owns the wire shapes of what it answers beyond plain chat JSON: server-sent events for chat and
for the Responses API, the Responses API's answer object, and JSON that fits a requested
schema (so ``parse()`` through the SDK gets something it can parse).
"""

from __future__ import annotations

import json
from typing import Any

CREATED = 1700000000


def pieces(text: str, words_per_chunk: int | None) -> list[str]:
    """``text`` cut into chunks of ``words_per_chunk`` words (spaces kept), or whole."""
    if not words_per_chunk or not text:
        return [text]
    words = text.split(" ")
    return [
        " ".join(words[i : i + words_per_chunk]) + (" " if i + words_per_chunk < len(words) else "")
        for i in range(0, len(words), words_per_chunk)
    ]


def chat_events(
    answer: dict[str, Any], include_usage: bool, words_per_chunk: int | None
) -> list[bytes]:
    """A chat answer as the SSE events of a streamed answer, one ``bytes`` per event."""
    head = {k: answer[k] for k in ("id", "created", "model", "system_fingerprint")}
    head["object"] = "chat.completion.chunk"
    chunks = []
    for c in answer["choices"]:
        for j, piece in enumerate(pieces(c["message"]["content"], words_per_chunk)):
            delta = {"content": piece} if j else {"role": "assistant", "content": piece}
            chunks.append(
                {**head, "choices": [{"index": c["index"], "delta": delta, "finish_reason": None}]}
            )
    for c in answer["choices"]:
        chunks.append(
            {**head, "choices": [{"index": c["index"], "delta": {}, "finish_reason": "stop"}]}
        )
    if include_usage:
        chunks = [{**ch, "usage": None} for ch in chunks]
        chunks.append({**head, "choices": [], "usage": answer.get("usage")})
    return [f"data: {json.dumps(ch)}\n\n".encode() for ch in chunks] + [b"data: [DONE]\n\n"]


def response_answer(
    number: int, model: str, text: str, usage: dict[str, Any] | None, body: dict[str, Any]
) -> dict[str, Any]:
    """The Responses API's ``Response`` object for one text answer."""
    answer: dict[str, Any] = {
        "id": f"resp_{number}",
        "object": "response",
        "created_at": CREATED,
        "status": "completed",
        "model": model,
        "output": [
            {
                "type": "message",
                "id": f"msg_{number}",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "metadata": body.get("metadata") or {},
        "temperature": body.get("temperature", 1.0),
        "top_p": body.get("top_p", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}},
    }
    if usage is not None:
        answer["usage"] = usage
    return answer


def response_events(answer: dict[str, Any], words_per_chunk: int | None) -> list[bytes]:
    """A Responses API answer as its streamed events (``event:`` name + ``data:`` JSON)."""
    message = answer["output"][0]
    text = message["content"][0]["text"]
    in_progress = {**answer, "status": "in_progress", "output": []}
    in_progress.pop("usage", None)
    empty_msg = {**message, "status": "in_progress", "content": []}
    empty_part = {"type": "output_text", "text": "", "annotations": []}
    done_part = message["content"][0]
    ids = {"item_id": message["id"], "output_index": 0}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": in_progress},
        {"type": "response.in_progress", "response": in_progress},
        {"type": "response.output_item.added", "output_index": 0, "item": empty_msg},
        {"type": "response.content_part.added", **ids, "content_index": 0, "part": empty_part},
    ]
    for piece in pieces(text, words_per_chunk):
        events.append(
            {
                "type": "response.output_text.delta",
                **ids,
                "content_index": 0,
                "delta": piece,
                "logprobs": [],
            }
        )
    events += [
        {
            "type": "response.output_text.done",
            **ids,
            "content_index": 0,
            "text": text,
            "logprobs": [],
        },
        {"type": "response.content_part.done", **ids, "content_index": 0, "part": done_part},
        {"type": "response.output_item.done", "output_index": 0, "item": message},
        {"type": "response.completed", "response": answer},
    ]
    out = []
    for seq, ev in enumerate(events):
        ev = {**ev, "sequence_number": seq}
        out.append(f"event: {ev['type']}\ndata: {json.dumps(ev)}\n\n".encode())
    return out


def json_for_schema(schema: dict[str, Any], text: str, defs: dict[str, Any] | None = None) -> Any:
    """A small JSON value that fits ``schema``: strings are ``text``, numbers 1, lists empty."""
    defs = defs if defs is not None else schema.get("$defs", {})
    if "$ref" in schema:
        return json_for_schema(defs.get(schema["$ref"].rsplit("/", 1)[-1], {}), text, defs)
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return json_for_schema(schema[key][0], text, defs)
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        return {name: json_for_schema(sub, text, defs) for name, sub in props.items()}
    return {
        "string": text,
        "integer": 1,
        "number": 1.0,
        "boolean": True,
        "array": [],
        "null": None,
    }.get(kind or "string", text)


def requested_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON schema a chat ``response_format`` or a Responses ``text.format`` asks for."""
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        return (fmt.get("json_schema") or {}).get("schema") or {}
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        return fmt.get("schema") or {}
    return None
