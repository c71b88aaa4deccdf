"""What the SDK sends and receives, as plain data (pure; no I/O).

The drop-in clients sit below the SDK, where a call is an HTTP request and an answer is JSON
or server-sent events. So a hit is answered with the very bytes the API would send, and the
SDK builds its own types from them (``ChatCompletion``, ``ParsedChatCompletion`` with
``.parsed``, ``CreateEmbeddingResponse``, ``Response``, chunk and event types): a hit and a
miss cannot differ in type.

A streamed answer is stored as the assembled answer (what a non-streamed call returns, so
either kind of call can be served from it) plus, under :data:`STREAM_KEY`, the event
sequence as it arrived, so a streamed hit replays the same chunks.
"""

from __future__ import annotations

import base64
import copy
import json
import struct
from typing import Any

# The stored answer's key holding the streamed events, in arrival order (docs/sdk.md).
STREAM_KEY = "llm_ledger_stream"
ROUTES = {"/chat/completions": "chat", "/embeddings": "embedding", "/responses": "responses"}


def route_of(method: str, path: str) -> str | None:
    """Which ledger route an SDK request takes: "chat", "embedding", "responses", or None
    (anything else passes through unrecorded)."""
    if method != "POST":
        return None
    for suffix, route in ROUTES.items():
        if path.endswith(suffix):
            return route
    return None


def malformed(route: str, body: Any) -> str | None:
    """Why a 200 body is not an answer of its route (None: it is one). Checked before the
    ledger stores it: a ``{}`` from a broken proxy must not become every later call's hit."""
    if not isinstance(body, dict):
        return f"the body is a JSON {type(body).__name__}, not an object"
    if route == "chat":
        choices = body.get("choices")
        if not isinstance(choices, list) or not choices:
            return "no choices (a chat completion has a non-empty list)"
        if not all(isinstance(c, dict) and isinstance(c.get("message"), dict) for c in choices):
            return "a choice without a message"
    elif route == "responses":
        if not isinstance(body.get("output"), list):
            return "no output list (a response has one)"
    else:
        data = body.get("data")
        if not isinstance(data, list):
            return "no data list (an embedding answer has one)"
        if not all(
            isinstance(d, dict) and isinstance(d.get("embedding"), (list, str)) for d in data
        ):
            return "an item without an embedding"
    return None


# --- server-sent events -----------------------------------------------------------------


class SSEParser:
    """Incremental SSE parser: feed bytes as they arrive, get complete events back."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[tuple[str | None, str]]:
        self._buf += data.replace(b"\r\n", b"\n")
        events = []
        while b"\n\n" in self._buf:
            block, self._buf = self._buf.split(b"\n\n", 1)
            name, lines = None, []
            for line in block.decode("utf-8").split("\n"):
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    lines.append(line[5:].lstrip(" ") if line[5:6] == " " else line[5:])
            if lines:
                events.append((name, "\n".join(lines)))
        return events


def encode_events(route: str, events: list[dict[str, Any]]) -> list[bytes]:
    """Stored events back to SSE bytes, one ``bytes`` per event (chat ends with ``[DONE]``)."""
    if route == "responses":
        return [f"event: {ev.get('type')}\ndata: {json.dumps(ev)}\n\n".encode() for ev in events]
    return [f"data: {json.dumps(ev)}\n\n".encode() for ev in events] + [b"data: [DONE]\n\n"]


def is_usage_chunk(chunk: dict[str, Any]) -> bool:
    return not chunk.get("choices") and chunk.get("usage") is not None


def hide_usage(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The chunks a caller who did not ask for ``include_usage`` would have received."""
    out = []
    for ch in chunks:
        if is_usage_chunk(ch):
            continue
        if "usage" in ch:
            ch = {k: v for k, v in ch.items() if k != "usage"}
        out.append(ch)
    return out


# --- chat ---------------------------------------------------------------------------------


