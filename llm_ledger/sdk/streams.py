"""Streamed answers as HTTP bodies the SDK reads: a live one (recorded as it passes) and a
replayed one (stored events, served again).

A live stream hands each event to the caller as it arrives (nothing is buffered before the
first chunk) and keeps a copy; when the stream ends it tells the pipeline what arrived and
how it ended, so the answer is recorded then:

- ``complete``: the API finished (chat ``[DONE]``, ``response.completed``): a cache entry;
- ``abandoned``: the caller closed it (or dropped it, read or not) first: stored, never a
  cache entry;
- ``error``: the connection failed mid-stream, or the API sent an error event: stored,
  never a cache entry, and the error reaches the caller as the SDK raises it.

When is it recorded: at the API's final event (``[DONE]``, ``response.completed``), before
that event reaches the caller. Once every chat choice has its finish reason the answer is
whole, so the stream reads on to ``[DONE]`` (the usage chunk comes between) before handing
the caller the last finish chunk: a caller who stops there, and is then killed, has its
answer in the ledger (docs/reliability.md, "Streams").
"""

from __future__ import annotations

import asyncio
import atexit
import json
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx2
import openai

from ..calls import Deferred
from ..log import logger as log
from . import wire


class _Tee(Deferred):
    """What a live stream has seen: events, the first chunk's time, whether it completed.

    The transport hands it to the pipeline, which binds ``finish`` (calls.Deferred).
    """

    def __init__(
        self, route: str, include_usage: bool, response: httpx2.Response, choices: int = 1
    ) -> None:
        self.route = route
        self.include_usage = include_usage
        self.response = response
        self.choices = choices  # chat: how many choices end with a finish reason (``n``)
        self.finished: set[int] = set()  # chat: the choices whose finish reason has come
        self.parser = wire.SSEParser()
        self.events: list[dict[str, Any]] = []
        self.done = False
        self.failure: openai.APIError | None = None  # an error event: the SDK raises this
        self.first_chunk_at: float | None = None  # time.perf_counter() at the first event
        self._finished = False
        self._lock = threading.Lock()

    def feed(self, data: bytes) -> list[bytes]:
        """Upstream bytes in, the bytes the caller gets out (event by event)."""
        out = []
        for name, text in self.parser.feed(data):
            if text.strip() == "[DONE]":
                self.done = True
                out.append(b"data: [DONE]\n\n")
                continue
            try:
                event = json.loads(text)
            except ValueError:
                continue  # a keep-alive or comment: nothing the SDK would parse either
            if self.first_chunk_at is None:
                self.first_chunk_at = time.perf_counter()
            if isinstance(event, dict) and event.get("error"):
                # The SDK raises APIError on it: the call failed, whatever came before.
                self.failure = _api_error(self.response.request, event["error"])
            else:
                self.events.append(event)
            if self.route == "responses":
                if event.get("type") in ("response.completed", "response.incomplete"):
                    self.done = True
                out.append(f"event: {name or event.get('type')}\ndata: {text}\n\n".encode())
                continue
            for c in event.get("choices") or []:
                if isinstance(c, dict) and c.get("finish_reason") is not None:
                    self.finished.add(c.get("index", 0))
            if self.include_usage or self.failure is not None:
                out.append(f"data: {text}\n\n".encode())
            else:  # the ledger asked for usage; the caller did not: hide it
                shown = wire.hide_usage([event])
                if shown:
                    out.append(f"data: {json.dumps(shown[0])}\n\n".encode())
        return out

    @property
    def over(self) -> bool:
        """The API's final event came, or an error event: nothing more is due."""
        return self.done or self.failure is not None

    @property
    def answered(self) -> bool:
        """Every chat choice has its finish reason: only usage and ``[DONE]`` are still due."""
        return self.route == "chat" and len(self.finished) >= self.choices

    def answer(self) -> dict[str, Any] | None:
        if not self.events:
            return None
        if self.route == "responses":
            assembled = wire.assemble_response(self.events)
        else:
            assembled = wire.assemble_chat(self.events)
        return wire.with_stream(assembled, self.events)

    def end(self, error: BaseException | None = None) -> None:
        """Record the stream once: complete, abandoned or error."""
        with self._lock:
            if self._finished:
                return
            self._finished = True
        _open.discard(self)
        error = error or self.failure
        if error is not None:
            status = "error"
        else:
            status = "complete" if self.done else "abandoned"
        if self.finish is None:
            log.error("ledger.stream_unbound", route=self.route, status=status)
            return
        self.finish(self.answer(), status, len(self.events), self.first_chunk_at, error)


