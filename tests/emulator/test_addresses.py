"""Where the hosted page and the webhooks go: wherever the shop is served, with no setting.

(The same through real `flask run` and gunicorn processes: tests/test_runs_anywhere.py.)
"""
from __future__ import annotations

import logging
import time

import pytest
from sqlalchemy import select, text

from shop import stripe_emulator
from shop.extensions import db
from shop.stripe_emulator.addresses import server_origin
from shop.stripe_emulator.models import Delivery
from tests.conftest import seeded_app
from tests.helpers import CSRF_FIELD, SHIPPING_ADDRESS, TOKEN_FIELD, ShopClient, get_order, latest_order, path_of, pay

CARD = {"email": "shopper@example.com", "method": "card", "card": "4242 4242 4242 4242", "expiry": "12 / 34", "cvc": "123", **SHIPPING_ADDRESS}


def checkout_at(shop: ShopClient, base_url: str, **headers: str):
    """Start a checkout with the shop reached at `base_url` (and any proxy headers)."""
    page = shop.http.get("/", base_url=base_url, headers=headers).get_data(as_text=True)
    form = {"csrf_token": CSRF_FIELD.search(page)[1], "checkout_token": TOKEN_FIELD.search(page)[1], "quantity-enamel-mug": "1"}
    return shop.http.post("/checkout", data=form, base_url=base_url, headers=headers)


def delivery_urls(app) -> list[str | None]:
    with app.app_context():
        return list(db.session.scalars(select(Delivery.url).order_by(Delivery.id)))


@pytest.mark.parametrize("base_url", ["http://localhost:8000", "http://127.0.0.1:5001", "http://192.168.1.20:8123"])
def test_hosted_page_and_webhook_follow_the_address_the_shop_is_reached_at(app, shop, base_url):
    started = checkout_at(shop, base_url)
    assert started.status_code == 303
    assert started.headers["Location"].startswith(f"{base_url}/_stripe/pay/cs_test_")

    paid = shop.http.post(path_of(started.headers["Location"]), data=CARD, base_url=base_url)
    assert paid.status_code == 303
    assert paid.headers["Location"].startswith(f"{base_url}/checkout/success?session_id=cs_test_")
    assert stripe_emulator.tick(app) == 1
    assert delivery_urls(app) == [f"{base_url}/webhooks/stripe"]
    with app.app_context():
        assert db.session.scalar(select(Delivery.status)) == "delivered"


def test_behind_a_proxy_the_page_is_public_and_webhooks_go_to_the_socket(app, shop):
    started = checkout_at(
        shop,
        "http://127.0.0.1:8000",
        **{"X-Forwarded-Proto": "https", "X-Forwarded-Host": "shop.example", "Referer": "https://shop.example/"},
    )
    assert started.status_code == 303
    assert started.headers["Location"].startswith("https://shop.example/_stripe/pay/cs_test_")
    order = latest_order(app)
    pay(shop, order.checkout_url)
    stripe_emulator.tick(app)
    # The server reaches itself where it listens, not through the public name.
    assert delivery_urls(app) == ["http://127.0.0.1:8000/webhooks/stripe"]
    assert get_order(app, order.public_id).status == "paid"


@pytest.mark.parametrize(
    "environ, expected",
    [
        ({"wsgi.url_scheme": "http", "SERVER_NAME": "0.0.0.0", "SERVER_PORT": "8001"}, "http://127.0.0.1:8001"),
        ({"wsgi.url_scheme": "http", "SERVER_NAME": "::", "SERVER_PORT": "8001"}, "http://[::1]:8001"),
        ({"wsgi.url_scheme": "http", "SERVER_NAME": "10.0.0.5", "SERVER_PORT": "80"}, "http://10.0.0.5"),
        (
            {"wsgi.url_scheme": "https", "SERVER_NAME": "shop.example", "SERVER_PORT": "443",
             "werkzeug.proxy_fix.orig": {"wsgi.url_scheme": "http", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "9000"}},
            "http://127.0.0.1:9000",
        ),
        ({"wsgi.url_scheme": "http", "SERVER_NAME": "/run/shop.sock", "SERVER_PORT": "", "HTTP_HOST": "shop.local"},
         "http://shop.local"),
    ],
)
def test_server_origin_is_where_the_server_reaches_itself(environ, expected):
    assert server_origin(environ) == expected


