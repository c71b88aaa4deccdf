"""A forked child uses its own connections, not the parent's (SQLite forbids sharing them)."""

from __future__ import annotations

import multiprocessing
import threading

import llm_ledger
from llm_ledger import process

from .conftest import msgs


def _child(db: str, url: str, key: str, out) -> None:  # runs in the forked child
    import os

    os.environ["OPENAI_BASE_URL"], os.environ["OPENAI_API_KEY"] = url, key
    c = llm_ledger.OpenAIClient(cache_file_name=db)
    out.put(
        (
            c.send_message(msgs("from the child"), temperature=0)["content"],
            c.ledger.pid == os.getpid(),
        )
    )


def test_forked_child_opens_its_own_ledger(client, api, db_path) -> None:
    client.send_message(msgs(), temperature=0)  # the parent has a pooled connection now
    parent_ledger = client.ledger
    holder = threading.Thread(target=lambda: None)
    holder.start()
    holder.join()
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    with process.state.ledgers_lock:  # held at fork time: the child must not inherit it held
        proc = ctx.Process(target=_child, args=(str(db_path), api.url, "sk-child", out))
        proc.start()
    content, own = out.get(timeout=60)
    proc.join(timeout=60)
    assert proc.exitcode == 0
    assert (content, own) == ("answer 1 to: from the child", True)
    # The parent's ledger still works after the child is gone.
    assert client.ledger is parent_ledger
    assert client.send_message(msgs(), temperature=0)["content"] == "answer 1 to: hello there"
    assert api.chat_count == 2
