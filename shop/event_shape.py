"""What a verified Stripe event may carry into the shop, checked before anything is written.

A signature proves who sent a body, not that it fits: an id longer than its column, a type
longer than its column, a `created` past a 32-bit integer, JSON nested a thousand levels
deep, or a `customer_details` that is a string would make the database (or the handler)
fail, and recording that failure fail too. Each is refused here as `InvalidEvent` (400, with
what is wrong), so every verified event either gets its durable state or a 4xx, never a 500
with nothing recorded. Stripe's own events are far inside these bounds.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import disputes, orders, refunds
from .models import Order, Refund, StripeEvent
from .orders import InvalidEvent

# Stripe nests its objects a handful of levels deep (event, data, object, a hash, a list, an
# object in it); a signed body nested deeper is not an event any handler could read.
MAX_DEPTH = 32
# `created` is stored as a 32-bit integer, and a Unix time never is negative.
LARGEST_CREATED = 2**31 - 1
ID_LENGTH = StripeEvent.__table__.c.id.type.length
TYPE_LENGTH = StripeEvent.__table__.c.type.type.length
STRIPE_ID_LENGTH = Order.__table__.c.payment_intent_id.type.length

# The fields each handled object's handler reads, with the one type each may have (or null).
SESSION_FIELDS: dict[str, type | tuple[type, ...]] = {
    "client_reference_id": str,
    "customer_email": str,
    "customer_details": Mapping,
    "metadata": Mapping,
    "payment_intent": (str, Mapping),  # an id, or the object when expanded
    "payment_status": str,
    "status": str,
    "amount_total": int,
    "currency": str,
}
CHARGE_FIELDS: dict[str, type | tuple[type, ...]] = {
    "payment_intent": (str, Mapping),
    "amount_refunded": int,
    "currency": str,
}
REFUND_FIELDS: dict[str, type | tuple[type, ...]] = {
    "id": str,
    "payment_intent": (str, Mapping),
    "amount": int,
    "created": int,
    "currency": str,
    "status": str,
    "reason": str,
    "failure_reason": str,
}
DISPUTE_FIELDS: dict[str, type | tuple[type, ...]] = {
    "id": str,
    "payment_intent": (str, Mapping),
    "charge": (str, Mapping),
    "amount": int,
    "created": int,
    "currency": str,
    "status": str,
    "reason": str,
    "evidence_details": Mapping,
    "balance_transactions": list,
}
# Strings stored in columns of a bounded length, and integers stored as 32-bit integers.
REFUND_BOUNDS = {name: Refund.__table__.c[name].type.length for name in ("reason", "failure_reason")}
SHORT_TEXT = {"id": STRIPE_ID_LENGTH, "charge": STRIPE_ID_LENGTH}
LIMITED_INTEGERS = ("amount", "created")
NESTED_STRINGS = (("customer_details", "email"), ("metadata", "order_id"))


def check(event: Mapping[str, Any]) -> None:
    """Raise InvalidEvent unless the event fits its columns, its depth bound and its handler's reading."""
    _bounded(event["id"], ID_LENGTH, "event.id")
    _bounded(event["type"], TYPE_LENGTH, "event.type")
    if not 0 <= event["created"] <= LARGEST_CREATED:
        raise InvalidEvent(f"event.created {event['created']} is not a Unix time")
    _check_depth(event)
    obj = event["data"]["object"]
    if event["type"] in orders.SESSION_EVENTS:
        _bounded(obj["id"], STRIPE_ID_LENGTH, "checkout.session.id")
        _check_fields(obj, SESSION_FIELDS, "checkout.session")
        for outer, inner in NESTED_STRINGS:
            if obj.get(outer) is not None:
                _check_fields(obj[outer], {inner: str}, f"checkout.session.{outer}")
    elif event["type"] == refunds.CHARGE_REFUNDED:
        _check_fields(obj, CHARGE_FIELDS, "charge")
        listed = obj.get("refunds")
        for refund in listed.get("data") or [] if isinstance(listed, Mapping) else []:
            if isinstance(refund, Mapping):
                _check_refund(refund)
    elif event["type"] in refunds.REFUND_EVENTS:
        _check_refund(obj)
    elif event["type"] in disputes.DISPUTE_EVENTS:
        _check_fields(obj, DISPUTE_FIELDS, "dispute")
        _check_bounds(obj, SHORT_TEXT, "dispute")
        details = obj.get("evidence_details")
        if details is not None:
            _check_fields(details, {"due_by": int}, "dispute.evidence_details")
            _check_bounds(details, {}, "dispute.evidence_details", ("due_by",))


def _check_refund(refund: Mapping[str, Any]) -> None:
    _check_fields(refund, REFUND_FIELDS, "refund")
    _check_bounds(refund, SHORT_TEXT | REFUND_BOUNDS, "refund")


def _check_bounds(
    obj: Mapping[str, Any], lengths: Mapping[str, int], where: str, integers: tuple[str, ...] = LIMITED_INTEGERS
) -> None:
    for name, length in lengths.items():
        if isinstance(obj.get(name), str):
            _bounded(obj[name], length, f"{where}.{name}")
    for name in integers:
        value = obj.get(name)
        if isinstance(value, int) and not -LARGEST_CREATED <= value <= LARGEST_CREATED:
            raise InvalidEvent(f"{where}.{name} {value} does not fit a 32-bit integer")


def _bounded(value: str, length: int, where: str) -> None:
    if len(value) > length:
        raise InvalidEvent(f"{where} is longer than {length} characters")


def _check_fields(obj: Mapping[str, Any], fields: Mapping[str, type | tuple[type, ...]], where: str) -> None:
    for name, kind in fields.items():
        value = obj.get(name)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            raise InvalidEvent(f"{where}.{name} is not {_name_of(kind)}")
        if name == "payment_intent" and isinstance(value, str):
            _bounded(value, STRIPE_ID_LENGTH, f"{where}.{name}")


JSON_NAMES = {str: "a string", int: "an integer", Mapping: "an object", list: "an array"}


def _name_of(kind: type | tuple[type, ...]) -> str:
    return " or ".join(JSON_NAMES[k] for k in (kind if isinstance(kind, tuple) else (kind,)))


def _check_depth(event: Mapping[str, Any]) -> None:
    """Walk the containers breadth-first; refuse the body once one lies deeper than MAX_DEPTH."""
    level: list[Any] = [event]
    for _ in range(MAX_DEPTH):
        level = [
            child
            for container in level
            for child in (container.values() if isinstance(container, dict) else container)
            if isinstance(child, (dict, list))
        ]
        if not level:
            return
    raise InvalidEvent(f"the event is nested deeper than {MAX_DEPTH} levels")
