"""Starting a checkout: server-side prices, strict validation, one order per form."""
from __future__ import annotations

import time
from urllib.parse import parse_qs

import pytest
import stripe
from sqlalchemy import select

from shop import stripe_gateway
from shop.extensions import db
from shop.models import Order
from tests.helpers import ShopClient, WireTrace, count, latest_order, record_stripe_calls, snapshot


def sdk(app) -> stripe.StripeClient:
    return stripe.StripeClient(
        app.config["STRIPE_SECRET_KEY"],
        base_addresses={"api": app.config["STRIPE_API_BASE"]},
        http_client=app.extensions["stripe_http_client"],
    )


def test_home_page_shows_three_products_with_prices(client):
    page = client.get("/").get_data(as_text=True)
    for name, price in [("Field Notebook", "$18.00"), ("Enamel Mug", "$24.00"), ("Canvas Tote", "$32.00")]:
        assert name in page and price in page
    assert "Offline mode" in page
    assert "No orders yet" in page


def test_checkout_prices_come_from_the_database(app, shop):
    response = shop.checkout({"field-notebook": 2, "canvas-tote": 1})
    assert response.status_code == 303
    order = latest_order(app)
    assert response.headers["Location"] == order.checkout_url
    assert order.status == "awaiting_payment"
    assert order.amount_total == 2 * 1800 + 3200
    assert order.currency == "usd"

    with app.app_context():
        session = sdk(app).v1.checkout.sessions.retrieve(order.stripe_session_id)
        items = sdk(app).v1.checkout.sessions.line_items.list(order.stripe_session_id)
    assert session.amount_total == 6800
    assert session.client_reference_id == order.public_id
    assert session.metadata["order_id"] == order.public_id
    assert session.url == order.checkout_url
    # 45 minutes from the order's creation: 30 to pay, plus the 15 an order may wait for its session.
    assert 45 * 60 - 5 <= session.expires_at - time.time() <= 45 * 60
    assert sorted((item.description, item.quantity, item.price.unit_amount) for item in items.data) == [
        ("Canvas Tote", 1, 3200),
        ("Field Notebook", 2, 1800),
    ]


def test_checkout_sends_an_idempotency_key_derived_from_the_order(app, shop):
    recorder = record_stripe_calls(app)
    shop.checkout({"enamel-mug": 1})
    order = latest_order(app)
    [(_, _, headers, body)] = recorder.posts_to("/v1/checkout/sessions")
    assert headers["Idempotency-Key"] == f"checkout-session-{order.public_id}"
    assert "price_data" in body and "unit_amount" in body


BAD_CARTS = [
    ("negative", {"quantity-enamel-mug": "-1"}, "whole number from 0 to 10"),
    ("float", {"quantity-enamel-mug": "1.5"}, "whole number from 0 to 10"),
    ("text", {"quantity-enamel-mug": "two"}, "whole number from 0 to 10"),
    ("huge", {"quantity-enamel-mug": "99999999999999999999"}, "whole number from 0 to 10"),
    ("eleven", {"quantity-enamel-mug": "11"}, "whole number from 0 to 10"),
    ("unicode digits", {"quantity-enamel-mug": "２"}, "whole number from 0 to 10"),
    ("empty", {"quantity-enamel-mug": ""}, "whole number from 0 to 10"),
    ("nothing chosen", {"quantity-enamel-mug": "0"}, "at least one item"),
    ("no fields", {}, "at least one item"),
    ("unknown product", {"quantity-gold-bar": "1"}, "something we don&#39;t sell"),
    ("tampered price", {"quantity-enamel-mug": "1", "price-enamel-mug": "1"}, "something we don&#39;t sell"),
    ("tampered amount", {"quantity-enamel-mug": "1", "amount_total": "1"}, "something we don&#39;t sell"),
    ("repeated quantity", {"quantity-enamel-mug": ["1", "2"]}, "more than one quantity"),
]


@pytest.mark.parametrize("case, fields, message", BAD_CARTS, ids=[c[0] for c in BAD_CARTS])
def test_bad_cart_is_refused_without_order_or_stripe_call(app, shop, case, fields, message):
    recorder = record_stripe_calls(app)
    before = snapshot(app)
    response = shop.http.post("/checkout", data={**shop.form_fields(), **fields})
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)
    assert snapshot(app) == before
    assert recorder.requests == []


