"""One small hierarchy, rooted in :class:`LedgerError`.

Messages say what was wrong and what to run or change: they are read by a
person whose program just stopped.
"""

from __future__ import annotations


class LedgerError(Exception):
    """Root of every error this library raises on purpose."""


class ConfigError(LedgerError, ValueError):
    """A setting has a wrong name or value."""


class InvalidInputError(LedgerError, ValueError):
    """A request is malformed; raised before anything is sent or recorded."""


class InvalidInputTypeError(LedgerError, TypeError):
    """A request argument has the wrong type; raised before anything is sent."""


class InvalidRequestError(LedgerError):
    """The API refused the request as invalid (HTTP 400 and kin): never retried."""


class NonTerminalError(LedgerError):
    """A failure worth retrying (custom clients may raise it from ``_raw_model_call``)."""


class CacheMissError(LedgerError):
    """Replay mode found no stored answer; nothing was sent to the API."""

    def __init__(self, request_hash: str, model: str, last_message: str) -> None:
        self.request_hash = request_hash
        self.model = model
        self.last_message = last_message
        super().__init__(
            f"replay mode: no stored answer for request {request_hash[:16]}… "
            f"(model {model!r}, last message starts {last_message[:60]!r}); "
            "record it first with mode='record' (LLM_LEDGER_MODE=record), or check the "
            "namespace and ledger URL"
        )


class BudgetExceededError(LedgerError):
    """A call would take a scope past its ``max_cost_usd``; it was refused before sending."""


class LedgerOpenError(LedgerError):
    """The ledger database cannot be opened or is not a ledger."""


class LedgerUnwritableError(LedgerError):
    """Neither the ledger nor its spool could take a paid answer: until one of them can,
    no further API call is made (the answers already paid for are held in memory)."""


class SchemaVersionError(LedgerOpenError):
    """The ledger's schema revision differs from the one this code expects."""


class APICallError(LedgerError):
    """The API call failed after all attempts; ``sdk_error`` holds the last SDK error (scrubbed
    from the message; not chained, so a traceback never prints an API key it may echo)."""

    sdk_error: BaseException | None
    """The last error the SDK raised (set by the client after it scrubbed the message)."""

    def __init__(self, message: str, *, attempts: int, error_type: str) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.error_type = error_type
        self.sdk_error = None


class RateLimitError(APICallError):
    """The API kept answering 429 until the attempts ran out."""


class TransferError(LedgerError):
    """An export, import or copy cannot be done as asked."""


class BundleError(TransferError):
    """The file is not a bundle this library can import (corrupt, truncated, tampered, too new)."""


class PickleImportError(LedgerError):
    """The pickle cannot be imported (unreadable, or not the seed's cache dict)."""


class UnsafePickleError(PickleImportError):
    """The pickle names code outside the allowed response classes; nothing in it was run."""
