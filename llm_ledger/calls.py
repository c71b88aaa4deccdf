"""The call pipeline: one request through cache policy, the API and the ledger.

:func:`run` reads top to bottom: plan -> lookup -> **hit** | **replay miss** |
(single-flight) -> budget **refusal** -> attempts -> **error** | **miss** (price,
settle, record, answer). Chat and embeddings share every step; what differs per
endpoint (tokens to estimate, how an answer splits into per-item answers) is an
:class:`Endpoint`.

How an entry drives it (the seed's ``OpenAIClient`` does exactly this; the
OpenAI-SDK drop-in and TinyTroupe's clients do the same):

1. Build a :class:`Context` once: how to reach the ledger, the pricing config,
   the redactor, the token counter, ``sleep``. Fields that may change after
   construction are callables, read at each call.
2. For each call build a :class:`Call`: the endpoint (:data:`CHAT`,
   ``embeddings.EMBEDDING``, or your own :class:`Endpoint`), the canonical
   request (``keys.chat_request`` ...; its hash is the audit row's), the items
   cached on their own (chat: ``(request,)``), the policy options
   (:class:`~llm_ledger.policy.CallOptions`), namespace, :class:`Retry`.
3. ``run(ctx, call, transport)``. ``transport(items)`` performs ONE attempt for
   the items the ledger could not serve and returns the raw answer (an SDK object
   or the JSON dict); it raises what the SDK raises. Retries, backoff and the
   classification of errors happen here (``api.attempt``), nowhere else.
4. :class:`Result` gives, per item, what to hand back: the stored answer (a dict)
   or the fresh one (for a single item, the transport's own object, so an entry can
   return the SDK type it received). ``None`` when the call gave up and
   ``call.raise_errors`` is false.
5. Streams: a transport may return a :class:`Deferred` (an answer still arriving).
   The pipeline then records nothing yet: it binds the deferred's ``finish``, which
   the entry calls once when the stream ends (complete, abandoned or failed), and
   the row is written then; only a complete stream becomes a cache entry
   (``Call.streamed`` puts ``stream_status`` on the row; llm_ledger.sdk.streams).

Why one module of ~650 lines: the point is that the pipeline reads top to bottom in one
place, :func:`run` and then the steps it calls in the order it calls them; the descriptions
(Context, Call, Endpoint, Result) are the vocabulary of that reading.

Everything here is synchronous. :func:`run` is a short driver over public steps
(:func:`look`, :func:`serve`, :func:`replay_miss`, :func:`before_attempts`,
:func:`after_attempts`); an async driver calls the same steps and awaits only the
attempts (an async transport under the same retry policy: ``Retry`` and
``api.is_retryable`` / ``api.retry_after``) and the single-flight wait.
"""

from __future__ import annotations

import copy
import functools
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from . import api, keys, pricing, process, tokens
from . import config as cfg
from ._version import __version__
from .errors import (
    APICallError,
    BudgetExceededError,
    CacheMissError,
    InvalidInputError,
    InvalidInputTypeError,
)
from .log import info_enabled, logger
from .policy import Action, CallOptions, Decision, StoreMode, decide, plan
from .records import Answer, CallRecord, Stored, Usage
from .scope import Budget, reserve, settle
from .scope import current as current_scope
from .store.repository import Ledger

log = logger
Redactor = Callable[[dict[str, Any]], dict[str, Any]]
Transport = Callable[[list[keys.CanonicalRequest]], Any]


@dataclass(frozen=True)
class Context:
    """What the pipeline needs from the entry that drives it, built once per client."""

    api_type: str
    ledger: Callable[[], Ledger]
    lookup: Callable[[str, str, int], Stored | None]  # one entry: (namespace, hash, slot)
    settings: Callable[[], cfg.Settings]
    records: Callable[[], bool]  # write audit rows at all (record_calls)
    pricing_config: Callable[[], pricing.PricingConfig]
    redact: Callable[[], Redactor | None]
    endpoint_host: Callable[[], str | None]  # known once the SDK client exists
    api_key: Callable[[], str | None]  # scrubbed from stored error messages
    count_tokens: Callable[[list[dict[str, Any]], str], int | None]
    sleep: Callable[[float], None] = time.sleep


