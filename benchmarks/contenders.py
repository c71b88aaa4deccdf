"""Everything that answers the workload, behind one small interface.

A contender turns workload item ``i`` into call arguments (``prepare``, not timed) and
answers a call (``call``, timed): from its store when the item was seeded (a hit), else
by asking the stub API and storing the answer (a store). The stub answers instantly
from prebuilt objects and counts its calls, so the harness can check that every timed
hit really was a hit and every timed store really called the API once.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pickle
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llm_ledger import OpenAIClient

from . import floor, seed, workload

POOL = 64  # distinct prebuilt answers the stub cycles through


class StubAPI:
    """The API, answered instantly: prebuilt answers in a cycle, calls counted.

    Each answer's token usage is changed per call (as real usage varies), from one counter
    shared by every stub in the process, so no contender replays another's usages and
    nothing downstream can serve a store's price from a memo of earlier usages.
    """

    def __init__(self, make: Any) -> None:
        self._answers = [make(workload.response(j)) for j in range(POOL)]
        self.calls = 0

    def __call__(self, *_: Any) -> Any:
        self.calls += 1
        answer = self._answers[self.calls % POOL]
        _set_usage(answer, *workload.usage_of(next(_USAGES)))
        return answer


_USAGES = itertools.count(int.from_bytes(os.urandom(3), "big"))


def _set_usage(answer: Any, prompt: int, completion: int) -> None:
    if isinstance(answer, dict):
        answer["usage"] = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
    elif getattr(answer, "usage", None) is not None:
        answer.usage.prompt_tokens = prompt
        answer.usage.completion_tokens = completion
        answer.usage.total_tokens = prompt + completion


def chat_completion(d: dict[str, Any]) -> Any:
    from openai.types.chat import ChatCompletion

    return ChatCompletion.model_validate(d)


class StubClient(OpenAIClient):
    """``OpenAIClient`` whose API call returns a prebuilt answer: no network in the figures."""

    def __init__(self, *args: Any, api: StubAPI, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.api = api

    def _raw_model_call(self, model: str, chat_api_params: dict[str, Any]) -> Any:
        return self.api(model, chat_api_params)


# How every ledger client of the benchmark is configured (the harness ignores LLM_LEDGER_*).
LEDGER_OPTIONS: dict[str, Any] = {
    "cache_api_calls": True,
    "mode": "record",
    "namespace": "",
    "record_calls": True,
    "raise_on_error": True,
}


def ledger_client(path: Path, api: StubAPI, cls: type[StubClient] = StubClient) -> StubClient:
    return cls(cache_file_name=str(path), api=api, **LEDGER_OPTIONS)


class Contender:
    """One way of caching the workload; subclasses say how to seed, prepare, call, trim."""

    name = ""
    title = ""
    audit = True  # writes an audit row per call
    hits = True  # measured on hits as well as stores
    stores = True  # measured on stores
    max_size: int | None = None  # beyond this the contender is not measured

    def __init__(self, workdir: Path, size: int) -> None:
        self.workdir = workdir
        self.size = size
        self.api = StubAPI(dict)

    # subclasses implement
    def seed(self) -> bool:
        """Fill the store with entries 0..size-1; False when a kept one was reused."""
        return False

    def open(self) -> None: ...
    def prepare(self, it: workload.Item) -> tuple[Any, ...]:
        return (it.model, it.messages)

    def call(self, *args: Any) -> Any: ...
    def finish(self) -> None:
        """End of a timed batch, inside the timing: whatever the calls left to do."""

    def close(self) -> None: ...

    # trimming: by default, rowids of the SQLite tables in ``self.db``
    db: Path
    tables: tuple[str, ...] = ()

    @contextlib.contextmanager
    def restoring(self) -> Iterator[None]:
        """Whatever the block adds to the store is removed afterwards (outside any timing):
        what its untimed calls left queued is written first (``finish``), then trimmed."""
        mark = seed.marks(self.db, self.tables)
        try:
            yield
        finally:
            try:
                self.finish()
            finally:
                seed.trim(self.db, mark)


def seeded(path: Path, ledger: bool = False) -> bool:
    """A store kept in --workdir is reused only if seeded from this workload (and schema)."""
    marker = path.with_name(path.name + ".seeded")
    return marker.exists() and marker.read_text() == seed.fingerprint(ledger)


def mark_seeded(path: Path, ledger: bool = False) -> None:
    path.with_name(path.name + ".seeded").write_text(seed.fingerprint(ledger))


class Ledger(Contender):
    """``send_message`` with default settings: the call's records are journaled and written
    behind it (``writes="journal"``). Each timed batch ends by writing what is still queued,
    inside the timing, so every row is paid for."""

    name = "ledger"
    title = "llm_ledger send_message"
    tables = seed.LEDGER_TABLES
    client_class: type[StubClient] = StubClient

    def __init__(self, workdir: Path, size: int, *, dict_answers: bool = False) -> None:
        super().__init__(workdir, size)
        self.db = workdir / f"ledger-{size}.db"
        self.api = StubAPI(dict if dict_answers else chat_completion)
        self.client: StubClient | None = None

    def seed(self) -> bool:
        if seeded(self.db, ledger=True):
            return False
        for stale in self.db.parent.glob(self.db.name + "*"):
            if stale.is_file():
                stale.unlink()
        seed.seed_ledger(self.db, self.size)
        mark_seeded(self.db, ledger=True)
        return True

    def open(self) -> None:
        self.client = ledger_client(self.db, self.api, self.client_class)
        self.client.ledger  # noqa: B018 - open (and check the schema) outside the timing

    def prepare(self, it: workload.Item) -> tuple[Any, ...]:
        return (it.messages, it.model)

    def call(self, messages: Any, model: str) -> Any:
        assert self.client is not None
        return self.client.send_message(messages, model=model, temperature=0.0)

    def finish(self) -> None:
        if self.client is not None:
            self.client.ledger.flush()

    def close(self) -> None:
        from llm_ledger.store import repository

        repository.close_all()
        self.client = None


class LedgerDictAnswers(Ledger):
    """The same, with the stub returning a dict instead of the SDK's ChatCompletion object."""

    name = "ledger_dict"
    title = "llm_ledger send_message, API answer as dict"
    hits = False  # a hit never sees the API's answer type

    def __init__(self, workdir: Path, size: int) -> None:
        super().__init__(workdir, size, dict_answers=True)


