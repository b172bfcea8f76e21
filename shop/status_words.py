"""The words a shopper reads for an order's status, in one place for the pages and for
js/status.js (which gets them from the success page)."""
from __future__ import annotations

from flask import Flask

from .catalog.queries import OrderSummary
from .models import Order
from .orders import OrderStatus

LABELS: dict[str, str] = {
    OrderStatus.PENDING: "Awaiting payment",
    OrderStatus.AWAITING_PAYMENT: "Awaiting payment",
    OrderStatus.PROCESSING: "Payment processing",
    OrderStatus.PAID: "Paid",
    OrderStatus.FAILED: "Payment failed",
    OrderStatus.EXPIRED: "Expired",
    OrderStatus.CANCELLED: "Cancelled",
    OrderStatus.PARTIALLY_REFUNDED: "Partially refunded",
    OrderStatus.REFUNDED: "Refunded",
}
# On the page Stripe sends the shopper to after paying, an order not yet confirmed by the
# webhook is being confirmed: "Awaiting payment" there would read as "your payment was lost".
AFTER_PAYING: dict[str, str] = {
    **LABELS,
    OrderStatus.PENDING: "Confirming with Stripe",
    OrderStatus.AWAITING_PAYMENT: "Confirming with Stripe",
}
NEVER_STARTED = "Not started"
# A refund Stripe has accepted but not yet paid out: "Refunded" would promise money not yet there.
REFUND_ON_ITS_WAY = "Refund on its way"


def never_started(order: Order | OrderSummary) -> bool:
    """A checkout that failed before Stripe had a payment page for it: nothing could be paid."""
    return order.status == OrderStatus.FAILED and not order.stripe_session_id


def init_app(app: Flask) -> None:
    app.jinja_env.globals.update(
        status_labels=LABELS, status_labels_after_paying=AFTER_PAYING, never_started=never_started,
        never_started_label=NEVER_STARTED, refund_on_its_way_label=REFUND_ON_ITS_WAY,
    )
