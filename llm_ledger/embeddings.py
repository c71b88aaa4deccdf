"""The embeddings endpoint of the call pipeline: each input item is its own cache entry.

On a partial hit only the missing items go to the API, in one request, and the
vectors come back in input order. The call's audit row says how many items were
hits (``items_hit`` of ``items_total``). What differs from chat is here; the
pipeline itself (``calls.run``) is shared.
"""

from __future__ import annotations

from typing import Any

from . import api, keys, tokens
from .calls import Context, Endpoint, ShortAnswer
from .records import Usage


class EmbeddingEndpoint(Endpoint):
    kind = "embedding"
    sampled = False  # embeddings are deterministic: no sample slots
    batched = True

    def sampling(self, request: keys.CanonicalRequest) -> tuple[float | None, int | None]:
        return None, None

    def prompt_tokens(
        self, ctx: Context, request: keys.CanonicalRequest, items: list[keys.CanonicalRequest]
    ) -> int | None:
        return tokens.count_text_tokens(" ".join(texts(items)), request.model)

    def max_output(self, request: keys.CanonicalRequest) -> int:
        return 0

    def usage(
        self,
        ctx: Context,
        request: keys.CanonicalRequest,
        response: dict[str, Any],
        items: list[keys.CanonicalRequest],
    ) -> Usage:
        usage = api.usage_of(response)
        if usage is None:
            counted = self.prompt_tokens(ctx, request, items)
            usage = Usage(counted, 0, None, None, counted, estimated=True)
        usage.completion_tokens = usage.completion_tokens or 0
        return usage

    def split(
        self,
        request: keys.CanonicalRequest,
        response: dict[str, Any],
        usage: Usage,
        items: list[keys.CanonicalRequest],
    ) -> list[tuple[dict[str, Any], Usage]]:
        data = response.get("data")
        if not isinstance(data, list) or len(data) != len(items):
            got = len(data) if isinstance(data, list) else 0
            raise ShortAnswer(f"{got} embedding(s) for {len(items)} input(s)")
        try:
            data = sorted(data, key=lambda d: d.get("index", 0))
            vectors = [d["embedding"] for d in data]
        except (AttributeError, KeyError, TypeError):
            raise ShortAnswer("an item of 'data' has no 'embedding'") from None
        if len(items) == 1:
            return [(response, usage)]
        per_item = _split_usage(usage, texts(items), request.model)
        return [
            (
                {
                    "object": "list",
                    "data": [{"object": "embedding", "index": 0, "embedding": vector}],
                    "model": response.get("model", request.model),
                    "usage": {"prompt_tokens": n, "total_tokens": n},
                },
                Usage(n, 0, None, None, n, estimated=True),
            )
            for vector, n in zip(vectors, per_item, strict=True)
        ]


EMBEDDING = EmbeddingEndpoint()


def items_of(request: keys.CanonicalRequest, params: dict[str, Any]) -> list[keys.CanonicalRequest]:
    """The cache entries of an embedding request: itself for one str, one per str of a list."""
    body = request.body["input"]
    if isinstance(body, str):
        return [request]
    return [keys.embedding_request(t, request.model, params) for t in body]


def texts(items: list[keys.CanonicalRequest]) -> list[str]:
    return [i.body["input"] for i in items]


def _split_usage(usage: Usage, texts: list[str], model: str) -> list[int]:
    """Per-item shares of a batch's billed tokens, weighted by tiktoken counts.

    The shares always add up to what the API reported, so what later hits "save" is
    exactly what was paid. Without tiktoken counts the split is even.
    """
    total = usage.prompt_tokens
    counts = [tokens.count_text_tokens(t, model) for t in texts]
    weights = [c for c in counts if c is not None]
    if total is None:
        return [c or 0 for c in counts]
    if len(weights) != len(texts) or sum(weights) == 0:
        weights = [1] * len(texts)
    return _apportion(total, weights)


def _apportion(total: int, weights: list[int]) -> list[int]:
    """Split ``total`` in proportion to ``weights`` (largest remainder): the parts sum to total."""
    whole = sum(weights)
    exact = [total * w / whole for w in weights]
    parts = [int(x) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: exact[i] - parts[i], reverse=True)
    for i in by_remainder[: total - sum(parts)]:
        parts[i] += 1
    return parts
