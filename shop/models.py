"""Database models. Order state changes live in `shop.orders`, never here."""
from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ColumnElement,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    and_,
    func,
    literal_column,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from .extensions import db

EMULATOR_TABLE_PREFIX = "stripe_emulator_"


def managed_by_migrations(name: str | None, type_: str, _parents: object = None) -> bool:
    """Alembic's include_name hook: the offline Stripe emulator's tables aren't the shop's."""
    return not (type_ == "table" and name is not None and name.startswith(EMULATOR_TABLE_PREFIX))


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """A UTC datetime that comes back timezone-aware from every database.

    SQLite keeps no zone, and a naive value would be read as local time by `.timestamp()`.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def max_quantity(stock: int) -> int:
    """The most units of a product one order may ask for, given its stock."""
    return max(0, min(stock, 10))


class Product(db.Model):
    __tablename__ = "products"
    __table_args__ = (CheckConstraint("stock >= 0", name="stock_not_negative"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    description: Mapped[str] = mapped_column(String(500))
    image: Mapped[str] = mapped_column(String(200))  # file name under static/products/
    unit_amount: Mapped[int] = mapped_column(Integer)  # minor units of the shop currency
    position: Mapped[int] = mapped_column(Integer, default=0)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Units still available: open orders hold theirs until paid (kept) or expired/failed (returned).
    stock: Mapped[int] = mapped_column(Integer, default=0)

    @property
    def max_quantity(self) -> int:
        return max_quantity(self.stock)


class Order(db.Model):
    __tablename__ = "orders"
    __table_args__ = (Index("ix_orders_shopper_created", "shopper_id", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(40), unique=True)
    shopper_id: Mapped[str] = mapped_column(String(64))
    # One-time token from the checkout form: a resubmitted form finds its order.
    checkout_token: Mapped[str] = mapped_column(String(64), unique=True)
    # Not indexed alone: few values, and stale statistics made it the plan for lookups that
    # have a far better index (a browser's open orders); lists by status read by created_at.
    status: Mapped[str] = mapped_column(String(24))
    currency: Mapped[str] = mapped_column(String(3))
    amount_total: Mapped[int] = mapped_column(Integer)
    # What the refunds Stripe reported and that did not fail add up to (see `shop.refunds`), and
    # the part of it that is still on its way to the customer (pending or requiring action).
    amount_refunded: Mapped[int] = mapped_column(Integer, default=0)
    amount_refund_pending: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The charge's `amount_refunded` as the newest `charge.refunded` reported it, and that event's
    # `created`: since API 2022-11-15 the event no longer lists the refunds themselves.
    charge_amount_refunded: Mapped[int | None] = mapped_column(Integer)
    charge_refunded_as_of: Mapped[int | None] = mapped_column(Integer)
    stripe_session_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    checkout_url: Mapped[str | None] = mapped_column(Text)
    payment_intent_id: Mapped[str | None] = mapped_column(String(255), index=True)
    # Text, not String(320): Stripe's email fields have no length a column could promise.
    customer_email: Mapped[str | None] = mapped_column(Text)
    # What the customer was shown and paid in their own currency under Adaptive Pricing
    # (Stripe's `presentment_details`); amount_total and currency stay the shop's, and are what
    # a payment is checked against. Null when the customer paid in the shop's currency.
    presentment_amount: Mapped[int | None] = mapped_column(BigInteger)
    presentment_currency: Mapped[str | None] = mapped_column(String(3))
    # Set when Stripe reported something that does not match this order (e.g. the amount).
    review_reason: Mapped[str | None] = mapped_column(String(500))
    # Keyed hash of the client's IP address: bounds what one client holds (shop/reservations.py).
    client_key: Mapped[str | None] = mapped_column(String(32), index=True)
    # When a newer checkout by the same browser asked Stripe to expire this order's session.
    superseded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    items: Mapped[list[OrderItem]] = relationship(
        back_populates="order", order_by="OrderItem.id", cascade="all, delete-orphan"
    )
    # Read-only views for pages and exports: `shop.refunds` and `shop.disputes` write these rows.
    refunds: Mapped[list[Refund]] = relationship(order_by="Refund.stripe_created", viewonly=True)
    disputes: Mapped[list[Dispute]] = relationship(order_by="Dispute.stripe_created", viewonly=True)


def open_unclaimed(order: Any) -> ColumnElement[bool]:
    """`order` (the Order class or an alias of it) awaits payment and no newer checkout claimed it."""
    return and_(order.status == literal_column("'awaiting_payment'"), order.superseded_at.is_(None))


def processing(order: Any) -> ColumnElement[bool]:
    """`order` (the Order class or an alias of it) waits for a delayed payment to settle."""
    return order.status == literal_column("'processing'")


# The statuses above are literals, not bound parameters: a prepared statement that repeats a
# predicate can then use its partial index whatever the values. A browser's unclaimed orders
# awaiting payment, newest last (the checkout's claim of older sessions), and its delayed
# payments still processing (the checkout's bounds).
Index("ix_orders_shopper_open", Order.shopper_id, Order.id,
      postgresql_where=open_unclaimed(Order), sqlite_where=open_unclaimed(Order))
Index("ix_orders_shopper_processing", Order.shopper_id, Order.public_id,
      postgresql_where=processing(Order), sqlite_where=processing(Order))


class OrderItem(db.Model):
    __tablename__ = "order_items"

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"), index=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"))
    product_name: Mapped[str] = mapped_column(String(120))  # snapshot at purchase time
    quantity: Mapped[int] = mapped_column(Integer)
    unit_amount: Mapped[int] = mapped_column(Integer)  # snapshot at purchase time

    order: Mapped[Order] = relationship(back_populates="items")

    @property
    def line_total(self) -> int:
        return self.quantity * self.unit_amount


class ShippingAddress(db.Model):
    """Where an order's parcel goes: what the customer entered in Checkout (see `shop.fulfilment`)."""

    __tablename__ = "shipping_addresses"

    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str | None] = mapped_column(Text)
    phone: Mapped[str | None] = mapped_column(Text)
    line1: Mapped[str | None] = mapped_column(Text)
    line2: Mapped[str | None] = mapped_column(Text)
    city: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str | None] = mapped_column(Text)
    postal_code: Mapped[str | None] = mapped_column(Text)
    country: Mapped[str] = mapped_column(String(2))