@dataclass(frozen=True, slots=True)
class Retry:
    """The retry policy of one call: attempts, first wait, backoff factor."""

    max_attempts: int
    waiting_time: float
    factor: float

    @classmethod
    def resolve(
        cls,
        s: cfg.Settings,
        max_attempts: float | None = None,
        waiting_time: float | None = None,
        factor: float | None = None,
    ) -> Retry:
        """Per-call values over the settings, checked before anything is sent."""
        return _retry(
            s.max_attempts if max_attempts is None else max_attempts,
            s.waiting_time if waiting_time is None else waiting_time,
            s.exponential_backoff_factor if factor is None else factor,
        )


@functools.lru_cache(maxsize=256, typed=True)
def _retry(max_attempts: Any, waiting_time: Any, factor: Any) -> Retry:
    """Checked once per distinct (typed) triple: every call asks, few triples exist. An invalid
    one raises, and exceptions are never cached."""
    return Retry(
        int(positive("max_attempts", max_attempts)),
        positive("waiting_time", waiting_time),
        positive("exponential_backoff_factor", factor),
    )


class ShortAnswer(Exception):
    """The API answered, but not an answer for every item (e.g. fewer vectors than inputs)."""


class Endpoint:
    """What differs between endpoints; the default is a single-item request (chat-like)."""

    kind = "chat"
    sampled = True  # temperature > 0 or n > 1 draw sample slots
    batched = False  # several items per request: the row counts items_total / items_hit

    def sampling(self, request: keys.CanonicalRequest) -> tuple[float | None, int | None]:
        params = request.params
        return params.get("temperature"), params.get("n")

    def prompt_tokens(
        self, ctx: Context, request: keys.CanonicalRequest, items: list[keys.CanonicalRequest]
    ) -> int | None:
        return ctx.count_tokens(request.body["messages"], request.model)

    def max_output(self, request: keys.CanonicalRequest) -> int:
        p = request.params
        return (p.get("max_completion_tokens") or p.get("max_tokens") or 4096) * (p.get("n") or 1)

    def usage(
        self,
        ctx: Context,
        request: keys.CanonicalRequest,
        response: dict[str, Any],
        items: list[keys.CanonicalRequest],
    ) -> Usage:
        """The API's usage; without one, tiktoken's estimate (marked estimated)."""
        usage = api.usage_of(response)
        if usage is not None:
            return usage
        prompt = ctx.count_tokens(request.body["messages"], request.model)
        completion: int | None = 0
        for choice in response.get("choices") or []:
            counted = tokens.count_text_tokens(
                keys.message_text(choice.get("message") or {}), request.model
            )
            if counted is None or completion is None:
                completion = None
                break
            completion += counted
        total = prompt + completion if prompt is not None and completion is not None else None
        return Usage(prompt, completion, None, None, total, estimated=True)

    def split(
        self,
        request: keys.CanonicalRequest,
        response: dict[str, Any],
        usage: Usage,
        items: list[keys.CanonicalRequest],
    ) -> list[tuple[dict[str, Any], Usage]]:
        """One (response, usage) per item sent; raise :class:`ShortAnswer` if it cannot."""
        return [(response, usage)]


CHAT = Endpoint()


@dataclass(slots=True)
class Call:
    """One call as the pipeline sees it."""

    endpoint: Endpoint
    request: keys.CanonicalRequest  # the whole call: its hash is on the audit row
    options: CallOptions
    namespace: str
    raise_errors: bool
    retry: Retry
    items: Sequence[keys.CanonicalRequest]  # cached one by one; chat: (request,)
    streamed: bool = False  # stream=True (SDK drop-in): the audit row says how it went


@dataclass(slots=True)
class Result:
    """Per item, in order: the stored answer (dict) or the fresh one; and how it was served."""

    responses: list[Any]
    cache_status: str
    record: CallRecord = field(repr=False)


def run(ctx: Context, call: Call, transport: Transport) -> Result | None:
    """One call, start to finish. Raises CacheMissError (replay) and BudgetExceededError
    always; an API failure raises its typed error or returns None (``call.raise_errors``)."""
    t0 = time.perf_counter()
    flights = process.state.flights
    ended = flights.ended  # before the lookup: see single-flight below
    seen = look(ctx, call)

    # Hit: every item is in the ledger.
    if not seen.missing:
        return serve(ctx, call, seen.rec, seen.hits, t0)
    # Replay miss: the API must not be called.
    if seen.offline:
        replay_miss(ctx, call, seen, t0)
    # Single-flight: identical concurrent misses wait for the first one's answer.
    if len(call.items) == 1 and seen.decisions[0].store is StoreMode.INSERT:
        key = (call.namespace, call.request.request_hash, seen.rec.slot or 0)
        with flights.lead(key) as leader:
            # A follower reads the leader's answer; a leader too if some flight ended since
            # its lookup (it may have been this request's, stored just before it ended).
            if not leader or flights.ended != ended:
                again = _lookup(ctx, call, seen.rec.slot or 0)
                if again:
                    return serve(ctx, call, seen.rec, again, t0)
            return _call_api(ctx, call, transport, seen)
    return _call_api(ctx, call, transport, seen)