class SyncWritesClient(StubClient):
    """The stub client with ``writes="sync"`` for itself only."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from llm_ledger import config

        self._own_settings = config.settings().replace(writes="sync")

    def _settings(self) -> Any:
        return self._own_settings


class LedgerSyncWrites(Ledger):
    """``send_message`` with ``writes="sync"``: each call's records committed before it
    returns (the default until round two)."""

    name = "ledger_sync"
    title = "llm_ledger send_message, writes=sync"
    client_class = SyncWritesClient


class Floor(Contender):
    name = "floor"
    title = "floor: raw sqlite3, minimal schema"
    tables: tuple[str, ...] = ("cache", "audit")

    def __init__(self, workdir: Path, size: int) -> None:
        super().__init__(workdir, size)
        self.db = workdir / f"floor-{size}.db"
        self.impl: floor.Floor | floor.LedgerSchemaFloor | None = None  # or a subclass

    def seed(self) -> bool:
        if seeded(self.db):
            return False
        seed.seed_floor(self.db, self.size)
        mark_seeded(self.db)
        return True

    def open(self) -> None:
        self.impl = floor.Floor(str(self.db), self.api, workload.PARAMS)

    def call(self, model: str, messages: Any) -> Any:
        assert self.impl is not None
        return self.impl.call(model, messages)

    def close(self) -> None:
        if self.impl is not None:
            self.impl.close()


class LedgerSchemaFloor(Floor):
    """Raw sqlite3 doing the ledger's statements on the ledger's file (seeded by ``Ledger``).

    Calls and closes like the floor; only its file, statements and seeding differ.
    """

    name = "sqlite3_ledger_schema"
    title = "raw sqlite3, the ledger's statements and tables"
    tables = seed.LEDGER_TABLES

    def __init__(self, workdir: Path, size: int) -> None:
        super().__init__(workdir, size)
        self.db = workdir / f"ledger-{size}.db"

    def seed(self) -> bool:
        Ledger(self.workdir, self.size).seed()
        return False  # the ledger contender's file: seeded (and timed) there

    def open(self) -> None:
        self.impl = floor.LedgerSchemaFloor(str(self.db), self.api, workload.PARAMS)


class LedgerSchemaJournalFloor(LedgerSchemaFloor):
    """The same in the issue's write-behind design at its cheapest (``floor.py``): a journal
    line per call, the caller writing each 128 calls' rows in one transaction."""

    name = "sqlite3_ledger_schema_journal"
    title = "raw sqlite3, the ledger's tables, journaled and written every 128 calls"

    def open(self) -> None:
        self.impl = floor.LedgerSchemaJournalFloor(str(self.db), self.api, workload.PARAMS)

    def finish(self) -> None:
        if isinstance(self.impl, floor.LedgerSchemaJournalFloor):
            self.impl.finish()


# --- LangChain's SQLiteCache -----------------------------------------------------------


def langchain_installed() -> bool:
    try:
        import langchain_community.cache  # noqa: F401
    except ImportError:
        return False
    return True


