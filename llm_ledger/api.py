"""Talking to the API: attempts with backoff, error classes, usage from responses."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import openai

from .errors import (
    APICallError,
    ConfigError,
    InvalidRequestError,
    LedgerError,
    NonTerminalError,
    RateLimitError,
)
from .log import logger
from .records import Usage
from .redaction import scrub, sdk_error_copy

log = logger
T = TypeVar("T")

# Answers the API will give again if asked again: never retried.
TERMINAL = (
    InvalidRequestError,
    openai.BadRequestError,
    openai.UnprocessableEntityError,
    openai.AuthenticationError,
    openai.PermissionDeniedError,
    openai.NotFoundError,
)
# A server asking for longer than this gets this (the SDK's own retries cap at 60 s too).
MAX_RETRY_AFTER = 60.0
RETRYABLE = (
    NonTerminalError,
    openai.RateLimitError,
    openai.InternalServerError,
    openai.APIConnectionError,  # includes APITimeoutError
    openai.ConflictError,
)


def is_retryable(exc: BaseException) -> bool:
    if (
        isinstance(exc, TERMINAL)
        or isinstance(exc, LedgerError)
        and not isinstance(exc, NonTerminalError)
    ):
        return False
    if isinstance(exc, RETRYABLE):
        return True
    return isinstance(exc, openai.APIStatusError) and exc.status_code >= 500


def retry_after(exc: BaseException) -> float | None:
    """Seconds the server asked us to wait (``retry-after`` / ``retry-after-ms``), if any."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    try:
        if headers.get("retry-after-ms") is not None:
            seconds = float(headers["retry-after-ms"]) / 1000
        elif headers.get("retry-after") is not None:
            seconds = float(headers["retry-after"])
        else:
            return None
    except (TypeError, ValueError):
        return None  # an HTTP date or garbage: fall back to our own backoff
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, MAX_RETRY_AFTER)


@dataclass
class Outcome:
    value: Any
    attempts: int
    error: BaseException | None


def attempt(
    fn: Callable[[], T],
    *,
    max_attempts: int,
    waiting_time: float,
    backoff_factor: float,
    sleep: Callable[[float], None] = time.sleep,
    context: dict[str, Any] | None = None,
) -> Outcome:
    """Call ``fn`` up to ``max_attempts`` times; waits ``waiting_time * factor**k`` between tries."""
    for n in range(1, max_attempts + 1):
        try:
            return Outcome(fn(), n, None)
        except ConfigError:
            raise  # a setting is missing or wrong: no attempt was made, nothing to retry
        except Exception as exc:  # noqa: BLE001 - classified below, never swallowed silently
            if not is_retryable(exc) or n == max_attempts:
                log.warning(
                    "llm.give_up",
                    attempts=n,
                    error_type=type(exc).__name__,
                    retryable=is_retryable(exc),
                    **(context or {}),
                )
                return Outcome(None, n, exc)
            delay = retry_after(exc)
            if delay is None:
                delay = waiting_time * backoff_factor ** (n - 1)
            log.info(
                "llm.retry",
                attempt=n,
                delay_s=delay,
                error_type=type(exc).__name__,
                **(context or {}),
            )
            sleep(delay)
    raise AssertionError("unreachable")


def typed_error(exc: BaseException, attempts: int, key: str | None = None) -> LedgerError:
    """The library's exception for a failed call (raise_on_error=True)."""
    message = scrub(f"{type(exc).__name__}: {exc}", key)
    if isinstance(exc, InvalidRequestError):
        return exc
    if isinstance(exc, LedgerError) and not isinstance(exc, NonTerminalError):
        return exc
    if isinstance(exc, TERMINAL):
        err: LedgerError = InvalidRequestError(message)
    elif isinstance(exc, openai.RateLimitError):
        err = RateLimitError(
            f"rate limited after {attempts} attempt(s): {message}",
            attempts=attempts,
            error_type=type(exc).__name__,
        )
    else:
        err = APICallError(
            f"the API call failed after {attempts} attempt(s): {message}",
            attempts=attempts,
            error_type=type(exc).__name__,
        )
    # Not chained as __cause__: the SDK's message may echo the API key, and a printed
    # traceback would show it. A scrubbed copy stays reachable as ``sdk_error``.
    err.sdk_error = sdk_error_copy(exc, key)  # type: ignore[attr-defined]
    return err


def to_dict(response: Any) -> dict[str, Any]:
    """The SDK's response as the JSON it came from (unset fields left out)."""
    if isinstance(response, dict):
        return response
    if hasattr(response, "model_dump"):
        return response.model_dump(mode="json", exclude_unset=True)
    if hasattr(response, "to_dict"):
        return response.to_dict()
    raise TypeError(f"cannot store a response of type {type(response).__name__}")


def as_sdk_response(response: dict[str, Any]) -> Any:
    """A stored chat answer as the SDK's ``ChatCompletion`` (what the API call gave on the
    miss); the dict itself when it is not one (a custom ``_raw_model_call`` may store any)."""
    from openai.types.chat import ChatCompletion
    from pydantic import ValidationError

    try:
        return ChatCompletion.model_validate(response)
    except ValidationError:
        return response


def usage_of(response: dict[str, Any]) -> Usage | None:
    u = response.get("usage")
    if not isinstance(u, dict):
        return None
    prompt = u.get("prompt_tokens")
    completion = u.get("completion_tokens")
    total = u.get("total_tokens")
    if prompt is not None and (total is None or total < prompt + (completion or 0)):
        # Absent, or less than its parts (a mock's 0): the sum, as every real API reports it.
        total = prompt + (completion or 0)
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_tokens=(u.get("prompt_tokens_details") or {}).get("cached_tokens"),
        reasoning_tokens=(u.get("completion_tokens_details") or {}).get("reasoning_tokens"),
        total_tokens=total,
    )