def _call_api(ctx: Context, call: Call, transport: Transport, seen: Seen) -> Result | None:
    """The API branch: budget (refusal), attempts (error), answer (miss)."""
    pending = before_attempts(ctx, call, seen)  # refusal: written, then raised
    t0 = time.perf_counter()
    outcome = api.attempt(
        lambda: transport(pending.send),
        max_attempts=call.retry.max_attempts,
        waiting_time=call.retry.waiting_time,
        backoff_factor=call.retry.factor,
        sleep=ctx.sleep,
        context={"request_hash": call.request.request_hash, "model": call.request.model},
    )
    return after_attempts(ctx, call, pending, outcome, _ms(t0))


# --- the steps, in the order run() takes them ---------------------------------------
# An async driver reuses every one of them and awaits only the attempts (and the
# single-flight wait): look -> serve | replay_miss | before_attempts -> attempts ->
# after_attempts.


@dataclass(slots=True)
class Seen:
    """What the ledger holds for a call, and what policy decided for each item."""

    rec: CallRecord  # the audit row, filled in by the branch taken
    decisions: list[Decision]
    hits: dict[int, Stored]  # served from the ledger, by item index
    missing: list[int]  # item indexes the API must answer
    read: bool  # the ledger was consulted (else the row says "bypass")
    offline: bool  # replay mode with something missing: MISS_ERROR


@dataclass(slots=True)
class Pending:
    """A call between its budget reservation and its answer."""

    seen: Seen
    send: list[keys.CanonicalRequest]  # the items the transport is asked for
    budgets: tuple[Budget, ...]
    reserved: Decimal


def look(ctx: Context, call: Call) -> Seen:
    """Plan, sample slot, lookup, and the policy's decision for each item."""
    r = call.request
    temperature, n = call.endpoint.sampling(r)
    p = plan(call.options, temperature=temperature, n=n)
    slot = 0
    if p.use_slots and call.endpoint.sampled and len(call.items) == 1:
        # The k-th identical request in the run gets slot k.
        slot = process.state.slots.take(current_scope().run, call.namespace, r.request_hash)
    stored = _lookup(ctx, call, slot) if p.read else {}
    now, max_age = _now(), call.options.max_age
    if len(call.items) == 1:  # chat, one embedding: the hot path, without the loop
        st = stored.get(0)
        d = decide(p, None if st is None else st.stored_at, now, max_age)
        hit = d.action is Action.SERVE
        decisions, hits, missing = [d], ({0: st} if hit else {}), ([] if hit else [0])
        offline = d.action is Action.MISS_ERROR
    else:
        decisions, hits, missing = [], {}, []
        for i in range(len(call.items)):
            st = stored.get(i)
            d = decide(p, None if st is None else st.stored_at, now, max_age)
            decisions.append(d)
            if d.action is Action.SERVE:
                hits[i] = st  # type: ignore[assignment]  # SERVE means there is one
            else:
                missing.append(i)
        offline = any(decisions[i].action is Action.MISS_ERROR for i in missing)
    return Seen(  # a SERVE decision always has its stored answer: hits holds no None
        _base_record(ctx, call, slot, now),
        decisions,
        hits,  # type: ignore[arg-type]
        missing,
        p.read,
        offline,
    )


def before_attempts(ctx: Context, call: Call, seen: Seen) -> Pending:
    """Refusal or go: hold the worst case against every budget (a refusal is written, then
    BudgetExceededError raised)."""
    rec = seen.rec
    items = call.items
    send = list(items) if len(seen.missing) == len(items) else [items[i] for i in seen.missing]
    rec.cache_status = "miss" if seen.read else "bypass"
    _note_hits(rec, seen.hits)
    if ctx.records():
        # Earlier paid answers held in memory only (a full disk): refuse before paying again.
        ctx.ledger().check_writable()
    budgets = current_scope().budgets
    reserved = _reserve(ctx, call, rec, budgets, send) if budgets else Decimal(0)
    # The SDK client exists: the request goes out now. (The settings are read only then.)
    if not pricing.load_started() and ctx.endpoint_host() is not None:
        pricing.load_in_background(call.request.model, ctx.pricing_config())
    return Pending(seen, send, budgets, reserved)


