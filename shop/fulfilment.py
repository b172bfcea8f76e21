"""Shipping and fulfilment: where an order's parcel goes, and whether it has been sent.

Fulfilment is a state beside the payment state of `shop.orders`, never one of its statuses:
a shipped order can still be refunded, and a refunded one may already be on its way. Its
facts live in two tables of their own: the address the customer entered in Checkout
(`ShippingAddress`, recorded from the session's event) and the parcel the operator sent
(`Shipment`, at most one per order).

Stripe reports the address as `shipping_details` on the Checkout Session up to API version
2025-02-24.acacia, and as `collected_information.shipping_details` from 2025-03-31.basil on;
whichever the event carries is read. An order paid without one (another API version, a
session created before the shop asked for addresses) needs an address before it can ship.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import quote

from sqlalchemy import String, Text, bindparam, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import selectinload
from sqlalchemy.sql.expression import CTE

from . import disputes, stripe_gateway
from .extensions import db
from .models import Order, Shipment, ShippingAddress, utcnow
from .orders import OrderStatus

log = logging.getLogger("shop.fulfilment")

ADDRESS_FIELDS = ("name", "phone", "line1", "line2", "city", "state", "postal_code", "country")
# Paid orders waiting for their parcel (the To ship list): a partly refunded one still owes the
# rest. A fully refunded one is not listed, nor one with an open dispute.
TO_SHIP_STATES = frozenset({OrderStatus.PAID, OrderStatus.PARTIALLY_REFUNDED})
# What the operator may still mark shipped: a refunded order too (the parcel may have left
# before the refund), once they have confirmed the warning.
SHIPPABLE_STATES = TO_SHIP_STATES | {OrderStatus.REFUNDED}
# Carriers the operator picks from, and their public tracking pages ({} is the number).
CARRIERS: dict[str, str | None] = {
    "USPS": "https://tools.usps.com/go/TrackConfirmAction?tLabels={}",
    "UPS": "https://www.ups.com/track?tracknum={}",
    "FedEx": "https://www.fedex.com/fedextrack/?trknbr={}",
    "DHL": "https://www.dhl.com/global-en/home/tracking/tracking-express.html?tracking-id={}",
    "Canada Post": "https://www.canadapost-postescanada.ca/track-reperage/en#/search?searchFor={}",
    "Royal Mail": "https://www.royalmail.com/track-your-item#/tracking-results/{}",
    "Other": None,
}
MAX_TRACKING_NUMBER = 100


class Fulfilment(StrEnum):
    """Where an order stands for the parcel, shown beside its payment status."""

    NOT_PAID = "not paid"  # nothing to send (yet, or ever)
    NEEDS_ADDRESS = "needs an address"  # paid, but Stripe sent no shipping address
    TO_SHIP = "to ship"
    ON_HOLD = "on hold: disputed"  # paid, but the customer disputes the payment
    NOT_TO_SHIP = "not to ship"  # refunded in full before it went out
    SHIPPED = "shipped"


def fulfilment_of(status: str, has_address: bool, shipped: bool, disputed: bool = False) -> Fulfilment:
    """`disputed`: the order has an open dispute (`disputes.OPEN_STATUSES`)."""
    if shipped:
        return Fulfilment.SHIPPED
    if status == OrderStatus.REFUNDED:
        return Fulfilment.NOT_TO_SHIP
    if status not in TO_SHIP_STATES:
        return Fulfilment.NOT_PAID
    if disputed:
        return Fulfilment.ON_HOLD
    return Fulfilment.TO_SHIP if has_address else Fulfilment.NEEDS_ADDRESS


# --- The address, from Stripe's Checkout Session -------------------------------------------


def shipping_details_of(session: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The session's `{name, address}` in either API version's place, or None."""
    collected = session.get("collected_information")
    details = collected.get("shipping_details") if isinstance(collected, Mapping) else None
    if details is None:
        details = session.get("shipping_details")
    return details if isinstance(details, Mapping) else None


