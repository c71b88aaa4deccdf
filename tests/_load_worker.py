"""A worker process for the multi-process tests (tests/test_load.py, tests/test_faults.py).

Not a test module. Run as a script: it opens the ledger given by ``--db`` and makes
chat calls through ``OpenAIClient`` against the API named by OPENAI_BASE_URL /
OPENAI_API_KEY, from ``--threads`` threads, ``--calls`` calls each. The prompts come
from :func:`prompt` so the test can compute the distinct prompts without running it.

On exit it prints one JSON object on stdout: calls made, calls that returned None,
exceptions (as text), wall time, and for each prompt the answers it received. With
``--forever`` it loops until killed and prints ``ready`` once the first call is recorded.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import traceback
from collections import defaultdict


def prompt(worker: int, thread: int, call: int, shared: int) -> str:
    """Two calls in three use one of ``shared`` prompts common to every worker; the rest are unique."""
    if call % 3 == 2:
        return f"unique w{worker} t{thread} c{call}"
    return f"shared {(call * 7 + thread) % shared}"


def all_prompts(workers: int, threads: int, calls: int, shared: int) -> list[str]:
    return [
        prompt(w, t, c, shared)
        for w in range(workers)
        for t in range(threads)
        for c in range(calls)
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", required=True)
    ap.add_argument("--worker", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--calls", type=int, default=1)
    ap.add_argument("--shared", type=int, default=10)
    ap.add_argument("--forever", action="store_true")
    args = ap.parse_args(argv)

    import llm_ledger

    client = llm_ledger.OpenAIClient(cache_file_name=args.db)
    answers: dict[str, set[str]] = defaultdict(set)
    lock = threading.Lock()
    errors: list[str] = []
    nones = 0
    made = 0

    def call(text: str) -> None:
        nonlocal nones, made
        try:
            out = client.send_message(
                [{"role": "user", "content": text}], temperature=0, max_attempts=1, timeout=60
            )
        except Exception:  # noqa: BLE001 - reported to the test, which fails on any
            with lock:
                errors.append(traceback.format_exc())
            return
        with lock:
            made += 1
            if out is None:
                nones += 1
            else:
                answers[text].add(out["content"])

    if args.forever:
        n = 0
        while True:
            call(prompt(args.worker, 0, n, args.shared))
            if n == 0:
                print("ready", flush=True)
            n += 1

    def run_thread(t: int) -> None:
        for c in range(args.calls):
            call(prompt(args.worker, t, c, args.shared))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=run_thread, args=(t,)) for t in range(args.threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    json.dump(
        {
            "calls": made,
            "none": nones,
            "errors": errors,
            "wall_s": round(wall, 3),
            "answers": {k: sorted(v) for k, v in answers.items()},
        },
        sys.stdout,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