def test_a_session_made_by_one_worker_is_delivered_by_another_to_the_same_place(database_url):
    """gunicorn workers share the emulator's tables: the target travels with the session."""
    with seeded_app(database_url) as worker_a, seeded_app(database_url) as worker_b:
        sent: list[str] = []
        worker_b.extensions["stripe_emulator"].transport = lambda url, body, headers: sent.append(url) or 200
        shop = ShopClient(worker_a)
        started = checkout_at(shop, "http://127.0.0.1:8765")
        shop.http.post(path_of(started.headers["Location"]), data=CARD, base_url="http://127.0.0.1:8765")
        assert stripe_emulator.tick(worker_b) == 1
        assert sent == ["http://127.0.0.1:8765/webhooks/stripe"]


def test_configured_urls_override_the_derived_ones(database_url):
    with seeded_app(
        database_url,
        STRIPE_EMULATOR_URL="http://emulator.test:7000/_stripe",
        STRIPE_EMULATOR_WEBHOOK_URL="http://hooks.test:7001/webhooks/stripe",
    ) as app:
        sent: list[str] = []
        app.extensions["stripe_emulator"].transport = lambda url, body, headers: sent.append(url) or 200
        shop = ShopClient(app)
        started = checkout_at(shop, "http://127.0.0.1:8000")
        assert started.headers["Location"].startswith("http://emulator.test:7000/_stripe/pay/cs_test_")
        shop.http.post(path_of(started.headers["Location"]), data=CARD)
        stripe_emulator.tick(app)
        assert sent == ["http://hooks.test:7001/webhooks/stripe"]


def test_each_failed_delivery_is_logged_with_url_answer_and_next_attempt(app, shop, caplog):
    answers: list[int | Exception] = [ConnectionRefusedError(111, "Connection refused"), 400]
    sent: list[str] = []

    def failing(url, body, headers):
        sent.append(url)
        answer = answers.pop(0) if answers else 200
        if isinstance(answer, Exception):
            raise answer
        return answer

    app.extensions["stripe_emulator"].transport = failing
    started = checkout_at(shop, "http://127.0.0.1:8000")
    shop.http.post(path_of(started.headers["Location"]), data=CARD, base_url="http://127.0.0.1:8000")
    now = time.time()
    first_retry, second_retry = app.extensions["stripe_emulator"].settings.retry_schedule[:2]
    with caplog.at_level(logging.WARNING, logger="shop.stripe_emulator"):
        stripe_emulator.tick(app, now=now)
        stripe_emulator.tick(app, now=now + first_retry + 0.1)
        stripe_emulator.tick(app, now=now + first_retry + second_retry + 0.2)
    failures = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(failures) == 2, failures
    url = "http://127.0.0.1:8000/webhooks/stripe"
    assert "checkout.session.completed evt_" in failures[0]
    assert f"to {url}: connection error: [Errno 111] Connection refused (attempt 1 of" in failures[0]
    assert failures[0].endswith(f"next attempt in {first_retry:g} s")
    assert f"to {url}: answered HTTP 400 (attempt 2 of" in failures[1]
    assert failures[1].endswith(f"next attempt in {second_retry:g} s")
    assert sent == [url] * 3


@pytest.mark.sqlite_only
def test_tables_from_an_older_emulator_get_the_new_columns(database_url):
    with seeded_app(database_url) as app, app.app_context():
        db.session.execute(text("ALTER TABLE stripe_emulator_deliveries DROP COLUMN url"))
        db.session.execute(text("ALTER TABLE stripe_emulator_checkout_sessions DROP COLUMN webhook_url"))
        db.session.commit()
    with seeded_app(database_url) as app:
        shop = ShopClient(app)
        order = shop.start({"enamel-mug": 1})
        pay(shop, order.checkout_url)
        assert stripe_emulator.tick(app) == 1
        assert get_order(app, order.public_id).status == "paid"
        assert delivery_urls(app) == ["http://localhost/webhooks/stripe"]
