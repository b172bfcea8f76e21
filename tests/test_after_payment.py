"""After the payment: refunds that fail and disputes, as Stripe reports them, in any order.

Each event is one Stripe really sends (its object shaped as Stripe's published fixtures); the
operator's pages and the shopper's order list are read as a person would read them.
"""
from __future__ import annotations

import csv
import io
import itertools
import time

import pytest

from shop import disputes
from shop.extensions import db
from shop.models import Dispute, Order, Refund
from shop.stripe_emulator import tick
from tests.helpers import (
    dispute_event,
    event_state,
    get_order,
    pay,
    post_event,
    refund_event,
    refund_object_event,
    session_event,
)
from tests.test_admin import OPERATOR, REFUND_ATTEMPT_FIELD, Operator

PI = "pi_after_the_payment"
NOW = int(time.time())
EXPIRED_CARD = "expired_or_canceled_card"


@pytest.fixture
def operator(app) -> Operator:
    app.config.update(ADMIN_USERNAME=OPERATOR[0], ADMIN_PASSWORD=OPERATOR[1])
    return Operator(app)


@pytest.fixture
def order(shop):
    return shop.start({"enamel-mug": 2})  # 4800 usd


@pytest.fixture
def paid(app, order):
    post_event(app, session_event(order, "checkout.session.completed", payment_intent=PI))
    assert get_order(app, order.public_id).status == "paid"
    return order


def _lost_chargeback() -> list[dict]:
    """A chargeback as Stripe tells it: opened, money and fee taken, closed lost."""
    return [
        dispute_event("charge.dispute.created", "dp_lost", PI, "needs_response", NOW),
        dispute_event("charge.dispute.funds_withdrawn", "dp_lost", PI, "needs_response", NOW + 1,
                      balance_transactions=((-4800, 1500),)),
        dispute_event("charge.dispute.closed", "dp_lost", PI, "lost", NOW + 2, balance_transactions=((-4800, 1500),)),
    ]


def _failed_refund() -> list[dict]:
    """A card refund that succeeds, then fails (expired card), at API 2024-10-28 or later."""
    return [
        refund_event(PI, 4800, 4800) | {"created": NOW},
        refund_object_event("refund.created", "re_fails", PI, 4800, "succeeded", NOW),
        refund_object_event("refund.failed", "re_fails", PI, 4800, "failed", NOW + 60, EXPIRED_CARD),
    ]


def _page(operator, order) -> str:
    return operator.get(f"/admin/orders/{order.public_id}").get_data(as_text=True)


# --- Disputes ---------------------------------------------------------------------------------


def test_a_chargeback_is_shown_with_its_deadline_and_blocks_the_refund(app, operator, paid):
    opened = dispute_event("charge.dispute.created", "dp_open", PI, "needs_response", NOW, due_by=1_900_000_000)
    response = post_event(app, opened)
    assert response.status_code == 200 and "not ours" not in response.get_json()["message"]
    assert event_state(app, opened["id"])[0] == "applied"

    html = _page(operator, paid)
    assert "Disputed — respond by" in html and "2030-03-17" in html  # due_by 1 900 000 000
    assert "https://dashboard.stripe.com/test/disputes/dp_open" in html
    assert "Do not ship this order" in html
    assert 'name="attempt"' not in html, "Stripe refuses to refund a charge under a chargeback"
    assert "No refund is offered" in html and "dp_open" in html
    assert get_order(app, paid.public_id).status == "paid"

    listing = operator.get("/admin/").get_data(as_text=True)
    assert listing.index("Needs attention") < listing.index("admin-filters")
    assert "Disputed — respond by" in listing and paid.public_id in listing

    refused = operator.post_form(f"/admin/orders/{paid.public_id}/refund", confirm="1", attempt="a" * 22)
    assert refused.status_code == 409


def test_an_inquiry_can_be_refunded_but_not_while_another_dispute_says_no(app, operator, paid):
    post_event(app, dispute_event("charge.dispute.created", "dp_inquiry", PI, "warning_needs_response", NOW,
                                  is_charge_refundable=True))
    html = _page(operator, paid)
    assert "Disputed" in html and 'name="attempt"' in html, "an inquiry can still be refunded"

    post_event(app, dispute_event("charge.dispute.created", "dp_chargeback", PI, "needs_response", NOW + 1))
    html = _page(operator, paid)
    assert 'name="attempt"' not in html and "No refund is offered" in html and "dp_chargeback" in html


