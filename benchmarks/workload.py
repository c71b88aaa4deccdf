"""The one workload every contender sees: deterministic chat requests and answers by index.

Request ``i`` is a system prompt plus a user message unique to ``i``; its canonical JSON
(what the ledger hashes and stores) is about 0.9 KB. Its answer is an OpenAI chat
completion whose canonical JSON is about 0.6 KB. Everything is a pure function of ``i``,
so a seeder can write entry ``i`` in bulk and a timed loop can ask for it again later.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from llm_ledger import keys

MODELS = ("gpt-4o-mini", "gpt-4o")
SYSTEM = (
    "You are a careful assistant inside a simulation of a small town. Answer in the voice of "
    "the persona described below, keep to the facts you were given, never invent prices or "
    "dates, and when unsure say so plainly. Reply in at most three short paragraphs."
)
# What send_message puts into the request at temperature 0 with the default settings;
# the seeder must hash exactly this, or the timed "hits" would be misses.
PARAMS: dict[str, Any] = {
    "temperature": 0.0,
    "max_tokens": 1024,
    "top_p": 1.0,
    "frequency_penalty": 0.0,
    "presence_penalty": 0.0,
    "stop": None,
    "n": None,
    "response_format": None,
}
USER_CHARS = 430
ANSWER_CHARS = 330
PROMPT_TOKENS = 180
COMPLETION_TOKENS = 70
CREATED = 1_700_000_000


@lru_cache(maxsize=1)
def _corpus() -> str:
    rng = random.Random(8)
    words = (
        "market baker river council harvest lantern ledger winter orchard festival miller "
        "bridge weather letter tavern garden school doctor budget notice railway station "
        "library museum theatre ferry storm ration meeting mayor clerk inventory shelf"
    ).split()
    return " ".join(rng.choice(words) for _ in range(12_000))


def _slice(i: int, step: int, length: int) -> str:
    text = _corpus()
    start = (i * step) % (len(text) - length)
    return text[start : start + length]


def model_of(i: int) -> str:
    return MODELS[i % len(MODELS)]


def messages(i: int) -> list[dict[str, str]]:
    user = f"Question {i}: " + _slice(i, 7919, USER_CHARS)
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def response(i: int) -> dict[str, Any]:
    """The chat completion the (stub) API gives for request ``i``, as JSON."""
    return {
        "id": f"chatcmpl-bench{i}",
        "object": "chat.completion",
        "created": CREATED,
        "model": model_of(i),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": _slice(i, 104_729, ANSWER_CHARS)},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
        },
        "system_fingerprint": "fp_bench",
    }


def usage_of(k: int) -> tuple[int, int]:
    """Prompt and completion tokens of the stub API's k-th answer: spread like real usage,
    not repeating within 16 million answers (the moduli are primes)."""
    return 50 + (k * 7919) % 8009, 10 + (k * 104_729) % 2003


@dataclass(frozen=True)
class Item:
    """Request ``i`` as a caller holds it: what goes into send_message."""

    i: int
    model: str
    messages: list[dict[str, str]]


def item(i: int) -> Item:
    return Item(i, model_of(i), messages(i))


def canonical(i: int) -> keys.CanonicalRequest:
    """Request ``i`` exactly as the ledger canonicalises and hashes it."""
    return keys.chat_request(messages(i), model_of(i), PARAMS)


# --- the same JSON, built from string templates (the seeder writes a million of them) ---

_J = json.JSONEncoder(ensure_ascii=False).encode


@lru_cache(maxsize=1)
def _templates() -> tuple[str, str]:
    params = keys.canonical_json({k: v for k, v in PARAMS.items() if v is not None})
    request = (
        '{"kind":"chat","messages":[{"content":' + _J(SYSTEM) + ',"role":"system"},'
        '{"content":%s,"role":"user"}],"model":%s,"params":' + params + "}"
    )
    usage = keys.canonical_json(response(0)["usage"])
    answer = (
        '{"choices":[{"finish_reason":"stop","index":0,"logprobs":null,"message":'
        '{"content":%s,"role":"assistant"}}],"created":' + str(CREATED) + ',"id":%s,'
        '"model":%s,"object":"chat.completion","system_fingerprint":"fp_bench","usage":'
        + usage
        + "}"
    )
    return request, answer


def request_json(i: int) -> str:
    """``canonical(i).canonical_json``, fast; :func:`check_templates` proves them equal."""
    return _templates()[0] % (_J(messages(i)[1]["content"]), _J(model_of(i)))


def response_json(i: int) -> str:
    """``keys.canonical_json(response(i))``, fast."""
    return _templates()[1] % (
        _J(_slice(i, 104_729, ANSWER_CHARS)),
        _J(f"chatcmpl-bench{i}"),
        _J(model_of(i)),
    )


def check_templates(*indices: int) -> None:
    for i in indices:
        if request_json(i) != canonical(i).canonical_json:
            raise AssertionError(f"workload.request_json({i}) differs from keys.chat_request")
        if response_json(i) != keys.canonical_json(response(i)):
            raise AssertionError(f"workload.response_json({i}) differs from canonical_json")


def sizes_of_one() -> dict[str, int]:
    """Bytes of the canonical request and answer JSON (the docs quote them)."""
    return {
        "request_bytes": len(canonical(1).canonical_json.encode()),
        "answer_bytes": len(keys.canonical_json(response(1)).encode()),
    }
