"""A pure reference model of the order state machine, written from `shop/orders.py`'s diagram.

Deliberately independent of the shop's code (no ALLOWED_SOURCES): tests compare what the
shop did with what this model says a serial application of the same events must give.

Refunds follow Stripe's semantics, not the shop's code: a `charge.refunded` reports the
charge's cumulative `amount_refunded`, so the refund an order shows is the largest one
reported for its payment, once (and whenever) the order is paid; refunds reported before
that are kept, not lost. Events of other integrations change nothing.

A refund that fails (`refund.failed`, FAILED_REFUND of the charge's refunds) is money the
customer never got: it no longer counts in any charge total reported before the failure
(a total reported after it no longer includes it). Disputes change no order's status: the
model keeps the furthest state its events reported (a lost dispute stays lost).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

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
# `charge.refunded` of the order's own payment, with the charge's amount refunded so far.
REFUND_KINDS = frozenset({"refund"})
FAILED_REFUND = 1000  # `refund.failed` of one refund of this amount
DISPUTE_STATES = {"dispute_opened": "needs_response", "dispute_lost": "lost"}  # charge.dispute.created / .closed
# Traffic of other integrations on the same account: none of it is the order's.
FOREIGN_KINDS = frozenset({"foreign_session", "legacy_refund", "foreign_refund"})


@dataclass(frozen=True)
class ModelEvent:
    """One event; `matches` is False when a payment's amount or currency is not the order's.

    `refunded` is the cumulative amount a refund event reports. A `poison` event can never be
    handled (a bug, or data the shop can't store): it must change nothing and stay visible.
    """

    kind: str
    matches: bool = True
    refunded: int = 0
    poison: bool = False
    at: int = 0  # when Stripe created it (the event's `created`, in pool order)

    @property
    def target(self) -> str | None:
        """The state a session event asks for; None for a payment that does not match, or any other event."""
        if self.kind not in TARGET or (self.kind in TAKES_MONEY and not self.matches):
            return None
        return TARGET[self.kind]

    @property
    def flags_for_review(self) -> bool:
        return self.kind in TAKES_MONEY and not self.matches and not self.poison


@dataclass(frozen=True)
class ModelOrder:
    """`session_state` follows the session's events (a paid order stays "paid" there)."""

    total: int
    session_state: str = "awaiting_payment"
    largest_refund: int = 0
    largest_refund_at: int = -1
    refund_failed_at: int | None = None
    dispute: str | None = None  # as far as its events got: None, needs_response, lost
    flagged: bool = False

    @property
    def refunds(self) -> int:
        failed_since = self.refund_failed_at is not None and self.refund_failed_at >= self.largest_refund_at
        return max(0, self.largest_refund - (FAILED_REFUND if failed_since else 0))

    @property
    def status(self) -> str:
        if self.session_state != "paid" or self.refunds == 0:
            return self.session_state
        return "refunded" if self.refunds >= self.total else "partially_refunded"

    @property
    def amount_refunded(self) -> int:
        return self.refunds if self.session_state == "paid" else 0

    @property
    def dispute_status(self) -> str | None:
        return self.dispute if self.session_state == "paid" else None


def apply(order: ModelOrder, event: ModelEvent) -> ModelOrder:
    if event.poison or event.kind in FOREIGN_KINDS:
        return order
    if event.kind in REFUND_KINDS:
        if event.refunded < order.largest_refund:
            return order
        return replace(order, largest_refund=event.refunded, largest_refund_at=max(order.largest_refund_at, event.at))
    if event.kind == "refund_failed":
        return replace(order, refund_failed_at=event.at)
    if event.kind in DISPUTE_STATES:
        return replace(order, dispute="lost" if "lost" in (order.dispute, DISPUTE_STATES[event.kind]) else "needs_response")
    order = replace(order, flagged=order.flagged or event.flags_for_review)
    target = event.target
    if target is not None and target in NEXT_STATES[order.session_state]:
        return replace(order, session_state=target)
    return order


def final_state(events: Iterable[ModelEvent], start: str = "awaiting_payment") -> str:
    """The status a session's events, applied in this order, leave an order in."""
    order = ModelOrder(total=1, session_state=start)
    for event in events:
        order = apply(order, event)
    return order.status
