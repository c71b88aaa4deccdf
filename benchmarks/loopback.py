"""The ledger's cost on a miss, next to the cheapest real API call there is.

Both sides talk HTTP to the test kit's ``FakeOpenAIServer`` on 127.0.0.1 (in this
process, its own thread), through the same ``openai`` SDK: the raw SDK call
``chat.completions.create`` with the parameters ``send_message`` sends, and
``OpenAIClient.send_message`` on a fresh request (lookup, call, price, record).
Repeats alternate the two. Overhead = (ledger - raw) / raw.

As shipped, the test server writes headers and body separately without TCP_NODELAY, so
each answer waits out the client's delayed ACK (~40 ms on Linux): the figure is then
mostly that wait. ``nodelay=True`` sets the server's handler to TCP_NODELAY for this run
(``StreamRequestHandler.disable_nagle_algorithm``), which gives the real loopback cost.
"""

from __future__ import annotations

import contextlib
import os
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import seed, workload
from .contenders import LEDGER_OPTIONS
from .latency import settle, time_batch

FRESH = 900_000_000
KEY = "sk-bench-not-a-real-key"


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _without_nagle(server: Any) -> None:
    httpd = server._httpd
    handler = httpd.RequestHandlerClass
    if not getattr(handler, "disable_nagle_algorithm", False):
        httpd.RequestHandlerClass = type(
            "NoDelayHandler", (handler,), {"disable_nagle_algorithm": True}
        )


def measure(db: Path, *, repeats: int, ops: int, nodelay: bool = False) -> dict[str, Any]:
    import openai

    from llm_ledger import OpenAIClient
    from llm_ledger.store import repository
    from llm_ledger.testing import FakeOpenAIServer

    mark = seed.marks(db, seed.LEDGER_TABLES)
    params = {k: v for k, v in workload.PARAMS.items() if v is not None}
    raw_us: list[float] = []
    ledger_us: list[float] = []
    with FakeOpenAIServer() as server, _env(OPENAI_API_KEY=KEY, OPENAI_BASE_URL=server.url):
        if nodelay:
            _without_nagle(server)
        client = OpenAIClient(cache_file_name=str(db), **LEDGER_OPTIONS)
        sdk = openai.OpenAI(api_key=KEY, base_url=server.url, max_retries=0)

        def raw(model: str, messages: Any) -> Any:
            return sdk.chat.completions.create(
                model=model, messages=messages, timeout=60.0, **params
            )

        def ledger(model: str, messages: Any) -> Any:
            return client.send_message(messages, model=model, temperature=0.0)

        fresh = iter(range(FRESH, FRESH + 10_000_000))

        def batch(n: int) -> list[tuple[str, Any]]:
            return [
                (it.model, it.messages)
                for it in map(workload.item, (next(fresh) for _ in range(n)))
            ]

        time_batch(raw, batch(min(ops, 20)))  # warm-up: connections, lazy imports
        time_batch(ledger, batch(min(ops, 20)))
        before = server.chat_count
        for r in range(repeats):
            settle()
            pair = [(raw, raw_us), (ledger, ledger_us)]
            for fn, out in pair if r % 2 == 0 else reversed(pair):
                out.append(time_batch(fn, batch(ops)))
        api_calls = server.chat_count - before
        repository.close_all()
    seed.trim(db, mark)
    if api_calls != 2 * repeats * ops:
        raise AssertionError(
            f"loopback: {api_calls} calls reached the server, not {2 * repeats * ops}"
        )
    raw_m, ledger_m = statistics.median(raw_us), statistics.median(ledger_us)
    return {
        "server_tcp_nodelay": nodelay,
        "raw_sdk_us": round(raw_m, 1),
        "ledger_miss_us": round(ledger_m, 1),
        "overhead_pct": round((ledger_m - raw_m) / raw_m * 100, 1),
        "ratio": round(ledger_m / raw_m, 3),
        "runs_raw_sdk_us": [round(x, 1) for x in raw_us],
        "runs_ledger_miss_us": [round(x, 1) for x in ledger_us],
    }
