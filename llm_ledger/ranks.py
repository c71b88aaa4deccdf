"""Exact BPE token counts straight from a shipped rank table, without building tiktoken.

Why: building a ``tiktoken.Encoding`` costs ~250 ms (parsing 200,000 ranks into a dict,
then tiktoken's Rust constructor), and the first budgeted call of a process paid it. A
``<name>.ranks`` file holds the same ranks sorted by token bytes, so a rank is a binary
search over the file's bytes and opening it costs ~1 ms. ``RankTable.count`` runs
tiktoken's own algorithm (the pattern split, then ``_byte_pair_merge``: merge the
lowest-ranked adjacent pair, leftmost first) and returns the same count as
``Encoding.encode_ordinary``; tests/test_tokens.py checks that on many texts. It is slower
per byte than tiktoken, so ``tokens`` switches to tiktoken once a process has counted
enough text for the build to pay off.

File layout (little-endian): ``LLMRANK1``, n and the blob's length (uint32 each), n + 1
offsets (uint32) of the tokens in byte order, their n ranks (uint32), then the blob of
the tokens in byte order.
"""

from __future__ import annotations

import hashlib
import struct
import sys
from collections.abc import Mapping
from pathlib import Path

import regex

MAGIC = b"LLMRANK1"
_HEADER = struct.Struct("<8sII")
_NONE = 1 << 32  # "no such token": above every rank
_MEMO_LIMIT = 50_000  # pieces remembered per table (their counts), then forgotten at once
# Merging is quadratic in a piece's length: a longer piece (a long run of letters or
# spaces) is left to tiktoken, which does the same in Rust.
MAX_PIECE = 256


class RankTable:
    """A read-only token -> rank lookup over one ``.ranks`` file's bytes, and a BPE counter."""

    def __init__(self, data: bytes, pat_str: str) -> None:
        self._n, self._offsets, self._ranks, self._blob = _layout(data)
        self._split = regex.compile(pat_str).findall
        self._memo: dict[bytes, int] = {}
        self.counted_chars = 0  # text counted so far, for the caller's switch to tiktoken

    def __len__(self) -> int:
        return self._n

    def rank(self, token: bytes) -> int:
        """The token's rank, or ``_NONE`` (2**32) when it is not in the vocabulary."""
        offsets, blob = self._offsets, self._blob
        lo, hi = 0, self._n
        while lo < hi:
            mid = (lo + hi) >> 1
            probe = blob[offsets[mid] : offsets[mid + 1]]
            if probe < token:
                lo = mid + 1
            elif probe > token:
                hi = mid
            else:
                return int(self._ranks[mid])
        return _NONE

    def count(self, text: str) -> int | None:
        """``len(encoding.encode_ordinary(text))``, computed from the table.

        ``None`` when a piece is longer than ``MAX_PIECE`` bytes: ask tiktoken then.
        """
        self.counted_chars += len(text)
        memo = self._memo
        total = 0
        for piece in self._split(text):
            known = memo.get(piece)
            if known is None:
                data = piece.encode("utf-8")
                if len(data) > MAX_PIECE:
                    return None
                known = 1 if self.rank(data) != _NONE else self._merge_count(data)
                if len(memo) >= _MEMO_LIMIT:
                    memo.clear()
                memo[piece] = known
            total += known
        return total

    def _merge_count(self, piece: bytes) -> int:
        """Tokens of one piece: tiktoken's ``_byte_pair_merge``, counting the parts left."""
        rank = self.rank
        # parts[i] = [start offset, rank of the pair starting here]
        parts = [[i, rank(piece[i : i + 2])] for i in range(len(piece) - 1)]
        parts.append([len(piece) - 1, _NONE])
        parts.append([len(piece), _NONE])

        def pair_rank(i: int) -> int:
            if i + 3 < len(parts):
                return rank(piece[parts[i][0] : parts[i + 3][0]])
            return _NONE

        while True:
            best, at = _NONE, -1
            for i in range(len(parts) - 1):
                if parts[i][1] < best:
                    best, at = parts[i][1], i
            if at < 0:
                return len(parts) - 1
            if at > 0:
                parts[at - 1][1] = pair_rank(at - 1)
            parts[at][1] = pair_rank(at)
            del parts[at + 1]


def write(ranks: Mapping[bytes, int], path: Path) -> str:
    """Write ``ranks`` as a ``.ranks`` file; return its sha256 (for ``tokens``' check)."""
    ordered = sorted(ranks)
    offsets = [0]
    for token in ordered:
        offsets.append(offsets[-1] + len(token))
    blob = b"".join(ordered)
    data = b"".join(
        [
            _HEADER.pack(MAGIC, len(ordered), len(blob)),
            struct.pack(f"<{len(offsets)}I", *offsets),
            struct.pack(f"<{len(ordered)}I", *(ranks[token] for token in ordered)),
            blob,
        ]
    )
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def read_all(data: bytes) -> dict[bytes, int]:
    """Every token -> rank of a ``.ranks`` file, for building a ``tiktoken.Encoding``."""
    _n, offsets, ranks, blob = _layout(data)
    tokens = map(blob.__getitem__, map(slice, offsets[:-1], offsets[1:]))
    return dict(zip(tokens, ranks, strict=True))


def _layout(data: bytes) -> tuple[int, memoryview, memoryview, bytes]:
    """(n, offsets, ranks, blob) of a ``.ranks`` file, checked for its magic and length."""
    magic, n, blob_len = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ValueError(f"not a rank table (magic {magic!r})")
    if sys.byteorder != "little":  # pragma: no cover -- the file is little-endian
        raise ValueError("rank tables are read on little-endian machines only")
    ranks_at = _HEADER.size + 4 * (n + 1)
    blob_at = ranks_at + 4 * n
    if len(data) != blob_at + blob_len:
        raise ValueError(f"rank table truncated: {len(data)} bytes, expected {blob_at + blob_len}")
    view = memoryview(data)
    return (
        n,
        view[_HEADER.size : ranks_at].cast("I"),
        view[ranks_at:blob_at].cast("I"),
        data[blob_at:],
    )
