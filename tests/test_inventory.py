"""Stock: reserved at checkout, returned when an order can no longer be paid, never oversold."""
from __future__ import annotations

import threading
import time

from sqlalchemy import func, select, update

from shop import stripe_emulator
from shop.extensions import db
from shop.models import Order, Product
from tests.conftest import seeded_app
from tests.helpers import ShopClient, count, get_order, pay, post_event, record_stripe_calls, session_event


def stock_of(app, slug: str) -> int:
    with app.app_context():
        return db.session.scalar(select(Product.stock).where(Product.slug == slug))


def set_stock(app, slug: str, stock: int) -> None:
    with app.app_context():
        db.session.execute(update(Product).where(Product.slug == slug).values(stock=stock))
        db.session.commit()


def test_checkout_reserves_and_payment_keeps_the_units(app, shop):
    order = shop.start({"enamel-mug": 3, "canvas-tote": 1})
    assert (stock_of(app, "enamel-mug"), stock_of(app, "canvas-tote")) == (97, 99)
    pay(shop, order.checkout_url)
    stripe_emulator.tick(app)
    assert get_order(app, order.public_id).status == "paid"
    assert (stock_of(app, "enamel-mug"), stock_of(app, "canvas-tote")) == (97, 99)


def test_cancelled_expired_and_failed_orders_return_their_units(app, shop):
    cancelled = shop.start({"enamel-mug": 1})
    shop.http.get(f"/checkout/cancel?order={cancelled.public_id}")
    failed = shop.start({"enamel-mug": 2})
    pay(shop, failed.checkout_url, method="bank_transfer_fail")
    assert stock_of(app, "enamel-mug") == 98  # the cancelled unit is back at once
    stripe_emulator.tick(app)
    stripe_emulator.tick(app, now=time.time() + 10)
    assert [get_order(app, o.public_id).status for o in (cancelled, failed)] == ["cancelled", "failed"]
    assert stock_of(app, "enamel-mug") == 100


def test_stripe_failure_returns_the_units(app, shop):
    record_stripe_calls(app, failures=["500"])
    assert shop.checkout({"enamel-mug": 4}).status_code == 503
    assert stock_of(app, "enamel-mug") == 100


def test_sold_out_product_is_shown_and_cannot_be_ordered(app, shop):
    set_stock(app, "canvas-tote", 0)
    page = shop.http.get("/").get_data(as_text=True)
    assert "Sold out" in page
    assert 'name="quantity-canvas-tote" type="number" inputmode="numeric"\n                     min="0" max="0"' in page
    recorder = record_stripe_calls(app)
    response = shop.checkout({"canvas-tote": 1})
    assert response.status_code == 409
    assert "Canvas Tote is sold out" in response.get_data(as_text=True)
    assert count(app, Order) == 0 and recorder.requests == []


def test_stock_that_ran_out_after_the_page_loaded_is_explained(app, shop):
    set_stock(app, "enamel-mug", 2)
    fields = shop.form_fields()
    page = shop.http.get("/").get_data(as_text=True)
    assert "Only 2 left" in page
    ShopClient(app).start({"enamel-mug": 1})
    response = shop.checkout({"enamel-mug": 2}, fields=fields)
    assert response.status_code == 409
    assert "only 1 Enamel Mug left" in response.get_data(as_text=True)
    assert stock_of(app, "enamel-mug") == 1


def test_many_shoppers_racing_for_the_last_units_never_oversell(app):
    set_stock(app, "enamel-mug", 3)
    shoppers = [ShopClient(app) for _ in range(12)]
    forms = [s.form_fields() for s in shoppers]
    barrier = threading.Barrier(len(shoppers))
    answers: list[int] = []

    def buy(shopper: ShopClient, fields: dict[str, str]) -> None:
        barrier.wait()
        answers.append(shopper.checkout({"enamel-mug": 1}, fields=fields).status_code)

    threads = [threading.Thread(target=buy, args=pair) for pair in zip(shoppers, forms, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(answers) == [303] * 3 + [409] * 9
    assert stock_of(app, "enamel-mug") == 0
    assert count(app, Order) == 3


def test_paid_after_expiry_takes_the_units_again_or_flags_the_order(app, shop):
    order = shop.start({"enamel-mug": 2})
    post_event(app, session_event(order, "checkout.session.expired"))
    assert stock_of(app, "enamel-mug") == 100
    set_stock(app, "enamel-mug", 1)
    post_event(app, session_event(order, "checkout.session.completed"))
    paid = get_order(app, order.public_id)
    assert paid.status == "paid"  # money was taken: the order shows it
    assert "stock ran short" in paid.review_reason
    assert stock_of(app, "enamel-mug") == 1


def test_seed_keeps_live_stock_levels(app):
    from shop.cli import seed_products

    set_stock(app, "enamel-mug", 7)
    with app.app_context():
        seed_products()
    assert stock_of(app, "enamel-mug") == 7


def test_checkout_reads_live_stock_while_the_page_shows_cached_stock(database_url):
    with seeded_app(database_url, PRODUCT_CACHE_SECONDS=60) as app:
        _checkout_sees_live_stock(app)


def _checkout_sees_live_stock(app) -> None:
    shop = ShopClient(app)
    fields = shop.form_fields()  # the page (and its product cache) says 100 mugs
    set_stock(app, "enamel-mug", 0)
    assert "Sold out" not in shop.http.get("/").get_data(as_text=True)
    response = shop.checkout({"enamel-mug": 1}, fields=fields)
    assert response.status_code == 409
    assert "Enamel Mug is sold out" in response.get_data(as_text=True)


def test_a_flash_sale_sells_each_unit_once_with_one_session_per_order(app):
    """24 browsers click Buy at the same moment for 6 units: 6 payment pages, 6 orders, 6 sessions."""
    from shop.stripe_emulator.models import CheckoutSession

    set_stock(app, "enamel-mug", 6)
    shoppers = [ShopClient(app) for _ in range(24)]
    forms = [shopper.form_fields() for shopper in shoppers]
    barrier = threading.Barrier(len(shoppers))
    answers: list[tuple[int, str | None]] = []

    def click(shopper: ShopClient, fields: dict[str, str]) -> None:
        barrier.wait()
        response = shopper.checkout({"enamel-mug": 1}, fields=fields)
        answers.append((response.status_code, response.headers.get("Location")))

    threads = [threading.Thread(target=click, args=pair) for pair in zip(shoppers, forms, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    pages = [location for code, location in answers if code == 303]
    assert sorted(code for code, _ in answers) == [303] * 6 + [409] * 18
    assert len(set(pages)) == 6 and all("/_stripe/pay/" in page for page in pages)
    assert stock_of(app, "enamel-mug") == 0
    with app.app_context():
        sessions = db.session.scalars(select(Order.stripe_session_id)).all()
        assert len(sessions) == 6 and len(set(sessions)) == 6 and None not in sessions
        assert db.session.scalar(select(func.count()).select_from(CheckoutSession)) == 6
