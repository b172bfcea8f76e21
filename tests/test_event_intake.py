"""Event intake in any order of arrival, and for any integration's traffic.

A refund can overtake the payment it refunds; events about sessions and charges the shop
never made (null amounts, no payment intent) are acknowledged and change nothing.
"""
from __future__ import annotations

import copy
import json

import pytest
from sqlalchemy.exc import OperationalError

from shop import events
from tests.helpers import event_state, get_order, post_event, refund_event, session_event, snapshot, stripe_reference

HANDLED_TYPES = [
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "checkout.session.expired",
    "charge.refunded",
]


@pytest.fixture
def order(shop):
    return shop.start({"enamel-mug": 2})  # 4800 usd


def pay_event(order, **fields):
    return session_event(order, "checkout.session.completed", payment_intent="pi_first_paid_later", **fields)


@pytest.mark.parametrize("refunded, status", [(4800, "refunded"), (1000, "partially_refunded")])
def test_refund_delivered_before_its_payment_is_applied_with_the_payment(app, order, refunded, status):
    refund = refund_event("pi_first_paid_later", refunded, 4800)

    early = post_event(app, refund)

    assert early.status_code == 200
    assert early.json["duplicate"] is False
    assert event_state(app, refund["id"]) == ("waiting", "pi_first_paid_later", None)
    assert get_order(app, order.public_id).status == "awaiting_payment"

    payment = pay_event(order)
    assert post_event(app, payment).status_code == 200

    paid = get_order(app, order.public_id)
    assert (paid.status, paid.amount_refunded, paid.review_reason) == (status, refunded, None)
    assert event_state(app, refund["id"]) == ("applied", None, paid.id)
    assert event_state(app, payment["id"]) == ("applied", None, paid.id)


def test_refunds_waiting_in_any_order_end_at_the_largest_refund(app, order):
    partial, full = refund_event("pi_first_paid_later", 1000, 4800), refund_event("pi_first_paid_later", 4800, 4800)
    post_event(app, full)
    post_event(app, partial)
    post_event(app, pay_event(order))
    refunded = get_order(app, order.public_id)
    assert (refunded.status, refunded.amount_refunded) == ("refunded", 4800)
    assert event_state(app, partial["id"])[0] == event_state(app, full["id"])[0] == "applied"


def test_refund_of_a_delayed_payment_waits_until_the_payment_succeeds(app, order):
    post_event(app, pay_event(order, payment_status="unpaid"))
    assert get_order(app, order.public_id).status == "processing"
    refund = refund_event("pi_first_paid_later", 4800, 4800)

    post_event(app, refund)

    assert get_order(app, order.public_id).status == "processing"
    assert event_state(app, refund["id"])[:2] == ("waiting", "pi_first_paid_later")
    post_event(app, session_event(order, "checkout.session.async_payment_succeeded", payment_intent="pi_first_paid_later"))
    assert get_order(app, order.public_id).status == "refunded"
    assert event_state(app, refund["id"])[0] == "applied"


def test_a_waiting_refund_delivered_again_is_applied_once(app, order):
    refund = refund_event("pi_first_paid_later", 1000, 4800)
    post_event(app, refund)
    again = post_event(app, refund)
    assert again.status_code == 200
    assert event_state(app, refund["id"])[0] == "waiting"

    post_event(app, pay_event(order))
    after_payment = post_event(app, refund)

    assert after_payment.json["duplicate"] is True
    paid = get_order(app, order.public_id)
    assert (paid.status, paid.amount_refunded) == ("partially_refunded", 1000)


def test_a_waiting_refund_whose_redelivery_fails_is_still_applied_with_the_payment(app, order, monkeypatch):
    refund = refund_event("pi_first_paid_later", 1000, 4800)
    post_event(app, refund)

    def database_fails(event):
        raise OperationalError("UPDATE orders ...", {}, Exception("server closed the connection unexpectedly"))

    app.config["PROPAGATE_EXCEPTIONS"] = False  # a crash answers 500, as in production
    with monkeypatch.context() as patch:
        patch.setitem(events.HANDLERS, "charge.refunded", database_fails)
        assert post_event(app, refund).status_code == 500
    state, waiting_for, _ = event_state(app, refund["id"])
    assert (state, waiting_for) == ("waiting", "pi_first_paid_later")

    post_event(app, pay_event(order))

    paid = get_order(app, order.public_id)
    assert (paid.status, paid.amount_refunded) == ("partially_refunded", 1000)
    assert event_state(app, refund["id"])[0] == "applied"


