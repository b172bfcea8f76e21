"""The emulator's tables, on their own metadata so the shop's migrations never see them."""
from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Float, ForeignKey, Integer, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shop.extensions import NAMING_CONVENTION


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class CheckoutSession(Base):
    """A Checkout Session; `params` holds the validated creation parameters and line items."""

    __tablename__ = "stripe_emulator_checkout_sessions"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    created: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger, index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    payment_status: Mapped[str] = mapped_column(String(32))
    currency: Mapped[str] = mapped_column(String(3))
    amount_total: Mapped[int] = mapped_column(BigInteger)
    params: Mapped[dict[str, Any]]
    line_items: Mapped[list[Any]]
    page_url: Mapped[str] = mapped_column(Text)
    # Where this session's events are delivered, found when it was created (see addresses.py).
    webhook_url: Mapped[str | None] = mapped_column(Text)
    payment_intent: Mapped[str | None] = mapped_column(String(100), unique=True)
    customer_details: Mapped[dict[str, Any] | None]
    # What the customer entered for `shipping_address_collection`: {name, address}.
    shipping_details: Mapped[dict[str, Any] | None]
    # A delayed payment method settles at `settle_at` with `settle_outcome` (succeeded/failed).
    settle_at: Mapped[float | None] = mapped_column(Float, index=True)
    settle_outcome: Mapped[str | None] = mapped_column(String(16))
    # Adaptive Pricing (STRIPE_EMULATOR_ADAPTIVE_PRICING): the customer's currency and the
    # amount shown in it; amount_total and currency stay the integration's.
    presentment_currency: Mapped[str | None] = mapped_column(String(3))
    presentment_amount: Mapped[int | None] = mapped_column(BigInteger)


class Charge(Base):
    """The successful charge behind a paid session (refunds accumulate on it)."""

    __tablename__ = "stripe_emulator_charges"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    payment_intent: Mapped[str] = mapped_column(String(100), unique=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("stripe_emulator_checkout_sessions.id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    amount_refunded: Mapped[int] = mapped_column(BigInteger, default=0)
    currency: Mapped[str] = mapped_column(String(3))
    created: Mapped[int] = mapped_column(BigInteger)
    payment_method_type: Mapped[str] = mapped_column(String(32))
    email: Mapped[str | None] = mapped_column(Text)
    card_number: Mapped[str | None] = mapped_column(String(19))  # the test card paid with (its behaviour)
    presentment_currency: Mapped[str | None] = mapped_column(String(3))  # as its session's
    presentment_amount: Mapped[int | None] = mapped_column(BigInteger)


class Refund(Base):
    __tablename__ = "stripe_emulator_refunds"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    charge_id: Mapped[str] = mapped_column(ForeignKey("stripe_emulator_charges.id"), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    created: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str | None] = mapped_column(String(32))
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata")
    status: Mapped[str] = mapped_column(String(24), default="succeeded")
    failure_reason: Mapped[str | None] = mapped_column(String(64))
    fail_at: Mapped[float | None] = mapped_column(Float, index=True)  # a refund that fails later (a test card)


class Dispute(Base):
    """A dispute of a charge (a test card's); `withdrawn`/`reinstated`: its balance transactions."""

    __tablename__ = "stripe_emulator_disputes"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    charge_id: Mapped[str] = mapped_column(ForeignKey("stripe_emulator_charges.id"), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    created: Mapped[int] = mapped_column(BigInteger)
    due_by: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(String(64))
    evidence: Mapped[dict[str, Any]]
    submission_count: Mapped[int] = mapped_column(Integer, default=0)
    balance_transactions: Mapped[list[Any]]


class Event(Base):
    """A stored event; `seq` orders events (several can share one `created` second)."""

    __tablename__ = "stripe_emulator_events"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(100), unique=True)
    type: Mapped[str] = mapped_column(String(100), index=True)
    created: Mapped[int] = mapped_column(BigInteger, index=True)
    api_version: Mapped[str] = mapped_column(String(64))
    object: Mapped[dict[str, Any]]
    request_id: Mapped[str | None] = mapped_column(String(100))
    idempotency_key: Mapped[str | None] = mapped_column(Text)


class Delivery(Base):
    """One webhook delivery of an event; `attempts` doubles as the claim's version number."""

    __tablename__ = "stripe_emulator_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("stripe_emulator_events.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)  # pending | delivered | failed | dropped
    due_at: Mapped[float] = mapped_column(Float, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    # The endpoint it is sent to (its session's `webhook_url`) unless STRIPE_EMULATOR_WEBHOOK_URL is set.
    url: Mapped[str | None] = mapped_column(Text)


class IdempotencyKey(Base):
    """A POST's idempotency key (hashed with the API key); `status` is null while in progress."""

    __tablename__ = "stripe_emulator_idempotency_keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    created: Mapped[int] = mapped_column(BigInteger, index=True)
    request_id: Mapped[str] = mapped_column(String(100))
    status: Mapped[int | None] = mapped_column(Integer)
    body: Mapped[str | None] = mapped_column(Text)


class WebhookEndpoint(Base):
    """A webhook endpoint of the account (`GET /v1/webhook_endpoints`).

    The emulator's own endpoint, where it delivers, has `url` null: it is wherever the emulator
    delivers (see `endpoints.py`). A deleted endpoint keeps its row, marked, and is never listed.
    """

    __tablename__ = "stripe_emulator_webhook_endpoints"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    created: Mapped[int] = mapped_column(BigInteger)
    url: Mapped[str | None] = mapped_column(Text)
    enabled_events: Mapped[list[Any]]
    api_version: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    description: Mapped[str | None] = mapped_column(Text)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata")
    secret: Mapped[str] = mapped_column(String(100))
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
