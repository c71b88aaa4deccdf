"""Streamed answers as HTTP bodies the SDK reads: a live one (recorded as it passes) and a
replayed one (stored events, served again).

A live stream hands each event to the caller as it arrives (nothing is buffered before the
first chunk) and keeps a copy; when the stream ends it tells the pipeline what arrived and
how it ended, so the answer is recorded then:

- ``complete``: the API finished (chat ``[DONE]``, ``response.completed``): a cache entry;
- ``abandoned``: the caller closed it (or dropped it) first: stored, never a cache entry;
- ``error``: the connection failed mid-stream: stored, never a cache entry, and the error
  reaches the caller as the SDK raises it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx2

from ..calls import Deferred
from ..log import logger as log
from . import wire


class _Tee(Deferred):
    """What a live stream has seen: events, the first chunk's time, whether it completed.

    The transport hands it to the pipeline, which binds ``finish`` (calls.Deferred).
    """

    def __init__(self, route: str, include_usage: bool, response: httpx2.Response) -> None:
        self.route = route
        self.include_usage = include_usage
        self.response = response
        self.parser = wire.SSEParser()
        self.events: list[dict[str, Any]] = []
        self.done = False
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
            self.events.append(event)
            if self.route == "responses":
                if event.get("type") in ("response.completed", "response.incomplete"):
                    self.done = True
                out.append(f"event: {name or event.get('type')}\ndata: {text}\n\n".encode())
            elif self.include_usage:
                out.append(f"data: {text}\n\n".encode())
            else:  # the ledger asked for usage; the caller did not: hide it
                shown = wire.hide_usage([event])
                if shown:
                    out.append(f"data: {json.dumps(shown[0])}\n\n".encode())
        return out

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

    def __iter__(self) -> Iterator[bytes]:
        # One pass over the upstream body, however many times it is iterated: the SDK reads
        # it, then drains "the rest" after [DONE] with a second loop.
        if self._gen is None:
            self._gen = self._pass()
        return self._gen

    def _pass(self) -> Iterator[bytes]:
        try:
            for data in self.response.iter_raw():
                yield from self.tee.feed(data)
        except GeneratorExit:
            self.tee.end()
            raise
        except BaseException as exc:
            self.tee.end(exc)
            raise
        self.tee.end(None if self.tee.done else _Truncated())

    def close(self) -> None:
        self.tee.end()
        self.response.close()


class AsyncLiveStream(httpx2.AsyncByteStream):
    """The async :class:`LiveStream`; the recording runs in the ledger's thread pool."""

    def __init__(self, response: httpx2.Response, tee: _Tee, run: Callable[..., Any]) -> None:
        self.response = response
        self.tee = tee
        self._run = run  # awaitable runner for the blocking ledger write
        self._gen: AsyncIterator[bytes] | None = None

    def __aiter__(self) -> AsyncIterator[bytes]:
        if self._gen is None:  # one pass, as for LiveStream
            self._gen = self._pass()
        return self._gen

    async def _pass(self) -> AsyncIterator[bytes]:
        try:
            async for data in self.response.aiter_raw():
                for out in self.tee.feed(data):
                    yield out
        except BaseException as exc:
            if not isinstance(exc, GeneratorExit):
                await self._run(self.tee.end, exc)
            else:
                self.tee.end()
            raise
        await self._run(self.tee.end, None if self.tee.done else _Truncated())

    async def aclose(self) -> None:
        await self._run(self.tee.end)
        await self.response.aclose()


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