@pytest.mark.parametrize("token", ["", "short", "x" * 31 + "!", "x" * 33])
def test_malformed_checkout_token_is_refused(app, shop, token):
    fields = {**shop.form_fields(), "checkout_token": token}
    response = shop.checkout({"enamel-mug": 1}, fields=fields)
    assert response.status_code == 400
    assert count(app, Order) == 0


@pytest.mark.parametrize("csrf", [None, "not-the-token"])
def test_checkout_requires_the_csrf_token(app, shop, csrf):
    fields = shop.form_fields()
    if csrf is None:
        del fields["csrf_token"]
    else:
        fields["csrf_token"] = csrf
    response = shop.checkout({"enamel-mug": 1}, fields=fields)
    assert response.status_code == 400
    assert "Reload the page" in response.get_data(as_text=True)
    assert count(app, Order) == 0


def test_submitting_the_same_form_twice_gives_one_order_and_one_session(app, shop):
    recorder = record_stripe_calls(app)
    fields = shop.form_fields()
    first = shop.checkout({"enamel-mug": 2}, fields=fields)
    second = shop.checkout({"enamel-mug": 2}, fields=fields)
    assert first.status_code == second.status_code == 303
    assert first.headers["Location"] == second.headers["Location"]
    assert count(app, Order) == 1
    assert len(recorder.posts_to("/v1/checkout/sessions")) == 1


def test_a_new_page_load_gets_a_new_order(app, shop):
    first = shop.checkout({"enamel-mug": 1})
    second = shop.checkout({"enamel-mug": 1})
    assert first.headers["Location"] != second.headers["Location"]
    assert count(app, Order) == 2


def test_reused_token_with_another_cart_is_refused(app, shop):
    fields = shop.form_fields()
    shop.checkout({"enamel-mug": 1}, fields=fields)
    before = snapshot(app)
    response = shop.checkout({"enamel-mug": 3}, fields=fields)
    assert response.status_code == 409
    assert snapshot(app) == before


def test_checkout_token_from_another_browser_is_refused(app, shop):
    fields = shop.form_fields()
    shop.checkout({"enamel-mug": 1}, fields=fields)
    before = snapshot(app)
    other = ShopClient(app)
    stolen = {**other.form_fields(), "checkout_token": fields["checkout_token"]}
    response = other.checkout({"enamel-mug": 1}, fields=stolen)
    assert response.status_code == 409
    assert snapshot(app) == before


@pytest.mark.parametrize("failure", ["timeout", "refused", "500", "503", "401"])
def test_stripe_failure_marks_the_order_failed_and_says_so(app, shop, failure):
    record_stripe_calls(app, failures=[failure])
    response = shop.checkout({"enamel-mug": 1})
    assert response.status_code == 503
    page = response.get_data(as_text=True)
    assert "nothing was charged" in page and "try again" in page
    order = latest_order(app)
    assert order.status == "failed"
    assert order.stripe_session_id is None


def test_success_url_carries_the_session_placeholder(app, shop):
    recorder = record_stripe_calls(app)
    shop.checkout({"enamel-mug": 1})
    [(_, _, _, body)] = recorder.posts_to("/v1/checkout/sessions")
    params = parse_qs(body)
    assert params["success_url"] == ["http://localhost/checkout/success?session_id={CHECKOUT_SESSION_ID}"]
    assert params["cancel_url"][0].startswith("http://localhost/checkout/cancel?order=ord_")


def test_session_expiry_does_not_depend_on_the_machines_timezone(app, shop, monkeypatch):
    monkeypatch.setenv("TZ", "Pacific/Kiritimati")  # UTC+14: a naive time read as local is 14 h off
    time.tzset()
    try:
        order = shop.start({"enamel-mug": 1})
        with app.app_context():
            session = sdk(app).v1.checkout.sessions.retrieve(order.stripe_session_id)
        assert 45 * 60 - 5 <= session.expires_at - time.time() <= 45 * 60
        assert order.created_at.utcoffset() is not None
    finally:
        monkeypatch.undo()
        time.tzset()


