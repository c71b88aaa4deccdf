"""Moving a ledger between machines and databases: export, import, copy.

``export_bundle`` writes a portable bundle (JSON Lines, gzip when the name ends in
``.gz``; the format is in docs/bundle-format.md), ``import_bundle`` merges one into
a ledger, ``copy_ledger`` merges a whole ledger into another database directly.
The merge rules are the repository's (:class:`llm_ledger.bulk.Merger`); this module
owns the file format: encoding, the checksum, and verifying a bundle completely
before anything is written.

Why one module of ~650 lines: a hostile bundle is refused by reading it whole before
the first write (bounded lines and size, typed header, every reference and every cache
entry checked against the request it answers), and those checks must read the very
encoding that ``export_bundle`` writes; split apart, a change to one side could pass
the other unnoticed.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import json
import math
import os
import sqlite3
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO, Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, Integer, String
from sqlalchemy.exc import DBAPIError

from . import bulk
from ._version import __version__
from .errors import BundleError, TransferError
from .keys import canonical_json, hash_json
from .log import logger
from .store import connections, db, vetting
from .store.merge import Attached, attached_batches
from .store.models import CHOICES, MAX_ID, CacheEntry, CallLog, Money, Request, Response
from .store.repository import Ledger

log = logger

FORMAT = "llm-ledger-bundle"
FORMAT_VERSION = 1
DEFAULT_BATCH = 2000
BATCH_BYTES = 8 * 1024 * 1024
"""An import writes a batch once its records' lines reach this many bytes, however few:
decoded, a line takes up to ~30 times its size ({},{},... of empty objects), so a batch
is bounded by bytes as well as by count."""
# Record types in the order a bundle holds them (parents first), and their counts' names.
RECORD_TYPES = {
    "request": "requests",
    "response": "responses",
    "cache_entry": "cache_entries",
    "call": "calls",
}
_ORDER = {t: i for i, t in enumerate(RECORD_TYPES)}


# --- the record format --------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """One field of a record: its JSON kind, whether null is allowed, limits."""

    kind: str  # str | int | float | bool | datetime | decimal | object | tags
    nullable: bool
    max_len: int | None = None
    bits: int = 32
    low: int | None = None  # ints: the smallest allowed (ids from 1, counts from 0)
    choices: tuple[str, ...] | None = None  # strs: the values the library writes


def _field(table: str, column: Any) -> Field:
    t, nullable = column.type, bool(column.nullable)
    if column.name in ("id", "response_id"):
        return Field("int", nullable, bits=64, low=1)
    if isinstance(t, Money):
        return Field("decimal", nullable)
    if isinstance(t, JSON):
        return Field("tags" if column.name == "tags" else "object", nullable)
    if isinstance(t, Boolean):
        return Field("bool", nullable)
    if isinstance(t, DateTime):
        return Field("datetime", nullable)
    if isinstance(t, Float):
        return Field("float", nullable)
    if isinstance(t, Integer):  # every other integer column is a count
        return Field("int", nullable, bits=64 if isinstance(t, BigInteger) else 32, low=0)
    if isinstance(t, String):
        return Field("str", nullable, t.length, choices=CHOICES.get((table, column.name)))
    raise AssertionError(f"no bundle field kind for {column}")


def _fields(table: Any, *, keep_id: bool = False) -> dict[str, Field]:
    return {c.name: _field(table.name, c) for c in table.c if c.name != "id" or keep_id}


# A record is {"type": ..., **fields}: the table's columns without surrogate ids, except
# that a response keeps its id (the bundle's own numbering, which entries and calls use).
FIELDS: dict[str, dict[str, Field]] = {
    "request": _fields(Request.__table__),
    "response": _fields(Response.__table__, keep_id=True),
    "cache_entry": _fields(CacheEntry.__table__),
    "call": {**_fields(CallLog.__table__), "call_tags": Field("tags", False)},
}


# Bundles written before a column existed import after it: the column's field, absent from
# their records, is filled in. A column added to a table is listed here (record type ->
# field -> the value older bundles get: None for a nullable column, else its default), so
# it never makes an older bundle invalid; a field this code does not know (a bundle from
# newer code) still does. docs/bundle-format.md, "Bundles and schema changes".
ADDED_FIELDS: dict[str, dict[str, Any]] = {
    # revision 0007: the stream audit columns (nullable)
    "call": {"stream_status": None, "first_chunk_ms": None, "chunks": None},
}


def _encode_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(timespec="microseconds")
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    return value


def encode(rtype: str, row: dict[str, Any]) -> bytes:
    """One record line (with its newline) for a row as the bulk readers give it."""
    rec = {"type": rtype}
    for name, f in FIELDS[rtype].items():
        value = row[name]
        if f.kind in ("object", "tags") and isinstance(value, str):
            value = json.loads(value)  # the driver's JSON text
        rec[name] = _encode_value(value)
    return canonical_json(rec).encode("utf-8") + b"\n"


def _decode_value(f: Field, value: Any) -> Any:
    """The Python value for a field, or ValueError saying what is wrong with it."""
    if value is None:
        if not f.nullable:
            raise ValueError("must not be null")
        return None
    if f.kind == "str":
        if not isinstance(value, str):
            raise ValueError("must be a string")
        if f.max_len is not None and len(value) > f.max_len:
            raise ValueError(f"is longer than {f.max_len} characters")
        if "\x00" in value:  # PostgreSQL cannot store it: refused on every engine alike
            raise ValueError("must not contain a NUL character")
        if f.choices is not None and value not in f.choices:
            raise ValueError(f"must be one of {', '.join(f.choices)}")
    elif f.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("must be an integer")
        high = MAX_ID if f.low == 1 else 2 ** (f.bits - 1) - 1
        if not (f.low if f.low is not None else -high - 1) <= value <= high:
            raise ValueError(f"must be from {f.low} to {high}")
    elif f.kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError("must be a number")
        value = float(value)
        if not math.isfinite(value):  # 1e999 reads as infinity
            raise ValueError("must be a finite number")
    elif f.kind == "bool":
        if not isinstance(value, bool):
            raise ValueError("must be true or false")
    elif f.kind == "datetime":
        try:
            value = datetime.fromisoformat(value) if isinstance(value, str) else None
        except ValueError:
            value = None
        if value is None or value.tzinfo is not None:
            raise ValueError("must be an ISO 8601 date-time string without a UTC offset") from None
    elif f.kind == "decimal":
        try:
            value = Decimal(value) if isinstance(value, str) else None
        except InvalidOperation:
            value = None
        if (
            value is None
            or not value.is_finite()
            or abs(value) >= 10**10
            or value.as_tuple().exponent < -10  # type: ignore[operator]
        ):  # what NUMERIC(20, 10) holds exactly, as the exporter writes it
            raise ValueError(
                "must be a decimal number string below 10000000000 with at most 10 decimal places"
            ) from None
    elif f.kind == "object":
        if not isinstance(value, dict):
            raise ValueError("must be a JSON object")
    elif f.kind == "tags":
        if not isinstance(value, dict) or not all(
            isinstance(k, str)
            and isinstance(v, str)
            and len(k) <= 100
            and len(v) <= 255
            and "\x00" not in k
            and "\x00" not in v
            for k, v in value.items()
        ):
            raise ValueError(
                "must be an object of strings (names up to 100, values up to 255, no NUL)"
            )
    return value


def _no_constant(name: str) -> Any:
    raise BundleError(f"holds {name}, which no JSON number may be (the format has none)")


def decode(raw: bytes) -> tuple[str, dict[str, Any]]:
    """A record line -> (record type, row); BundleError says what is wrong with it."""
    try:
        rec = json.loads(raw, parse_constant=_no_constant)
    except RecursionError:
        raise BundleError("nests JSON too deep to read") from None
    except ValueError as exc:
        raise BundleError(str(exc) if isinstance(exc, BundleError) else "not valid JSON") from None
    if not isinstance(rec, dict):
        raise BundleError("not a JSON object")
    rtype = rec.pop("type", None)
    if rtype not in FIELDS:
        raise BundleError(f"unknown record type {rtype!r}")
    spec = FIELDS[rtype]
    for name, fill in ADDED_FIELDS.get(rtype, {}).items():
        rec.setdefault(name, fill)
    if set(rec) != set(spec):
        missing, extra = sorted(set(spec) - set(rec)), sorted(set(rec) - set(spec))
        raise BundleError(f"{rtype} record: missing fields {missing}, unknown fields {extra}")
    row = {}
    for name, f in spec.items():
        try:
            row[name] = _decode_value(f, rec[name])
        except ValueError as exc:
            raise BundleError(f"{rtype} record: {name} {exc}") from None
    return rtype, row


# --- reading a bundle file ----------------------------------------------------


MAX_LINE_BYTES = 256 * 1024 * 1024
"""The longest bundle line (one record) read; a longer one is refused before it is held."""
MAX_BUNDLE_BYTES = 16 * 1024**3
"""The most (decompressed) bytes a bundle may hold; more is refused (a gzip bomb)."""
_CHUNK = 1024 * 1024


def _lines(path: Path) -> Iterator[bytes]:
    """The file's lines (gzip or plain, told by its first bytes), with read errors as BundleError.

    Read in 1 MiB chunks: a line is refused once it passes MAX_LINE_BYTES (so the reader
    never holds more than that plus a chunk) and the total is capped at MAX_BUNDLE_BYTES.
    """
    with open(path, "rb") as raw:
        zipped = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        fh: Any = gzip.GzipFile(fileobj=raw, mode="rb") if zipped else raw
        total, lineno, buf = 0, 1, bytearray()
        try:
            while chunk := fh.read(_CHUNK):
                total += len(chunk)
                if total > MAX_BUNDLE_BYTES:
                    raise BundleError(
                        f"{path}: more than {MAX_BUNDLE_BYTES:,} bytes once decompressed, the "
                        "most a bundle may hold; nothing was imported"
                    )
                start = 0
                while (end := chunk.find(b"\n", start)) >= 0:
                    if buf:
                        buf += chunk[start : end + 1]
                        _check_length(path, lineno, buf)
                        yield bytes(buf)
                        buf.clear()
                    else:  # the common case: the whole line is in this chunk
                        yield chunk[start : end + 1]
                    lineno += 1
                    start = end + 1
                buf += chunk[start:]
                _check_length(path, lineno, buf)
            if buf:
                yield bytes(buf)
        except EOFError:
            raise BundleError(
                f"{path}: the gzip data ends early: the bundle is truncated"
            ) from None
        except (OSError, zlib.error) as exc:
            raise BundleError(f"{path}: the gzip data is corrupt ({exc})") from None


def _check_length(path: Path, lineno: int, buf: bytearray) -> None:
    if len(buf) > MAX_LINE_BYTES:
        raise BundleError(
            f"{path}, line {lineno}: longer than {MAX_LINE_BYTES:,} bytes, the longest record "
            "a bundle may hold; nothing was imported"
        )


def _header(path: Path, line: bytes | None) -> dict[str, Any]:
    try:
        header = json.loads(line) if line else None
    except ValueError:
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise BundleError(
            f"{path} is not an llm-ledger bundle (its first line is no {FORMAT} header)"
        )
    version = header.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:  # true == 1 is no version
        raise BundleError(
            f"{path} is in bundle format version {version!r}; this llm-ledger {__version__} reads "
            f"version {FORMAT_VERSION} only"
            + (
                "; upgrade with `pip install -U llm-ledger`"
                if isinstance(version, int) and version > FORMAT_VERSION
                else ""
            )
        )
    counts, checksum = header.get("counts"), header.get("checksum")
    if (
        not isinstance(checksum, str)
        or not isinstance(counts, dict)
        or set(counts) != set(RECORD_TYPES.values())
        or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts.values()
        )
    ):
        raise BundleError(f"{path}: the bundle header lacks valid 'counts' and 'checksum' fields")
    return header


def _hash_of(obj: dict[str, Any]) -> str:
    """The hash keys.py gives ``obj`` (docs/hashing.md): SHA-256 of its canonical JSON."""
    try:
        return hash_json(canonical_json(obj))
    except RecursionError:
        raise BundleError("nests JSON too deep to read") from None


@dataclass
class _Refs:
    """What a bundle defines, to check uniqueness and that every reference resolves."""

    requests: set[str] = field(default_factory=set)
    responses: dict[int, str] = field(default_factory=dict)  # id -> the request it answered
    entries: set[tuple[str, str, int]] = field(default_factory=set)
    calls: set[str] = field(default_factory=set)
    bad_responses: dict[int, str] = field(default_factory=dict)

    def check(self, rtype: str, row: dict[str, Any]) -> None:
        if rtype != "request" and row["request_hash"] not in self.requests:
            raise BundleError(
                f"{rtype} record refers to request {row['request_hash']} not in the bundle"
            )
        if rtype in ("cache_entry", "call") and row["response_id"] is not None:
            if row["response_id"] not in self.responses:
                raise BundleError(
                    f"{rtype} record refers to response {row['response_id']} not in the bundle"
                )
            answered = self.responses[row["response_id"]]
            if rtype == "cache_entry" and answered != row["request_hash"]:
                raise BundleError(
                    f"cache_entry for request {row['request_hash']} points at response "
                    f"{row['response_id']}, which answered request {answered}: it would serve "
                    "another request's answer"
                )
        key: Any
        seen: set[Any]
        if rtype == "request":
            seen, key = self.requests, row["request_hash"]
            # Its text is not checked against its hash: a client's ``redact`` hook stores
            # another text than the one hashed (docs/hashing.md), and a bundle's answers are
            # trusted either way (docs/transfer.md, "What an import trusts").
            body = row["request"]
            if (body.get("kind"), body.get("model")) != (row["kind"], row["model"]):
                raise BundleError(f"request {key}: kind and model are not its request's")
        elif rtype == "response":
            seen, key = set(self.responses), row["id"]
            if _hash_of(row["response"]) != row["response_hash"]:
                self.bad_responses[key] = "its response_hash does not match its response"
        elif rtype == "cache_entry":
            seen, key = self.entries, (row["namespace"], row["request_hash"], row["slot"])
        else:
            seen, key = self.calls, row["call_uuid"]
        if key in seen:
            raise BundleError(f"{rtype} {key} appears twice")
        if rtype == "response":
            self.responses[key] = row["request_hash"]
        else:
            seen.add(key)


@dataclass
class Verified:
    """A bundle that passed every check; ``bad_responses`` will be refused, not imported."""

    header: dict[str, Any]
    checksum: str
    bad_responses: dict[int, str]


def verify_bundle(path: str | os.PathLike[str]) -> Verified:
    """Read the whole bundle and check it; raises BundleError on the first problem.

    Checks: header (format, version), the checksum and the counts (tampering,
    truncation), every record's fields and types, their order, unique identities,
    and that every reference resolves inside the bundle.
    """
    path = Path(path)
    lines = _lines(path)
    header = _header(path, next(lines, None))
    hasher, counts = hashlib.sha256(), dict.fromkeys(RECORD_TYPES.values(), 0)
    refs, problem, last = _Refs(), None, 0
    for lineno, raw in enumerate(lines, start=2):
        hasher.update(raw)
        if problem is not None:
            continue
        try:
            if not raw.endswith(b"\n"):
                raise BundleError("the line is incomplete")
            rtype, row = decode(raw)
            if _ORDER[rtype] < last:
                raise BundleError(f"a {rtype} record after the {list(RECORD_TYPES)[last]} records")
            last = _ORDER[rtype]
            counts[RECORD_TYPES[rtype]] += 1
            refs.check(rtype, row)
        except BundleError as exc:
            problem = f"line {lineno}: {exc}"
    checksum = hasher.hexdigest()
    if checksum != header["checksum"] or (problem is None and counts != header["counts"]):
        raise BundleError(
            f"{path} fails its checksum: it was modified or truncated after export "
            f"(header: {sum(header['counts'].values())} records, sha256 {header['checksum'][:12]}…; "
            f"file: sha256 {checksum[:12]}…); nothing was imported"
        )
    if problem is not None:
        raise BundleError(f"{path}, {problem}; nothing was imported")
    return Verified(header, checksum, refs.bad_responses)


# --- export -------------------------------------------------------------------

_READERS = {
    "request": bulk.read_requests,
    "response": bulk.read_responses,
    "cache_entry": bulk.read_cache_entries,
    "call": bulk.read_calls,
}


def export_bundle(
    ledger_or_location: Ledger | str,
    path: str | os.PathLike[str],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    model: str | None = None,
    run: str | None = None,
    cache_only: bool = False,
    progress: bool = False,
    batch_size: int = DEFAULT_BATCH,
) -> dict[str, Any]:
    """Write a bundle of the ledger (or of what the filters select; see bulk.Selection).

    The file appears complete or not at all (written to a temporary file, then renamed).
    Returns the path, the record counts per type, the checksum and the file size.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise TransferError(f"cannot write {path}: the directory {path.parent} does not exist")
    if path.is_dir():  # checked before any work: the rename at the end would fail on it
        raise TransferError(
            f"cannot write {path}: it is a directory; name a bundle file, e.g. "
            f"{path / 'ledger.jsonl.gz'}"
        )
    source = ledger_or_location
    own = db.own_file(source.url if isinstance(source, Ledger) else db.normalize_url(source), path)
    if own is not None:
        raise TransferError(
            f"cannot write {path}: it is the ledger {own} or one of its files; name another "
            "file, e.g. ledger.jsonl.gz"
        )
    sel = bulk.Selection(since, until, model, run, cache_only)
    counts = dict.fromkeys(RECORD_TYPES.values(), 0)
    hasher = hashlib.sha256()
    with (
        bulk.opened(ledger_or_location) as ledger,
        bulk.snapshot(ledger.engine) as conn,
        tempfile.TemporaryFile(dir=path.parent or ".") as body,
    ):
        total = sum(bulk.count_selected(conn, sel).values()) if progress else None
        with progress_bar(progress, f"export {path.name}", total) as advance:
            for rtype, read in _READERS.items():
                for rows in read(conn, sel, batch_size):
                    for row in rows:
                        line = encode(rtype, row)
                        hasher.update(line)
                        body.write(line)
                    counts[RECORD_TYPES[rtype]] += len(rows)
                    advance(len(rows) + sum(len(r.get("call_tags", ())) for r in rows))
        header = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "schema_revision": ledger.revision,
            "library_version": __version__,
            "exported_at": datetime.now(timezone.utc)
            .replace(tzinfo=None)
            .isoformat(timespec="seconds"),
            "filters": {
                "since": _encode_value(since),
                "until": _encode_value(until),
                "model": model,
                "run": run,
                "cache_only": cache_only,
            },
            "counts": counts,
            "checksum": hasher.hexdigest(),
        }
        body.seek(0)
        _write_atomically(path, json.dumps(header, sort_keys=True).encode() + b"\n", body)
    log.info("ledger.exported", path=str(path), checksum=header["checksum"], **counts)
    return {
        "path": str(path),
        "counts": counts,
        "sha256": header["checksum"],
        "bytes": path.stat().st_size,
    }


