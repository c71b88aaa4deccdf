"""``get_embedding``: each input item is its own cache entry.

On a partial hit only the missing items go to the API, in one request, and the
vectors come back in input order. The call's audit row says how many items were
hits (``items_hit`` of ``items_total``).
"""

from __future__ import annotations

import copy
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import structlog

from . import api, keys, tokens
from .errors import CacheMissError
from .policy import Action, CallOptions, StoreMode, decide, plan
from .records import Answer, Stored, Usage

if TYPE_CHECKING:
    from .clients import OpenAIClient

log = structlog.get_logger("llm_ledger")


class EmbeddingCall:
    def __init__(
        self,
        owner: OpenAIClient,
        request: keys.CanonicalRequest,
        params: dict[str, Any],
        opts: CallOptions,
        namespace: str,
        raise_errors: bool,
    ) -> None:
        self.c = owner
        self.request = request
        self.params = {k: v for k, v in params.items() if v is not None}
        self.opts = opts
        self.namespace = namespace
        self.raise_errors = raise_errors
        self.single = isinstance(request.body["input"], str)
        texts = [request.body["input"]] if self.single else list(request.body["input"])
        self.texts: list[str] = texts
        self.items = (
            [request]
            if self.single
            else [keys.embedding_request(t, request.model, self.params) for t in texts]
        )
        self.t0 = time.perf_counter()

    def run(self) -> list[float] | list[list[float]] | None:
        from .clients import _now

        r = self.request
        p = plan(self.opts)  # embeddings are deterministic: no slots
        stored: dict[str, Stored] = {}
        if p.read:
            try:
                stored = self.c.ledger.lookup_many(
                    self.namespace, [i.request_hash for i in self.items]
                )
            except self.c.ledger.errors as exc:  # a read failure is a miss, never a crash
                log.error("ledger.read_failed", request_hash=r.request_hash, error=str(exc)[:300])
        now = _now()
        hits: dict[int, Stored] = {}
        missing: list[int] = []
        for idx, item in enumerate(self.items):
            st = stored.get(item.request_hash)
            d = decide(p, st.stored_at if st else None, now, self.opts.max_age)
            if d.action is Action.SERVE and st is not None:
                hits[idx] = st
            else:
                missing.append(idx)
        rec = self.c._base_record(
            r, self.namespace, slot=0, cache_status="miss", status="ok", items_total=len(self.items)
        )
        rec.items_hit = len(hits)
        rec.cache_status = "bypass" if not p.read else ("hit" if not missing else "miss")
        saved = [h.cost_usd for h in hits.values() if h.cost_usd is not None]
        rec.saved_usd = sum(saved, Decimal(0)) if hits else None
        vectors: dict[int, list[float]] = {
            i: self.c._raw_embedding_model_response_extractor(h.response) for i, h in hits.items()
        }
        hit_usage = [h.prompt_tokens for h in hits.values()]
        if missing and p.offline:
            first = self.items[missing[0]]
            err = CacheMissError(first.request_hash, r.model, first.last_message_text())
            rec.status, rec.cache_status = "error", "miss"
            rec.error_type, rec.error_message = "CacheMissError", str(err)
            self._finish(rec)
            raise err
        if not missing:
            rec.cost_usd = Decimal(0)
            rec.usage = Usage(_sum(hit_usage), 0, None, None, _sum(hit_usage))
            if self.single:
                rec.served_response_id = hits[0].response_id
            self._finish(rec)
            log.info("llm.cache_hit", request_hash=r.request_hash, model=r.model, items=len(hits))
            return self._result(vectors)
        store = StoreMode.NONE if not p.read and p.store is StoreMode.NONE else p.store
        if (
            p.read
            and store is StoreMode.INSERT
            and any(self.items[i].request_hash in stored for i in missing)
        ):
            store = StoreMode.REPLACE  # stale entries get the new answer
        send = [self.texts[i] for i in missing]
        max_prompt = tokens.count_text_tokens(" ".join(send), r.model)
        reserved = self.c._reserve_budget(r.model, max_prompt, 0, rec)
        payload: str | list[str] = send[0] if self.single else send
        outcome = api.attempt(
            lambda: self.c._raw_embedding_model_call(payload, r.model, **self.params),
            max_attempts=self.c._settings().max_attempts,
            waiting_time=self.c._settings().waiting_time,
            backoff_factor=self.c._settings().exponential_backoff_factor,
            sleep=self.c._sleep,
            context={"request_hash": r.request_hash, "model": r.model},
        )
        rec.attempts = outcome.attempts
        rec.endpoint_host = self.c._endpoint_host()
        if outcome.error is not None:
            rec.latency_ms = self._latency()
            return self.c._record_failure(rec, outcome, reserved, self.raise_errors)
        response = api.to_dict(outcome.value)
        data = sorted(response.get("data") or [], key=lambda d: d.get("index", 0))
        usage = api.usage_of(response) or Usage(
            max_prompt, 0, None, None, max_prompt, estimated=True
        )
        usage.completion_tokens = usage.completion_tokens or 0
        cost = self.c._price(r.model, response, usage)
        self.c._settle_budget(reserved, cost.cost_usd)
        rec.cost_usd, rec.cost_note, rec.price_version = (
            cost.cost_usd,
            cost.note,
            cost.price_version,
        )
        rec.usage = usage
        per_item = self._split_usage(usage, send)
        for j, idx in enumerate(missing):
            item = self.items[idx]
            vectors[idx] = data[j]["embedding"]
            if len(missing) == 1:
                item_response, item_usage, item_cost = response, usage, cost
            else:
                item_response = {
                    "object": "list",
                    "data": [
                        {"object": "embedding", "index": 0, "embedding": data[j]["embedding"]}
                    ],
                    "model": response.get("model", r.model),
                    "usage": {"prompt_tokens": per_item[j], "total_tokens": per_item[j]},
                }
                item_usage = Usage(per_item[j], 0, None, None, per_item[j], estimated=True)
                item_cost = self.c._price(r.model, item_response, item_usage)
            rec.answers.append(
                Answer(
                    request_hash=item.request_hash,
                    kind="embedding",
                    model=r.model,
                    request=item.body
                    if self.c.redact is None
                    else self.c.redact(copy.deepcopy(item.body)),
                    response=item_response,
                    usage=item_usage,
                    cost_usd=item_cost.cost_usd,
                    cost_note=item_cost.note,
                    price_version=item_cost.price_version,
                    store=store,
                    namespace=self.namespace,
                    slot=0,
                )
            )
        if self.single:
            rec.primary_answer = 0
        self._finish(rec)
        log.info(
            "llm.call",
            request_hash=r.request_hash,
            model=r.model,
            items=len(self.items),
            items_hit=len(hits),
            attempts=outcome.attempts,
            latency_ms=rec.latency_ms,
        )
        return self._result(vectors)

    def _split_usage(self, usage: Usage, texts: list[str]) -> list[int]:
        """Per-item shares of a batch's billed tokens, weighted by tiktoken counts.

        The shares always add up to what the API reported, so what later hits "save" is
        exactly what was paid. Without tiktoken counts the split is even.
        """
        total = usage.prompt_tokens
        counts = [tokens.count_text_tokens(t, self.request.model) for t in texts]
        weights = [c for c in counts if c is not None]
        if total is None:
            return [c or 0 for c in counts]
        if len(weights) != len(texts) or sum(weights) == 0:
            weights = [1] * len(texts)
        return _apportion(total, weights)

    def _latency(self) -> float:
        return round((time.perf_counter() - self.t0) * 1000, 3)

    def _finish(self, rec: Any) -> None:
        rec.latency_ms = self._latency()
        self.c._write(rec, hit=rec.cache_status == "hit" and not rec.answers)

    def _result(self, vectors: dict[int, list[float]]) -> list[float] | list[list[float]]:
        if self.single:
            return vectors[0]
        return [vectors[i] for i in range(len(self.items))]


def _sum(values: list[int | None]) -> int | None:
    if any(v is None for v in values):
        return None
    return sum(v for v in values if v is not None)


def _apportion(total: int, weights: list[int]) -> list[int]:
    """Split ``total`` in proportion to ``weights`` (largest remainder): the parts sum to total."""
    whole = sum(weights)
    exact = [total * w / whole for w in weights]
    parts = [int(x) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: exact[i] - parts[i], reverse=True)
    for i in by_remainder[: total - sum(parts)]:
        parts[i] += 1
    return parts