def test_refund_after_payment_is_applied_at_once(app, order):
    post_event(app, pay_event(order))
    refund = refund_event("pi_first_paid_later", 4800, 4800)
    post_event(app, refund)
    assert get_order(app, order.public_id).status == "refunded"
    assert event_state(app, refund["id"])[0] == "applied"


def test_refund_of_a_charge_without_payment_intent_changes_no_order(app, order, shop):
    """Legacy Charges-API charges have `payment_intent: null`; orders not yet paid have no payment intent either."""
    unpaid_too = shop.start({"canvas-tote": 1})
    before = snapshot(app)
    refund = refund_event(None, 100, 100)

    response = post_event(app, refund)

    assert response.status_code == 200
    assert event_state(app, refund["id"]) == ("not_ours", None, None)
    assert snapshot(app)[:2] == before[:2]  # both orders exactly as they were: no review flag, no link
    for untouched in (order, unpaid_too):
        assert get_order(app, untouched.public_id).review_reason is None


@pytest.mark.parametrize("mode", ["setup", "subscription", "payment"])
@pytest.mark.parametrize("event_type", HANDLED_TYPES[:4])
def test_session_events_of_other_integrations_with_null_amounts_get_2xx(app, order, mode, event_type):
    foreign = session_event(
        order, event_type, id="cs_test_someone_elses", mode=mode, amount_total=None, currency=None,
        client_reference_id=None, metadata={}, payment_intent=None,
    )
    before = snapshot(app)

    response = post_event(app, foreign)

    assert response.status_code == 200, response.get_data(as_text=True)
    assert event_state(app, foreign["id"]) == ("not_ours", None, None)
    assert snapshot(app)[:1] == before[:1]


def stripe_fixtures() -> dict:
    return json.loads(stripe_reference("fixtures3.json").read_text())["resources"]


def wrapped_fixtures() -> list[tuple[str, str]]:
    """(event type, fixture resource) for every handled type and every fixture that could be its object."""
    return [(event_type, "checkout.session") for event_type in HANDLED_TYPES[:4]] + [
        ("charge.refunded", resource) for resource in ("charge", "refund", "payment_intent", "checkout.session")
    ] + [
        ("payment_intent.succeeded", "payment_intent"),
        ("charge.succeeded", "charge"),
        ("charge.dispute.created", "dispute"),
        ("refund.created", "refund"),
    ]


@pytest.mark.parametrize("event_type, resource", wrapped_fixtures())
def test_stripes_published_objects_as_events_get_2xx_and_change_no_order(app, order, shop, event_type, resource):
    """Stripe's own example objects (`fixtures3.json`), for sessions the shop didn't make."""
    obj = copy.deepcopy(stripe_fixtures()[resource])
    paid = shop.start({"canvas-tote": 1})
    post_event(app, session_event(paid, "checkout.session.completed"))
    event = session_event(order, event_type)
    event["data"]["object"] = obj
    before = snapshot(app)

    response = post_event(app, event)

    if event_type == "charge.refunded" and resource != "charge":
        assert response.status_code == 400, "a charge.refunded carrying no charge is not an event"
    else:
        assert response.status_code == 200, response.get_data(as_text=True)
        state, _, order_id = event_state(app, event["id"])
        assert state in ("not_ours", "waiting") and order_id is None
    assert snapshot(app)[:2] == before[:2]


def test_fixture_charge_with_a_foreign_payment_intent_waits_and_changes_nothing(app, order):
    charge = copy.deepcopy(stripe_fixtures()["charge"]) | {"payment_intent": "pi_of_another_integration", "amount_refunded": 100}
    event = refund_event("pi_unused", 0, 0)
    event["data"]["object"] = charge
    before = snapshot(app)
    assert post_event(app, event).status_code == 200
    assert event_state(app, event["id"]) == ("waiting", "pi_of_another_integration", None)
    assert snapshot(app)[:1] == before[:1]
