"""A pure reference model of the order state machine, written from `shop/orders.py`'s diagram.

Deliberately independent of the shop's code (no ALLOWED_SOURCES): tests compare what the
shop did with what this model says a serial application of the same events must give.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# state -> states it may move to, from the docstring diagram plus "paid is also reachable
# from failed and expired" (money Stripe took must show on the order).
NEXT_STATES: dict[str, frozenset[str]] = {
    "pending": frozenset({"awaiting_payment", "failed", "expired"}),
    "awaiting_payment": frozenset({"processing", "paid", "failed", "expired"}),
    "processing": frozenset({"paid", "failed"}),
    "paid": frozenset({"partially_refunded", "refunded"}),
    "partially_refunded": frozenset({"refunded"}),
    "refunded": frozenset(),
    "failed": frozenset({"paid"}),
    "expired": frozenset({"paid"}),
}
PAID = frozenset({"paid", "partially_refunded", "refunded"})

# Event kinds of one Checkout Session: (Stripe event type, payment_status on the session).
KINDS: dict[str, tuple[str, str]] = {
    "completed_paid": ("checkout.session.completed", "paid"),
    "completed_unpaid": ("checkout.session.completed", "unpaid"),
    "async_succeeded": ("checkout.session.async_payment_succeeded", "paid"),
    "async_failed": ("checkout.session.async_payment_failed", "unpaid"),
    "expired": ("checkout.session.expired", "unpaid"),
}
TAKES_MONEY = frozenset({"completed_paid", "async_succeeded"})
TARGET = {
    "completed_paid": "paid",
    "completed_unpaid": "processing",
    "async_succeeded": "paid",
    "async_failed": "failed",
    "expired": "expired",
}


@dataclass(frozen=True)
class ModelEvent:
    """One event of a session; `matches` is False when its amount or currency is not the order's."""

    kind: str
    matches: bool = True

    @property
    def target(self) -> str | None:
        """The state this event asks for; None for a payment that does not match the order."""
        if self.kind in TAKES_MONEY and not self.matches:
            return None
        return TARGET[self.kind]

    @property
    def flags_for_review(self) -> bool:
        return self.kind in TAKES_MONEY and not self.matches


def apply(state: str, event: ModelEvent) -> str:
    target = event.target
    return target if target is not None and target in NEXT_STATES[state] else state


def final_state(events: Iterable[ModelEvent], start: str = "awaiting_payment") -> str:
    state = start
    for event in events:
        state = apply(state, event)
    return state
