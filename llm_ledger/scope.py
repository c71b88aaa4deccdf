"""``scope(run=..., tags=..., namespace=..., max_cost_usd=...)``: attribution and budgets.

Scopes live in a ContextVar, so they follow asyncio tasks and stay separate per
thread. Nested scopes merge tags (inner wins on a key), the innermost run and
namespace apply, and every enclosing budget is checked.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from decimal import Decimal

from .errors import BudgetExceededError, ConfigError
from .keys import check_label


class Budget:
    """Spend so far against a cap; shared by every call inside the scope, thread-safe."""

    def __init__(self, cap: Decimal) -> None:
        self.cap = cap
        self.spent = Decimal(0)
        self._lock = threading.Lock()

    def try_reserve(self, amount: Decimal) -> bool:
        """Hold ``amount`` against the cap if it fits; concurrent calls cannot both slip under."""
        with self._lock:
            if self.spent + amount > self.cap:
                return False
            self.spent += amount
            return True

    def settle(self, reserved: Decimal, actual: Decimal | None) -> None:
        """Replace a reservation by what the call really cost (0 when it failed)."""
        with self._lock:
            self.spent += (actual or Decimal(0)) - reserved


def reserve(budgets: tuple[Budget, ...], model: str, estimate: Decimal | None) -> Decimal:
    """Hold a call's worst-case cost against every enclosing budget, or refuse the call.

    All or nothing: a budget that cannot take it releases what the others held, and
    BudgetExceededError says which cap and what to change. Returns the amount held.
    """
    if estimate is None:
        raise BudgetExceededError(
            f"cannot estimate the cost of a call to {model!r} (no price or no token count); "
            "map the model with LLM_LEDGER_MODEL_MAP or set LLM_LEDGER_PRICES"
        )
    held: list[Budget] = []
    for b in budgets:
        if not b.try_reserve(estimate):
            for h in held:
                h.settle(estimate, Decimal(0))
            raise BudgetExceededError(
                f"budget exceeded: spent ${_usd(b.spent)} of ${_usd(b.cap)}, and this call "
                f"to {model!r} could cost up to ${_usd(estimate)}; raise max_cost_usd or "
                "lower max_tokens"
            )
        held.append(b)
    return estimate


def settle(budgets: tuple[Budget, ...], reserved: Decimal, actual: Decimal | None) -> None:
    """Replace a call's reservation by what it cost (0 when it failed or was not priced)."""
    for b in budgets:
        b.settle(reserved, actual)


def _usd(amount: Decimal) -> str:
    return f"{amount.normalize():f}"


@dataclass(frozen=True)
class ScopeState:
    run: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    namespace: str | None = None
    template: str | None = None
    budgets: tuple[Budget, ...] = ()


_current: ContextVar[ScopeState] = ContextVar("llm_ledger_scope", default=ScopeState())  # noqa: B039 - frozen


def current() -> ScopeState:
    return _current.get()


def _storable(what: str, value: object, max_chars: int) -> None:
    if isinstance(value, str):
        check_label(what, value, max_chars, ConfigError)


@contextmanager
def scope(
    run: str | None = None,
    tags: Mapping[str, object] | None = None,
    *,
    namespace: str | None = None,
    max_cost_usd: float | Decimal | str | None = None,
    template: str | None = None,
) -> Iterator[ScopeState]:
    """Attach a run name, tags, a namespace and/or a spending cap to every call inside."""
    outer = _current.get()
    new_tags = dict(outer.tags)
    for key, value in (tags or {}).items():
        if not isinstance(key, str) or not key or len(key) > 100:
            raise ConfigError(f"tag names must be non-empty str of at most 100 chars, got {key!r}")
        new_tags[key] = str(value)[:255]
        _storable(f"tag {key!r}", key, 100)
        _storable(f"tag {key!r} value", new_tags[key], 255)
    # What the audit row's columns hold on every engine: refused here, not after paying.
    for what, label, size in (("run", run, 200), ("template", template, 400)):
        if label is not None:
            _storable(what, label, size)
    if namespace is not None:
        _storable("namespace", namespace, 191)
    budgets = outer.budgets
    if max_cost_usd is not None:
        try:
            cap = Decimal(str(max_cost_usd))
        except ArithmeticError:
            raise ConfigError(
                f"max_cost_usd={max_cost_usd!r}: expected a number of dollars"
            ) from None
        if not cap.is_finite() or cap < 0:
            raise ConfigError(f"max_cost_usd={max_cost_usd!r}: must be a non-negative number")
        budgets = (*budgets, Budget(cap))
    state = replace(
        outer,
        run=run if run is not None else outer.run,
        tags=new_tags,
        namespace=namespace if namespace is not None else outer.namespace,
        template=template if template is not None else outer.template,
        budgets=budgets,
    )
    token = _current.set(state)
    try:
        yield state
    finally:
        _current.reset(token)