def test_a_lost_dispute_shows_what_was_withdrawn_in_any_order_of_arrival(app, operator, shop):
    for round_number, permutation in enumerate(itertools.permutations(_lost_chargeback())):
        order = shop.start({"enamel-mug": 2})
        intent = f"{PI}_{round_number}"
        for event in permutation:
            event = event | {"id": event["id"] + str(round_number)}
            event["data"] = {"object": event["data"]["object"] | {"id": f"dp_{round_number}", "payment_intent": intent}}
            post_event(app, event)
        post_event(app, session_event(order, "checkout.session.completed", payment_intent=intent))
        with app.app_context():
            dispute = db.session.scalar(db.select(Dispute).where(Dispute.stripe_dispute_id == f"dp_{round_number}"))
            assert (dispute.status, dispute.amount_withdrawn, dispute.fee_withdrawn) == ("lost", 4800, 1500), permutation
    html = _page(operator, order)
    assert "lost" in html and "$48.00 ($15.00)" in html and "Disputed — respond by" not in html
    assert "Needs attention" not in operator.get("/admin/").get_data(as_text=True)


def test_a_won_dispute_returns_the_order_to_its_paid_state(app, operator, paid):
    post_event(app, dispute_event("charge.dispute.created", "dp_won", PI, "needs_response", NOW))
    post_event(app, dispute_event("charge.dispute.closed", "dp_won", PI, "won", NOW + 2,
                                  balance_transactions=((-4800, 1500), (4800, -1500))))
    # A late update (older state) changes nothing.
    post_event(app, dispute_event("charge.dispute.updated", "dp_won", PI, "under_review", NOW + 1))
    html = _page(operator, paid)
    assert "Disputed — respond by" not in html and 'name="attempt"' in html
    assert get_order(app, paid.public_id).status == "paid"
    with app.app_context():
        assert db.session.scalar(db.select(Dispute.status)) == "won"
        assert db.session.scalars(disputes.open_dispute_order_ids()).all() == []


def test_a_dispute_before_its_payment_waits_for_it(app, order):
    early = dispute_event("charge.dispute.created", "dp_early", PI, "needs_response", NOW)
    post_event(app, early)
    assert event_state(app, early["id"])[:2] == ("waiting", PI)
    post_event(app, session_event(order, "checkout.session.completed", payment_intent=PI))
    assert event_state(app, early["id"])[0] == "applied"
    with app.app_context():
        paid = db.session.scalar(db.select(Order).where(Order.public_id == order.public_id))
        assert db.session.scalars(disputes.open_dispute_order_ids()).all() == [paid.id]


def test_the_csv_export_carries_refunds_and_disputes(app, operator, paid):
    for event in _lost_chargeback():
        post_event(app, event)
    rows = list(csv.DictReader(io.StringIO(operator.get("/admin/orders.csv").get_data(as_text=True))))
    [row] = [row for row in rows if row["order"] == paid.public_id]
    assert row["disputes"] == "dp_lost lost" and row["dispute_withdrawn"] == "63.00"


# --- Refunds that fail ------------------------------------------------------------------------


@pytest.mark.parametrize("order_of_arrival", list(itertools.permutations(range(3))))
def test_a_refund_that_failed_is_not_shown_as_refunded(app, operator, shop, order, order_of_arrival):
    events = _failed_refund()
    for index in order_of_arrival:
        post_event(app, events[index])
    post_event(app, session_event(order, "checkout.session.completed", payment_intent=PI))

    settled = get_order(app, order.public_id)
    assert (settled.status, settled.amount_refunded) == ("paid", 0)
    mine = shop.http.get("/").get_data(as_text=True)
    assert "Refunded" not in mine.split('id="orders-heading"')[1], "the customer never got this money"

    html = _page(operator, order)
    assert "Refund failed" in html and "expired or was cancelled (expired_or_canceled_card)" in html
    assert 'name="attempt"' in html, "the operator can refund again"
    listing = operator.get("/admin/").get_data(as_text=True)
    assert "Refund failed" in listing and order.public_id in listing


def test_a_refund_that_failed_on_an_older_endpoint(app, operator, paid):
    """Before 2022-11-15 the charge lists its refunds; older endpoints get charge.refund.updated."""
    refunded = refund_event(PI, 4800, 4800) | {"created": NOW}
    refunded["data"]["object"]["refunds"] = {
        "object": "list", "has_more": False, "url": "/v1/charges/ch_x/refunds",
        "data": [refund_object_event("x", "re_old", PI, 4800, "succeeded", NOW)["data"]["object"]],
    }
    post_event(app, refund_object_event("charge.refund.updated", "re_old", PI, 4800, "failed", NOW + 60, "declined"))
    post_event(app, refunded)
    settled = get_order(app, paid.public_id)
    assert (settled.status, settled.amount_refunded) == ("paid", 0)
    assert "bank declined the refund (declined)" in _page(operator, paid)


