"""Success, cancel and status: they show how an order stands and never change it."""
from __future__ import annotations

import pytest

from shop import stripe_emulator
from shop.money import format_money
from tests.conftest import seeded_app
from tests.helpers import (
    ShopClient,
    WireTrace,
    get_order,
    pay,
    post_event,
    record_stripe_calls,
    session_event,
    snapshot,
)


@pytest.fixture
def order(app, shop):
    return shop.start({"enamel-mug": 2})


def test_success_page_shows_status_and_never_changes_the_order(app, shop, order):
    before = snapshot(app)
    page = shop.http.get(f"/checkout/success?session_id={order.stripe_session_id}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Confirming your payment" in html
    assert f'data-status-url="/orders/{order.public_id}/status?session_id={order.stripe_session_id}"' in html
    assert "Refresh status" in html  # works without JavaScript
    assert snapshot(app) == before
    assert get_order(app, order.public_id).status == "awaiting_payment"


def test_success_page_shows_paid_once_the_webhook_said_so(app, shop, order):
    post_event(app, session_event(order, "checkout.session.completed"))
    html = shop.http.get(f"/checkout/success?session_id={order.stripe_session_id}").get_data(as_text=True)
    assert "<title>Payment received" in html


@pytest.mark.parametrize("query, status", [("", 400), ("?session_id=", 400), ("?session_id=<script>", 400), ("?session_id=cs_test_unknown", 404)])
def test_success_page_with_a_bad_session_id(app, shop, order, query, status):
    before = snapshot(app)
    assert shop.http.get(f"/checkout/success{query}").status_code == status
    assert snapshot(app) == before


def test_status_json_for_the_owner(app, shop, order):
    response = shop.http.get(f"/orders/{order.public_id}/status")
    assert response.status_code == 200
    assert response.json == {
        "status": "awaiting_payment", "paid": False, "paid_at": None, "amount_total": 4800, "currency": "usd"
    }
    assert "no-cache" in response.headers["Cache-Control"]
    post_event(app, session_event(order, "checkout.session.completed"))
    assert shop.http.get(f"/orders/{order.public_id}/status").json["status"] == "paid"


def test_status_answers_304_while_nothing_changed(app, shop, order):
    first = shop.http.get(f"/orders/{order.public_id}/status")
    again = shop.http.get(f"/orders/{order.public_id}/status", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304
    post_event(app, session_event(order, "checkout.session.completed"))
    changed = shop.http.get(f"/orders/{order.public_id}/status", headers={"If-None-Match": first.headers["ETag"]})
    assert changed.status_code == 200 and changed.json["paid"] is True


def test_status_with_the_session_id_works_in_another_browser(app, order):
    other = ShopClient(app)
    url = f"/orders/{order.public_id}/status?session_id={order.stripe_session_id}"
    assert other.http.get(url).json["status"] == "awaiting_payment"


@pytest.mark.parametrize(
    "path",
    [
        "/orders/{public_id}/status",  # another browser, no session id
        "/orders/{public_id}/status?session_id=cs_test_wrong",
        "/orders/{public_id}/status?session_id=cs_t%C3%A9st",
        "/orders/ord_doesnotexistdoesnotexi/status",
        "/orders/not-an-order/status",
        "/orders/{public_id}%00/status",
    ],
)
def test_status_is_hidden_from_other_browsers_and_bad_ids(app, order, path):
    response = ShopClient(app).http.get(path.format(public_id=order.public_id))
    assert response.status_code == 404
    assert response.is_json
    assert "status" not in response.json


def test_cancel_expires_the_session_and_the_order_reads_cancelled(app, shop, order):
    response = shop.http.get(f"/checkout/cancel?order={order.public_id}", follow_redirects=True)
    assert response.request.path == "/"
    html = response.get_data(as_text=True)
    assert "Checkout cancelled. Nothing was charged." in html
    assert ">Cancelled<" in html and "Awaiting payment" not in html  # the banner and the list agree
    # Stripe's `checkout.session.expired` for the session arrives later and changes nothing.
    stripe_emulator.tick(app)
    assert get_order(app, order.public_id).status == "cancelled"
    assert ">Cancelled<" in shop.http.get("/").get_data(as_text=True)


@pytest.mark.parametrize("query, status", [("", 400), ("?order=bad", 400), ("?order=ord_doesnotexistdoesnotexi", 404)])
def test_cancel_with_a_bad_order_reference(app, shop, order, query, status):
    before = snapshot(app)
    assert shop.http.get(f"/checkout/cancel{query}").status_code == status
    assert snapshot(app) == before


def test_cancel_from_another_browser_changes_nothing(app, order):
    before = snapshot(app)
    assert ShopClient(app).http.get(f"/checkout/cancel?order={order.public_id}").status_code == 404
    assert snapshot(app) == before


def test_home_lists_this_browsers_orders_only(app, shop, order):
    post_event(app, session_event(order, "checkout.session.completed"))
    mine = shop.http.get("/").get_data(as_text=True)
    assert f'data-order-id="{order.public_id}"' in mine
    assert "2 × Enamel Mug" in mine and "$48.00" in mine and ">Paid<" in mine
    theirs = ShopClient(app).http.get("/").get_data(as_text=True)
    assert order.public_id not in theirs


def placed_ago(app, order, minutes: float) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    from shop.extensions import db
    from shop.models import Order, utcnow

    with app.app_context():
        db.session.execute(update(Order).where(Order.id == order.id).values(created_at=utcnow() - timedelta(minutes=minutes)))
        db.session.commit()


def test_continue_to_payment_is_offered_until_the_orders_session_expires(app, shop, order):
    from shop.extensions import db
    from shop.stripe_emulator.models import CheckoutSession

    with app.app_context():
        expires_at = db.session.get(CheckoutSession, order.stripe_session_id).expires_at
    lifetime = (expires_at - order.created_at.timestamp()) / 60  # as Stripe was told
    assert lifetime > 30
    placed_ago(app, order, lifetime - 5)
    home = shop.http.get("/").get_data(as_text=True)
    assert "Continue to payment" in home and order.checkout_url in home

    placed_ago(app, order, lifetime + 1)
    assert "Continue to payment" not in shop.http.get("/").get_data(as_text=True)


def test_unknown_page_is_a_styled_404(client):
    response = client.get("/nope")
    assert response.status_code == 404
    assert "Back to the shop" in response.get_data(as_text=True)


def test_home_page_queries_do_not_grow_with_the_number_of_orders(app, shop):
    from sqlalchemy import event

    from shop.extensions import db

    def statements_for_home() -> int:
        seen: list[str] = []
        with app.app_context():
            engine = db.engine

        def listener(connection, cursor, statement, *rest) -> None:
            seen.append(statement)

        event.listen(engine, "before_cursor_execute", listener)
        try:
            assert shop.http.get("/").status_code == 200
        finally:
            event.remove(engine, "before_cursor_execute", listener)
        return len(seen)

    shop.start({"enamel-mug": 1})
    with_one = statements_for_home()
    for quantity in range(2, 8):
        shop.start({"enamel-mug": quantity, "canvas-tote": 1})
    assert statements_for_home() == with_one


def test_cancel_after_paying_says_paid_not_nothing_was_charged(app, shop, order):
    """The shopper paid, then opened the cancel link before the webhook landed."""
    assert pay(shop, order.checkout_url).status_code == 303
    response = shop.http.get(f"/checkout/cancel?order={order.public_id}", follow_redirects=True)
    html = response.get_data(as_text=True)
    assert "Nothing was charged" not in html
    assert "already paid for this order, so it was not cancelled" in html
    assert response.request.path == "/checkout/success"  # the page that follows the payment
    stripe_emulator.tick(app)
    assert get_order(app, order.public_id).status == "paid"


def test_cancel_while_a_bank_transfer_is_processing_says_payment_in_progress(app, shop, order):
    assert pay(shop, order.checkout_url, method="bank_transfer").status_code == 303
    for webhook_landed in (False, True):
        response = shop.http.get(f"/checkout/cancel?order={order.public_id}", follow_redirects=True)
        html = response.get_data(as_text=True)
        assert "Nothing was charged" not in html, webhook_landed
        assert "payment is already in progress, so this order was not cancelled" in html
        stripe_emulator.tick(app)
        assert get_order(app, order.public_id).status == "processing"


def test_cancel_that_stripe_cannot_confirm_does_not_claim_a_cancellation(app, shop, order):
    record_stripe_calls(app, failures=["500", "500", "500"])
    response = shop.http.get(f"/checkout/cancel?order={order.public_id}", follow_redirects=True)
    html = response.get_data(as_text=True)
    assert "Checkout cancelled" not in html
    assert "couldn&#39;t reach Stripe to cancel" in html
    assert get_order(app, order.public_id).status == "awaiting_payment"


@pytest.mark.postgres_only
def test_home_page_and_status_poll_each_take_one_database_round_trip(app, shop, tmp_path):
    """What goes over the wire, from libpq's own protocol trace: no BEGIN, no ROLLBACK, no re-parse."""
    order = shop.start({"enamel-mug": 2, "canvas-tote": 1})
    app.config["PRODUCT_CACHE_SECONDS"] = 60  # as in production, the cards are re-read now and then, not per view
    shop.http.get("/")
    status = f"/orders/{order.public_id}/status"

    def views(path: str, times: int):
        def run() -> None:
            for _ in range(times):
                assert shop.http.get(path).status_code == 200

        return run

    with WireTrace(app, str(tmp_path / "libpq.trace")) as wire:
        wire.traffic(views("/", 6))  # psycopg prepares a statement on its fifth run
        assert wire.traffic(views("/", 10)) == (10, 0)
        wire.traffic(views(status, 6))
        assert wire.traffic(views(status, 10)) == (10, 0)



@pytest.mark.parametrize(
    "amount, currency, locale, text",
    [
        (1800, "usd", "en_US", "$18.00"),
        (123456789, "usd", "en_US", "$1,234,567.89"),
        (500, "jpy", "en_US", "¥500"),  # zero-decimal: Stripe's amount is whole yen
        (1500, "krw", "ko_KR", "₩1,500"),
        (5120, "kwd", "en_US", "KWD5.120"),  # three-decimal: Stripe's amount is in fils
        (150000, "inr", "en_US", "₹1,500.00"),
        (12345678, "inr", "en_IN", "₹1,23,456.78"),  # Indian digit grouping
        (123456, "eur", "de_DE", "1.234,56\xa0€"),
        (-1800, "gbp", "en_GB", "-£18.00"),
    ],
)
def test_money_is_written_for_the_locale_and_currency(amount, currency, locale, text):
    assert format_money(amount, currency, locale) == text


def test_prices_on_the_page_follow_the_shops_locale_and_currency(database_url):
    with seeded_app(database_url, SHOP_CURRENCY="inr", SHOP_LOCALE="en_IN") as app:
        html = app.test_client().get("/").get_data(as_text=True)
    assert "₹18.00" in html and 'data-locale="en-IN"' in html and 'data-minor-factor="100"' in html


def test_a_checkout_stripe_never_opened_is_not_shown_as_a_failed_payment(app, shop):
    app.extensions["stripe_emulator"].failures.add("POST", "/v1/checkout/sessions")
    assert shop.checkout({"enamel-mug": 1}).status_code == 503
    home = shop.http.get("/").get_data(as_text=True)
    assert "Payment failed" not in home
    assert "Not started" in home
    assert "this checkout never started and nothing was charged" in home


def test_the_page_after_paying_never_says_awaiting_payment(app, shop, order):
    html = shop.http.get(f"/checkout/success?session_id={order.stripe_session_id}").get_data(as_text=True)
    assert "<h1>Confirming your payment…</h1>" in html
    assert "Awaiting payment" not in html
    assert "Status: <span class=\"status-text\"><span class=\"badge badge-awaiting_payment\">Confirming with Stripe</span>" in html
