"""Importing the seed's pickle cache (``openai_api_cache.pickle``) without running its code.

The seed keeps a dict ``{str((model, chat_api_params)): response}`` and pickles it.
Loading a pickle can call any importable function, so :class:`SafeUnpickler` only
resolves plain containers and scalars and the OpenAI SDK's (pydantic) response
classes; a file naming anything else is refused before any of it runs.

Each entry becomes what the ledger would hold had the call gone through
llm_ledger: the canonical request (keys.chat_request, with the client's own
normalisation), the response, a cache entry (slot 0, the given namespace) and one
audit row marked ``api_type='import'``. Entries that cannot be mapped are counted
with their reason, never dropped silently.
"""

from __future__ import annotations

import ast
import dataclasses
import io
import os
import pickle
import re
import sys
import threading
import uuid
from collections import Counter
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

from . import api, bulk, keys, pricing
from ._version import __version__
from .errors import LedgerError, PickleImportError, UnsafePickleError
from .log import logger
from .records import CallRecord, Usage
from .store.repository import Ledger
from .store.statements import call_log_row, usage_columns

log = logger

IMPORT_API_TYPE = "import"
BATCH = 2000
COST_NOTE = "imported from a pickle cache: paid for outside this ledger"
# call_uuid of an imported entry: uuid5 of (namespace, request hash, response hash), so
# importing the same file twice finds its audit rows already there.
_UUID_NAMESPACE = uuid.UUID("0b0b4a5e-5eed-4c1e-9d6a-6c1ed9e71c5e")

_SAFE_GLOBALS = frozenset(
    {(mod, name) for mod in ("builtins", "__builtin__") for name in (
        "dict", "list", "tuple", "set", "frozenset", "str", "bytes", "bytearray",
        "int", "float", "complex", "bool", "object",
    )}
    | {("copyreg", "_reconstructor"), ("copy_reg", "_reconstructor")}
    | {("collections", "OrderedDict"), ("datetime", "datetime"), ("datetime", "date"),
       ("datetime", "timedelta"), ("datetime", "timezone"), ("decimal", "Decimal")}
)  # fmt: skip
_RESPONSE_MODULES = ("openai.types.", "pydantic.")


MAX_PICKLE_BYTES = 1024**3
"""The largest pickle file imported; with no constructor allowed to grow what it reads,
the import then holds the file and the objects it spells out, nothing more."""
MAX_DEPTH = 200
"""The deepest nesting of containers a cache entry may have."""
_SIZED = frozenset({"str", "bytes", "bytearray"})


def _no_size_argument(cls: type) -> Any:
    """``bytes(8_000_000_000)`` allocates from a few bytes of pickle: refuse int arguments."""

    def build(*args: Any, **kwargs: Any) -> Any:
        if any(isinstance(a, int) for a in args) or kwargs:
            raise UnsafePickleError(
                f"the pickle calls {cls.__name__}() with a size, which could exhaust memory; "
                "the seed's cache never does, so it was refused"
            )
        return cls(*args)

    build.__name__ = build.__qualname__ = cls.__name__
    return build


def _reconstructor(cls: type, base: type, state: Any) -> Any:
    """copyreg._reconstructor for plain objects only (its base's __init__ could allocate)."""
    if base is not object:
        raise UnsafePickleError(
            f"the pickle rebuilds {getattr(cls, '__name__', cls)} on {getattr(base, '__name__', base)}"
            ", not object; the seed's cache never does, so it was refused"
        )
    return object.__new__(cls)


