"""Time bounds as the ledger stores time (naive UTC): the one parser of ``--since``/``--until``.

Used by the reports, the CLI (``calls``, ``costs``, ``export``, ``prune`` ...) and export
filters alike, so every command reads a date the same way.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone

from .errors import ConfigError

DATE_FORMAT_HELP = "YYYY-MM-DD or an ISO 8601 datetime such as 2026-05-01T12:30:00Z (UTC)"
_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_time(
    value: str | date | datetime | None, name: str, *, end: bool = False
) -> datetime | None:
    """A bound as naive UTC; a date alone means its midnight (``end``: the next one).

    Offsets (``+02:00``, ``Z``) are converted to UTC. A malformed value is a
    :class:`ConfigError` naming ``name`` and the accepted formats.
    """
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
        return moment + timedelta(days=1) if end else moment
    elif isinstance(value, str):
        text = value.strip()
        try:
            if _DATE_ONLY.fullmatch(text):
                return parse_time(date.fromisoformat(text), name, end=end)
            if len(text) < 11 or text[10] not in "Tt ":
                raise ValueError(text)
            if text.endswith(("Z", "z")):
                text = text[:-1] + "+00:00"
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ConfigError(
                f"{name}={value!r} is not a date: expected {DATE_FORMAT_HELP}"
            ) from None
    else:
        raise ConfigError(f"{name}={value!r}: expected {DATE_FORMAT_HELP}")
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return moment


def time_range(
    since: str | date | datetime | None, until: str | date | datetime | None
) -> tuple[datetime | None, datetime | None]:
    """``[since, until)`` as naive UTC datetimes; ConfigError if either is malformed or reversed."""
    lo = parse_time(since, "since")
    hi = parse_time(until, "until", end=True)
    if lo is not None and hi is not None and lo >= hi:
        raise ConfigError(f"since={since!r} is not before until={until!r}: the range is empty")
    return lo, hi