def test_a_twin_holding_the_idempotency_key_does_not_fail_the_order(app, shop, monkeypatch):
    """Stripe answers 409 idempotency_error while a double click's twin creates the session: the
    order stays pending for that twin (failing it would return its stock under a live session)."""
    from shop import stripe_gateway

    def twin_is_creating_it(*_args, **_kwargs):
        raise stripe_gateway.SessionBeingCreated("There is currently another in-progress request using this key")

    monkeypatch.setattr(stripe_gateway, "create_checkout_session", twin_is_creating_it)
    response = shop.checkout({"enamel-mug": 1})
    assert response.status_code == 503 and "nothing was charged" in response.get_data(as_text=True)
    order = latest_order(app)
    assert order.status == "pending" and order.stripe_session_id is None


@pytest.mark.postgres_only
def test_a_new_checkout_takes_three_database_round_trips_and_holds_no_connection_while_stripe_answers(
    app, monkeypatch, tmp_path
):
    """From libpq's own trace: the order's transaction (two pipelined batches, COMMIT in the second),
    then the session's record with the claim of the browser's older sessions (two transactions,
    one round trip); nothing parsed again. The products come from the page's cache, as in
    production. Stripe's side is a stand-in here, so that only the shop's own traffic is counted."""
    app.config["PRODUCT_CACHE_SECONDS"] = 60
    waits_holding_a_connection = []

    def session_from_stripe(order, success_url, cancel_url):
        waits_holding_a_connection.append(db.engine.pool.checkedout())
        return stripe_gateway.CheckoutSession(id=f"cs_test_{order.public_id[4:]}", url=f"https://checkout.stripe.com/c/pay/{order.public_id}")

    monkeypatch.setattr(stripe_gateway, "create_checkout_session", session_from_stripe)
    answers = []

    def checkout_in_a_new_browser():
        shopper = ShopClient(app)
        fields = shopper.form_fields()  # the home page's own round trip, before the traffic counted
        return lambda: answers.append(shopper.checkout({"enamel-mug": 1, "canvas-tote": 2}, fields=fields))

    with WireTrace(app, str(tmp_path / "libpq.trace")) as wire:
        for _ in range(6):  # psycopg prepares a statement on its fifth run
            wire.traffic(checkout_in_a_new_browser())
        traffic = wire.traffic(checkout_in_a_new_browser())
    assert [answer.status_code for answer in answers] == [303] * 7
    assert answers[-1].headers["Location"].startswith("https://checkout.stripe.com/")
    assert traffic == (3, 0)
    assert waits_holding_a_connection == [0] * 7
    with app.app_context():
        order = db.session.scalar(select(Order).order_by(Order.id.desc()))
        placed = (order.status, order.amount_total, sorted(item.quantity for item in order.items))
    assert placed == ("awaiting_payment", 1 * 2400 + 2 * 3200, [1, 2])


@pytest.mark.postgres_only
def test_the_products_rows_are_taken_in_the_round_trip_that_commits(app, monkeypatch, tmp_path):
    """Every checkout takes the same products' rows: from the stock's UPDATE to the COMMIT
    nothing may wait for the shop (its answer, its bounds check, a busy worker), or a crowd
    queues on those rows. From libpq's trace: the round trip that takes the stock commits."""
    monkeypatch.setattr(stripe_gateway, "create_checkout_session", lambda order, success_url, cancel_url: (
        stripe_gateway.CheckoutSession(id=f"cs_test_{order.public_id[4:]}", url="https://checkout.stripe.com/c/pay/x")))
    shopper = ShopClient(app)
    fields = shopper.form_fields()
    with WireTrace(app, str(tmp_path / "libpq.trace")) as wire:
        trips = wire.statements_by_round_trip(lambda: shopper.checkout({"enamel-mug": 1, "canvas-tote": 2}, fields=fields))
    taking_stock = [trip for trip in trips if any(statement.startswith("UPDATE products") for statement in trip)]
    assert len(taking_stock) == 1, trips
    (trip,) = taking_stock
    assert trip[-1] == "COMMIT" and all(s.startswith("UPDATE products") for s in trip[:-1]), trip