def _write_atomically(path: Path, header: bytes, body: IO[bytes]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent or ".", prefix=f".{path.name}.", suffix=".tmp")
    try:
        with open(fd, "wb") as raw:
            if path.name.endswith(".gz"):
                with gzip.GzipFile(filename=path.name[:-3], mode="wb", fileobj=raw, mtime=0) as out:
                    out.write(header)
                    while chunk := body.read(1 << 20):
                        out.write(chunk)
            else:
                raw.write(header)
                while chunk := body.read(1 << 20):
                    raw.write(chunk)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# --- import and copy ----------------------------------------------------------


def _merge(
    merger: bulk.Merger, rtype: str, rows: list[dict[str, Any]], bad: dict[int, str]
) -> None:
    if rtype == "request":
        merger.requests(rows)
    elif rtype == "response":
        merger.responses(rows, refused=lambda r: bad.get(r["id"]))
    elif rtype == "cache_entry":
        merger.cache_entries(rows)
    else:
        merger.calls(rows)


def import_bundle(
    location: Ledger | str,
    path: str | os.PathLike[str],
    *,
    progress: bool = False,
    batch_size: int = DEFAULT_BATCH,
) -> dict[str, Any]:
    """Merge a bundle into the ledger at ``location``; importing it again adds nothing.

    The whole file is verified first (:func:`verify_bundle`); then every record is
    written in one transaction, so a failure leaves the ledger as it was. Returns per
    kind of record: added, already_present, refused; their totals; refusal reasons.
    """
    path = Path(path)
    checked = verify_bundle(path)
    total = sum(checked.header["counts"].values())
    with bulk.opened(location) as target, target.engine.begin() as conn:
        merger = bulk.Merger(target, conn)
        hasher = hashlib.sha256()
        lines = _lines(path)
        next(lines)
        batch: list[dict[str, Any]] = []
        current, held = "request", 0
        with progress_bar(progress, f"import {path.name}", total) as advance:

            def write() -> None:
                nonlocal batch, held
                _merge(merger, current, batch, checked.bad_responses)
                advance(len(batch))
                batch, held = [], 0

            for raw in lines:
                hasher.update(raw)
                rtype, row = decode(raw)
                if batch and rtype != current:
                    write()
                current = rtype
                batch.append(row)
                held += len(raw)
                # Written as soon as it is full, before the next line is decoded beside it.
                if len(batch) >= batch_size or held >= BATCH_BYTES:
                    write()
            if batch:
                write()
        if hasher.hexdigest() != checked.checksum:
            raise BundleError(f"{path} changed while it was being imported; nothing was imported")
    result = merger.result.as_dict()
    result["bundle"] = {
        k: checked.header.get(k)
        for k in ("format_version", "schema_revision", "library_version", "exported_at", "counts")
    }
    log.info(
        "ledger.imported",
        path=str(path),
        added=result["added"],
        already_present=result["already_present"],
        refused=result["refused"],
    )
    return result


