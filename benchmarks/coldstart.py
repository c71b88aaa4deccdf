"""Cold start: what a new process pays before its first answer.

Every figure is the median of ``runs`` fresh interpreter processes, the commands of one
kind interleaved (A B C A B C ...) so a noisy minute on the shared machine lands on all
of them alike:

- ``python -c pass``, ``import openai``, ``import llm_ledger``, ``from llm_ledger import
  OpenAIClient`` and ``llm-ledger --help``: wall time of the whole process;
- the first token count (``tokens.count_message_tokens`` on a ~450-token chat request)
  in a fresh process, timed inside it, after the import;
- the first ``send_message`` (a miss answered by the test kit's ``FakeOpenAIServer`` on
  127.0.0.1, an existing ledger), and the first ``get_embedding``, against the median of
  the next 20 such calls in the same process; timed inside it, after import and client
  construction. Each process asks for requests no earlier one asked for. The same for
  ``send_message`` against the server answering each call after 300 ms, as a real API
  might: what a one-time load that overlaps the wait (the price table) still costs. And
  ``send_message`` to the test kit after ``client.prepare()`` (timed on its own), which
  does the one-time work when asked, and after ``client.prepare(connect=True)``, which
  opens the HTTP connection too (``GET /models``, which the server does not count).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PYTHON = sys.executable
CLI = str(Path(sys.executable).with_name("llm-ledger"))

IMPORTS: dict[str, list[str]] = {
    "python_pass": [PYTHON, "-c", "pass"],
    "import_openai": [PYTHON, "-c", "import openai"],
    "import_llm_ledger": [PYTHON, "-c", "import llm_ledger"],
    "import_client": [PYTHON, "-c", "from llm_ledger import OpenAIClient"],
    "cli_help": [CLI, "--help"],
}

FIRST_COUNT = """
import json, time
t0 = time.perf_counter()
from llm_ledger import tokens
t1 = time.perf_counter()
text = "Summarise the following text in three sentences: " + "The quick brown fox jumps over the lazy dog. " * 40
n = tokens.count_message_tokens([{"role": "user", "content": text}], "gpt-4o")
t2 = time.perf_counter()
n2 = tokens.count_message_tokens([{"role": "user", "content": text + " again"}], "gpt-4o")
t3 = time.perf_counter()
print(json.dumps({"import_ms": (t1 - t0) * 1e3, "first_ms": (t2 - t1) * 1e3, "second_ms": (t3 - t2) * 1e3}))
"""

# The slow server runs in a process of its own, as a real API does: in the caller's
# process its thread would wait for the GIL behind whatever the caller does meanwhile.
SLOW_SERVER = """
import sys
from llm_ledger.testing import FakeOpenAIServer
server = FakeOpenAIServer().start()
server.delay_next(0.3, times=10**6)
print(server.url, flush=True)
sys.stdin.read()  # until the caller is done
print(server.chat_count, flush=True)
server.stop()
"""

FIRST_CALL = """
import json, os, statistics, subprocess, sys, time
from llm_ledger.testing import FakeOpenAIServer
kind, run = sys.argv[2], sys.argv[3]
if kind == "chat_300ms":  # an answer after 300 ms, as a real API's might come
    slow = subprocess.Popen(
        [sys.executable, "-c", sys.argv[4]], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True,
    )
    url = slow.stdout.readline().strip()
else:
    server = FakeOpenAIServer().start()
    url = server.url
os.environ["OPENAI_API_KEY"] = "sk-bench-not-a-real-key"
os.environ["OPENAI_BASE_URL"] = url
from llm_ledger import OpenAIClient
from llm_ledger.store import repository
client = OpenAIClient(cache_file_name=sys.argv[1])
prepare_ms = None
if kind.startswith("chat_prepared"):  # the one-time work done when asked, before the call
    a = time.perf_counter()
    client.prepare(connect=kind == "chat_prepared_connect")
    prepare_ms = (time.perf_counter() - a) * 1e3

def call(i):
    text = f"cold start {run} request {i}"
    if kind == "embedding":
        return client.get_embedding(text)
    return client.send_message([{"role": "user", "content": text}], temperature=0.0)

a = time.perf_counter(); call(0); first = time.perf_counter() - a
warm = []
for i in range(1, 21):
    a = time.perf_counter(); call(i); warm.append(time.perf_counter() - a)
repository.close_all()
if kind == "chat_300ms":
    calls = int(slow.communicate("")[0].strip())
else:
    server.stop()
    calls = server.embedding_count if kind == "embedding" else server.chat_count