def after_attempts(
    ctx: Context, call: Call, pending: Pending, outcome: api.Outcome, latency_ms: float
) -> Result | None:
    """Error or miss, once the attempts are over. ``latency_ms``: the attempts' time only."""
    r, seen, rec = call.request, pending.seen, pending.seen.rec
    rec.latency_ms = latency_ms
    rec.attempts = outcome.attempts
    rec.endpoint_host = ctx.endpoint_host()

    # Error: the attempts ran out (or the error is not worth retrying).
    if outcome.error is not None:
        settle(pending.budgets, pending.reserved, Decimal(0))
        _fail(ctx, call, rec, outcome.error, outcome.attempts)
        return None

    # Stream: the answer is still arriving; it is recorded when the stream ends.
    if isinstance(outcome.value, Deferred):
        started = time.perf_counter() - latency_ms / 1000
        outcome.value.bind(functools.partial(_streamed, ctx, call, pending, started))
        return Result([outcome.value], rec.cache_status, rec)

    # Miss: the API answered. From here on the answer is paid for: whatever goes wrong,
    # it is recorded or spooled (record_or_spool), never dropped.
    try:
        answered = _answered(ctx, call, rec, outcome.value, pending.send, seen)
    except ShortAnswer as exc:  # paid, but unusable: kept on the error row, never cached
        settle(pending.budgets, pending.reserved, rec.cost_usd)
        err = APICallError(
            f"the API's answer is incomplete: {exc}; check the server (an OpenAI-compatible "
            "proxy or mock may drop items)",
            attempts=outcome.attempts,
            error_type="ShortAnswer",
        )
        _fail(ctx, call, rec, err, outcome.attempts, error_type="ShortAnswer")
        return None
    settle(pending.budgets, pending.reserved, rec.cost_usd)
    winners = _write(ctx, rec)
    # Another process stored an item first: everyone gets that answer.
    if len(call.items) == 1:
        responses = [winners[0].response if winners else answered[0]]
    else:
        responses = [None] * len(call.items)
        for i, st in seen.hits.items():
            responses[i] = st.response
        for j, i in enumerate(seen.missing):
            responses[i] = winners[j].response if j in winners else answered[j]
    if info_enabled():
        log.info(
            "llm.call",
            slot=rec.slot,
            items=len(call.items),
            items_hit=len(seen.hits),
            attempts=outcome.attempts,
            latency_ms=rec.latency_ms,
            prompt_tokens=rec.usage.prompt_tokens,
            completion_tokens=rec.usage.completion_tokens,
            cost_usd=str(rec.cost_usd) if rec.cost_usd is not None else None,
            request_hash=r.request_hash,
            model=r.model,
        )
    return Result(responses, rec.cache_status, rec)


class Deferred:
    """A transport's answer still arriving (a stream, llm_ledger.sdk.streams).

    Instead of recording it, the pipeline binds ``finish``; the entry calls it once, when
    the stream ends: ``finish(answer or None, status, chunks, first_chunk_at, error)``.
    """

    finish: Callable[..., None] | None = None

    def bind(self, finish: Callable[..., None]) -> None:
        self.finish = finish


def _streamed(
    ctx: Context,
    call: Call,
    pending: Pending,
    started: float,
    value: dict[str, Any] | None,
    status: str,
    chunks: int,
    first_chunk_at: float | None,
    error: BaseException | None,
) -> None:
    """A stream ended (complete, abandoned or error): record what arrived, paid for either
    way. Only a complete stream becomes a cache entry."""
    seen, rec = pending.seen, pending.seen.rec
    rec.stream_status, rec.chunks = status, chunks
    if first_chunk_at is not None:
        rec.first_chunk_ms = round((first_chunk_at - started) * 1000, 3)
    rec.latency_ms = _ms(started)
    if value is not None:
        if status != "complete":
            seen = replace(
                seen, decisions=[replace(d, store=StoreMode.NONE) for d in seen.decisions]
            )
        try:
            _answered(ctx, call, rec, value, pending.send, seen)
        except ShortAnswer:
            pass  # kept on the row, never cached
    else:  # nothing arrived, but the request was sent: its prompt is billed
        _price_prompt_only(ctx, call, rec, pending.send)
    settle(pending.budgets, pending.reserved, rec.cost_usd)
    if error is not None:
        rec.status = "error"
        rec.error_type = type(error).__name__
        rec.error_message = api.scrub(str(error), ctx.api_key())[:2000]
    _write(ctx, rec)
    log.info(
        "llm.stream_end",
        status=status,
        chunks=chunks,
        first_chunk_ms=rec.first_chunk_ms,
        latency_ms=rec.latency_ms,
        request_hash=call.request.request_hash,
        model=call.request.model,
    )


