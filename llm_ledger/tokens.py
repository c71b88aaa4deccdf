"""Offline token counting with the tiktoken encoding files shipped in ``llm_ledger/data``.

Why not ``tiktoken.get_encoding``: it downloads the BPE files on first use, which fails or
hangs without internet. A ledger must never stall a call on that, so we build the encodings
ourselves from the gzipped files we ship (checked against tiktoken's own sha256 values) and
return ``None`` when they cannot be loaded.

Why two counters: building a ``tiktoken.Encoding`` costs ~250 ms, and the first budgeted
call or embedding of a process paid it. Counts start on ``ranks.RankTable`` (the same
ranks, sorted in a shipped ``.ranks`` file, opened in ~1 ms, the same counts) and move
to tiktoken once the process has counted ``SWITCH_CHARS`` of text, where the build pays
for itself. tiktoken itself is imported only then.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .log import logger
from .ranks import RankTable, read_all

if TYPE_CHECKING:
    import tiktoken

__all__ = [
    "DATA_DIR",
    "clear_cache",
    "count_message_tokens",
    "count_text_tokens",
    "encoding_name_for_model",
    "get_encoding",
]

log = logger

DATA_DIR: Path = Path(__file__).resolve().parent / "data"
"""Where ``<name>.tiktoken.gz`` files live; module-level so tests can point it elsewhere."""

# sha256 of the *decompressed* files; same values as `expected_hash` in
# tiktoken_ext/openai_public.py, so a shipped file is byte-identical to tiktoken's download.
_EXPECTED_SHA256: dict[str, str] = {
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}
# sha256 of the `.ranks` files (the same ranks; tests/test_tokens.py rebuilds the tiktoken
# file from each and checks it against the hash above).
_RANKS_SHA256: dict[str, str] = {
    "cl100k_base": "bd523552023e811dd1e7b7b9560a4aa864190f86143634d6c57206fce519c83c",
    "o200k_base": "5fe74ef0d6aae95d472e143166ffd097907df90deceb23dba06c37520993d6d2",
}

# tiktoken_ext.openai_public's special-token strings (importing it imports tiktoken).
ENDOFTEXT = "<|endoftext|>"
FIM_PREFIX = "<|fim_prefix|>"
FIM_MIDDLE = "<|fim_middle|>"
FIM_SUFFIX = "<|fim_suffix|>"
ENDOFPROMPT = "<|endofprompt|>"

# Text counted on the rank table before tiktoken is built: at ~0.6 MB/s against tiktoken's
# ~5 MB/s plus its ~250 ms build, the build pays off after ~150k characters.
SWITCH_CHARS = 100_000

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
# name -> RankTable, or None when its `.ranks` file is absent or corrupt (tiktoken then).
_tables: dict[str, RankTable | None] = {}


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
        _tables.clear()


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
    """Build ``tiktoken.Encoding`` from a shipped file after checking its sha256.

    The ``.ranks`` file beside ``path`` is read when present (~2x faster than parsing the
    gzipped text); the ``.tiktoken.gz`` file otherwise.
    """
    import tiktoken

    spec = _SPECS.get(name)
    if spec is None:
        raise LookupError(f"no shipped encoding named {name!r} (have {sorted(_SPECS)})")
    ranks = _read_ranks(name)
    if ranks is not None:
        mergeable_ranks = read_all(ranks)
    else:
        raw = gzip.decompress(path.read_bytes())
        digest = hashlib.sha256(raw).hexdigest()
        if digest != _EXPECTED_SHA256[name]:
            raise ValueError(f"sha256 mismatch: got {digest}, expected {_EXPECTED_SHA256[name]}")
        mergeable_ranks = _parse_bpe(raw)
    return tiktoken.Encoding(
        name=name,
        pat_str=spec["pat_str"],
        mergeable_ranks=mergeable_ranks,
        special_tokens=dict(spec["special_tokens"]),
    )


def _read_ranks(name: str) -> bytes | None:
    """The bytes of ``<name>.ranks`` if present and intact; ``None`` otherwise (logged at debug)."""
    path = DATA_DIR / f"{name}.ranks"
    try:
        data = path.read_bytes()
    except OSError:
        return None
    digest = hashlib.sha256(data).hexdigest()
    if digest != _RANKS_SHA256.get(name):
        log.debug("tokens.rank_table_mismatch", encoding=name, path=str(path), sha256=digest)
        return None
    return data


def _rank_table(name: str) -> RankTable | None:
    try:
        return _tables[name]
    except KeyError:
        pass
    with _lock:
        if name not in _tables:
            data = _read_ranks(name) if name in _SPECS else None
            _tables[name] = None if data is None else RankTable(data, _SPECS[name]["pat_str"])
        return _tables[name]


def _counter(model: str) -> Callable[[str], int] | None:
    """A text -> token count function for ``model``'s encoding; ``None`` if it is unavailable.

    The rank table's count until the process has counted ``SWITCH_CHARS`` (or meets a
    piece too long for it), tiktoken's after.
    """
    name = encoding_name_for_model(model)
    encoding = _cache.get(name)
    if encoding is not None:
        return _tiktoken_count(encoding)
    table = None if name in _cache else _rank_table(name)
    if table is None or table.counted_chars >= SWITCH_CHARS:
        encoding = get_encoding(name)
        return None if encoding is None else _tiktoken_count(encoding)

    def count(text: str) -> int:
        counted = table.count(text) if len(text) < SWITCH_CHARS else None
        if counted is not None:
            return counted
        encoding = get_encoding(name)
        if encoding is None:  # pragma: no cover -- the table and the gz file are both shipped
            raise LookupError(name)
        return len(encoding.encode_ordinary(text))

    return count


def _tiktoken_count(encoding: tiktoken.Encoding) -> Callable[[str], int]:
    return lambda text: len(encoding.encode_ordinary(text))


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
    count = _counter(model)
    return None if count is None else count(text)


def count_message_tokens(messages: list[dict[str, Any]], model: str) -> int | None:
    """Prompt tokens of a chat request, per the OpenAI cookbook's ``num_tokens_from_messages``.

    3 tokens per message + the tokens of every string value (+1 for ``name``) + 3 for the
    reply priming. List-of-parts content counts the text of ``"text"`` parts only (images,
    audio and tool-call structures are not estimated). ``None`` when the encoding is unavailable.
    """
    count = _counter(model)
    if count is None:
        return None
    total = _REPLY_PRIMING_TOKENS
    for message in messages:
        total += _TOKENS_PER_MESSAGE
        for key, value in message.items():
            for text in _texts(value):
                total += count(text)
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