def test_one_of_two_refunds_fails(app, shop, paid):
    post_event(app, refund_object_event("refund.created", "re_one", PI, 1000, "succeeded", NOW))
    post_event(app, refund_object_event("refund.created", "re_two", PI, 2000, "pending", NOW + 1))
    assert get_order(app, paid.public_id).amount_refunded == 3000
    post_event(app, refund_object_event("refund.failed", "re_two", PI, 2000, "failed", NOW + 60, EXPIRED_CARD))
    # Late news of an earlier state never revives a failed refund.
    post_event(app, refund_object_event("refund.updated", "re_two", PI, 2000, "succeeded", NOW + 2))
    settled = get_order(app, paid.public_id)
    assert (settled.status, settled.amount_refunded, settled.amount_refund_pending) == ("partially_refunded", 1000, 0)
    mine = shop.http.get("/").get_data(as_text=True)
    assert "Refunded $10.00" in mine and "$30.00" not in mine


def test_a_pending_refund_is_on_its_way_not_refunded(app, shop, paid):
    post_event(app, refund_object_event("refund.created", "re_pending", PI, 4800, "pending", NOW))
    settled = get_order(app, paid.public_id)
    assert (settled.status, settled.amount_refunded, settled.amount_refund_pending) == ("refunded", 4800, 4800)
    mine = shop.http.get("/").get_data(as_text=True).split('id="orders-heading"')[1]
    assert "Refund of $48.00 on its way" in mine and "Refunded" not in mine
    post_event(app, refund_object_event("refund.updated", "re_pending", PI, 4800, "succeeded", NOW + 5))
    mine = shop.http.get("/").get_data(as_text=True).split('id="orders-heading"')[1]
    assert "Refunded $48.00" in mine
    with app.app_context():
        assert db.session.scalar(db.select(Refund.status)) == "succeeded"


@pytest.mark.parametrize(
    "event, message",
    [
        (refund_object_event("refund.created", "re_" + "x" * 300, PI, 100, "pending", NOW), "refund.id is longer than 255"),
        (refund_object_event("refund.failed", "re_big", PI, 2**40, "failed", NOW), "refund.amount 1099511627776 does not fit"),
        (refund_object_event("refund.failed", "re_odd", PI, 100, "failed", NOW, "x" * 80), "refund.failure_reason is longer"),
        (dispute_event("charge.dispute.created", "dp_late", PI, "needs_response", NOW, due_by=2**40),
         "dispute.evidence_details.due_by 1099511627776 does not fit"),
        (dispute_event("charge.dispute.created", "dp_" + "x" * 300, PI, "needs_response", NOW), "dispute.id is longer"),
    ],
)
def test_a_refund_or_dispute_that_does_not_fit_its_columns_gets_400(app, paid, event, message):
    response = post_event(app, event)
    assert response.status_code == 400 and message in response.get_json()["message"]
    assert event_state(app, event["id"]) is None


# --- Through the emulator: Stripe's test cards ------------------------------------------------


def test_paid_with_the_dispute_test_card_the_operator_sees_the_chargeback(app, operator, shop):
    order = shop.start({"enamel-mug": 2})
    assert pay(shop, order.checkout_url, card="4000 0000 0000 0259").status_code == 303
    tick(app)
    html = _page(operator, order)
    assert "Disputed — respond by" in html and "fraudulent" in html and "$48.00 ($15.00)" in html
    assert "No refund is offered" in html
    page = operator.get("/admin/").get_data(as_text=True)
    assert "Needs attention" in page and order.public_id in page


def test_a_refund_of_the_failing_refund_test_card_fails_for_operator_and_shopper(app, operator, shop):
    order = shop.start({"enamel-mug": 2})
    pay(shop, order.checkout_url, card="4000 0000 0000 5126")
    tick(app)
    page = f"/admin/orders/{order.public_id}"
    form = REFUND_ATTEMPT_FIELD.search(operator.get(page).get_data(as_text=True))[1]
    assert operator.post_form(f"{page}/refund", confirm="1", attempt=form).status_code == 303
    tick(app)
    assert get_order(app, order.public_id).status == "refunded"  # Stripe says succeeded, for now
    tick(app, now=time.time() + 3600)  # the card turns out expired
    failed = get_order(app, order.public_id)
    assert (failed.status, failed.amount_refunded) == ("paid", 0)
    html = operator.get(page).get_data(as_text=True)
    assert "Refund failed" in html and "expired_or_canceled_card" in html
    mine = shop.http.get("/").get_data(as_text=True).split('id="orders-heading"')[1]
    assert "Refund" not in mine.split("</section>")[0], "the customer never got this money"