def _price_prompt_only(
    ctx: Context, call: Call, rec: CallRecord, send: list[keys.CanonicalRequest]
) -> None:
    """A stream that ended before its first event: the prompt's estimated tokens and cost."""

    def usage() -> Usage:
        prompt = call.endpoint.prompt_tokens(ctx, call.request, send)
        return Usage(prompt, 0, None, None, prompt, estimated=True)

    _price(rec, call.request.model, {}, usage, ctx.pricing_config())


def _price(
    rec: CallRecord,
    model: str,
    response: Any,
    usage_of: Callable[[], Usage],
    conf: pricing.PricingConfig | None,
) -> tuple[Usage, pricing.Cost]:
    """Put ``response``'s usage and cost on the record, and return them. Pricing never
    fails the call: an unexpected error there leaves the cost unknown, with the reason in
    ``cost_note``."""
    try:
        usage = usage_of()
        cost = pricing.price_answer(model, response, usage, conf)
    except Exception as exc:  # noqa: BLE001 -- the answer is paid: keep it, say why unpriced
        usage = Usage()
        note = f"not priced: {type(exc).__name__}: {exc}"[:500]
        cost = pricing.Cost(None, note, pricing.price_version(), None)
    rec.usage = usage
    rec.cost_usd, rec.cost_note, rec.price_version = cost.cost_usd, cost.note, cost.price_version
    return usage, cost


def _lookup(ctx: Context, call: Call, slot: int) -> dict[int, Stored]:
    """Stored answers by item index; a read failure is a miss, never a crash."""
    try:
        if len(call.items) == 1:
            st = ctx.lookup(call.namespace, call.items[0].request_hash, slot)
            return {} if st is None else {0: st}
        found = ctx.ledger().lookup_many(call.namespace, [i.request_hash for i in call.items])
    except Exception as exc:
        if not isinstance(exc, ctx.ledger().errors):
            raise  # e.g. the ledger cannot be opened: that is the caller's to see
        log.error(
            "ledger.read_failed",
            request_hash=call.request.request_hash,
            error=str(getattr(exc, "orig", exc))[:300],
        )
        return {}
    return {
        i: found[it.request_hash] for i, it in enumerate(call.items) if it.request_hash in found
    }


def serve(
    ctx: Context, call: Call, rec: CallRecord, stored: dict[int, Stored], t0: float
) -> Result:
    """Hit: every item from the ledger; the row says what it saved."""
    rec.cache_status, rec.status, rec.attempts, rec.cost_usd = "hit", "ok", 0, Decimal(0)
    if call.streamed:
        rec.stream_status = "replayed"
    if len(stored) == 1:
        st = stored[0]
        rec.served_response_id, rec.saved_usd = st.response_id, st.cost_usd
        if rec.items_total is not None:
            rec.items_hit = 1
        rec.usage = Usage(
            st.prompt_tokens,
            st.completion_tokens,
            st.cached_tokens,
            st.reasoning_tokens,
            st.total_tokens,
        )
        responses = [st.response]
    else:
        _note_hits(rec, stored)
        rec.usage = _sum_usage(list(stored.values()))
        responses = [st.response for st in stored.values()]
    rec.latency_ms = _ms(t0)  # the ledger's time to serve it
    _write(ctx, rec, hit=True)
    if info_enabled():
        log.info(
            "llm.cache_hit",
            slot=rec.slot,
            items=len(call.items),
            latency_ms=rec.latency_ms,
            request_hash=call.request.request_hash,
            model=call.request.model,
        )
    return Result(responses, "hit", rec)