class Shipment(db.Model):
    """The parcel the operator sent for an order: at most one per order, so a repeated "Mark shipped" records nothing."""

    __tablename__ = "shipments"

    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"), primary_key=True)
    carrier: Mapped[str] = mapped_column(String(40))
    tracking_number: Mapped[str] = mapped_column(String(100))
    shipped_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    shipped_by: Mapped[str] = mapped_column(String(200))  # the operator's sign-in name


class EventState(StrEnum):
    """Where a recorded Stripe event stands. Only `applied`, `needs_review` and `not_ours` are final."""

    APPLIED = "applied"  # it concerned an order and was handled (changed it, or found nothing to change)
    # It concerned an order and flagged it for an operator (money Stripe took that the order can't
    # simply take): final, and listed under "Events needing attention" until marked resolved.
    NEEDS_REVIEW = "needs_review"
    NOT_OURS = "not_ours"  # it concerns nothing of this shop's
    WAITING = "waiting"  # kept until an order learns (or is paid through) the payment intent `waiting_for`
    FAILED = "failed"  # handling raised; `error` says why, and a retry handles it again
    RECEIVED = "received"  # being handled: never committed, the transaction ends in another state


class StripeEvent(db.Model):
    """Every Stripe event the shop has seen, recorded once by id, with where it stands.

    `payload` (the event's JSON) is kept only while it may still be needed: while the event
    waits or after it failed.
    """

    __tablename__ = "stripe_events"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(100))
    created: Mapped[int] = mapped_column(Integer, index=True)  # Stripe's unix timestamp
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id", ondelete="SET NULL"), index=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=func.now())
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    outcome: Mapped[str | None] = mapped_column(String(500))
    state: Mapped[str] = mapped_column(String(16), index=True)
    waiting_for: Mapped[str | None] = mapped_column(String(255), index=True)
    payload: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(String(500))
    failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Refund(db.Model):
    """One Stripe refund of an order's payment, by its id, as the newest of its events says."""

    __tablename__ = "refunds"

    id: Mapped[int] = mapped_column(primary_key=True)
    stripe_refund_id: Mapped[str] = mapped_column(String(255), unique=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"), index=True)
    payment_intent_id: Mapped[str] = mapped_column(String(255))
    amount: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(24))  # pending, requires_action, succeeded, failed, canceled
    reason: Mapped[str | None] = mapped_column(String(64))
    failure_reason: Mapped[str | None] = mapped_column(String(64))
    stripe_created: Mapped[int] = mapped_column(Integer)  # the refund's `created`
    # `created` of the event (or API answer) the status was taken from: an older one never wins.
    as_of: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Dispute(db.Model):
    """One dispute (chargeback or inquiry) of an order's payment, as the newest of its events says."""

    __tablename__ = "disputes"

    id: Mapped[int] = mapped_column(primary_key=True)
    stripe_dispute_id: Mapped[str] = mapped_column(String(255), unique=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"), index=True)
    payment_intent_id: Mapped[str] = mapped_column(String(255))
    charge_id: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(32), index=True)
    reason: Mapped[str] = mapped_column(String(64))
    amount: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    due_by: Mapped[int | None] = mapped_column(Integer)  # unix time the evidence is due
    is_charge_refundable: Mapped[bool] = mapped_column(Boolean)
    livemode: Mapped[bool] = mapped_column(Boolean, default=False)
    # From the dispute's balance transactions: what Stripe took from the balance, and gave back.
    amount_withdrawn: Mapped[int] = mapped_column(Integer, default=0)
    fee_withdrawn: Mapped[int] = mapped_column(Integer, default=0)
    amount_reinstated: Mapped[int] = mapped_column(Integer, default=0)
    fee_reinstated: Mapped[int] = mapped_column(Integer, default=0)
    stripe_created: Mapped[int] = mapped_column(Integer)
    as_of: Mapped[int] = mapped_column(Integer)  # `created` of the event the status was taken from
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