class LiveStream(httpx2.SyncByteStream):
    """A streamed miss: the API's events pass through to the SDK and into the ledger."""

    def __init__(self, response: httpx2.Response, tee: _Tee) -> None:
        self.response = response
        self.tee = tee
        self._gen: Iterator[bytes] | None = None
        # Dropped without being read or closed: no generator ever ran, so nothing else
        # would record it (the SDK's Stream never closes its response on its own).
        weakref.finalize(self, _dropped, tee, response)
        _open.add(tee)

    def __iter__(self) -> Iterator[bytes]:
        # One pass over the upstream body, however many times it is iterated: the SDK reads
        # it, then drains "the rest" after [DONE] with a second loop.
        if self._gen is None:
            self._gen = self._pass()
        return self._gen

    def _pass(self) -> Iterator[bytes]:
        tee = self.tee
        try:
            upstream = self.response.iter_raw()
            for data in upstream:
                out = tee.feed(data)
                if tee.answered and not tee.done:
                    for more in upstream:  # the answer is whole: read on to [DONE]
                        out += tee.feed(more)
                        if tee.over:
                            break
                if tee.over:
                    tee.end()  # recorded before the caller sees the end
                yield from out
        except GeneratorExit:
            tee.end()
            raise
        except BaseException as exc:
            tee.end(exc)
            raise
        tee.end(None if tee.done else _Truncated())

    def close(self) -> None:
        self.tee.end()
        self.response.close()


# Live streams handed to a caller and not ended yet. A stream still held at interpreter exit
# is recorded as abandoned here: this hook is registered after the ledger's and the journal's
# (this module imports them first), so it runs before they close.
_open: set[_Tee] = set()


@atexit.register
def _end_at_exit() -> None:
    for tee in list(_open):
        tee.end()


def _dropped(tee: _Tee, response: httpx2.Response) -> None:
    """A live stream garbage-collected (or left at exit): abandoned unless it ended."""
    tee.end()
    response.close()


class AsyncLiveStream(httpx2.AsyncByteStream):
    """The async :class:`LiveStream`; the recording runs in the ledger's thread pool."""

    def __init__(self, response: httpx2.Response, tee: _Tee, run: Callable[..., Any]) -> None:
        self.response = response
        self.tee = tee
        self._run = run  # awaitable runner for the blocking ledger write
        self._gen: AsyncIterator[bytes] | None = None
        weakref.finalize(self, _adropped, tee, response)  # as for LiveStream
        _open.add(tee)

    def __aiter__(self) -> AsyncIterator[bytes]:
        if self._gen is None:  # one pass, as for LiveStream
            self._gen = self._pass()
        return self._gen

    async def _pass(self) -> AsyncIterator[bytes]:
        tee = self.tee
        try:
            upstream = self.response.aiter_raw()
            async for data in upstream:
                out = tee.feed(data)
                if tee.answered and not tee.done:
                    async for more in upstream:  # the answer is whole: read on to [DONE]
                        out += tee.feed(more)
                        if tee.over:
                            break
                if tee.over:
                    await self._run(tee.end)  # recorded before the caller sees the end
                for event in out:
                    yield event
        except BaseException as exc:
            if not isinstance(exc, GeneratorExit):
                await self._run(tee.end, exc)
            else:
                tee.end()
            raise
        await self._run(tee.end, None if tee.done else _Truncated())

    async def aclose(self) -> None:
        await self._run(self.tee.end)
        await self.response.aclose()


def _adropped(tee: _Tee, response: httpx2.Response) -> None:
    """An async live stream garbage-collected: recorded here (a journal append with the
    default ``writes``); its connection is closed on the loop if one is running."""
    tee.end()
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return  # no loop here: the connection goes with the response
    if not loop.is_closed():
        loop.create_task(response.aclose())


def _api_error(request: httpx2.Request, error: Any) -> openai.APIError:
    """The exception the SDK raises for an error event in a stream (openai._streaming)."""
    message = error.get("message") if isinstance(error, dict) else None
    if not message or not isinstance(message, str):
        message = "An error occurred during streaming"
    return openai.APIError(message, request=request, body=error)


class _Truncated(Exception):
    """The API's stream ended without its final event."""

    def __str__(self) -> str:
        return "the stream ended before its final event"


class ReplayStream(httpx2.SyncByteStream, httpx2.AsyncByteStream):
    """A stored event sequence served again, for sync and async SDK clients alike."""

    def __init__(self, events: list[bytes]) -> None:
        self.events = events

    def __iter__(self) -> Iterator[bytes]:
        yield from self.events

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for event in self.events:
            yield event

    def close(self) -> None:
        pass

    async def aclose(self) -> None:
        pass