def replay_miss(ctx: Context, call: Call, seen: Seen, t0: float) -> None:
    """Replay mode and nothing stored: an error row, then CacheMissError."""
    rec = seen.rec
    _note_hits(rec, seen.hits)
    item = call.items[seen.missing[0]]
    err = CacheMissError(item.request_hash, call.request.model, item.last_message_text())
    rec.cache_status, rec.status = "miss", "error"
    rec.error_type, rec.error_message = "CacheMissError", str(err)
    rec.latency_ms = _ms(t0)
    _write(ctx, rec)
    log.warning(
        "llm.replay_miss",
        slot=rec.slot,
        request_hash=call.request.request_hash,
        model=call.request.model,
    )
    raise err


def _reserve(
    ctx: Context,
    call: Call,
    rec: CallRecord,
    budgets: tuple[Budget, ...],
    send: list[keys.CanonicalRequest],
) -> Decimal:
    """Hold the worst case against every budget; a refusal is written, then raised."""
    r = call.request
    prompt = call.endpoint.prompt_tokens(ctx, r, send)
    estimate = (
        None
        if prompt is None
        else pricing.worst_case_cost(
            r.model, prompt, call.endpoint.max_output(r), ctx.pricing_config()
        )
    )
    try:
        return reserve(budgets, r.model, estimate)
    except BudgetExceededError as exc:
        rec.status = "refused"
        rec.error_type, rec.error_message = "BudgetExceededError", str(exc)
        rec.cost_usd = Decimal(0)
        _write(ctx, rec)
        log.warning("llm.refused", request_hash=r.request_hash, model=r.model, reason=str(exc))
        raise


def _answered(
    ctx: Context,
    call: Call,
    rec: CallRecord,
    value: Any,
    send: list[keys.CanonicalRequest],
    seen: Seen,
) -> list[Any]:
    """Price the answer and put it on the record, one Answer per item sent.

    Returns, per item sent, what the caller gets (priced by :func:`_price`).
    """
    r = call.request
    response = api.to_dict(value)
    conf = ctx.pricing_config()
    usage, cost = _price(
        rec, r.model, response, lambda: call.endpoint.usage(ctx, r, response, send), conf
    )
    try:
        parts = call.endpoint.split(r, response, usage, send)
    except ShortAnswer:
        rec.answers.append(_answer(call, r.request_hash, rec.request, response, usage, cost))
        rec.primary_answer = 0
        raise
    if len(call.items) == 1 and call.items[0].request_hash == r.request_hash:
        # The whole answer is the one item's, its request the row's (a chat call, a str
        # embedding input). A one-str list is an item of its own: its entry is the str's.
        store = seen.decisions[0].store
        slot = rec.slot or 0
        rec.answers.append(
            _answer(call, r.request_hash, rec.request, response, usage, cost, store, slot)
        )
        rec.primary_answer = 0
        return [value]  # the transport's own object: the entry returns the type it got
    redact = ctx.redact()
    for j, (item_response, item_usage) in enumerate(parts):
        item = send[j]
        item_cost = (
            cost
            if len(parts) == 1
            else pricing.price_answer(r.model, item_response, item_usage, conf)
        )
        body = item.body if redact is None else redact(copy.deepcopy(item.body))
        store = seen.decisions[seen.missing[j]].store
        rec.answers.append(
            _answer(call, item.request_hash, body, item_response, item_usage, item_cost, store)
        )
    return [a.response for a in rec.answers]


def _fail(
    ctx: Context,
    call: Call,
    rec: CallRecord,
    error: BaseException,
    attempts: int,
    error_type: str | None = None,
) -> None:
    """Error: the row says why and after how many attempts; raise or return None."""
    key = ctx.api_key()
    rec.status = "error"
    rec.error_type = error_type or type(error).__name__
    rec.error_message = api.scrub(str(error), key)[:2000]
    _write(ctx, rec)
    if call.raise_errors:
        raise api.typed_error(error, attempts, key)
    return None


def _write(ctx: Context, rec: CallRecord, *, hit: bool = False) -> dict[int, Stored]:
    """The audit row (and answers) into the ledger: journaled and written behind the call
    (``writes="journal"``, store/writebehind.py), else committed now. Returns the entries
    another process stored first (only a committed write can tell)."""
    if not ctx.records():
        return {}
    ledger = ctx.ledger()
    s = ctx.settings()
    if s.writes == "journal" or (hit and s.hit_audit == "background"):
        if ledger.record_later(rec):
            return {}
    return ledger.record_or_spool(rec)