COPY_CACHE_KIB = 16384
"""SQLite page cache of a copy's target connection (the default is 2 MiB)."""
ATTACHED_COPY_CACHE_KIB = 2048
"""The same when the copy runs inside SQLite (INSERT ... SELECT from the attached source)."""
_SOURCE = "llm_ledger_copy_source"
"""The schema name an SQLite source is attached under on the target's connection."""


def copy_ledger(
    source: Ledger | str,
    target_url: str,
    *,
    batch_size: int = 5000,
    progress: bool = False,
) -> dict[str, Any]:
    """Copy every row of ``source`` into the ledger at ``target_url``.

    Into an empty ledger (the usual case: a new database) the copy is verbatim: every
    row keeps its id, so the target equals the source, identical responses included,
    and memory stays flat however large the ledger. Into a ledger holding rows it is a
    merge with import's rules (so copying twice adds nothing the second time).

    The target schema is created or upgraded; the copy reads one snapshot of the
    source and writes in one transaction (all or nothing), in batches of executemany;
    or, verbatim from one SQLite file into another, in batches of INSERT ... SELECT from
    the source attached to the target's connection, so no row passes through Python.
    """
    with bulk.opened(source) as src:
        if db.normalize_url(target_url) == src.url:
            raise TransferError(
                f"{db.describe(src.url)} is the source ledger itself; copy --to another database"
            )
        target = Ledger(target_url, auto_upgrade=True)
        started = time.perf_counter()
        try:
            with bulk.snapshot(src.engine) as read, target.engine.connect() as write:
                rollback_journal = _rollback_journal(target, write)
                try:
                    with write.begin():
                        merger = _copy(src, target, read, write, batch_size, progress)
                finally:
                    _detach(write)  # after the transaction: SQLite cannot detach inside one
                    if rollback_journal:
                        raw: Any = write.connection.driver_connection
                        # Refused only if another connection reads it right now: then the
                        # next open switches it (every connection asks for WAL at open).
                        with contextlib.suppress(sqlite3.OperationalError):
                            raw.execute("PRAGMA journal_mode = WAL")
        finally:
            target.close()
    result = merger.result.as_dict()
    result["seconds"] = round(time.perf_counter() - started, 3)
    log.info(
        "ledger.copied",
        target=db.describe(target.url),
        added=result["added"],
        already_present=result["already_present"],
        seconds=result["seconds"],
    )
    return result


