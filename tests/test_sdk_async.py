"""The async drop-in clients (AsyncOpenAI) and the seed-style AsyncOpenAIClient.

Same ledger, same rows as the sync path; concurrent identical awaits make one request, and
``scope`` follows a call across ``await`` and ``asyncio.gather``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from sqlalchemy import create_engine, text

import llm_ledger
from llm_ledger.openai import AsyncOpenAI
from llm_ledger.store.db import normalize_url
from llm_ledger.testing import FakeOpenAIServer

from .conftest import msgs

MODEL = "gpt-4o-mini"


def rows(location: str, sql: str) -> list[tuple[Any, ...]]:
    llm_ledger.flush()  # calls are written behind them (writes="journal")
    engine = create_engine(normalize_url(location))
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql))]
    finally:
        engine.dispose()


@pytest.fixture
def words(api: FakeOpenAIServer) -> Iterator[FakeOpenAIServer]:
    api.stream_words = 2
    yield api
    api.stream_words = None


async def achat(client: AsyncOpenAI, text: str = "hello there", **kw: Any) -> Any:
    return await client.chat.completions.create(
        model=MODEL, messages=msgs(text), temperature=0, **kw
    )


async def collect(stream: Any) -> list[Any]:
    return [chunk async for chunk in stream]


def test_async_hits_are_the_misses_types(api, db_path: Path) -> None:
    async def main() -> list[Any]:
        client = AsyncOpenAI(ledger=str(db_path))
        out = [await achat(client), await achat(client)]
        out += [
            await client.responses.create(model=MODEL, input="hi", temperature=0) for _ in range(2)
        ]
        out += [
            await client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
            for _ in range(2)
        ]
        await client.close()
        return out

    c1, c2, r1, r2, e1, e2 = asyncio.run(main())
    assert type(c2) is type(c1) is openai.types.chat.ChatCompletion and c1 == c2
    assert type(r2) is type(r1) is openai.types.responses.Response and r1 == r2
    assert type(e2) is type(e1) is openai.types.CreateEmbeddingResponse and e1 == e2
    assert api.request_count == 3
    assert rows(str(db_path), "SELECT kind, cache_status FROM call_log ORDER BY id") == [
        ("chat", "miss"),
        ("chat", "hit"),
        ("responses", "miss"),
        ("responses", "hit"),
        ("embedding", "miss"),
        ("embedding", "hit"),
    ]


def test_async_streams_replay_the_recorded_chunks(words, db_path: Path) -> None:
    async def main() -> tuple[list[Any], ...]:
        client = AsyncOpenAI(ledger=str(db_path))
        chat = [await collect(await achat(client, "a b c d e", stream=True)) for _ in range(2)]
        resp = [
            await collect(
                await client.responses.create(
                    model=MODEL, input="a b c", stream=True, temperature=0
                )
            )
            for _ in range(2)
        ]
        async with client.chat.completions.stream(
            model=MODEL, messages=msgs("a b c d e"), temperature=0
        ) as s:
            final = await s.get_final_completion()
        await client.close()
        return chat[0], chat[1], resp[0], resp[1], [final]

    chat1, chat2, resp1, resp2, (final,) = asyncio.run(main())
    assert chat1 == chat2 and len(chat1) == 5
    assert resp1 == resp2 and resp1[-1].type == "response.completed"
    assert final.choices[0].message.content == "answer 1 to: a b c d e"
    assert words.request_count == 2
    assert rows(str(db_path), "SELECT stream_status, chunks FROM call_log ORDER BY id") == [
        ("complete", 6),
        ("replayed", None),
        ("complete", 11),
        ("replayed", None),
        ("replayed", None),
    ]


@pytest.mark.parametrize("engine", ["sqlite", "postgresql", "mariadb"])
def test_100_concurrent_identical_awaits_make_one_request(
    api, db_path: Path, engine: str, request: pytest.FixtureRequest
) -> None:
    location = (
        str(db_path)
        if engine == "sqlite"
        else request.getfixturevalue("pg_url" if engine == "postgresql" else "mysql_url")
    )

    async def main() -> list[Any]:
        client = AsyncOpenAI(ledger=location)
        answers = await asyncio.gather(*(achat(client, "all at once") for _ in range(100)))
        await client.close()
        return answers

    answers = asyncio.run(main())
    assert {a.choices[0].message.content for a in answers} == {"answer 1 to: all at once"}
    assert api.request_count == 1
    assert rows(
        location, "SELECT cache_status, COUNT(*) FROM call_log GROUP BY cache_status ORDER BY 1"
    ) == [
        ("hit", 99),
        ("miss", 1),
    ]


def test_scope_follows_each_task_across_gather(api, db_path: Path) -> None:
    async def one(client: AsyncOpenAI, run: str) -> None:
        with llm_ledger.scope(run=run, tags={"task": run}):
            await asyncio.sleep(0)
            await achat(client, f"question of {run}")
            await achat(client, f"question of {run}")

    async def main() -> None:
        client = AsyncOpenAI(ledger=str(db_path))
        await asyncio.gather(*(one(client, f"r{i}") for i in range(5)))
        await client.close()

    asyncio.run(main())
    got = rows(str(db_path), "SELECT run, cache_status, tags FROM call_log ORDER BY run, id")
    assert got == [
        (f"r{i}", status, f'{{"task":"r{i}"}}') for i in range(5) for status in ("miss", "hit")
    ]
    assert api.request_count == 5


def test_async_replay_miss_and_budget_refusal_send_nothing(api, db_path: Path) -> None:
    async def main() -> None:
        replayer = AsyncOpenAI(ledger=str(db_path), mode="replay")
        with pytest.raises(llm_ledger.CacheMissError):
            await achat(replayer)
        client = AsyncOpenAI(ledger=str(db_path))
        with llm_ledger.scope(max_cost_usd=0.000001):
            with pytest.raises(llm_ledger.BudgetExceededError):
                await achat(client, max_tokens=1000)

    asyncio.run(main())
    assert api.request_count == 0
    assert rows(str(db_path), "SELECT status, error_type FROM call_log ORDER BY id") == [
        ("error", "CacheMissError"),
        ("refused", "BudgetExceededError"),
    ]


def test_async_abandoned_stream_is_recorded_and_not_cached(words, db_path: Path) -> None:
    async def main() -> Any:
        client = AsyncOpenAI(ledger=str(db_path))
        stream = await achat(client, "one two three four five six", stream=True)
        first = await stream.__anext__()
        await stream.close()
        await client.close()
        return first

    first = asyncio.run(main())
    assert first.choices[0].delta.content == "answer 1 "
    assert rows(str(db_path), "SELECT stream_status, chunks FROM call_log") == [("abandoned", 1)]
    assert rows(str(db_path), "SELECT COUNT(*) FROM cache_entries") == [(0,)]


def test_async_stream_dropped_unread_is_recorded_as_abandoned(words, db_path: Path) -> None:
    import gc

    async def main() -> None:
        client = AsyncOpenAI(ledger=str(db_path))
        stream = await achat(client, "one two three four five six", stream=True)
        del stream
        gc.collect()
        await asyncio.sleep(0)  # the dropped connection's close, scheduled on the loop
        await client.close()

    asyncio.run(main())
    assert rows(str(db_path), "SELECT status, stream_status, chunks FROM call_log") == [
        ("ok", "abandoned", 0)
    ]
    assert rows(str(db_path), "SELECT COUNT(*) FROM cache_entries") == [(0,)]
    assert words.request_count == 1


def test_async_mid_stream_disconnect_is_an_error_row(words, db_path: Path) -> None:
    words.drop_next(after_chunks=3)

    async def main() -> int:
        client = AsyncOpenAI(ledger=str(db_path))
        got = 0
        with pytest.raises(openai.APIConnectionError):
            async for _ in await achat(client, "one two three four five six", stream=True):
                got += 1
        await client.close()
        return got

    assert asyncio.run(main()) == 3
    assert rows(str(db_path), "SELECT status, stream_status, chunks FROM call_log") == [
        ("error", "error", 3)
    ]
    assert rows(str(db_path), "SELECT COUNT(*) FROM cache_entries") == [(0,)]


def test_async_error_event_mid_stream_is_an_error_row(words, db_path: Path) -> None:
    words.error_next_stream(after_chunks=2, message="overloaded mid-stream")

    async def main() -> int:
        client = AsyncOpenAI(ledger=str(db_path))
        got = 0
        with pytest.raises(openai.APIError, match="overloaded mid-stream"):
            async for _ in await achat(client, "one two three four five six", stream=True):
                got += 1
        await client.close()
        return got

    assert asyncio.run(main()) == 2
    assert rows(str(db_path), "SELECT status, stream_status, chunks, error_type FROM call_log") == [
        ("error", "error", 2, "APIError")
    ]
    assert rows(str(db_path), "SELECT COUNT(*) FROM cache_entries") == [(0,)]


def test_async_200_that_is_not_an_answer_is_not_cached(api, db_path: Path) -> None:
    async def main() -> Any:
        client = AsyncOpenAI(ledger=str(db_path))
        api.reply_raw_next(b"{}")
        with pytest.raises(openai.APIResponseValidationError):
            await achat(client)
        ok = await achat(client)
        await client.close()
        return ok

    assert asyncio.run(main()).choices[0].message.content == "answer 1 to: hello there"
    assert rows(str(db_path), "SELECT status, error_type FROM call_log ORDER BY id") == [
        ("error", "APIResponseValidationError"),
        ("ok", None),
    ]
    assert rows(str(db_path), "SELECT COUNT(*) FROM cache_entries") == [(1,)]


def test_async_miss_passes_the_apis_request_id_on(api, db_path: Path) -> None:
    async def main() -> tuple[Any, Any]:
        client = AsyncOpenAI(ledger=str(db_path))
        out = (await achat(client), await achat(client))
        await client.close()
        return out

    miss, hit = asyncio.run(main())
    assert (miss._request_id, hit._request_id) == ("req_1", None)


def test_seed_style_async_client(api, db_path: Path) -> None:
    async def main() -> tuple[Any, ...]:
        client = llm_ledger.AsyncOpenAIClient(cache_file_name=str(db_path))
        answers = await asyncio.gather(
            *(client.send_message(msgs("seed async"), temperature=0) for _ in range(10))
        )
        vectors = await client.get_embedding(["x", "y"])
        return answers, vectors, client.ledger

    answers, vectors, ledger = asyncio.run(main())
    assert {a["content"] for a in answers} == {"answer 1 to: seed async"}
    assert len(vectors) == 2 and len(vectors[0]) == 8
    assert api.request_count == 2
    assert ledger.url.endswith("ledger.db")


def test_async_api_errors_are_the_sdks_after_the_ledgers_retries(api, db_path: Path) -> None:
    llm_ledger.force_default_value("waiting_time", 0)
    api.fail_next(429, times=2)

    async def main() -> Any:
        client = AsyncOpenAI(ledger=str(db_path))
        ok = await achat(client)
        api.fail_next(400, message="no such thing")
        with pytest.raises(openai.BadRequestError, match="no such thing"):
            await achat(client, "other")
        await client.close()
        return ok

    assert asyncio.run(main()).choices[0].message.content == "answer 1 to: hello there"
    assert api.request_count == 4
    assert rows(str(db_path), "SELECT status, attempts, error_type FROM call_log ORDER BY id") == [
        ("ok", 3, None),
        ("error", 1, "BadRequestError"),
    ]