# --- small pieces ----------------------------------------------------------------------


def _answer(
    call: Call,
    request_hash: str,
    body: dict[str, Any],
    response: dict[str, Any],
    usage: Usage,
    cost: pricing.Cost,
    store: StoreMode = StoreMode.NONE,
    slot: int = 0,
) -> Answer:
    return Answer(
        request_hash=request_hash,
        kind=call.request.kind,
        model=call.request.model,
        request=body,
        response=response,
        usage=usage,
        cost_usd=cost.cost_usd,
        cost_note=cost.note,
        price_version=cost.price_version,
        store=store,
        namespace=call.namespace,
        slot=slot,
    )


def _base_record(ctx: Context, call: Call, slot: int, now: datetime) -> CallRecord:
    sc = current_scope()
    request = call.request
    body: dict[str, Any] = request.body
    text: str | None = request.canonical_json
    redact = ctx.redact()
    if redact is not None:
        body, text = redact(copy.deepcopy(body)), None  # it may edit in place
    return CallRecord(
        call_uuid=_uuid7(),
        created_at=now,
        kind=request.kind,
        api_type=ctx.api_type,
        endpoint_host=ctx.endpoint_host(),
        model=request.model,
        namespace=call.namespace,
        request_hash=request.request_hash,
        request=body,
        request_text=text,
        library_version=__version__,
        run=sc.run,
        template=sc.template,
        tags=dict(sc.tags) or None,
        slot=slot,
        cache_status="miss",
        status="ok",
        items_total=len(call.items) if call.endpoint.batched else None,
        stream_status="failed" if call.streamed else None,  # until the stream opens
    )


def _note_hits(rec: CallRecord, stored: dict[int, Stored]) -> None:
    """Items served from the ledger in a multi-item call, and what they saved."""
    if rec.items_total is not None:
        rec.items_hit = len(stored)
    if len(stored) == 1:
        for st in stored.values():
            rec.saved_usd = st.cost_usd
    elif stored:
        rec.saved_usd = sum((st.cost_usd for st in stored.values() if st.cost_usd), Decimal(0))
    else:
        rec.saved_usd = None


def _sum_usage(stored: list[Stored]) -> Usage:
    """The served answers' own token counts, as their miss rows recorded them."""
    if len(stored) == 1:
        s = stored[0]
        return Usage(
            s.prompt_tokens,
            s.completion_tokens,
            s.cached_tokens,
            s.reasoning_tokens,
            s.total_tokens,
        )
    return Usage(
        _sum([s.prompt_tokens for s in stored]),
        _sum([s.completion_tokens for s in stored]),
        _sum([s.cached_tokens for s in stored]),
        _sum([s.reasoning_tokens for s in stored]),
        _sum([s.total_tokens for s in stored]),
    )


def _sum(values: list[int | None]) -> int | None:
    if any(v is None for v in values):
        return None
    return sum(v for v in values if v is not None)


def _uuid7() -> str:
    """A call's id: an RFC 9562 version-7 UUID as text (48-bit Unix time in milliseconds,
    then 74 random bits from ``os.urandom``, so a forked child never repeats its parent's).

    Time-ordered, so a new audit row's ``call_uuid`` goes at the end of its unique index
    rather than on a random page of it: in a 300,000-call ledger an audit row's insert took
    ~80 µs instead of ~115 with version 4 (migration 0009). Built as text, without the
    ``uuid.UUID`` object (``uuid.uuid7`` exists only from Python 3.14).
    """
    h = f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"
    return f"{h[:8]}-{h[8:12]}-7{h[13:16]}-{_VARIANT[int(h[16], 16) & 3]}{h[17:20]}-{h[20:32]}"


_VARIANT = "89ab"


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 3)


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def positive(name: str, value: Any) -> float:
    """A number setting checked before anything is sent (timeout, retry values)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInputTypeError(f"{name} must be a number, got {type(value).__name__}")
    if value < 0 or (name == "max_attempts" and value < 1):
        raise InvalidInputError(f"{name}={value!r} is out of range")
    return value


__all__ = [
    "CHAT",
    "Call",
    "Context",
    "Deferred",
    "Endpoint",
    "Pending",
    "Result",
    "Retry",
    "Seen",
    "ShortAnswer",
    "after_attempts",
    "before_attempts",
    "look",
    "replay_miss",
    "run",
    "serve",
]