class SafeUnpickler(pickle.Unpickler):
    """Resolves only containers, scalars and OpenAI/pydantic response model classes.

    A response class is looked up, never imported: only in modules the installed
    openai has already loaded, and only when it is a pydantic model defined there, so
    a pickle naming ``pydantic.mypy`` or any other module runs none of its code.
    """

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS:
            if name == "_reconstructor":
                return _reconstructor
            if name in _SIZED:
                return _no_size_argument(super().find_class(module, name))
            return super().find_class(module, name)
        if module.startswith(_RESPONSE_MODULES) and name.isidentifier():
            import sys

            import openai.types  # noqa: F401  (loads the response modules, trusted)
            import pydantic

            loaded = sys.modules.get(module)
            if loaded is not None:
                found = vars(loaded).get(name)  # vars(): no module __getattr__ runs
                if found is None and module.startswith("openai.types"):
                    raise PickleImportError(
                        f"the pickle refers to {module}.{name}, which the installed "
                        "openai/pydantic does not have; import it with the openai version "
                        "that wrote it"
                    )
                if (
                    isinstance(found, type)
                    and issubclass(found, pydantic.BaseModel)
                    and (found is pydantic.BaseModel or found.__module__.startswith("openai."))
                ):
                    return found
        raise UnsafePickleError(
            f"the pickle refers to {module}.{name}, which is not an OpenAI response class or a "
            "plain container; loading it could run code, so it was refused and nothing in it "
            "was run. Only import pickles written by the seed's OpenAIClient cache."
        )


