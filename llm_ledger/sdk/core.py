"""The drop-in clients' one job: turn an SDK request into a pipeline call, and the pipeline's
answer back into the HTTP response the SDK expects.

Everything the ledger decides (hash, modes, slots, namespaces, max_age, single-flight,
scope, budgets, costs, retries, spool, the audit row, per-item embeddings) happens in
``calls.run``, the pipeline the seed's ``send_message`` uses too. This module only:

- canonicalises the JSON body the SDK built (keys.sdk_chat_request, keys.responses_request,
  keys.sdk_embedding_request) and picks the endpoint (chat, Responses, embeddings);
- gives the pipeline a transport that sends that request once through the SDK's own HTTP
  client and raises the SDK's own exception on an error status;
- writes the answer back as the API would have: JSON, or server-sent events (live, recorded
  as they pass; or replayed from the ledger).

Errors: the SDK's exceptions reach the caller unchanged (``openai.RateLimitError`` after
the ledger's retries, ...); ``CacheMissError`` (replay), ``BudgetExceededError`` and bad
input (``InvalidInputError``) are the ledger's, raised before anything is sent.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx2
import openai
from openai._httpx2 import request_exceptions, timeout_exceptions

from .. import calls, keys
from ..embeddings import EMBEDDING, items_of, texts
from ..errors import LedgerError
from . import wire
from .endpoints import RESPONSES
from .streams import AsyncLiveStream, LiveStream, ReplayStream, _Tee

if TYPE_CHECKING:
    from ..clients import OpenAIClient

CACHE_HEADER = "x-llm-ledger-cache"  # hit | miss | bypass, on every answer the ledger gives
# The API's headers a miss passes on, but these: the ledger writes the body anew.
BODY_HEADERS = {"content-length", "content-encoding", "content-type", "transfer-encoding"}
Send = Callable[[httpx2.Request, bool], httpx2.Response]
ASend = Callable[[httpx2.Request, bool], Awaitable[httpx2.Response]]


@dataclass
class Prepared:
    """One SDK request as a pipeline call."""

    route: str
    body: dict[str, Any]
    call: calls.Call
    stream: bool
    include_usage: bool  # the caller asked for the usage chunk (chat streams)
    upstream: httpx2.Response | None = None  # the API's last answer (its headers on a miss)


class Core:
    """The ledger side of one drop-in client: a seed client holds its options and context."""

    def __init__(self, seed: OpenAIClient) -> None:
        self.seed = seed

    # --- request -> call ------------------------------------------------------------

    def prepare(self, route: str, request: httpx2.Request) -> Prepared:
        try:
            body = json.loads(request.content or b"null")
        except ValueError:
            body = None
        seed = self.seed
        stream = isinstance(body, dict) and bool(body.get("stream"))
        items: list[keys.CanonicalRequest] = []
        if route == "chat":
            req: keys.CanonicalRequest = keys.sdk_chat_request(body)
            endpoint: calls.Endpoint = calls.CHAT
        elif route == "responses":
            req, endpoint = keys.responses_request(body), RESPONSES
        else:
            req, endpoint = keys.sdk_embedding_request(body), EMBEDDING
            items = items_of(req, dict(req.params))
        call = calls.Call(
            endpoint=endpoint,
            request=req,
            items=items or (req,),
            options=seed._options(mode=None, no_cache=False, no_store=False),
            namespace=seed._namespace(None),
            raise_errors=True,
            retry=calls.Retry.resolve(seed._settings()),
            streamed=stream,
        )
        options = body.get("stream_options") if isinstance(body, dict) else None
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        return Prepared(route, body, call, stream, include_usage)

    def outgoing(self, p: Prepared, request: httpx2.Request, items: list[Any]) -> httpx2.Request:
        """The request one attempt sends: the caller's own, except that embeddings ask for the
        missing items only (as floats), and a chat stream asks for its usage."""
        if p.route == "embedding":
            inputs = texts(items)
            body = {**p.body, "input": inputs[0] if isinstance(p.body["input"], str) else inputs}
            body["encoding_format"] = "float"
        elif p.route == "chat" and p.stream and not p.include_usage:
            body = {**p.body, "stream_options": {**(p.body.get("stream_options") or {})}}
            body["stream_options"]["include_usage"] = True
        else:
            return request
        headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
        return httpx2.Request(
            request.method,
            request.url,
            headers=headers,
            content=json.dumps(body).encode(),
            extensions=request.extensions,
        )

    # --- one attempt --------------------------------------------------------------------

    def check(self, client: Any, request: httpx2.Request, response: httpx2.Response) -> None:
        """An error status becomes the SDK's own exception (the pipeline classifies it)."""
        if response.status_code >= 400:
            response.read()
            raise client._make_status_error_from_response(response)

    @staticmethod
    def connection_error(request: httpx2.Request, exc: BaseException) -> openai.OpenAIError:
        if isinstance(exc, timeout_exceptions()):
            return openai.APITimeoutError(request=request)
        return openai.APIConnectionError(request=request)

    def answer(self, p: Prepared, request: httpx2.Request, response: httpx2.Response) -> Any:
        """What the transport hands the pipeline: the JSON, or a stream still arriving."""
        if p.stream and p.route != "embedding":
            n = p.call.request.params.get("n") if p.route == "chat" else None
            return _Tee(p.route, p.include_usage, response, choices=n or 1)
        body = response.json()  # broken JSON: json.JSONDecodeError, as the SDK raises it
        reason = wire.malformed(p.route, body)
        if reason is not None:  # the SDK's own exception for a body that is not its type
            raise openai.APIResponseValidationError(
                response, body, message=f"the API's 200 answer is not a {p.route} answer: {reason}"
            )
        return body

    # --- call -> response -----------------------------------------------------------------

    def respond(
        self, p: Prepared, request: httpx2.Request, result: calls.Result, live: Callable[..., Any]
    ) -> httpx2.Response:
        """The HTTP response the SDK reads, from what the pipeline returned. A miss carries
        the API's headers (``x-request-id``: the SDK's ``_request_id``); a hit only ours."""
        headers: dict[str, str] = {}
        if p.upstream is not None and result.cache_status != "hit":
            for name, value in p.upstream.headers.multi_items():
                if name.lower() not in BODY_HEADERS:
                    headers[name] = value
        headers[CACHE_HEADER] = result.cache_status
        if p.route == "embedding":
            vectors = [wire.decode_vector(r["data"][0]["embedding"]) for r in result.responses]
            tokens = [(r.get("usage") or {}).get("prompt_tokens") for r in result.responses]
            counted = sum(t for t in tokens if t is not None)
            answer = wire.embedding_answer(
                vectors, p.call.request.model, counted, p.body.get("encoding_format")
            )
            return httpx2.Response(200, headers=headers, json=answer, request=request)
        value = result.responses[0]
        if isinstance(value, _Tee):  # a streamed miss, passing through as it arrives
            headers["content-type"] = "text/event-stream"
            return httpx2.Response(200, headers=headers, stream=live(value), request=request)
        if p.stream:
            events = wire.events_for(p.route, value, p.include_usage)
            headers["content-type"] = "text/event-stream"
            body = ReplayStream(wire.encode_events(p.route, events))
            return httpx2.Response(200, headers=headers, stream=body, request=request)
        return httpx2.Response(200, headers=headers, json=wire.plain(value), request=request)

    # --- sync ------------------------------------------------------------------------------

    def handle(
        self, client: Any, route: str, request: httpx2.Request, send: Send
    ) -> httpx2.Response:
        p = self.prepare(route, request)

        def transport(items: list[Any]) -> Any:
            out = self.outgoing(p, request, items)
            try:
                response = send(out, p.stream)
            except (*request_exceptions(), *timeout_exceptions()) as exc:
                raise self.connection_error(out, exc) from exc
            self.check(client, out, response)
            p.upstream = response
            return self.answer(p, out, response)

        result = _run(self.seed._context(), p.call, transport)
        return self.respond(p, request, result, lambda tee: LiveStream(tee.response, tee))

    # --- async -------------------------------------------------------------------------------

    async def ahandle(
        self, client: Any, route: str, request: httpx2.Request, send: ASend
    ) -> httpx2.Response:
        """The async path: the pipeline runs in the ledger's small thread pool (its ledger
        work is blocking database I/O); the network I/O stays on the event loop."""
        p = self.prepare(route, request)
        loop = asyncio.get_running_loop()

        async def attempt(items: list[Any]) -> Any:
            out = self.outgoing(p, request, items)
            try:
                response = await send(out, p.stream)
            except (*request_exceptions(), *timeout_exceptions()) as exc:
                raise self.connection_error(out, exc) from exc
            if response.status_code >= 400:
                await response.aread()
            self.check(client, out, response)
            p.upstream = response
            if p.stream and p.route != "embedding":
                return self.answer(p, out, response)
            await response.aread()
            return self.answer(p, out, response)

        def transport(items: list[Any]) -> Any:  # in a pool thread: the loop does the I/O
            return asyncio.run_coroutine_threadsafe(attempt(items), loop).result()

        result = await in_pool(_run, self.seed._context(), p.call, transport)
        return self.respond(
            p, request, result, lambda tee: AsyncLiveStream(tee.response, tee, in_pool)
        )