def assemble_chat(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """Chat chunks -> the ``chat.completion`` the same call would have returned unstreamed."""
    first = chunks[0] if chunks else {}
    answer: dict[str, Any] = {
        "id": first.get("id"),
        "object": "chat.completion",
        "created": first.get("created"),
        "model": first.get("model"),
    }
    for key in ("system_fingerprint", "service_tier"):
        if first.get(key) is not None:
            answer[key] = first[key]
    choices: dict[int, dict[str, Any]] = {}
    for ch in chunks:
        if ch.get("usage") is not None:
            answer["usage"] = ch["usage"]
        for c in ch.get("choices") or []:
            slot = choices.setdefault(
                c.get("index", 0),
                {
                    "index": c.get("index", 0),
                    "message": {"role": "assistant", "content": None},
                    "logprobs": None,
                    "finish_reason": None,
                },
            )
            _merge_delta(slot["message"], c.get("delta") or {})
            if c.get("finish_reason") is not None:
                slot["finish_reason"] = c["finish_reason"]
            if c.get("logprobs"):
                lp = slot["logprobs"] = slot["logprobs"] or {"content": [], "refusal": None}
                for key in ("content", "refusal"):
                    if c["logprobs"].get(key):
                        lp[key] = (lp.get(key) or []) + c["logprobs"][key]
    answer["choices"] = [choices[i] for i in sorted(choices)]
    return answer


def _merge_delta(message: dict[str, Any], delta: dict[str, Any]) -> None:
    for key, value in delta.items():
        if value is None:
            continue
        if key == "role":
            message["role"] = value
        elif key in ("content", "refusal"):
            message[key] = (message.get(key) or "") + value
        elif key == "tool_calls":
            calls = message.setdefault("tool_calls", [])
            for tc in value:
                i = tc.get("index", 0)
                while len(calls) <= i:
                    calls.append({"id": None, "type": "function", "function": {}})
                target = calls[i]
                for k in ("id", "type"):
                    if tc.get(k):
                        target[k] = tc[k]
                fn = tc.get("function") or {}
                for k in ("name", "arguments"):
                    if fn.get(k) is not None:
                        target["function"][k] = target["function"].get(k, "") + fn[k]
        else:
            message[key] = value


def chat_chunks(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """A stored ``chat.completion`` as chunks (serves a streamed call from an unstreamed answer):
    per choice one chunk with the whole message, one with its finish reason, then usage."""
    head = {
        "id": answer.get("id"),
        "object": "chat.completion.chunk",
        "created": answer.get("created"),
        "model": answer.get("model"),
    }
    if answer.get("system_fingerprint") is not None:
        head["system_fingerprint"] = answer["system_fingerprint"]
    chunks = []
    for c in answer.get("choices") or []:
        message = {k: v for k, v in (c.get("message") or {}).items() if v is not None}
        if "tool_calls" in message:
            message["tool_calls"] = [
                {"index": i, **tc} for i, tc in enumerate(message["tool_calls"])
            ]
        choice = {"index": c.get("index", 0), "delta": message, "finish_reason": None}
        if c.get("logprobs") is not None:
            choice["logprobs"] = c["logprobs"]
        chunks.append({**head, "choices": [choice], "usage": None})
    for c in answer.get("choices") or []:
        choice = {"index": c.get("index", 0), "delta": {}, "finish_reason": c.get("finish_reason")}
        chunks.append({**head, "choices": [choice], "usage": None})
    chunks.append({**head, "choices": [], "usage": answer.get("usage")})
    return chunks


# --- Responses API --------------------------------------------------------------------------


def assemble_response(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Responses API events -> the ``Response`` (the last event carrying a whole response,
    normally ``response.completed``; output items that arrived are filled in if missing)."""
    response: dict[str, Any] = {}
    items: dict[int, dict[str, Any]] = {}
    texts: dict[tuple[int, int], str] = {}
    for ev in events:
        if isinstance(ev.get("response"), dict):
            response = ev["response"]
        kind = ev.get("type")
        if kind in ("response.output_item.added", "response.output_item.done"):
            items[ev.get("output_index", 0)] = ev["item"]
        elif kind == "response.output_text.delta":
            key = (ev.get("output_index", 0), ev.get("content_index", 0))
            texts[key] = texts.get(key, "") + (ev.get("delta") or "")
    response = copy.deepcopy(response)
    if not response.get("output") and items:
        output = [copy.deepcopy(items[i]) for i in sorted(items)]
        for (oi, ci), text in texts.items():
            content = output[oi].setdefault("content", []) if oi < len(output) else []
            while len(content) <= ci:
                content.append({"type": "output_text", "text": "", "annotations": []})
            if not content[ci].get("text"):
                content[ci]["text"] = text
        response["output"] = output
    return response


def response_events(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """A stored ``Response`` as the events a streamed call gets (served from an unstreamed
    answer): created, each output item added/done with its text in one delta, completed."""
    events: list[dict[str, Any]] = []
    pending = {**answer, "status": "in_progress", "output": []}
    pending.pop("usage", None)
    events.append({"type": "response.created", "response": pending})
    events.append({"type": "response.in_progress", "response": pending})
    for oi, item in enumerate(answer.get("output") or []):
        added = {**item, "status": "in_progress"}
        if item.get("type") == "message":
            added["content"] = []
        events.append({"type": "response.output_item.added", "output_index": oi, "item": added})
        if item.get("type") == "message":
            for ci, part in enumerate(item.get("content") or []):
                ids = {"item_id": item.get("id"), "output_index": oi, "content_index": ci}
                empty = {**part, "text": ""} if part.get("type") == "output_text" else part
                events.append({"type": "response.content_part.added", **ids, "part": empty})
                if part.get("type") == "output_text":
                    text = part.get("text", "")
                    events.append(
                        {
                            "type": "response.output_text.delta",
                            **ids,
                            "delta": text,
                            "logprobs": [],
                        }
                    )
                    events.append(
                        {"type": "response.output_text.done", **ids, "text": text, "logprobs": []}
                    )
                events.append({"type": "response.content_part.done", **ids, "part": part})
        events.append({"type": "response.output_item.done", "output_index": oi, "item": item})
    events.append({"type": "response.completed", "response": answer})
    return [{**ev, "sequence_number": i} for i, ev in enumerate(events)]


def response_usage(answer: dict[str, Any]) -> dict[str, Any] | None:
    """The Responses API's usage in the chat shape the ledger stores (prompt/completion)."""
    u = answer.get("usage")
    if not isinstance(u, dict):
        return None
    return {
        "prompt_tokens": u.get("input_tokens"),
        "completion_tokens": u.get("output_tokens"),
        "total_tokens": u.get("total_tokens"),
        "prompt_tokens_details": u.get("input_tokens_details") or {},
        "completion_tokens_details": u.get("output_tokens_details") or {},
    }


def response_text(answer: dict[str, Any]) -> str:
    """All output text of a ``Response`` (for token estimates when usage is missing)."""
    out = []
    for item in answer.get("output") or []:
        for part in item.get("content") or []:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                out.append(part["text"])
    return "".join(out)


# --- stored answers ---------------------------------------------------------------------------


def with_stream(answer: dict[str, Any], events: list[dict[str, Any]]) -> dict[str, Any]:
    """The stored form of a streamed answer: the assembled answer plus its events."""
    return {**answer, STREAM_KEY: events}


def plain(stored: dict[str, Any]) -> dict[str, Any]:
    """A stored answer as a non-streamed call returns it."""
    if STREAM_KEY not in stored:
        return stored
    return {k: v for k, v in stored.items() if k != STREAM_KEY}


def events_for(route: str, stored: dict[str, Any], include_usage: bool) -> list[dict[str, Any]]:
    """The events a streamed call is served from a stored answer (recorded or synthesised)."""
    events = stored.get(STREAM_KEY)
    if events is None:
        events = response_events(stored) if route == "responses" else chat_chunks(stored)
    if route == "chat" and not include_usage:
        events = hide_usage(events)
    return events


# --- embeddings -------------------------------------------------------------------------------


def decode_vector(value: Any) -> list[float]:
    """An embedding as floats, whether the API sent floats or base64 float32."""
    if isinstance(value, str):
        raw = base64.b64decode(value)
        return list(struct.unpack(f"<{len(raw) // 4}f", raw))
    return list(value)


def encode_vector(vector: list[float], encoding_format: str | None) -> Any:
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return vector


def embedding_answer(
    vectors: list[list[float]],
    model: str,
    prompt_tokens: int | None,
    encoding_format: str | None,
) -> dict[str, Any]:
    """The ``/embeddings`` JSON for vectors served from the ledger and/or the API."""
    tokens = prompt_tokens or 0
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": encode_vector(v, encoding_format)}
            for i, v in enumerate(vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
