"""Which calls a command looks at: one filter object for calls, search, costs, stats, report.

Every reading command takes the same options (``--since/--until/--run/--model/--status/
--cache/--namespace/--tag key=value``); they become a :class:`CallFilter`, whose
:meth:`~CallFilter.conditions` are plain SQLAlchemy conditions on ``call_log`` (or on a
relation with the same column names, such as the ``calls`` view), the same on every engine.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import ColumnElement, select

from .errors import ConfigError
from .store.models import CallLog, CallTag

__all__ = ["STATUSES", "CACHE_STATUSES", "CallFilter", "parse_tags"]

_LOG = CallLog.__table__
_TAGS = CallTag.__table__
STATUSES = ("ok", "error", "refused")
CACHE_STATUSES = ("hit", "miss", "bypass")


def parse_tags(pairs: Iterable[str] | None) -> tuple[tuple[str, str], ...]:
    """``["team=x", "exp=1"]`` -> ``(("team", "x"), ("exp", "1"))``; ConfigError on a bad one."""
    out = []
    for pair in pairs or ():
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--tag {pair!r}: expected NAME=VALUE, for example --tag team=search")
        out.append((name.strip(), value))
    return tuple(out)


@dataclass(frozen=True)
class CallFilter:
    """A conjunction of call conditions; None (or empty ``tags``) means "any"."""

    since: str | date | datetime | None = None
    until: str | date | datetime | None = None
    run: str | None = None
    model: str | None = None
    status: str | None = None
    cache: str | None = None
    namespace: str | None = None
    tags: Sequence[tuple[str, str]] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in STATUSES:
            raise ConfigError(f"status={self.status!r}: expected one of {', '.join(STATUSES)}")
        if self.cache is not None and self.cache not in CACHE_STATUSES:
            raise ConfigError(f"cache={self.cache!r}: expected one of {', '.join(CACHE_STATUSES)}")

    def conditions(self, relation: Any = _LOG) -> list[ColumnElement[bool]]:
        """The WHERE conditions on ``relation`` (call_log, or the calls view)."""
        from .reports import time_range  # reports imports this module

        c = relation.c
        lo, hi = time_range(self.since, self.until)
        where: list[ColumnElement[bool]] = []
        if lo is not None:
            where.append(c.created_at >= lo)
        if hi is not None:
            where.append(c.created_at < hi)
        for name, value in (
            ("run", self.run),
            ("model", self.model),
            ("status", self.status),
            ("cache_status", self.cache),
            ("namespace", self.namespace),
        ):
            if value is not None:
                where.append(c[name] == value)
        for name, value in self.tags:
            tagged = select(_TAGS.c.call_id).where(_TAGS.c.name == name, _TAGS.c.value == value)
            where.append(c.id.in_(tagged))
        return where

    def describe(self) -> str:
        """The filter in words, for a report's subtitle ("all calls" when empty)."""
        parts = [
            f"{name} {value}"
            for name, value in (
                ("since", self.since),
                ("until", self.until),
                ("run", self.run),
                ("model", self.model),
                ("status", self.status),
                ("cache", self.cache),
                ("namespace", self.namespace),
            )
            if value is not None
        ]
        parts += [f"tag {k}={v}" for k, v in self.tags]
        return ", ".join(parts) if parts else "all calls"
