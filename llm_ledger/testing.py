"""A local, deterministic OpenAI-compatible HTTP server for tests.

Why: code built on the ``openai`` SDK is best tested through the real SDK (its retries, error
classes, base64 decoding, Azure URL rewriting), not by mocking it.  This server speaks enough
of the OpenAI and Azure OpenAI wire protocol for that, uses only the standard library, runs on
127.0.0.1 in its own daemon thread, and can inject faults (HTTP errors, delays, dropped
connections).

    with FakeOpenAIServer() as server:
        client = OpenAI(api_key="test-key", base_url=server.url, max_retries=0)
        client.chat.completions.create(model="gpt-4o-mini", messages=[...])

Endpoints: ``POST /v1/chat/completions``, ``POST /v1/embeddings``, ``POST /v1/responses``,
``GET /v1/models`` and the Azure forms ``POST /openai/deployments/{deployment}/chat/completions|embeddings``
(the model is the deployment name there) and ``POST /openai/responses``.  Anything else is a 404 in the OpenAI error format.  Invalid
requests (missing/empty ``model``; ``messages`` not a non-empty list of objects with a string
``role``; embedding ``input`` not a string or non-empty list of strings) get a 400.

Deterministic answers (tests rely on them):

* Chat content is ``f"answer {k} to: {last}"``: ``last`` is the last message's content (text
  parts of a list content joined with a space) cut to 60 characters; ``k`` is 1 + the number of
  earlier successful answers to an identical body (canonical JSON without ``stream``/``user``).
  With ``n`` > 1, choice ``i`` (from 0) is ``f"answer {k}.{i} to: {last}"``.  Other fields:
  ``id`` ``chatcmpl-{N}`` (N = running chat answer number), ``created`` 1700000000,
  ``finish_reason`` "stop", ``system_fingerprint`` "fp_test", ``model`` echoed.
  ``stream: true`` is answered as server-sent events with the same content (one content chunk
  per choice, or one per ``stream_words`` words; a finish chunk per choice; a usage chunk if
  ``stream_options.include_usage``), written event by event (chunked transfer encoding).
  A ``response_format`` of type ``json_schema`` gets JSON fitting the schema instead, its
  strings being that text (``testkit_streams.json_for_schema``).
* Responses API (``/v1/responses``): one ``message`` output item whose ``output_text`` is
  ``f"answer {k} to: {last}"`` (``last``: ``input`` if a str, else the last input item's text),
  id ``resp_{N}``; usage ``input_tokens`` = words of ``instructions`` and of every input item
  (+3 each), ``output_tokens`` = words of the answer, with the same cached/reasoning details.
  ``stream: true`` gives the event sequence of the real API (``response.created`` ...
  ``response.output_text.delta`` ... ``response.completed``, with ``sequence_number``).
* Faults mid-stream: ``drop_next(after_chunks=k)`` sends k events of the next streamed answer
  and then cuts the connection; ``pause_next_stream(after_chunks=k)`` returns an event that
  holds the rest of the next streamed answer back until it is set;
  ``error_next_stream(after_chunks=k, message=...)`` sends k events, then an error event
  (``data: {"error": {"message": ..., "type": "server_error"}}``) and ends the stream.
* Malformed answers: ``reply_raw_next(payload)`` answers the next request with status 200,
  ``content-type: application/json`` and ``payload`` as it is (broken JSON, ``{}`` ...).
* Chat usage: ``prompt_tokens`` = sum over messages of (whitespace words in content + 3),
  ``completion_tokens`` = words in all choices' content, ``total_tokens`` = their sum, plus
  ``prompt_tokens_details.cached_tokens`` and ``completion_tokens_details.reasoning_tokens``
  (0 unless :meth:`FakeOpenAIServer.set_usage_details`); see also ``set_usage``/``omit_usage``.
  :meth:`FakeOpenAIServer.reply_with` fixes the content instead (JSON for a response_format).
* Embeddings: each input gets ``dimensions`` (or ``embedding_dim``) floats in [-1, 1], rounded
  to 6 decimals, from the byte stream ``d0 = sha256(f"{model}\\0{text}")``, ``d1 = sha256(d0)``,
  ... (4 bytes big-endian per float: ``u / (2**32 - 1) * 2 - 1``).  ``usage.prompt_tokens`` =
  ``total_tokens`` = whitespace words summed over inputs, at least 1 per input.
  ``encoding_format: "base64"`` gives base64 of little-endian float32 (what the SDK requests
  by default and decodes).

A successful answer still counts (counters, ``k``) when the client has given up on it, e.g.
after a client timeout during :meth:`FakeOpenAIServer.delay_next`.

Why one module of ~570 lines: the server, its fault queue and its HTTP handler share one
lock and one request record, and this docstring is the specification tests rely on. The
wire shapes of streamed answers and of the Responses API live in ``testkit_streams.py``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import struct
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from . import testkit_streams as streams

__all__ = ["FakeOpenAIServer", "RecordedRequest"]

CREATED = 1700000000
MODELS = ("gpt-4o-mini", "gpt-4o", "text-embedding-3-small")
_ROUTE = re.compile(
    r"^/(?:v1|openai/deployments/(?P<dep>[^/]+)|openai(?:/v1)?)"
    r"/(?P<op>chat/completions|embeddings|responses)$"
)
_ERROR_KINDS = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "not_found"),
    429: ("requests", "rate_limit_exceeded"),
}


@dataclass
class RecordedRequest:
    """One HTTP request as the server saw it; ``status`` 0 means no response was sent."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict | None
    status: int