def _rollback_journal(target: Ledger, write: Any) -> bool:
    """An SQLite target leaves WAL for a rollback journal for the copy; True if it did.

    In WAL one transaction writes every page twice (the log, then the checkpoint), and
    the log's index, mapped in memory, grows with the transaction: ~6 MB for a million
    calls. A rollback journal keeps only pages that existed before, none for a new file,
    and the commit syncs it (``synchronous = FULL``): still all or nothing, a crash is
    rolled back at the next open. WAL comes back after the copy, and at every open. If
    another connection has the file open the switch is refused, and the copy runs in WAL.
    """
    if target.dialect != "sqlite" or db.sqlite_path(target.url) is None:
        return False
    target.engine.pool.dispose()  # the schema check's idle connections would refuse it
    raw = write.connection.driver_connection  # outside SQLAlchemy's transaction: none is open
    try:  # held open elsewhere: say so now, not in 30 s
        with connections.no_busy_wait(raw, db.SQLITE_BUSY_TIMEOUT_MS):
            (mode,) = raw.execute("PRAGMA journal_mode = TRUNCATE").fetchone()
    except sqlite3.OperationalError:  # "database is locked"
        return False
    if str(mode).lower() != "truncate":
        return False
    raw.execute("PRAGMA synchronous = FULL")
    return True


def _copy(
    src: Ledger, target: Ledger, read: Any, write: Any, batch_size: int, progress: bool
) -> bulk.Merger:
    """copy_ledger's transaction: every row of ``read``'s snapshot written on ``write``."""
    if target.dialect == "sqlite":
        # The write lock now, before the Merger looks at what the target holds
        # (pysqlite would begin only at the first INSERT).
        write.exec_driver_sql("BEGIN IMMEDIATE")
    sel = bulk.Selection()
    total = sum(bulk.count_selected(read, sel).values()) if progress else None
    merger = bulk.Merger(target, write, source_unique=True, keep_ids=bulk.max_ids(read))
    steps: list[tuple[Callable[..., Iterator[Any]], Callable[[Any], None]]] = [
        (bulk.read_requests, merger.requests),
        (bulk.read_responses, merger.responses),
        (functools.partial(bulk.read_cache_entries, keep_id=True), merger.cache_entries),
        (functools.partial(bulk.read_calls, keep_id=True), merger.calls),
    ]
    source_file = db.sqlite_path(src.url)
    attached = (
        merger.verbatim
        and source_file is not None
        and target.dialect == "sqlite"
        and src.revision == target.revision  # the same columns on both sides
    )
    if target.dialect == "sqlite":
        # Row by row, one transaction rewrites the index pages over and over: in SQLite's
        # default 2 MB cache they are spilled and written again and again, so a fixed
        # 16 MB. Attached, rows go in by key and the indexes are built at the end: no page
        # is rewritten, and the default does (a larger one only grows the peak).
        kib = ATTACHED_COPY_CACHE_KIB if attached else COPY_CACHE_KIB
        write.exec_driver_sql(f"PRAGMA main.cache_size = -{kib}")
    where = f"the source {db.describe(src.url)}"
    if attached:
        # Attached inside the transaction: the source is read from one snapshot, taken at
        # its first read (the check's) and held to the end, and never locked against its
        # writers.
        write.exec_driver_sql(f"ATTACH DATABASE ? AS {_SOURCE}", (str(source_file),))
        vetting.check_sqlite_source(write, _SOURCE, where)
        steps = [
            (functools.partial(_read_attached, write, table), write_batch)
            for table, (_, write_batch) in zip(ATTACHED_TABLES, steps, strict=True)
        ]
    elif src.dialect == "sqlite":
        vetting.check_sqlite_source(read, "main", where)
    else:  # typed columns: only their ids' range to check
        vetting.check_ids(read, where)
    with (
        bulk.indexes_deferred(write) if merger.verbatim else contextlib.nullcontext(),
        progress_bar(progress, f"copy to {db.describe(target.url)}", total) as advance,
    ):
        for read_batches, write_batch in steps:
            for rows in read_batches(read, sel, batch_size):
                if isinstance(rows, Attached):  # how many rows it held is known once written
                    before = _seen(merger.result)
                    write_batch(rows)
                    advance(_seen(merger.result) - before)
                else:
                    write_batch(rows)
                    advance(len(rows) + sum(len(r.get("call_tags", ())) for r in rows))
    return merger


