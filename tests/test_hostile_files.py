"""Hostile bundles and pickles (issue #14): refused, the target unchanged, memory bounded."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from llm_ledger import transfer
from llm_ledger.transfer import BundleError

from .test_transfer import digest, exported, ledger_b, rewrite  # noqa: F401  (fixtures)

MEMORY_BOUND_MB = 256
"""Peak resident memory of a refused pickle import (a fresh interpreter is ~60 MB)."""
BUNDLE_MEMORY_BOUND_MB = 512
"""Peak of a refused bundle: at most MAX_LINE_BYTES (256 MiB) of one line, plus a chunk."""


def peak_rss_mb(code: str) -> tuple[int, str]:
    """Run code in a fresh interpreter; (its peak resident memory in MB, its stdout)."""
    probe = textwrap.dedent(code) + textwrap.dedent(
        """
        # VmHWM is this process's own peak: ru_maxrss would carry the forking
        # parent's size across exec (a large pytest process fails a tiny import).
        with open("/proc/self/status") as status:
            hwm = next(line for line in status if line.startswith("VmHWM:"))
        print(int(hwm.split()[1]) // 1024)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=300
    ).stdout.splitlines()
    return int(out[-1]), "\n".join(out[:-1])


# --- bundles -----------------------------------------------------------------------------


def test_cache_entry_pointing_at_another_requests_response_is_refused(
    exported: Path,  # noqa: F811
    ledger_b: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    records = [json.loads(line) for line in exported.read_bytes().splitlines()[1:]]
    answered = {r["id"]: r["request_hash"] for r in records if r["type"] == "response"}
    entry = next(r for r in records if r["type"] == "cache_entry" and r["response_id"])
    other = next(i for i, h in answered.items() if h != entry["request_hash"])

    def swap(rec: dict[str, Any]) -> dict[str, Any]:
        if rec == entry:
            return {**rec, "response_id": other}
        return rec

    bad = tmp_path / "swapped.jsonl"
    rewrite(exported, bad, swap)
    before = digest(ledger_b)
    with pytest.raises(BundleError) as info:
        transfer.import_bundle(ledger_b, bad)
    assert str(info.value).endswith(
        f"cache_entry for request {entry['request_hash']} points at response {other}, which "
        f"answered request {answered[other]}: it would serve another request's answer; "
        "nothing was imported"
    )
    assert digest(ledger_b) == before


def test_format_version_true_is_refused(exported: Path, tmp_path: Path) -> None:  # noqa: F811
    lines = exported.read_bytes().splitlines(keepends=True)
    header = json.loads(lines[0])
    header["format_version"] = True
    odd = tmp_path / "odd.jsonl"
    odd.write_bytes(json.dumps(header).encode() + b"\n" + b"".join(lines[1:]))
    with pytest.raises(BundleError, match=r"format version True; this llm-ledger .* reads version"):
        transfer.verify_bundle(odd)


def test_bundle_bigger_than_the_limit_is_refused(
    exported: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(transfer, "MAX_BUNDLE_BYTES", 2000)
    with pytest.raises(BundleError, match=r"more than 2,000 bytes once decompressed"):
        transfer.verify_bundle(exported)


def test_one_huge_gzip_line_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    """A small .jsonl.gz holding a 512 MiB line (the review's was 2 GiB and took 4.3 GB):
    refused holding at most MAX_LINE_BYTES of it."""
    bomb = tmp_path / "bomb.jsonl.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as out:
        out.write(b'{"format": "llm-ledger-bundle"')
        chunk = b" " * (8 * 1024 * 1024)
        for _ in range(64):
            out.write(chunk)
        out.write(b"}\n")
    assert bomb.stat().st_size < 3 * 1024 * 1024
    peak, printed = peak_rss_mb(
        f"""
        from llm_ledger import transfer
        from llm_ledger.transfer import BundleError
        try:
            transfer.verify_bundle({str(bomb)!r})
        except BundleError as exc:
            print(exc)
        """
    )
    assert printed == (
        f"{bomb}, line 1: longer than 268,435,456 bytes, the longest record a bundle may hold; "
        "nothing was imported"
    )
    assert peak < BUNDLE_MEMORY_BOUND_MB, peak


# --- pickles -----------------------------------------------------------------------------

BYTEARRAY_BOMB = b"c__builtin__\nbytearray\n(I8000000000\ntR."
RECONSTRUCTOR_BOMB = (
    b"ccopy_reg\n_reconstructor\n(c__builtin__\nbytearray\nc__builtin__\nbytearray\n"
    b"I8000000000\ntR."
)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (BYTEARRAY_BOMB, "calls bytearray() with a size, which could exhaust memory"),
        (b"c__builtin__\nbytes\n(I8000000000\ntR.", "calls bytes() with a size"),
        (RECONSTRUCTOR_BOMB, "rebuilds bytearray on bytearray, not object"),
    ],
)
def test_size_argument_pickles_are_refused_in_bounded_memory(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "bomb.pickle"
    path.write_bytes(content)
    assert len(content) < 120
    peak, printed = peak_rss_mb(
        f"""
        from llm_ledger import pickles
        try:
            pickles.load_cache({str(path)!r})
        except pickles.UnsafePickleError as exc:
            print(exc)
        """
    )
    assert message in printed, printed
    assert peak < MEMORY_BOUND_MB, peak


def test_a_pickle_naming_a_pydantic_module_does_not_import_it(tmp_path: Path) -> None:
    path = tmp_path / "mypy.pickle"
    path.write_bytes(b"cpydantic.mypy\nPydanticPlugin\n.")
    _, printed = peak_rss_mb(
        f"""
        import sys
        from llm_ledger import pickles
        try:
            pickles.load_cache({str(path)!r})
        except pickles.UnsafePickleError as exc:
            print("refused:", "pydantic.mypy.PydanticPlugin" in str(exc))
        print("imported:", "pydantic.mypy" in sys.modules)
        """
    )
    assert printed == "refused: True\nimported: False"


def test_deeply_nested_pickle_is_refused(tmp_path: Path) -> None:
    from llm_ledger import pickles

    # {"k": [[[...]]]} 1,000 lists deep, spelt in opcodes (pickle.dumps would recurse).
    path = tmp_path / "deep.pickle"
    path.write_bytes(b"}Vk\n" + b"]" * 1000 + b"a" * 999 + b"s.")
    with pytest.raises(pickles.PickleImportError, match="nests containers more than 200 deep"):
        pickles.load_cache(path)