def _too_deep(obj: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether containers nest deeper than ``limit`` (walked without recursion)."""
    stack: list[tuple[Any, int]] = [(obj, 0)]
    seen: set[int] = set()
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if id(item) in seen:
            continue
        if isinstance(item, dict):
            seen.add(id(item))
            stack.extend((v, depth + 1) for pair in item.items() for v in pair)
        elif isinstance(item, list | tuple | set | frozenset):
            seen.add(id(item))
            stack.extend((v, depth + 1) for v in item)
        elif hasattr(item, "__dict__") and not isinstance(item, type):
            seen.add(id(item))
            stack.extend((v, depth + 1) for v in vars(item).values())
    return False


def load_cache(path: str | os.PathLike[str]) -> dict[Any, Any]:
    """The seed's cache dict, unpickled with :class:`SafeUnpickler` (limits: MAX_PICKLE_BYTES,
    no size-argument constructors, MAX_DEPTH)."""
    size = Path(path).stat().st_size
    if size > MAX_PICKLE_BYTES:
        raise PickleImportError(
            f"{path} is {size:,} bytes, more than the {MAX_PICKLE_BYTES:,} a pickle import reads"
        )
    data = Path(path).read_bytes()
    try:
        cache = SafeUnpickler(io.BytesIO(data)).load()
    except PickleImportError as exc:
        raise type(exc)(f"{path}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - any failure to unpickle is one message
        raise PickleImportError(
            f"{path} is not a readable pickle ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(cache, dict):
        raise PickleImportError(f"{path} holds a {type(cache).__name__}, not the seed's cache dict")
    if _too_deep(cache):
        raise PickleImportError(
            f"{path} nests containers more than {MAX_DEPTH} deep; the seed's cache never does"
        )
    return cache


class Skip(Exception):
    """An entry that cannot be mapped to a ledger request; the message is the reason."""


# TinyTroupe v0.6 keys hold its pydantic response_format class: "'response_format': <class 'm.C'>".
_FORMAT_CLASS = re.compile(r"'response_format': <class '([A-Za-z_][\w.]*)'>")


def _loaded_model_class(path: str) -> Any:
    """The pydantic model class ``module.Name`` if that module is already imported (nothing
    is imported on a pickle's say-so, so no code runs), else None."""
    import pydantic

    module, _, name = path.rpartition(".")
    found = getattr(sys.modules.get(module), name, None)
    if isinstance(found, type) and issubclass(found, pydantic.BaseModel):
        return found
    return None


def map_key(key: Any) -> keys.CanonicalRequest:
    """The canonical request for a seed cache key ``str((model, chat_api_params))``.

    The parameters are normalised as ``OpenAIClient.send_message`` does (``stop`` of
    ``[]``/``""`` and ``n == 1`` left out; transport settings like timeout dropped),
    so the same call made through llm_ledger has the same request hash. A pydantic
    ``response_format`` class (TinyTroupe v0.6's keys) becomes its JSON schema, as
    ``send_message`` sends it, when its module is already imported.
    """
    if not isinstance(key, str):
        raise Skip(f"key is a {type(key).__name__}, not str((model, params))")
    response_format = None
    match = _FORMAT_CLASS.search(key)
    if match is not None:
        response_format = _loaded_model_class(match[1])
        if response_format is not None:  # else literal_eval fails below, as before
            key = key[: match.start()] + "'response_format': None" + key[match.end() :]
    try:
        parsed = ast.literal_eval(key)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise Skip(
            "key is not a Python literal (e.g. a response_format class in the key)"
        ) from None
    if not (
        isinstance(parsed, tuple)
        and len(parsed) == 2
        and isinstance(parsed[0], str)
        and isinstance(parsed[1], dict)
    ):
        raise Skip("key is not a (model, params dict) tuple")
    model, raw = parsed
    params = dict(raw)
    if params.pop("model", model) != model:
        raise Skip("key names two different models")
    if params.pop("stream", False):
        raise Skip("streamed responses cannot be imported")
    messages = params.pop("messages", None)
    params["stop"] = params.get("stop") or None
    if params.get("n") == 1:
        params["n"] = None
    if response_format is not None:
        from openai.lib._parsing._completions import type_to_response_format_param

        param: Any = type_to_response_format_param(response_format)  # a TypedDict
        params["response_format"] = dict(param)
    try:
        return keys.chat_request(messages, model, params)
    except LedgerError as exc:
        raise Skip(f"not a valid chat request: {exc}") from None


def map_value(value: Any) -> dict[str, Any]:
    """The response as the ledger stores it (what api.to_dict makes of the SDK object)."""
    if isinstance(value, dict) or hasattr(value, "model_dump"):
        response = api.to_dict(value)
    else:
        raise Skip(f"value is a {type(value).__name__}, not a chat completion")
    if not isinstance(response.get("choices"), list) or not response["choices"]:
        raise Skip("value has no 'choices': not a chat completion")
    try:
        keys.canonical_json(response)
    except LedgerError as exc:
        raise Skip(f"response cannot be stored: {exc}") from None
    return response


def _rows(
    i: int, req: keys.CanonicalRequest, response: dict[str, Any], namespace: str, now: datetime
) -> dict[str, dict[str, Any]]:
    usage = dataclasses.replace(api.usage_of(response) or Usage(), estimated=False)
    cost = pricing.price_answer(req.model, response, usage)
    response_hash = keys.hash_json(keys.canonical_json(response))
    tokens = usage_columns(usage)
    call_uuid = uuid.uuid5(_UUID_NAMESPACE, f"{namespace}\0{req.request_hash}\0{response_hash}")
    return {
        "request": {
            "request_hash": req.request_hash,
            "kind": req.kind,
            "model": req.model,
            "request": req.body,
            "created_at": now,
        },
        "response": {
            "id": i,
            "request_hash": req.request_hash,
            "response_hash": response_hash,
            "response": response,
            **tokens,
            "cost_usd": cost.cost_usd,
            "cost_note": cost.note,
            "price_version": cost.price_version,
            "created_at": now,
        },
        "cache_entry": {
            "namespace": namespace,
            "request_hash": req.request_hash,
            "slot": 0,
            "response_id": i,
            "created_at": now,
            "updated_at": now,
        },
        "call": {
            **call_log_row(
                CallRecord(
                    call_uuid=str(call_uuid),
                    created_at=now,
                    kind="chat",
                    api_type=IMPORT_API_TYPE,
                    endpoint_host=None,
                    model=req.model,
                    namespace=namespace,
                    request_hash=req.request_hash,
                    request=req.body,
                    cache_status="bypass",
                    status="ok",
                    library_version=__version__,
                    slot=0,
                    usage=usage,
                    cost_usd=Decimal(0),
                    cost_note=COST_NOTE,
                    price_version=cost.price_version,
                ),
                response_id=i,
            ),
            "call_tags": {},
        },
    }


def import_pickle(
    location: Ledger | str, path: str | os.PathLike[str], *, namespace: str = ""
) -> dict[str, Any]:
    """Import the seed's pickle cache into the ledger at ``location``.

    Returns the merge tallies (as transfer.import_bundle), ``entries`` (in the file),
    ``skipped`` and ``skip_reasons`` (reason -> number of entries).
    """
    cache = load_cache(path)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    batches: dict[str, list[dict[str, Any]]] = {
        t: [] for t in ("request", "response", "cache_entry", "call")
    }
    reasons: Counter[str] = Counter()
    for i, (key, value) in enumerate(cache.items()):
        try:
            req = map_key(key)
            response = map_value(value)
        except Skip as exc:
            reasons[str(exc)] += 1
            continue
        for rtype, row in _rows(i, req, response, namespace, now).items():
            batches[rtype].append(row)
    with bulk.opened(location) as target, target.engine.begin() as conn:
        merger = bulk.Merger(target, conn)
        steps = (merger.requests, merger.responses, merger.cache_entries, merger.calls)
        for write, rows in zip(steps, batches.values(), strict=True):
            for i in range(0, len(rows), BATCH):
                write(rows[i : i + BATCH])
    result = merger.result.as_dict()
    result.update(
        entries=len(cache),
        skipped=sum(reasons.values()),
        skip_reasons=dict(reasons.most_common()),
    )
    log.info(
        "ledger.pickle_imported",
        path=str(path),
        entries=len(cache),
        added=result["cache_entries"]["added"],
        skipped=result["skipped"],
    )
    return result


# --- a pickle at the cache path (TinyTroupe's default openai_api_cache.pickle) ---------

PICKLE_SUFFIX = ".pickle"
LEDGER_SUFFIX = ".ledger.db"
_imported: set[tuple[str, str]] = set()
_imported_lock = threading.Lock()


def ledger_beside(location: str) -> tuple[str, Path | None]:
    """The ledger location for a configured cache location, and the pickle it names (if any).

    A location ending in ``.pickle`` (the seed's and TinyTroupe's ``cache_file_name``) is
    never opened as a database: the ledger is ``<name>.ledger.db`` beside it, so the pickle
    is neither overwritten nor mistaken for a ledger.
    """
    if not location.endswith(PICKLE_SUFFIX):
        return location, None
    beside = location[: -len(PICKLE_SUFFIX)] + LEDGER_SUFFIX
    if location.startswith("sqlite:"):
        from .store.db import sqlite_path

        path = sqlite_path(location)
        return beside, path
    if "://" in location:
        return location, None  # a server database named *.pickle: not a file
    return beside, Path(location)


def import_beside(ledger: Ledger, pickle_path: Path, *, created: bool, namespace: str = "") -> None:
    """Import the pickle into the ledger beside it, once: when that ledger was just created.

    Later opens leave it alone (``llm-ledger --db X.ledger.db import-pickle X.pickle``
    imports it again). A pickle that cannot be imported is logged, not raised: the
    ledger works without it.
    """
    key = (str(pickle_path.resolve()), namespace)
    with _imported_lock:
        if key in _imported or not created or not pickle_path.is_file():
            return
        _imported.add(key)
    try:
        result = import_pickle(ledger, pickle_path, namespace=namespace)
    except (PickleImportError, OSError) as exc:
        log.warning(
            "ledger.pickle_import_failed",
            path=str(pickle_path),
            ledger=repr(ledger),
            error=str(exc)[:300],
        )
        return
    log.info(
        "ledger.pickle_imported_beside",
        path=str(pickle_path),
        entries=result["entries"],
        added=result["cache_entries"]["added"],
        skipped=result["skipped"],
    )