class LangChain(Contender):
    """``SQLiteCache.lookup`` / ``update`` as a chat model calls them.

    The chat model's own ``dumps(messages)`` (about 100 us) is done in ``prepare``, outside
    the timing: the figures are the cache's alone, which flatters LangChain, not us.
    """

    name = "langchain"
    title = "LangChain SQLiteCache (no audit log)"
    audit = False
    tables = ("full_llm_cache",)

    def __init__(self, workdir: Path, size: int) -> None:
        super().__init__(workdir, size)
        self.db = workdir / f"langchain-{size}.db"
        self.cache: Any = None
        seed.quiet_langchain()
        from langchain_core.messages import AIMessage
        from langchain_core.outputs import ChatGeneration

        self.api = StubAPI(
            lambda d: [
                ChatGeneration(message=AIMessage(content=d["choices"][0]["message"]["content"]))
            ]
        )

    def seed(self) -> bool:
        if seeded(self.db):
            return False
        seed.seed_langchain(self.db, self.size)
        mark_seeded(self.db)
        return True

    def open(self) -> None:
        from langchain_community.cache import SQLiteCache

        self.cache = SQLiteCache(database_path=str(self.db))

    def prepare(self, it: workload.Item) -> tuple[Any, ...]:
        return (seed.langchain_prompt(it.i), seed.langchain_llm_string(it.model))

    def call(self, prompt: str, llm_string: str) -> Any:
        found = self.cache.lookup(prompt, llm_string)
        if found is None:
            found = self.api()
            self.cache.update(prompt, llm_string, found)
        return found[0].message

    def close(self) -> None:
        if self.cache is not None:
            self.cache.engine.dispose()


# --- diskcache ----------------------------------------------------------------------


def diskcache_installed() -> bool:
    try:
        import diskcache  # noqa: F401
    except ImportError:
        return False
    return True


class DiskCache(Contender):
    """``diskcache.Cache`` keyed by the request's SHA-256, the answer dict as value (pickled)."""

    name = "diskcache"
    title = "diskcache.Cache (no audit log)"
    audit = False

    def __init__(self, workdir: Path, size: int) -> None:
        super().__init__(workdir, size)
        self.dir = workdir / f"diskcache-{size}"
        self.db = self.dir / "cache.db"
        self.cache: Any = None
        self.params = {k: v for k, v in workload.PARAMS.items() if v is not None}

    def _open(self) -> Any:
        import diskcache

        # No eviction: a cache that is also the record must keep every answer.
        return diskcache.Cache(str(self.dir), size_limit=2**50, cull_limit=0)

    def seed(self) -> bool:
        if seeded(self.dir):
            return False
        shutil.rmtree(self.dir, ignore_errors=True)
        cache = self._open()
        for lo in range(0, self.size, seed.CHUNK):
            with cache.transact():
                for i in range(lo, min(self.size, lo + seed.CHUNK)):
                    m = workload.model_of(i)
                    key = floor.floor_key(m, workload.messages(i), self.params)
                    cache.set(key, workload.response(i))
        cache.close()
        mark_seeded(self.dir)
        return True

    def open(self) -> None:
        self.cache = self._open()

    def call(self, model: str, messages: Any) -> Any:
        key = floor.floor_key(model, messages, self.params)
        found = self.cache.get(key)
        if found is None:
            found = self.api()
            self.cache.set(key, found)
        return found["choices"][0]["message"]

    @contextlib.contextmanager
    def restoring(self) -> Iterator[None]:
        before = len(self.cache)
        mark = seed.marks(self.db, ("Cache",))["Cache"]
        try:
            yield
        finally:
            conn = sqlite3.connect(self.db)
            added = [r[0] for r in conn.execute("SELECT key FROM Cache WHERE rowid > ?", (mark,))]
            conn.close()
            for key in added:
                self.cache.delete(key)
            assert len(self.cache) == before

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()


# --- the seed's pickle cache ----------------------------------------------------------


class PickleFile(Contender):
    """The seed's cache: a dict keyed by ``str((model, params))``, pickled whole after each store."""

    name = "pickle"
    title = "seed's pickle file (no audit log)"
    audit = False
    max_size = 100_000  # each store rewrites the file: ~1.5 KB x entries

    def __init__(self, workdir: Path, size: int) -> None:
        super().__init__(workdir, size)
        self.db = workdir / f"pickle-{size}.pickle"
        self.cache: dict[str, Any] = {}
        self.api = StubAPI(chat_completion)

    def _key(self, model: str, messages: Any) -> str:
        params = {"messages": messages, **workload.PARAMS}
        return str((model, params))

    def seed(self) -> bool:
        for i in range(self.size):
            m = workload.model_of(i)
            self.cache[self._key(m, workload.messages(i))] = chat_completion(workload.response(i))
        with open(self.db, "wb") as fh:
            pickle.dump(self.cache, fh)
        return True

    def open(self) -> None:
        with open(self.db, "rb") as fh:
            self.cache = pickle.load(fh)

    def call(self, model: str, messages: Any) -> Any:
        key = self._key(model, messages)
        response = self.cache.get(key)
        if response is None:
            response = self.api()
            self.cache[key] = response
            with open(self.db, "wb") as fh:
                pickle.dump(self.cache, fh)
        return response.choices[0].message.to_dict()

    @contextlib.contextmanager
    def restoring(self) -> Iterator[None]:
        before = set(self.cache)
        try:
            yield
        finally:
            for key in set(self.cache) - before:
                del self.cache[key]

    def close(self) -> None:
        self.cache = {}