class _BadRequest(Exception):
    """Validation failure, answered with a 400 like the real API."""


def _words(text: str) -> int:
    return len(text.split())


def _text(content: Any) -> str:
    if isinstance(content, list):
        parts = [
            p.get("text", "")
            for p in content
            if isinstance(p, dict) and p.get("type") in ("text", "input_text")
        ]
        return " ".join(str(p) for p in parts)
    return content if isinstance(content, str) else ""


def _vector(model: str, text: str, dim: int) -> list[float]:
    digest, stream = hashlib.sha256(f"{model}\0{text}".encode()).digest(), b""
    while len(stream) < 4 * dim:
        stream += digest
        digest = hashlib.sha256(digest).digest()
    ints = struct.unpack(f">{dim}I", stream[: 4 * dim])
    return [round(u / 0xFFFFFFFF * 2 - 1, 6) for u in ints]


def error_body(status: int, message: str | None = None) -> dict[str, Any]:
    """The OpenAI error envelope for ``status``."""
    kind, code = _ERROR_KINDS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None)
    )
    msg = message or f"Fake error {status} injected by FakeOpenAIServer"
    return {"error": {"message": msg, "type": kind, "param": None, "code": code}}


class FakeOpenAIServer:
    """OpenAI-compatible server on a local port; see the module docstring for its answers."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        embedding_dim: int = 8,
        stream_words: int | None = None,
    ) -> None:
        self._host, self._port, self.embedding_dim = host, port, embedding_dim
        self.stream_words = stream_words  # words per streamed content chunk; None: whole
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._conns: set[socket.socket] = set()
        self._clear()

    def _clear(self) -> None:
        # A request delayed across a reset belongs to what came before it: it is dropped
        # when its delay ends, not answered into the new counts (see the handler).
        self._generation = getattr(self, "_generation", 0) + 1
        self._request_count = self._chat_count = self._embedding_count = 0
        self._response_count = 0
        self._requests: list[RecordedRequest] = []
        self._pending: list[tuple[str, Any]] = []
        self._answers: dict[str, int] = {}
        self._cached = self._reasoning = 0
        self._forced: tuple[int | None, int | None] = (None, None)
        self._omit_usage = False
        self._reply: str | None = None

    def start(self) -> FakeOpenAIServer:
        """Bind and serve in a daemon thread; returns self so ``s = FakeOpenAIServer().start()``."""
        if self._httpd is not None:
            return self
        self._stopping.clear()
        httpd = _HTTPServer((self._host, self._port), _Handler)
        httpd.fake = self
        self._httpd = httpd
        # a short poll interval keeps stop() fast (shutdown() waits for one poll)
        serve = lambda: httpd.serve_forever(poll_interval=0.05)  # noqa: E731
        self._thread = threading.Thread(target=serve, name="FakeOpenAIServer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and cut open keep-alive connections so pooled clients don't linger."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``base_url`` for ``OpenAI()``."""
        return f"{self.azure_endpoint}/v1"

    @property
    def azure_endpoint(self) -> str:
        """``azure_endpoint`` for ``AzureOpenAI()``."""
        if self._httpd is None:
            raise RuntimeError("FakeOpenAIServer is not started")
        return f"http://{self._host}:{self._httpd.server_address[1]}"

    @property
    def request_count(self) -> int:
        with self._lock:
            return self._request_count

    @property
    def chat_count(self) -> int:
        with self._lock:
            return self._chat_count

    @property
    def embedding_count(self) -> int:
        with self._lock:
            return self._embedding_count

    @property
    def response_count(self) -> int:
        """Answers given by ``/responses``."""
        with self._lock:
            return self._response_count

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request in arrival order (a copy of the list)."""
        with self._lock:
            return list(self._requests)

    def reset(self) -> None:
        """Back to as-new: counters, history, queued faults, answer counters and usage settings."""
        with self._lock:
            self._clear()

    def fail_next(
        self,
        status: int,
        times: int = 1,
        *,
        retry_after: float | None = None,
        message: str | None = None,
    ) -> None:
        """Answer the next ``times`` requests with ``status`` and an OpenAI error body."""
        with self._lock:
            self._pending += [("fail", (status, retry_after, message))] * times

    def delay_next(self, seconds: float, times: int = 1) -> None:
        """Sleep before answering the next ``times`` requests (to provoke client timeouts)."""
        with self._lock:
            self._pending += [("delay", seconds)] * times

    def drop_next(self, times: int = 1, *, after_chunks: int | None = None) -> None:
        """Close the connection of the next ``times`` requests without any response; with
        ``after_chunks=k``, send the headers and the first k events of a streamed answer first
        (a request that is not streamed is then dropped before any response)."""
        with self._lock:
            self._pending += [("drop", after_chunks)] * times

    def pause_next_stream(self, after_chunks: int = 1) -> threading.Event:
        """Send the first ``after_chunks`` events of the next request's streamed answer, then
        wait until the returned event is set (or the server stops) before sending the rest."""
        gate = threading.Event()
        with self._lock:
            self._pending.append(("pause", (after_chunks, gate)))
        return gate

    def error_next_stream(self, after_chunks: int = 1, *, message: str = "overloaded") -> None:
        """Send the first ``after_chunks`` events of the next streamed answer, then an error
        event carrying ``message``, then end the stream (what the SDK raises ``APIError`` on)."""
        with self._lock:
            self._pending.append(("error_event", (after_chunks, message)))

    def reply_raw_next(self, payload: bytes, times: int = 1) -> None:
        """Answer the next ``times`` requests with status 200 and ``payload`` as the JSON body,
        unchecked (a broken proxy: truncated JSON, ``{}``, ``{"choices": null}``)."""
        with self._lock:
            self._pending += [("raw", payload)] * times

    def set_usage_details(self, *, cached_tokens: int = 0, reasoning_tokens: int = 0) -> None:
        """Report these cached/reasoning token counts on later chat answers."""
        with self._lock:
            self._cached, self._reasoning = cached_tokens, reasoning_tokens

    def set_usage(
        self, *, prompt_tokens: int | None = None, completion_tokens: int | None = None
    ) -> None:
        """Force usage numbers on later chat answers (``None`` = computed)."""
        with self._lock:
            self._forced = (prompt_tokens, completion_tokens)

    def reply_with(self, content: str | None) -> None:
        """Answer later chats with this content (e.g. JSON for a ``response_format``);
        ``None`` = the computed ``answer {k} to: ...``. Usage is counted on it as usual."""
        with self._lock:
            self._reply = content

    def omit_usage(self, flag: bool = True) -> None:
        """Leave ``usage`` out of later chat answers (some proxies do)."""
        with self._lock:
            self._omit_usage = flag

    def _arrive(self, record: RecordedRequest) -> tuple[int, tuple[str, Any] | None, int]:
        """Count and record a request; return its number, the queued fault it consumes and
        the counters' generation (:meth:`reset` starts a new one)."""
        with self._lock:
            self._request_count += 1
            self._requests.append(record)
            action = self._pending.pop(0) if self._pending else None
            return self._request_count, action, self._generation

    def _responded(self, record: RecordedRequest, status: int) -> None:
        with self._lock:
            record.status = status

    def _answer(self, method: str, path: str, body: dict | None) -> tuple[int, dict[str, Any]]:
        route = urlsplit(path).path.rstrip("/")
        if method == "GET" and route == "/v1/models":
            data = [
                {"id": m, "object": "model", "created": CREATED, "owned_by": "fake"} for m in MODELS
            ]
            return 200, {"object": "list", "data": data}
        match = _ROUTE.match(route)
        if method != "POST" or match is None:
            return 404, error_body(404, f"Invalid URL ({method} {route})")
        try:
            if not isinstance(body, dict):
                raise _BadRequest("The request body must be a JSON object.")
            model = match["dep"] or body.get("model")
            if not isinstance(model, str) or not model:
                raise _BadRequest("you must provide a model parameter")
            if match["op"] == "embeddings":
                return 200, self._embeddings(model, body)
            if match["op"] == "responses":
                return 200, self._responses(model, body)
            return 200, self._chat(model, body)
        except _BadRequest as exc:
            return 400, error_body(400, str(exc))

    def _chat(self, model: str, body: dict) -> dict[str, Any]:
        messages, n = body.get("messages"), body.get("n") or 1
        if not isinstance(messages, list) or not messages:
            raise _BadRequest("'messages' must be a non-empty array")
        for m in messages:
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise _BadRequest("each message must be an object with a string 'role'")
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 128:
            raise _BadRequest("'n' must be an integer between 1 and 128")
        key_body = {k: v for k, v in body.items() if k not in ("stream", "user")}
        key = json.dumps({**key_body, "model": model}, sort_keys=True, separators=(",", ":"))
        last = _text(messages[-1].get("content"))[:60]
        with self._lock:
            self._chat_count += 1
            number = self._chat_count
            k = self._answers[key] = self._answers.get(key, 0) + 1
            cached, reasoning, forced, omit, reply = (
                self._cached,
                self._reasoning,
                self._forced,
                self._omit_usage,
                self._reply,
            )
        texts = [
            reply if reply is not None else f"answer {k}{f'.{i}' if n > 1 else ''} to: {last}"
            for i in range(n)
        ]
        schema = streams.requested_schema(body)
        if schema is not None and reply is None:
            texts = [json.dumps(streams.json_for_schema(schema, t)) for t in texts]
        prompt = sum(_words(_text(m.get("content"))) + 3 for m in messages)
        completion = sum(_words(t) for t in texts)
        prompt, completion = (
            (prompt if forced[0] is None else forced[0]),
            (completion if forced[1] is None else forced[1]),
        )
        answer: dict[str, Any] = {
            "id": f"chatcmpl-{number}",
            "object": "chat.completion",
            "created": CREATED,
            "model": model,
            "system_fingerprint": "fp_test",
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": t, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
                for i, t in enumerate(texts)
            ],
        }
        if not omit:
            answer["usage"] = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
                "prompt_tokens_details": {"cached_tokens": cached},
                "completion_tokens_details": {"reasoning_tokens": reasoning},
            }
        return answer

    def _responses(self, model: str, body: dict) -> dict[str, Any]:
        items = body.get("input")
        if isinstance(items, str):
            items = [{"role": "user", "content": items}]
        if not isinstance(items, list) or not items:
            raise _BadRequest("'input' must be a string or a non-empty array of input items")
        texts = [_text(i.get("content")) if isinstance(i, dict) else "" for i in items]
        key_body = {k: v for k, v in body.items() if k not in ("stream", "user")}
        key = json.dumps({**key_body, "model": model}, sort_keys=True, separators=(",", ":"))
        with self._lock:
            self._response_count += 1
            number = self._response_count
            k = self._answers[key] = self._answers.get(key, 0) + 1
            cached, reasoning, forced, omit = (
                self._cached,
                self._reasoning,
                self._forced,
                self._omit_usage,
            )
        text = f"answer {k} to: {texts[-1][:60]}"
        schema = streams.requested_schema(body)
        if schema is not None:
            text = json.dumps(streams.json_for_schema(schema, text))
        prompt = sum(_words(t) + 3 for t in texts) + _words(str(body.get("instructions") or ""))
        completion = _words(text)
        prompt = prompt if forced[0] is None else forced[0]
        completion = completion if forced[1] is None else forced[1]
        usage = None
        if not omit:
            usage = {
                "input_tokens": prompt,
                "input_tokens_details": {"cached_tokens": cached},
                "output_tokens": completion,
                "output_tokens_details": {"reasoning_tokens": reasoning},
                "total_tokens": prompt + completion,
            }
        return streams.response_answer(number, model, text, usage, body)

    def _embeddings(self, model: str, body: dict) -> dict[str, Any]:
        inputs, dim = body.get("input"), body.get("dimensions") or self.embedding_dim
        if isinstance(inputs, str):
            inputs = [inputs]
        if not (isinstance(inputs, list) and inputs and all(isinstance(t, str) for t in inputs)):
            raise _BadRequest("'input' must be a string or a non-empty array of strings")
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
            raise _BadRequest("'dimensions' must be a positive integer")
        b64 = body.get("encoding_format") == "base64"
        data = []
        for i, text in enumerate(inputs):
            vec: Any = _vector(model, text, dim)
            if b64:
                vec = base64.b64encode(struct.pack(f"<{dim}f", *vec)).decode("ascii")
            data.append({"object": "embedding", "index": i, "embedding": vec})
        words = sum(max(1, _words(t)) for t in inputs)
        with self._lock:
            self._embedding_count += 1
        return {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": words, "total_tokens": words},
        }


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeOpenAIServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients hanging up (timeouts, stop()) are expected; stay quiet about them."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out as separate writes; with Nagle on, the client's delayed ACK
    # adds ~40 ms to every keep-alive answer, which would swamp what the tests measure.
    disable_nagle_algorithm = True
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        with self.server.fake._lock:
            self.server.fake._conns.add(self.connection)

    def finish(self) -> None:
        with self.server.fake._lock:
            self.server.fake._conns.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request stderr log."""

    def _handle(self) -> None:
        fake = self.server.fake
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        headers = {k.lower(): v for k, v in self.headers.items()}
        record = RecordedRequest(
            self.command, self.path, headers, body if isinstance(body, dict) else None, 0
        )
        number, action, generation = fake._arrive(record)
        extra: dict[str, str] = {}
        streamed = isinstance(body, dict) and bool(body.get("stream"))
        if action is not None and action[0] == "drop" and (action[1] is None or not streamed):
            self.close_connection = True
            return
        if action is not None and action[0] == "delay":
            if fake._stopping.wait(action[1]) or fake._generation != generation:
                self.close_connection = True  # stopped, or reset meanwhile: not answered
                return
        if action is not None and action[0] == "fail":
            status, retry_after, message = action[1]
            answer = error_body(status, message)
            if retry_after is not None:
                extra["retry-after"] = f"{retry_after:g}"
        elif action is not None and action[0] == "raw":
            fake._responded(record, 200)
            self._send(number, 200, action[1], "application/json", extra)
            return
        elif raw and body is None:
            status, answer = 400, error_body(400, "We could not parse the JSON body.")
        else:
            status, answer = fake._answer(self.command, self.path, body)
        if status == 200 and streamed and isinstance(body, dict):
            if "choices" in answer:
                options = body.get("stream_options") or {}
                include_usage = bool(options.get("include_usage"))
                events = streams.chat_events(answer, include_usage, fake.stream_words)
            else:
                events = streams.response_events(answer, fake.stream_words)
            fake._responded(record, status)
            self._stream(number, events, action)
            return
        fake._responded(record, status)
        self._send(number, status, json.dumps(answer).encode(), "application/json", extra)

    def _send(
        self, number: int, status: int, payload: bytes, ctype: str, extra: dict[str, str]
    ) -> None:
        try:
            self.send_response(status)
            self.send_header("content-type", ctype)
            self.send_header("content-length", str(len(payload)))
            self.send_header("x-request-id", f"req_{number}")
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except OSError:  # the client gave up (e.g. its timeout fired during a delay)
            self.close_connection = True

    def _stream(self, number: int, events: list[bytes], action: tuple[str, Any] | None) -> None:
        """Server-sent events, each its own HTTP chunk, flushed as it is written."""
        cut = action[1] if action is not None and action[0] == "drop" else None
        pause = action[1] if action is not None and action[0] == "pause" else None
        if action is not None and action[0] == "error_event":
            k, message = action[1]
            error = {"error": {"message": message, "type": "server_error", "code": None}}
            events = events[:k] + [f"data: {json.dumps(error)}\n\n".encode()]
        try:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("transfer-encoding", "chunked")
            self.send_header("x-request-id", f"req_{number}")
            self.end_headers()
            for i, event in enumerate(events):
                if cut is not None and i == cut:
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)  # mid-stream disconnect
                    self.close_connection = True
                    return
                if pause is not None and i == pause[0]:
                    while not pause[1].wait(0.05):
                        if self.server.fake._stopping.is_set():
                            self.close_connection = True
                            return
                self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:  # the client hung up half-way (an abandoned stream)
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle
