"""Offline token counting from the shipped tiktoken files."""

from __future__ import annotations

import base64
import gzip
import hashlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import tiktoken
import tiktoken_ext.openai_public as openai_public
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from llm_ledger import ranks, tokens

ROOT = Path(__file__).resolve().parent.parent

# The example from the OpenAI cookbook "How to count tokens with tiktoken", section 6.
COOKBOOK_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate jargon into plain English.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "New synergies will help drive top-line growth.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client deliverable.",
    },
]


@pytest.fixture
def fresh_cache() -> Iterator[None]:
    """Start and end with an empty encoding cache so a swapped DATA_DIR cannot leak."""
    tokens.clear_cache()
    yield
    tokens.clear_cache()


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Make any connection attempt fail loudly and record it."""
    attempts: list[object] = []

    def refuse(self: socket.socket, address: object) -> None:
        attempts.append(address)
        raise AssertionError(f"network access attempted: {address!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)

    def no_download(name: str) -> None:
        raise AssertionError(f"tiktoken.get_encoding({name!r}) would download")

    monkeypatch.setattr(tiktoken, "get_encoding", no_download)
    return attempts


@pytest.mark.parametrize(
    ("text", "cl100k", "o200k"),
    [
        ("hello world", 2, 2),
        ("The quick brown fox jumps over the lazy dog.", 10, 10),
        ("tiktoken is great!", 6, 6),
        ("Ünïcödé — 東京 🚀", 14, 9),
        ("", 0, 0),
    ],
)
def test_known_counts(text: str, cl100k: int, o200k: int) -> None:
    assert tokens.count_text_tokens(text, "gpt-4") == cl100k
    assert tokens.count_text_tokens(text, "gpt-4o-mini") == o200k


def test_special_token_text_is_counted_as_plain_text() -> None:
    # Encoding.encode() would raise on this; user content must just be counted.
    assert tokens.count_text_tokens("<|endoftext|>", "gpt-4o") == 7
    assert tokens.count_text_tokens("<|endoftext|>", "gpt-4") == 7


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        # The cookbook reports these same numbers, both from its function and from the API.
        ("gpt-3.5-turbo", 129),
        ("gpt-4", 129),
        ("gpt-4-0613", 129),
        ("gpt-4o", 124),
        ("gpt-4o-mini", 124),
        ("gpt-4o-mini-2024-07-18", 124),
    ],
)
def test_cookbook_example(model: str, expected: int) -> None:
    assert tokens.count_message_tokens(COOKBOOK_MESSAGES, model) == expected


def test_message_overhead_and_name() -> None:
    content = tokens.count_text_tokens("hello world", "gpt-4o")
    role = tokens.count_text_tokens("user", "gpt-4o")
    name = tokens.count_text_tokens("bob", "gpt-4o")
    assert content is not None and role is not None and name is not None
    plain = [{"role": "user", "content": "hello world"}]
    named = [{"role": "user", "name": "bob", "content": "hello world"}]
    assert tokens.count_message_tokens(plain, "gpt-4o") == 3 + role + content + 3
    assert tokens.count_message_tokens(named, "gpt-4o") == 3 + role + content + name + 1 + 3
    assert tokens.count_message_tokens([], "gpt-4o") == 3


def test_content_parts_count_text_parts_only() -> None:
    as_string = [{"role": "user", "content": "hello world"}]
    as_parts = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "hello"},
                {"type": "image_url", "image_url": {"url": "https://example.invalid/x.png"}},
                {"type": "text", "text": " world"},
            ],
        }
    ]
    assert tokens.count_message_tokens(as_parts, "gpt-4o") == tokens.count_message_tokens(
        as_string, "gpt-4o"
    )
    # Non-string values (None content of a tool-calling assistant turn) are skipped, not fatal.
    assert (
        tokens.count_message_tokens([{"role": "assistant", "content": None}], "gpt-4o") == 3 + 1 + 3
    )


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-mini-2024-07-18", "o200k_base"),
        ("chatgpt-4o-latest", "o200k_base"),
        ("gpt-4.1-nano", "o200k_base"),
        ("gpt-4.5-preview", "o200k_base"),
        ("gpt-5", "o200k_base"),
        ("gpt-5-mini", "o200k_base"),
        ("o1-mini", "o200k_base"),
        ("o3", "o200k_base"),
        ("o4-mini", "o200k_base"),
        ("GPT-4o", "o200k_base"),
        ("ft:gpt-4o-mini-2024-07-18:acme::abc123", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-4-turbo", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("text-embedding-3-small", "cl100k_base"),
        ("text-embedding-ada-002", "cl100k_base"),
        ("prod-chat", "cl100k_base"),
        ("", "cl100k_base"),
    ],
)
def test_encoding_name_for_model(model: str, encoding: str) -> None:
    assert tokens.encoding_name_for_model(model) == encoding


def test_specs_match_installed_tiktoken(monkeypatch: pytest.MonkeyPatch) -> None:
    """Our replicated pat_str / special tokens must equal tiktoken's own constructors'."""
    monkeypatch.setattr(openai_public, "load_tiktoken_bpe", lambda *a, **k: {})
    for name in ("cl100k_base", "o200k_base"):
        theirs = openai_public.ENCODING_CONSTRUCTORS[name]()
        assert tokens._SPECS[name]["pat_str"] == theirs["pat_str"]
        assert tokens._SPECS[name]["special_tokens"] == theirs["special_tokens"]


def test_shipped_files_load_without_network(fresh_cache: None, no_network: list[object]) -> None:
    for name, n_vocab in (("cl100k_base", 100277), ("o200k_base", 200019)):
        encoding = tokens.get_encoding(name)
        assert encoding is not None
        assert encoding.name == name
        assert encoding.n_vocab == n_vocab
        assert tokens.get_encoding(name) is encoding  # cached
    assert no_network == []


def test_concurrent_first_use_builds_one_encoding(fresh_cache: None) -> None:
    results: list[tiktoken.Encoding | None] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        results.append(tokens.get_encoding("cl100k_base"))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8
    assert results[0] is not None
    assert all(result is results[0] for result in results)


def test_missing_data_returns_none_warns_once_and_stays_offline(
    fresh_cache: None,
    no_network: list[object],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setattr(tokens, "DATA_DIR", tmp_path / "nowhere")
    with capture_logs() as logs:
        assert tokens.count_text_tokens("hello world", "gpt-4o") is None
        assert tokens.count_text_tokens("hello again", "gpt-4o-mini") is None
        assert tokens.count_message_tokens([{"role": "user", "content": "hi"}], "gpt-4o") is None
    warnings = [entry for entry in logs if entry["event"] == "tokens.encoding_unavailable"]
    assert len(warnings) == 1
    assert warnings[0]["log_level"] == "warning"
    assert warnings[0]["encoding"] == "o200k_base"
    assert "FileNotFoundError" in warnings[0]["error"]
    assert no_network == []


def test_warning_is_per_encoding_name(
    fresh_cache: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(tokens, "DATA_DIR", tmp_path)
    with capture_logs() as logs:
        for _ in range(2):
            assert tokens.count_text_tokens("x", "gpt-4o") is None
            assert tokens.count_text_tokens("x", "gpt-4") is None
    names = [e["encoding"] for e in logs if e["event"] == "tokens.encoding_unavailable"]
    assert sorted(names) == ["cl100k_base", "o200k_base"]


def test_corrupt_files_return_none(
    fresh_cache: None,
    no_network: list[object],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # Valid gzip, wrong content: caught by the sha256 check.
    (tmp_path / "o200k_base.tiktoken.gz").write_bytes(gzip.compress(b"aGVsbG8= 0\n"))
    # Not gzip at all.
    (tmp_path / "cl100k_base.tiktoken.gz").write_bytes(b"not gzip")
    monkeypatch.setattr(tokens, "DATA_DIR", tmp_path)
    with capture_logs() as logs:
        assert tokens.get_encoding("o200k_base") is None
        assert tokens.get_encoding("cl100k_base") is None
        assert tokens.get_encoding("p50k_base") is None  # not shipped
    errors = {
        e["encoding"]: e["error"] for e in logs if e["event"] == "tokens.encoding_unavailable"
    }
    assert "sha256 mismatch" in errors["o200k_base"]
    assert "BadGzipFile" in errors["cl100k_base"]
    assert "LookupError" in errors["p50k_base"]
    assert no_network == []


# --- the rank table (llm_ledger/ranks.py): the first counts of a process, without tiktoken ---

CORPUS = [
    "hello world",
    "Ünïcödé — 東京 🚀 naïve café",
    "  leading and trailing spaces   \n\n\tand tabs\r\n",
    "numbers 1234567 3.14159 -42 1e10 ١٢٣",
    "I'm sure they'll've done it; WE'RE DONE. Don't!",
    "<|endoftext|> special-token text <|fim_prefix|> counted as plain text",
    "def f(x):\n    return {'a': [1, 2, 3]}  # code\n",
    "a" * 255,
    "ab" * 128,
    " " * 200 + "x",
    "https://example.com/path?query=1&b=2#frag",
    "",
]


def rank_table(name: str) -> ranks.RankTable:
    data = (tokens.DATA_DIR / f"{name}.ranks").read_bytes()
    return ranks.RankTable(data, tokens._SPECS[name]["pat_str"])


RANK_TABLES = {name: rank_table(name) for name in ("cl100k_base", "o200k_base")}


@pytest.mark.parametrize("name", ["cl100k_base", "o200k_base"])
def test_rank_table_counts_equal_tiktoken_on_a_corpus(name: str) -> None:
    encoding = tokens.get_encoding(name)
    assert encoding is not None
    table = rank_table(name)
    for text in CORPUS:
        assert table.count(text) == len(encoding.encode_ordinary(text)), text
    # Whole documents: the same count, or None where a piece is too long for the table.
    docs = [p.read_text(encoding="utf-8") for p in sorted((ROOT / "docs").glob("*.md"))]
    counts = [(table.count(text), len(encoding.encode_ordinary(text))) for text in docs]
    assert all(ours in (None, theirs) for ours, theirs in counts)
    assert sum(ours is not None for ours, _ in counts) >= len(docs) // 2


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=80))
def test_rank_table_counts_equal_tiktoken_on_any_text(text: str) -> None:
    for name in ("cl100k_base", "o200k_base"):
        encoding = tokens.get_encoding(name)
        assert encoding is not None
        assert RANK_TABLES[name].count(text) == len(encoding.encode_ordinary(text))


def test_rank_files_hold_exactly_tiktokens_ranks() -> None:
    """Rebuilt as a .tiktoken file, each .ranks file has tiktoken's own expected_hash."""
    for name in ("cl100k_base", "o200k_base"):
        table = ranks.read_all((tokens.DATA_DIR / f"{name}.ranks").read_bytes())
        text = b"".join(
            base64.b64encode(token) + b" " + str(rank).encode() + b"\n"
            for token, rank in sorted(table.items(), key=lambda item: item[1])
        )
        assert hashlib.sha256(text).hexdigest() == tokens._EXPECTED_SHA256[name]


def test_first_counts_use_the_rank_table_then_tiktoken(
    fresh_cache: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tokens, "SWITCH_CHARS", 50)
    assert tokens.count_text_tokens("hello world", "gpt-4o") == 2
    assert "o200k_base" not in tokens._cache  # tiktoken not built yet
    assert tokens.count_text_tokens("The quick brown fox jumps over the lazy dog.", "gpt-4o") == 10
    assert tokens._tables["o200k_base"] is not None
    assert tokens._tables["o200k_base"].counted_chars == 55
    assert tokens.count_text_tokens("tiktoken is great!", "gpt-4o") == 6  # past 50 characters
    assert tokens._cache["o200k_base"] is not None


def test_a_piece_too_long_for_the_rank_table_is_counted_by_tiktoken(fresh_cache: None) -> None:
    text = "x" * (ranks.MAX_PIECE + 1)
    assert rank_table("o200k_base").count(text) is None
    encoding = tokens.get_encoding("o200k_base")
    assert encoding is not None
    tokens.clear_cache()
    assert tokens.count_text_tokens(text, "gpt-4o") == len(encoding.encode_ordinary(text))


def test_a_corrupt_rank_file_falls_back_to_the_tiktoken_file(
    fresh_cache: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("cl100k_base", "o200k_base"):
        (tmp_path / f"{name}.tiktoken.gz").write_bytes(
            (tokens.DATA_DIR / f"{name}.tiktoken.gz").read_bytes()
        )
    (tmp_path / "o200k_base.ranks").write_bytes(b"LLMRANK1 not a table")
    monkeypatch.setattr(tokens, "DATA_DIR", tmp_path)
    assert tokens.count_text_tokens("The quick brown fox jumps over the lazy dog.", "gpt-4o") == 10
    assert tokens._tables["o200k_base"] is None
    assert tokens._cache["o200k_base"] is not None