ATTACHED_TABLES = ("requests", "responses", "cache_entries", "call_log")
"""The tables copy_ledger reads, in order, as Attached batches (call_log's carry their tags)."""


def _read_attached(
    conn: Any, table: str, _read: Any, _sel: bulk.Selection, batch_size: int
) -> Iterator[Attached]:
    return attached_batches(conn, _SOURCE, table, batch_size)


def _seen(result: bulk.MergeResult) -> int:
    return sum(t.added + t.already_present + t.refused for t in result.tallies.values())


def _detach(conn: Any) -> None:
    """Detach the copy's source if it is attached (a failure here would hide the copy's own
    error, and the connection is closed with the target ledger right after anyway)."""
    with contextlib.suppress(DBAPIError):
        if conn.dialect.name == "sqlite" and any(
            name == _SOURCE for _, name, *_ in conn.exec_driver_sql("PRAGMA database_list")
        ):
            conn.exec_driver_sql(f"DETACH DATABASE {_SOURCE}")


def progress_bar(
    enabled: bool, description: str, total: int | None
) -> contextlib.AbstractContextManager[Callable[[int], None]]:
    """The CLI's progress bar (cli/output.py), imported only when one is drawn."""
    if not enabled:
        return contextlib.nullcontext(lambda n: None)
    from .cli.output import progress_bar as bar

    return bar(enabled, description, total)