def _run(ctx: calls.Context, call: calls.Call, transport: calls.Transport) -> calls.Result:
    """The pipeline, with the SDK's exception (not the ledger's wrapper) for API failures."""
    try:
        result = calls.run(ctx, call, transport)
    except LedgerError as exc:
        sdk_error = getattr(exc, "sdk_error", None)
        if isinstance(sdk_error, (openai.OpenAIError, json.JSONDecodeError)):
            raise sdk_error from None
        raise
    assert result is not None  # raise_errors=True: a failure raised above
    return result


# --- the async path's thread pool -----------------------------------------------------------

# Why a pool and not an asyncio database driver: the ledger's reads and writes are the
# repository's synchronous SQL (one implementation for three engines, the spool, the hot
# SQLite connections); aiosqlite would itself run every statement on a thread. One hop per
# call into a few long-lived threads measured cheaper (docs/sdk.md, benchmarks/sdk.py).
POOL_SIZE = 8
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _get_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(POOL_SIZE, thread_name_prefix="llm-ledger-async")
        return _pool


async def in_pool(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in the ledger's pool, in a copy of the caller's context (scope, run,
    tags and budgets follow the call across ``await`` and ``asyncio.gather``)."""
    ctx = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(_get_pool(), ctx.run, fn, *args)
