"""The SDK drop-in's benchmark: ``python -m benchmarks.sdk [--quick] [--pg URL]``.

What it measures (figures in docs/sdk.md):

- a cache hit through ``OpenAI().chat.completions.create``, through ``AsyncOpenAI`` and
  through the seed's ``send_message``, microseconds per call (median of rounds), and the
  drop-in's ratio to ``send_message`` (target: within 1.2x);
- the time to the first replayed chunk of a streamed hit, sync and async;
- 1,000 concurrent async hits (``asyncio.gather``) per second, on SQLite and PostgreSQL;
- the floor: the bare SDK answering from a mock transport (no ledger, no network), and what
  the drop-in adds to it;
- why the async path uses a thread pool: the cost of one hop into it, against a seed hit
  run inline on the event loop.

Every hit is checked to be a hit (the test-kit server's request counter does not move).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import openai

import llm_ledger
from llm_ledger.openai import AsyncOpenAI, OpenAI
from llm_ledger.sdk.core import in_pool
from llm_ledger.store import repository
from llm_ledger.testing import FakeOpenAIServer

MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "benchmark question"}]
PARAMS = {
    "temperature": 0.0,
    "max_tokens": 64,
    "top_p": 1.0,
    "frequency_penalty": 0.0,
    "presence_penalty": 0.0,
}


def median_us(fn: Callable[[], Any], calls: int, rounds: int) -> float:
    """Median over ``rounds`` of the mean microseconds per call of ``fn``."""
    results = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        results.append((time.perf_counter() - t0) / calls * 1e6)
    return round(statistics.median(results), 1)


async def amedian_us(fn: Callable[[], Any], calls: int, rounds: int) -> float:
    results = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(calls):
            await fn()
        results.append((time.perf_counter() - t0) / calls * 1e6)
    return round(statistics.median(results), 1)


def hits(location: str, server: FakeOpenAIServer, calls: int, rounds: int) -> dict[str, Any]:
    seed = llm_ledger.OpenAIClient(cache_file_name=location)
    sdk = OpenAI(ledger=location)
    seed.send_message(MESSAGES, **PARAMS)  # the one miss, shared by all three callers
    before = server.request_count
    out: dict[str, Any] = {
        "send_message_us": median_us(lambda: seed.send_message(MESSAGES, **PARAMS), calls, rounds),
        "sdk_create_us": median_us(
            lambda: sdk.chat.completions.create(model=MODEL, messages=MESSAGES, **PARAMS),
            calls,
            rounds,
        ),
    }

    def first_chunk() -> Any:
        stream = sdk.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True, **PARAMS)
        chunk = next(iter(stream))
        stream.close()
        return chunk

    out["sdk_first_replayed_chunk_us"] = median_us(first_chunk, calls, rounds)

    async def run_async() -> dict[str, float]:
        client = AsyncOpenAI(ledger=location)

        async def create() -> Any:
            return await client.chat.completions.create(model=MODEL, messages=MESSAGES, **PARAMS)

        async def afirst_chunk() -> Any:
            stream = await client.chat.completions.create(
                model=MODEL, messages=MESSAGES, stream=True, **PARAMS
            )
            chunk = await stream.__anext__()
            await stream.close()
            return chunk

        async def hop() -> Any:
            return await in_pool(int)

        async def inline() -> Any:  # what the call costs without the hop (blocks the loop)
            return seed.send_message(MESSAGES, **PARAMS)

        result = {
            "async_create_us": await amedian_us(create, calls, rounds),
            "async_first_replayed_chunk_us": await amedian_us(afirst_chunk, calls, rounds),
            "pool_hop_us": await amedian_us(hop, calls, rounds),
            "inline_send_message_on_loop_us": await amedian_us(inline, calls, rounds),
        }
        for n in (1000,):
            t0 = time.perf_counter()
            await asyncio.gather(*(create() for _ in range(n)))
            result[f"concurrent_{n}_hits_per_s"] = round(n / (time.perf_counter() - t0))
        await client.close()
        return result

    out.update(asyncio.run(run_async()))
    # The floor: the bare SDK answering from a mock transport (no ledger, no network).
    body = sdk.chat.completions.with_raw_response.create(
        model=MODEL, messages=MESSAGES, **PARAMS
    ).http_response.content
    mock = httpx2.MockTransport(lambda request: httpx2.Response(200, content=body))
    bare = openai.OpenAI(api_key="sk-bench", http_client=httpx2.Client(transport=mock))
    out["bare_sdk_floor_us"] = median_us(
        lambda: bare.chat.completions.create(model=MODEL, messages=MESSAGES, **PARAMS),
        calls,
        rounds,
    )
    out["sdk_added_over_bare_sdk_us"] = round(out["sdk_create_us"] - out["bare_sdk_floor_us"], 1)
    out["sdk_vs_send_message"] = round(out["sdk_create_us"] / out["send_message_us"], 2)
    out["async_vs_send_message"] = round(out["async_create_us"] / out["send_message_us"], 2)
    if server.request_count != before:
        raise AssertionError(f"{server.request_count - before} hit(s) reached the API")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few calls (smoke test)")
    ap.add_argument("--pg", help="also on this PostgreSQL database (its tables are dropped)")
    args = ap.parse_args(argv)
    calls, rounds = (50, 3) if args.quick else (1000, 7)
    results: dict[str, Any] = {}
    with FakeOpenAIServer() as server, tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("OPENAI_API_KEY", "sk-benchmark")
        os.environ["OPENAI_BASE_URL"] = server.url
        results["sqlite"] = hits(str(Path(tmp) / "ledger.db"), server, calls, rounds)
        repository.close_all()
        if args.pg:
            from tests.conftest import _drop_everything

            _drop_everything(args.pg)
            results["postgresql"] = hits(args.pg, server, calls, rounds)
            repository.close_all()
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
