"""``llm-ledger demo`` (``make demo``): the ledger at work in a few seconds, offline by default.

It makes a few chat and embedding calls through the public API, then makes them again:
the second pass is answered from the ledger, which the API's request counter shows.
Without OPENAI_API_KEY it starts the library's local OpenAI-compatible test server
(:class:`llm_ledger.testing.FakeOpenAIServer`) and points this process at it, so the
demo needs no key, no network and no money, and prints the same lines every time
(apart from latencies) on a new ledger.
"""

from __future__ import annotations

import contextlib
import os
import shlex
from collections.abc import Callable, Iterator
from decimal import Decimal

from sqlalchemy import case, func, select

from .clients import OpenAIClient
from .config import DEFAULT_DB_FILE
from .errors import LedgerError
from .flight import reset_slots
from .scope import scope
from .store import db
from .store.models import CallLog
from .store.repository import Ledger
from .testing import FakeOpenAIServer

RUN = "demo"
CHAT_MODEL = "gpt-4o-mini"
EMBEDDING_MODEL = "text-embedding-3-small"
QUESTIONS = (
    "In one sentence: what does a ledger record?",
    "Why cache answers from a language model?",
    "Name one thing an audit log of API calls is good for.",
)
TEXTS = ("a ledger records every call", "a cache answers repeated calls", "costs add up")
_LOG = CallLog.__table__

Echo = Callable[[str], object]


def run_demo(db_location: str = DEFAULT_DB_FILE, echo: Echo = print) -> int:
    """Run the demo against the ledger at ``db_location``; returns the exit code."""
    try:
        with _api(echo) as server:
            return _demo(db_location, echo, server)
    except LedgerError as exc:
        echo(f"demo failed: {exc}")
        return 1


@contextlib.contextmanager
def _api(echo: Echo) -> Iterator[FakeOpenAIServer | None]:
    """The real API when OPENAI_API_KEY is set, else the local test server (env restored after)."""
    if os.environ.get("OPENAI_API_KEY"):
        echo(
            "OPENAI_API_KEY is set: calling the real OpenAI API "
            f"({CHAT_MODEL} and {EMBEDDING_MODEL}, a few short requests, well under $0.01)."
        )
        yield None
        return
    names = ("OPENAI_API_KEY", "OPENAI_BASE_URL")
    saved = {name: os.environ.get(name) for name in names}
    with FakeOpenAIServer() as server:
        os.environ["OPENAI_BASE_URL"] = server.url
        os.environ["OPENAI_API_KEY"] = "sk-demo-local-test-server"
        echo(
            "OPENAI_API_KEY is not set: starting llm_ledger's local test server "
            "(llm_ledger.testing.FakeOpenAIServer on 127.0.0.1) and pointing "
            "OPENAI_BASE_URL and OPENAI_API_KEY at it, for this process only."
        )
        try:
            yield server
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def _demo(location: str, echo: Echo, server: FakeOpenAIServer | None) -> int:
    # Explicit settings, so LLM_LEDGER_MODE=replay and the like cannot change the demo.
    client = OpenAIClient(
        cache_file_name=location, mode="record", cache_api_calls=True, record_calls=True
    )
    ledger = client.ledger
    with ledger.engine.connect() as conn:
        start = conn.execute(select(func.coalesce(func.max(_LOG.c.id), 0))).scalar_one()
    echo(f"Ledger: {db.describe(ledger.url)}")
    for number, title in ((1, "First pass"), (2, "Second pass, the same calls again")):
        echo("")
        echo(f"{title}:")
        # A re-run of a program starts its sample slots again from 0, so it replays them.
        reset_slots(RUN)
        before = server.request_count if server is not None else 0
        with ledger.engine.connect() as conn:
            first_id = conn.execute(select(func.coalesce(func.max(_LOG.c.id), 0))).scalar_one()
        with scope(run=RUN, tags={"demo": "quickstart", "pass": str(number)}):
            for question in QUESTIONS:
                answer = client.send_message(
                    [{"role": "user", "content": question}],
                    model=CHAT_MODEL,
                    max_tokens=60,
                    raise_on_error=True,
                )
                content = " ".join(str((answer or {}).get("content", "")).split())
                echo(_line(ledger, "chat", f"{question!r} -> {_short(content)!r}"))
            vectors = client.get_embedding(list(TEXTS), model=EMBEDDING_MODEL, raise_on_error=True)
            dims = len(vectors[0]) if vectors and isinstance(vectors[0], list) else 0
            echo(
                _line(ledger, "embedding", f"{len(TEXTS)} texts -> {len(TEXTS)} vectors of {dims}")
            )
        if server is not None:
            echo(
                f"  The test server received {server.request_count - before} requests "
                f"in this pass ({server.request_count} in all)."
            )
        else:
            echo(f"  {_api_calls(ledger, first_id)} of these calls went to the API.")
    echo("")
    _summary(ledger, start, echo)
    echo("")
    shown = db.describe(location) if "://" in location else location
    prefix = (
        "llm-ledger" if location == DEFAULT_DB_FILE else f"llm-ledger --db {shlex.quote(shown)}"
    )
    with ledger.engine.connect() as conn:
        last = conn.execute(select(func.max(_LOG.c.id))).scalar_one()
    echo("Try next:")
    echo(f"  {prefix} calls --run {RUN}")
    echo(f"  {prefix} show {last}")
    echo(f'  {prefix} sql "SELECT model, calls, hits, cost_usd, saved_usd FROM model_costs"')
    return 0


def _line(ledger: Ledger, kind: str, what: str) -> str:
    """One call's line: its cache status and latency, as the ledger recorded them."""
    with ledger.engine.connect() as conn:
        row = conn.execute(
            select(_LOG.c.cache_status, _LOG.c.latency_ms).order_by(_LOG.c.id.desc()).limit(1)
        ).one()
    return f"  {kind:<9}  {row.cache_status:<4}  {row.latency_ms or 0:7.1f} ms  {what}"


def _api_calls(ledger: Ledger, after_id: int) -> int:
    with ledger.engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).where(_LOG.c.id > after_id, _LOG.c.cache_status != "hit")
            ).scalar_one()
        )


def _short(text: str, width: int = 48) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _summary(ledger: Ledger, start: int, echo: Echo) -> None:
    hit = _LOG.c.cache_status == "hit"
    with ledger.engine.connect() as conn:
        row = conn.execute(
            select(
                func.count(),
                func.sum(case((hit, 1), else_=0)),
                func.sum(_LOG.c.cost_usd),
                func.sum(_LOG.c.saved_usd),
            ).where(_LOG.c.id > start, _LOG.c.run == RUN)
        ).one()
    calls, hits = int(row[0]), int(row[1] or 0)
    echo("Summary, from the ledger (this demo's calls):")
    echo(f"  calls  {calls}  ({hits} answered from the ledger, {calls - hits} by the API)")
    echo(f"  cost   {_usd(row[2])}  paid to the API")
    echo(f"  saved  {_usd(row[3])}  not paid again, thanks to the hits")


def _usd(value: object) -> str:
    if value is None:
        return "$0 (no price known)"
    amount = Decimal(str(value)).quantize(Decimal("1e-10")).normalize()
    return f"${amount:f}"
