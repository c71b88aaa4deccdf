"""Offline token counting with the tiktoken encoding files shipped in ``llm_ledger/data``.

Why not ``tiktoken.get_encoding``: it downloads the BPE files on first use, which fails or
hangs without internet. A ledger must never stall a call on that, so we build the encodings
ourselves from the gzipped files we ship (checked against tiktoken's own sha256 values) and
return ``None`` when they cannot be loaded.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import structlog
import tiktoken
from tiktoken_ext.openai_public import ENDOFPROMPT, ENDOFTEXT, FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX

__all__ = [
    "DATA_DIR",
    "clear_cache",
    "count_message_tokens",
    "count_text_tokens",
    "encoding_name_for_model",
    "get_encoding",
]

log = structlog.get_logger("llm_ledger")

DATA_DIR: Path = Path(__file__).resolve().parent / "data"
"""Where ``<name>.tiktoken.gz`` files live; module-level so tests can point it elsewhere."""

# sha256 of the *decompressed* files; same values as `expected_hash` in
# tiktoken_ext/openai_public.py, so a shipped file is byte-identical to tiktoken's download.
_EXPECTED_SHA256: dict[str, str] = {
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}

# Replicates what tiktoken_ext.openai_public.cl100k_base()/o200k_base() return (minus the
# mergeable ranks): calling those constructors would download. tests/test_tokens.py checks
# these against the installed tiktoken so a drift is caught.
_CL100K_PAT_STR = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
_O200K_PAT_STR = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)
_SPECS: dict[str, dict[str, Any]] = {
    "cl100k_base": {
        "pat_str": _CL100K_PAT_STR,
        "special_tokens": {
            ENDOFTEXT: 100257,
            FIM_PREFIX: 100258,
            FIM_MIDDLE: 100259,
            FIM_SUFFIX: 100260,
            ENDOFPROMPT: 100276,
        },
    },
    "o200k_base": {
        "pat_str": _O200K_PAT_STR,
        "special_tokens": {ENDOFTEXT: 199999, ENDOFPROMPT: 200018},
    },
}

# Model-name prefixes that use o200k_base (same families as tiktoken's MODEL_PREFIX_TO_ENCODING).
_O200K_PREFIXES: tuple[str, ...] = (
    "gpt-4o",
    "gpt-4.1",
    "gpt-4.5",
    "gpt-5",
    "o1",
    "o3",
    "o4",
    "chatgpt-4o",
)

# Cookbook "num_tokens_from_messages" constants for gpt-3.5-turbo-0613 and later.
_TOKENS_PER_MESSAGE = 3
_TOKENS_PER_NAME = 1
_REPLY_PRIMING_TOKENS = 3

_lock = threading.Lock()
# name -> Encoding, or None for "tried and failed" (so the warning is logged once per name).
_cache: dict[str, tiktoken.Encoding | None] = {}


def encoding_name_for_model(model: str) -> str:
    """Pick the encoding by name prefix; unknown models fall back to cl100k_base.

    A fine-tuned name (``ft:gpt-4o-mini:org::id``) is matched on its base model.
    """
    name = model.strip().lower()
    if name.startswith("ft:"):
        name = name[3:]
    return "o200k_base" if name.startswith(_O200K_PREFIXES) else "cl100k_base"


def clear_cache() -> None:
    """Forget loaded (and failed) encodings; for tests that swap ``DATA_DIR``."""
    with _lock:
        _cache.clear()


def get_encoding(name: str) -> tiktoken.Encoding | None:
    """Return the shipped encoding ``name``, or ``None`` if its file is missing or corrupt.

    Never touches the network and never raises; the failure is logged once per name.
    """
    try:
        return _cache[name]
    except KeyError:
        pass
    with _lock:
        # Re-check under the lock: another thread may have finished loading meanwhile.
        if name in _cache:
            return _cache[name]
        path = DATA_DIR / f"{name}.tiktoken.gz"
        try:
            encoding: tiktoken.Encoding | None = _load(name, path)
        except Exception as exc:  # token counts are optional, never fatal
            encoding = None
            log.warning(
                "tokens.encoding_unavailable",
                encoding=name,
                path=str(path),
                error=f"{type(exc).__name__}: {exc}",
            )
        _cache[name] = encoding
        return encoding


def _load(name: str, path: Path) -> tiktoken.Encoding:
    """Build ``tiktoken.Encoding`` from a shipped gzip file after checking its sha256."""
    spec = _SPECS.get(name)
    if spec is None:
        raise LookupError(f"no shipped encoding named {name!r} (have {sorted(_SPECS)})")
    raw = gzip.decompress(path.read_bytes())
    digest = hashlib.sha256(raw).hexdigest()
    if digest != _EXPECTED_SHA256[name]:
        raise ValueError(f"sha256 mismatch: got {digest}, expected {_EXPECTED_SHA256[name]}")
    return tiktoken.Encoding(
        name=name,
        pat_str=spec["pat_str"],
        mergeable_ranks=_parse_bpe(raw),
        special_tokens=dict(spec["special_tokens"]),
    )


def _parse_bpe(raw: bytes) -> dict[bytes, int]:
    """Parse the ``<base64 token> <rank>`` lines of a .tiktoken file (as tiktoken.load does)."""
    ranks: dict[bytes, int] = {}
    for line in raw.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def count_text_tokens(text: str, model: str) -> int | None:
    """Tokens in ``text`` for ``model``; ``None`` when the encoding is unavailable.

    Special-token strings such as ``<|endoftext|>`` are counted as plain text, as the API does
    for user content, instead of raising like ``Encoding.encode`` would.
    """
    encoding = get_encoding(encoding_name_for_model(model))
    if encoding is None:
        return None
    return len(encoding.encode_ordinary(text))


def count_message_tokens(messages: list[dict[str, Any]], model: str) -> int | None:
    """Prompt tokens of a chat request, per the OpenAI cookbook's ``num_tokens_from_messages``.

    3 tokens per message + the tokens of every string value (+1 for ``name``) + 3 for the
    reply priming. List-of-parts content counts the text of ``"text"`` parts only (images,
    audio and tool-call structures are not estimated). ``None`` when the encoding is unavailable.
    """
    encoding = get_encoding(encoding_name_for_model(model))
    if encoding is None:
        return None
    total = _REPLY_PRIMING_TOKENS
    for message in messages:
        total += _TOKENS_PER_MESSAGE
        for key, value in message.items():
            for text in _texts(value):
                total += len(encoding.encode_ordinary(text))
            if key == "name":
                total += _TOKENS_PER_NAME
    return total


def _texts(value: object) -> Iterator[str]:
    """Yield the countable strings of a message value: a string, or the text of "text" parts."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for part in value:
            if isinstance(part, Mapping) and part.get("type") == "text":
                text = part.get("text")
                if isinstance(text, str):
                    yield text