def address_values(session: Mapping[str, Any]) -> dict[str, str | None] | None:
    """The session's shipping address as `ShippingAddress` columns, or None if it has none."""
    details = shipping_details_of(session)
    address = details.get("address") if details else None
    if not isinstance(address, Mapping) or not _text(address.get("country")):
        return None
    customer = session.get("customer_details")
    phone = customer.get("phone") if isinstance(customer, Mapping) else None
    values = {field: _text(address.get(field)) for field in ("line1", "line2", "city", "state", "postal_code")}
    return {**values, "name": _text(details.get("name")), "phone": _text(phone), "country": address["country"][:2].upper()}


def _text(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def record_address(order_id: int, session: Mapping[str, Any]) -> None:
    """Keep the address of the session that paid (or is paying) the order; the first one recorded stays."""
    values = address_values(session)
    if values is None:
        return
    dialect = postgresql if db.session.get_bind().dialect.name == "postgresql" else sqlite
    db.session.execute(
        dialect.insert(ShippingAddress).values(order_id=order_id, **values).on_conflict_do_nothing(index_elements=["order_id"])
    )


def address_parameters(session: Mapping[str, Any]) -> dict[str, str | None]:
    """RECORD_ADDRESS's parameters: the session's address, all None when it has none."""
    values = address_values(session) or dict.fromkeys(ADDRESS_FIELDS)
    return {f"ship_{field}": value for field, value in values.items()}


def record_address_of(paid: CTE) -> CTE:
    """What `record_address` does, as a CTE beside the webhook's fast path (`shop.paid_sessions`).

    It inserts the address for the order `paid` returns, if the event carried one, so paying
    the order and keeping its address stay one statement.
    """
    parameters = {field: bindparam(f"ship_{field}", type_=String if field == "country" else Text) for field in ADDRESS_FIELDS}
    rows = select(paid.c.id, *parameters.values()).where(parameters["country"].is_not(None))
    return (
        postgresql.insert(ShippingAddress)
        .from_select(["order_id", *ADDRESS_FIELDS], rows)
        .on_conflict_do_nothing(index_elements=["order_id"])
        .cte("address")
    )


def destination_of(order: Order) -> ShippingAddress | None:
    """Where the order's parcel will go: the address recorded, else the one its paid session carries.

    The shopper is back from Checkout before Stripe's event has arrived, so the session is
    read from Stripe then (nothing is recorded: the event does that). None when Stripe can't
    be asked or the session has no address.
    """
    address = db.session.get(ShippingAddress, order.id)
    if address is not None or order.stripe_session_id is None:
        return address
    try:
        session = stripe_gateway.retrieve_checkout_session(order.stripe_session_id)
    except stripe_gateway.PaymentProviderError as exc:
        log.warning("order %s: could not read its session's address: %s", order.public_id, exc)
        return None
    values = address_values(session) if session.get("status") == "complete" else None
    return None if values is None else ShippingAddress(**values)


def address_lines(address: ShippingAddress) -> list[str]:
    """The address as a label would print it (country last, as a code)."""
    town = " ".join(part for part in (address.city, address.state, address.postal_code) if part)
    return [line for line in (address.name, address.line1, address.line2, town, address.country) if line]


# --- Shipping -----------------------------------------------------------------------------


def tracking_url(carrier: str, tracking_number: str) -> str | None:
    """The carrier's public tracking page for the number, if it has a well-known one."""
    template = CARRIERS.get(carrier)
    return template.format(quote(tracking_number, safe="")) if template else None


@dataclass(frozen=True)
class ShippingWarning:
    """Why sending this order's parcel needs the operator to confirm."""

    message: str


def is_disputed(order: Order) -> bool:
    """The order has an open dispute (its `disputes` loaded or not)."""
    return any(dispute.status in disputes.OPEN_STATUSES for dispute in order.disputes)


def warnings_before_shipping(order: Order) -> list[ShippingWarning]:
    """What the operator must confirm before the parcel goes out: money the customer got, or may get, back."""
    warnings = []
    if order.status == OrderStatus.REFUNDED:
        warnings.append(ShippingWarning("This order was refunded in full: the customer has their money back."))
    elif order.status == OrderStatus.PARTIALLY_REFUNDED:
        warnings.append(ShippingWarning("Part of this order was refunded: check what still goes in the parcel."))
    for dispute in order.disputes:
        status = dispute.status.replace("_", " ")
        warnings.append(ShippingWarning(f"The customer disputed this payment ({status}): goods sent may not be paid for."))
    return warnings


class CannotShip(Exception):
    """The order can't be marked shipped (its state, or what the operator entered)."""


def mark_shipped(order: Order, carrier: str, tracking_number: str, operator: str, confirmed: bool) -> bool:
    """Record the order's shipment; False if one was already recorded (a repeated click records nothing)."""
    tracking_number = tracking_number.strip()
    if carrier not in CARRIERS:
        raise CannotShip("Choose a carrier.")
    if not tracking_number or len(tracking_number) > MAX_TRACKING_NUMBER:
        raise CannotShip(f"Enter the tracking number (up to {MAX_TRACKING_NUMBER} characters).")
    if db.session.get(Shipment, order.id) is not None:
        return False
    if order.status not in SHIPPABLE_STATES:
        raise CannotShip(f"This order is {order.status.replace('_', ' ')}: there is nothing to ship.")
    if db.session.get(ShippingAddress, order.id) is None:
        raise CannotShip("Stripe sent no shipping address for this order: get one from the customer first.")
    if warnings_before_shipping(order) and not confirmed:
        raise CannotShip("Tick the box to confirm you want to ship this order anyway.")
    dialect = postgresql if db.session.get_bind().dialect.name == "postgresql" else sqlite
    shipped = db.session.execute(
        dialect.insert(Shipment)
        .values(order_id=order.id, carrier=carrier, tracking_number=tracking_number, shipped_at=utcnow(), shipped_by=operator)
        .on_conflict_do_nothing(index_elements=["order_id"])
    ).rowcount
    if shipped:
        log.info("order %s shipped by %s: %s %s", order.public_id, operator, carrier, tracking_number)
    return bool(shipped)


def to_ship_query() -> Any:
    """Paid orders with no shipment yet, not refunded in full and not disputed, oldest payment first."""
    return (
        select(Order)
        .where(
            Order.status.in_(sorted(TO_SHIP_STATES)),
            ~select(Shipment.order_id).where(Shipment.order_id == Order.id).exists(),
            ~disputes.has_open_dispute(),
        )
        .order_by(Order.paid_at, Order.id)
        .options(selectinload(Order.items), selectinload(Order.disputes))
    )


@dataclass(frozen=True)
class Parcel:
    """One order on the To ship list: what goes in the parcel and where."""

    order: Order
    address: ShippingAddress | None
    warnings: Sequence[ShippingWarning]


def to_ship(limit: int) -> list[Parcel]:
    orders = db.session.scalars(to_ship_query().limit(limit)).all()
    addresses = addresses_of([order.id for order in orders])
    return [Parcel(order, addresses.get(order.id), warnings_before_shipping(order)) for order in orders]


def addresses_of(order_ids: Sequence[int]) -> dict[int, ShippingAddress]:
    if not order_ids:
        return {}
    rows = db.session.scalars(select(ShippingAddress).where(ShippingAddress.order_id.in_(order_ids)))
    return {address.order_id: address for address in rows}


def shipments_of(order_ids: Sequence[int]) -> dict[int, Shipment]:
    if not order_ids:
        return {}
    rows = db.session.scalars(select(Shipment).where(Shipment.order_id.in_(order_ids)))
    return {shipment.order_id: shipment for shipment in rows}