print(json.dumps({"first_ms": first * 1e3, "warm_ms": statistics.median(warm) * 1e3, "api_calls": calls, "prepare_ms": prepare_ms}))
"""


def _wall(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return (time.perf_counter() - t0) * 1e3


def _json(cmd: list[str]) -> dict[str, Any]:
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 1)


def measure(runs: int = 10) -> dict[str, Any]:
    walls: dict[str, list[float]] = {k: [] for k in IMPORTS}
    for cmd in IMPORTS.values():  # warm the OS file cache, untimed
        _wall(cmd)
    for _ in range(runs):
        for key, cmd in IMPORTS.items():
            walls[key].append(_wall(cmd))
    out: dict[str, Any] = {f"{k}_ms": _median(v) for k, v in walls.items()}
    out["import_ratio_to_openai"] = round(out["import_llm_ledger_ms"] / out["import_openai_ms"], 2)
    out["import_client_ratio_to_openai"] = round(
        out["import_client_ms"] / out["import_openai_ms"], 2
    )

    counts = [_json([PYTHON, "-c", FIRST_COUNT]) for _ in range(runs)]
    out["first_count_ms"] = _median([c["first_ms"] for c in counts])
    out["second_count_ms"] = _median([c["second_ms"] for c in counts])

    with tempfile.TemporaryDirectory(prefix="llm_ledger_cold-") as tmp:
        db = str(Path(tmp) / "ledger.db")
        _json([PYTHON, "-c", FIRST_CALL, db, "chat", "setup"])  # create + migrate, untimed
        for kind in ("chat", "embedding", "chat_300ms", "chat_prepared", "chat_prepared_connect"):
            calls = [
                _json([PYTHON, "-c", FIRST_CALL, db, kind, f"{kind}{r}", SLOW_SERVER])
                for r in range(runs)
            ]
            if any(c["api_calls"] != 21 for c in calls):
                raise AssertionError(f"cold start {kind}: a timed call did not reach the server")
            first, warm = (
                _median([c["first_ms"] for c in calls]),
                _median([c["warm_ms"] for c in calls]),
            )
            out[f"first_{kind}_ms"] = first
            out[f"warm_{kind}_ms"] = warm
            out[f"first_{kind}_ratio"] = round(first / warm, 2)
            if kind.startswith("chat_prepared"):
                out[f"{kind}_prepare_ms"] = _median([c["prepare_ms"] for c in calls])
    out["runs"] = runs
    return out


def rows(cold: dict[str, Any]) -> str:
    """The cold-start figures as a Markdown table."""
    lines = ["| cold start (median of fresh processes) | ms | ratio |", "|---|---|---|"]
    items = [
        ("`python -c pass`", "python_pass_ms", None),
        ("`import openai`", "import_openai_ms", None),
        ("`import llm_ledger`", "import_llm_ledger_ms", "import_ratio_to_openai"),
        ("`from llm_ledger import OpenAIClient`", "import_client_ms", "import_client_ratio_to_openai"),
        ("`llm-ledger --help`", "cli_help_ms", None),
        ("first token count in a process (after import)", "first_count_ms", None),
        ("second token count", "second_count_ms", None),
        ("first send_message, test-kit server", "first_chat_ms", "first_chat_ratio"),
        ("warm send_message (median of next 20)", "warm_chat_ms", None),
        ("first get_embedding, test-kit server", "first_embedding_ms", "first_embedding_ratio"),
        ("warm get_embedding", "warm_embedding_ms", None),
        ("first send_message, server answering in 300 ms", "first_chat_300ms_ms", "first_chat_300ms_ratio"),
        ("warm send_message, server answering in 300 ms", "warm_chat_300ms_ms", None),
        ("client.prepare(), after construction", "chat_prepared_prepare_ms", None),
        ("first send_message after client.prepare(), test-kit server", "first_chat_prepared_ms", "first_chat_prepared_ratio"),
        ("warm send_message after it", "warm_chat_prepared_ms", None),
        ("client.prepare(connect=True): also GET /models", "chat_prepared_connect_prepare_ms", None),
        ("first send_message after it, test-kit server", "first_chat_prepared_connect_ms", "first_chat_prepared_connect_ratio"),
        ("warm send_message after it", "warm_chat_prepared_connect_ms", None),
    ]  # fmt: skip
    for label, key, ratio in items:
        r = cold.get(ratio) if ratio else None
        lines.append(f"| {label} | {cold.get(key, '–')} | {'' if r is None else r} |")
    return "\n".join(lines)


if __name__ == "__main__":
    result = measure(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
    print(json.dumps(result, indent=2))
    print(rows(result))
