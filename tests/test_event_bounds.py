"""Every signed event ends in a durable state or a 4xx: bodies that don't fit are refused up front.

Before these bounds, an id longer than its column, a type longer than its column or a
`created` past 32 bits made the database refuse the row and then refuse the record of that
failure (500, nothing recorded); a deeply nested body crashed the JSON parser (500); a
`customer_details` that is a string raised AttributeError in the handler.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select

from shop.extensions import db
from shop.models import StripeEvent
from tests.helpers import get_order, post_event, session_event, stripe_event


def events_recorded(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(StripeEvent))


def with_envelope(**fields: Any) -> Callable[[dict], dict]:
    return lambda event: {**event, **fields}


def with_session(**fields: Any) -> Callable[[dict], dict]:
    return lambda event: {**event, "data": {"object": {**event["data"]["object"], **fields}}}


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    "change, message",
    [
        (with_envelope(id="evt_" + "x" * 296), "Invalid event: event.id is longer than 255 characters"),
        (with_envelope(type="checkout.session." + "x" * 103), "Invalid event: event.type is longer than 100 characters"),
        (with_envelope(created=2**31), "Invalid event: event.created 2147483648 is not a Unix time"),
        (with_envelope(created=-1), "Invalid event: event.created -1 is not a Unix time"),
        (with_session(customer_details="shopper@example.com"), "Invalid event: checkout.session.customer_details is not an object"),
        (with_session(customer_details={"email": ["a@example.com"]}), "Invalid event: checkout.session.customer_details.email is not a string"),
        (with_session(customer_email={"address": "a@example.com"}), "Invalid event: checkout.session.customer_email is not a string"),
        (with_session(client_reference_id=7), "Invalid event: checkout.session.client_reference_id is not a string"),
        (with_session(metadata={"order_id": {"id": 1}}), "Invalid event: checkout.session.metadata.order_id is not a string"),
        (with_session(payment_intent="pi_" + "x" * 300), "Invalid event: checkout.session.payment_intent is longer than 255 characters"),
        (with_session(amount_total="1500"), "Invalid event: checkout.session.amount_total is not an integer"),
        (with_session(extra=nested(40)), "Invalid event: the event is nested deeper than 32 levels"),
    ],
)
def test_a_signed_event_that_does_not_fit_gets_400_and_changes_nothing(app, shop, change, message) -> None:
    order = shop.start({"enamel-mug": 1})
    event = change(session_event(order, "checkout.session.completed"))

    answer = post_event(app, event)
    assert answer.status_code == 400, answer.get_data(as_text=True)
    assert answer.json["message"] == message
    assert events_recorded(app) == 0
    assert get_order(app, order.public_id).status == "awaiting_payment"


def test_a_body_nested_past_the_json_parsers_limit_gets_400(app) -> None:
    body = json.dumps(stripe_event("customer.created", {"object": "customer", "id": "cus_1"}))
    deep = body[:-1] + ', "x": ' + "[" * 20_000 + "]" * 20_000 + "}"
    answer = post_event(app, deep)
    assert answer.status_code == 400
    assert answer.json["message"] == "Body is nested too deeply to be a Stripe event."
    assert events_recorded(app) == 0


def test_an_event_at_the_bounds_is_applied(app, shop) -> None:
    """The baseline of the refusals above: the longest id and type, the last 32-bit second, Stripe's depth."""
    order = shop.start({"enamel-mug": 1})
    event = session_event(order, "checkout.session.completed", extra=nested(28))
    event.update(id="evt_" + "x" * 251, created=2**31 - 1)
    answer = post_event(app, event)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert get_order(app, order.public_id).status == "paid"
    other = stripe_event("customer." + "x" * 91, {"object": "customer", "id": "cus_1"})
    assert post_event(app, other).status_code == 200
    assert events_recorded(app) == 2
