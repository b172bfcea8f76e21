"""The operator view at /admin/: access, orders, filters, detail, refunds, sync, CSV, products."""
from __future__ import annotations

import csv
import dataclasses
import io
import re
import secrets
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, select, text, update

from shop.extensions import db
from shop.models import Order, OrderItem, Product, StripeEvent
from shop.orders import new_public_id
from shop.stripe_emulator import tick
from tests.helpers import (
    CSRF_FIELD,
    ShopClient,
    get_order,
    patch_order_handler,
    pay,
    post_event,
    record_stripe_calls,
    refund_event,
    session_event,
)

OPERATOR = ("operator", "correct horse battery staple")
REFUND_ATTEMPT_FIELD = re.compile(r'name="attempt" value="([^"]+)"')


@pytest.fixture
def admin_app(app: Flask) -> Flask:
    app.config.update(ADMIN_USERNAME=OPERATOR[0], ADMIN_PASSWORD=OPERATOR[1])
    return app


class Operator:
    """An operator's browser: basic auth on every request, one cookie jar for CSRF."""

    def __init__(self, app: Flask) -> None:
        self.http: FlaskClient = app.test_client()

    def get(self, path: str, **kwargs):
        return self.http.get(path, auth=OPERATOR, **kwargs)

    def refund_form(self, public_id: str) -> dict[str, str]:
        """The order page's refund form fields, as one rendering of the page has them."""
        html = self.get(f"/admin/orders/{public_id}").get_data(as_text=True)
        return {"confirm": "1", "attempt": REFUND_ATTEMPT_FIELD.search(html)[1]}

    def post_form(self, action: str, **fields: str):
        """POST as the page's form would: the session's CSRF token (from the orders page) included."""
        token = CSRF_FIELD.search(self.get("/admin/").get_data(as_text=True))[1]
        return self.http.post(action, data={"csrf_token": token, **fields}, auth=OPERATOR)


@pytest.fixture
def operator(admin_app: Flask) -> Operator:
    return Operator(admin_app)


def make_orders(app: Flask, statuses: list[str], start: datetime | None = None) -> list[str]:
    """Orders straight into the database, one a minute from `start`; returns their public ids."""
    start = start or datetime(2025, 3, 1, 12, tzinfo=UTC)
    with app.app_context():
        product = db.session.scalar(select(Product).order_by(Product.id))
        orders = [
            Order(
                public_id=new_public_id(),
                shopper_id="shopper",
                checkout_token=secrets.token_urlsafe(16),
                status=status,
                currency="usd",
                amount_total=product.unit_amount,
                created_at=start + timedelta(minutes=index),
                items=[OrderItem(product_id=product.id, product_name=product.name, quantity=1, unit_amount=product.unit_amount)],
            )
            for index, status in enumerate(statuses)
        ]
        db.session.add_all(orders)
        public_ids = [order.public_id for order in orders]
        db.session.commit()
        return public_ids


def listed_ids(html: str) -> list[str]:
    return re.findall(r'href="/admin/orders/(ord_[\w-]+)"', html)


# --- Access -------------------------------------------------------------------------------


@pytest.mark.parametrize("username, password", [(None, None), ("operator", None), (None, "secret")])
def test_admin_is_404_unless_both_credentials_are_set(app, username, password) -> None:
    app.config.update(ADMIN_USERNAME=username, ADMIN_PASSWORD=password)
    client = app.test_client()
    for path in ("/admin/", "/admin/orders.csv", "/admin/products", "/admin/orders/ord_x"):
        assert client.get(path, auth=("operator", "secret")).status_code == 404
    assert client.post("/admin/sync", auth=("operator", "secret")).status_code == 404


@pytest.mark.parametrize(
    "auth", [None, ("operator", "wrong"), ("someone", OPERATOR[1]), ("", ""), (OPERATOR[0], OPERATOR[1] + "x")]
)
def test_admin_asks_for_credentials(admin_app, auth) -> None:
    response = admin_app.test_client().get("/admin/", auth=auth)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith('Basic realm="Shop admin"')
    assert response.headers["Cache-Control"] == "no-store"
    assert "Sign in required" in response.get_data(as_text=True)


def test_admin_checks_credentials_before_csrf(admin_app) -> None:
    assert admin_app.test_client().post("/admin/sync").status_code == 401
    no_token = admin_app.test_client().post("/admin/sync", auth=OPERATOR)
    assert no_token.status_code == 400
    assert "Reload the page and try again" in no_token.get_data(as_text=True)  # refused by the CSRF check


def test_admin_pages_are_never_cached(operator, admin_app) -> None:
    order_id = make_orders(admin_app, ["paid"])[0]
    for path in ("/admin/", f"/admin/orders/{order_id}", "/admin/products", "/admin/orders.csv", "/admin/?status=x"):
        response = operator.get(path)
        assert response.headers["Cache-Control"] == "no-store", path
        assert "Content-Security-Policy" in response.headers


# --- Orders list --------------------------------------------------------------------------


def test_orders_list_shows_orders_newest_first(operator, admin_app, shop) -> None:
    first = shop.start({"enamel-mug": 2})
    second = shop.start({"canvas-tote": 1})
    page = operator.get("/admin/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert listed_ids(html) == [second.public_id, first.public_id]
    assert "2 × Enamel Mug" in html and "$48.00" in html
    assert 'action="/admin/sync"' in html and 'name="csrf_token"' in html


def test_orders_list_filters_by_status_and_date(operator, admin_app) -> None:
    march = make_orders(admin_app, ["paid", "failed", "paid"], start=datetime(2025, 3, 31, 23, 58, tzinfo=UTC))
    # 23:58 and 23:59 on 31 March, 00:00 on 1 April (UTC).
    assert listed_ids(operator.get("/admin/?status=paid").get_data(as_text=True)) == [march[2], march[0]]
    assert listed_ids(operator.get("/admin/?from=2025-04-01").get_data(as_text=True)) == [march[2]]
    assert listed_ids(operator.get("/admin/?to=2025-03-31").get_data(as_text=True)) == [march[1], march[0]]
    both = operator.get("/admin/?status=paid&from=2025-03-31&to=2025-03-31").get_data(as_text=True)
    assert listed_ids(both) == [march[0]]
    assert '<option value="paid" selected>' in both and 'value="2025-03-31"' in both
    assert "No orders match." in operator.get("/admin/?status=refunded").get_data(as_text=True)


@pytest.mark.parametrize(
    "query",
    ["status=bogus", "from=2025-13-01", "from=yesterday", "to=2025-02-30", "from=2025-03-02&to=2025-03-01",
     "page=0", "page=-1", "page=abc", "page=99999999999", "page=%C2%B2"],
)
def test_orders_list_rejects_bad_filters(operator, query) -> None:
    response = operator.get(f"/admin/?{query}")
    assert response.status_code == 400
    assert "That request didn&#39;t look right" in response.get_data(as_text=True)
    assert operator.get(f"/admin/orders.csv?{query}").status_code == (400 if "page" not in query else 200)


def test_orders_list_accepts_the_last_representable_day(operator, admin_app) -> None:
    ids = make_orders(admin_app, ["paid"])
    assert listed_ids(operator.get("/admin/?to=9999-12-31").get_data(as_text=True)) == ids
    rows = list(csv.DictReader(io.StringIO(operator.get("/admin/orders.csv?to=9999-12-31").get_data(as_text=True))))
    assert [row["order"] for row in rows] == ids


def test_orders_list_has_50_orders_a_page_and_keeps_the_filter(operator, admin_app) -> None:
    ids = make_orders(admin_app, ["paid"] * 120 + ["failed"] * 3)
    newest_paid_first = list(reversed(ids[:120]))
    pages = [operator.get(f"/admin/?status=paid&page={n}").get_data(as_text=True) for n in (1, 2, 3)]
    assert [listed_ids(page) for page in pages] == [newest_paid_first[:50], newest_paid_first[50:100], newest_paid_first[100:]]
    assert 'href="/admin/?page=2&amp;status=paid" rel="next"' in pages[0]
    assert "Page 3 of 3 · 120 orders" in pages[2] and 'rel="next"' not in pages[2]
    assert listed_ids(operator.get("/admin/?status=paid&page=9").get_data(as_text=True)) == []


def test_orders_list_runs_the_same_queries_for_many_orders(operator, admin_app) -> None:
    def statements_for_list_page() -> int:
        statements: list[str] = []
        with admin_app.app_context():
            engine = db.engine
        listener = lambda *args: statements.append(args[2])  # noqa: E731
        event.listen(engine, "before_cursor_execute", listener)
        try:
            assert operator.get("/admin/").status_code == 200
        finally:
            event.remove(engine, "before_cursor_execute", listener)
        return len(statements)

    make_orders(admin_app, ["paid"] * 2)
    few = statements_for_list_page()
    make_orders(admin_app, ["paid"] * 30, start=datetime(2025, 4, 1, tzinfo=UTC))
    # count, orders, items, events needing attention, open disputes, failed refunds
    assert statements_for_list_page() == few <= 6


# --- Order detail -------------------------------------------------------------------------


def test_order_detail_shows_items_ids_review_and_events_newest_first(operator, admin_app, shop) -> None:
    order = shop.start({"enamel-mug": 2, "field-notebook": 1})
    first = session_event(order, "checkout.session.completed", amount_total=1, created=1_700_000_000)
    later = session_event(order, "checkout.session.expired", created=1_700_000_100)
    post_event(admin_app, first)
    post_event(admin_app, later)

    page = operator.get(f"/admin/orders/{order.public_id}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert order.stripe_session_id in html
    assert re.search(r"<td>Enamel Mug</td><td class=\"num\">2</td>", html) and "Field Notebook" in html
    assert re.search(r'class="admin-review" role="alert"><strong>Needs review:</strong> Stripe reports 1 usd', html)
    assert html.index(later["id"]) < html.index(first["id"])
    assert "flagged for review" in html
    assert "/refund" not in html  # not paid: no refund button


def test_order_detail_of_an_unknown_order_is_404(operator) -> None:
    assert operator.get("/admin/orders/ord_nope").status_code == 404


def test_order_detail_shows_the_payment_intent_of_a_paid_order(operator, admin_app, shop) -> None:
    order = shop.start({"enamel-mug": 1})
    post_event(admin_app, session_event(order, "checkout.session.completed", payment_intent="pi_visible123"))
    html = operator.get(f"/admin/orders/{order.public_id}").get_data(as_text=True)
    assert "<code>pi_visible123</code>" in html
    assert 'action="/admin/orders/' + order.public_id + '/refund"' in html
    assert 'name="confirm" value="1" required' in html


# --- Refunds ------------------------------------------------------------------------------


def pay_with_the_emulator(app: Flask, shop: ShopClient) -> Order:
    order = shop.start({"enamel-mug": 2})
    assert pay(shop, order.checkout_url).status_code == 303
    tick(app)
    paid = get_order(app, order.public_id)
    assert paid.status == "paid", paid.status
    return paid


def test_refund_asks_stripe_and_waits_for_the_webhook(operator, admin_app, shop) -> None:
    order = pay_with_the_emulator(admin_app, shop)
    page = f"/admin/orders/{order.public_id}"
    response = operator.post_form(f"{page}/refund", **operator.refund_form(order.public_id))
    assert response.status_code == 303 and response.headers["Location"] == page
    html = operator.get(page).get_data(as_text=True)
    assert "Refund requested; it shows as pending until Stripe confirms it" in html
    assert "Pending" in html, "the refund shows as pending until Stripe's events confirm it"
    requested = get_order(admin_app, order.public_id)
    assert (requested.amount_refunded, requested.amount_refund_pending) == (4800, 4800)

    tick(admin_app)
    refunded = get_order(admin_app, order.public_id)
    assert (refunded.status, refunded.amount_refunded, refunded.amount_refund_pending) == ("refunded", 4800, 0)
    html = operator.get(page).get_data(as_text=True)
    assert "charge.refunded" in html and "/refund" not in html and "Succeeded" in html


def test_double_submitted_refund_form_refunds_once(operator, admin_app, shop) -> None:
    order = pay_with_the_emulator(admin_app, shop)
    page = f"/admin/orders/{order.public_id}"
    recorder = record_stripe_calls(admin_app)
    form = operator.refund_form(order.public_id)
    for _ in range(2):  # the same form, sent twice before Stripe's webhook arrives
        assert operator.post_form(f"{page}/refund", **form).status_code == 303
    keys = {headers["Idempotency-Key"] for _, _, headers, _ in recorder.posts_to("/v1/refunds")}
    assert keys == {f"refund-{order.public_id}-{form['attempt']}"}
    assert "Stripe did not accept" not in operator.get(page).get_data(as_text=True)
    tick(admin_app)
    with admin_app.app_context():
        refunds = db.session.execute(text("SELECT count(*) FROM stripe_emulator_refunds")).scalar()
    assert refunds == 1
    assert get_order(admin_app, order.public_id).amount_refunded == 4800


def test_refund_failure_at_stripe_is_shown_and_changes_nothing(operator, admin_app, shop) -> None:
    order = shop.start({"enamel-mug": 1})
    post_event(admin_app, session_event(order, "checkout.session.completed"))
    recorder = record_stripe_calls(admin_app, failures=["500"])
    page = f"/admin/orders/{order.public_id}"
    assert operator.post_form(f"{page}/refund", **operator.refund_form(order.public_id)).status_code == 303
    assert len(recorder.posts_to("/v1/refunds")) == 1
    html = operator.get(page).get_data(as_text=True)
    assert 'class="flash flash-error"' in html and "Stripe did not accept the refund" in html
    assert get_order(admin_app, order.public_id).status == "paid"


def test_a_refund_stripe_answered_500_can_be_tried_again_from_the_reloaded_page(operator, admin_app, shop) -> None:
    """Stripe replays a saved 500 under its idempotency key for a day: a retry needs a new key."""
    emulator = admin_app.extensions["stripe_emulator"]
    emulator.settings = dataclasses.replace(emulator.settings, save_failed_requests=True)
    emulator.failures.add("POST", "/v1/refunds")
    order = pay_with_the_emulator(admin_app, shop)
    page = f"/admin/orders/{order.public_id}"

    operator.post_form(f"{page}/refund", **operator.refund_form(order.public_id))
    assert "Stripe did not accept the refund" in operator.get(page).get_data(as_text=True)
    again = operator.post_form(f"{page}/refund", **operator.refund_form(order.public_id))

    assert again.status_code == 303
    assert "Refund requested" in operator.get(page).get_data(as_text=True)
    tick(admin_app)
    refunded = get_order(admin_app, order.public_id)
    assert (refunded.status, refunded.amount_refunded) == ("refunded", 4800)


def test_refund_needs_confirmation_csrf_and_a_paid_order(operator, admin_app, shop) -> None:
    order = shop.start({"enamel-mug": 1})
    page = f"/admin/orders/{order.public_id}"
    assert operator.post_form(f"{page}/refund", confirm="1").status_code == 409  # not paid
    post_event(admin_app, session_event(order, "checkout.session.completed"))
    recorder = record_stripe_calls(admin_app)
    assert operator.post_form(f"{page}/refund").status_code == 400  # box not ticked
    assert operator.post_form(f"{page}/refund", confirm="1").status_code == 400  # not the page's form
    assert operator.http.post(f"{page}/refund", data={"confirm": "1"}, auth=OPERATOR).status_code == 400  # no CSRF
    assert operator.post_form("/admin/orders/ord_nope/refund", confirm="1").status_code == 404
    assert recorder.posts_to("/v1/refunds") == []


# --- Sync ---------------------------------------------------------------------------------


def test_sync_button_runs_recovery_and_flashes_its_summary(operator, admin_app, shop) -> None:
    order = shop.start({"enamel-mug": 2})
    assert pay(shop, order.checkout_url).status_code == 303
    # The webhook never arrives (no tick): sync fetches the event from Stripe instead.
    response = operator.post_form("/admin/sync")
    assert response.status_code == 303 and response.headers["Location"] == "/admin/"
    html = operator.get("/admin/").get_data(as_text=True)
    assert re.search(r"Synced with Stripe\. Fetched \d+ event\(s\): 1 applied, 0 already seen, 0 invalid, 0 failed", html)
    assert get_order(admin_app, order.public_id).status == "paid"


def test_sync_failure_is_flashed(operator, admin_app) -> None:
    record_stripe_calls(admin_app, failures=["503"])
    assert operator.post_form("/admin/sync").status_code == 303
    assert "Could not sync with Stripe" in operator.get("/admin/").get_data(as_text=True)


# --- CSV export ---------------------------------------------------------------------------


def test_csv_export_of_the_filtered_orders(operator, admin_app) -> None:
    ids = make_orders(admin_app, ["paid", "failed", "paid"])
    with admin_app.app_context():
        db.session.execute(update(Order).where(Order.public_id == ids[2]).values(customer_email="=HYPERLINK(1)"))
        db.session.commit()
    response = operator.get("/admin/orders.csv?status=paid")
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert re.fullmatch(r'attachment; filename="orders-\d{8}-\d{6}\.csv"', response.headers["Content-Disposition"])
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert [row["order"] for row in rows] == [ids[2], ids[0]]
    assert rows[1]["status"] == "paid" and rows[1]["amount_total"] == "18.00" and rows[1]["currency"] == "USD"
    assert rows[1]["items"] == "1 x Field Notebook", "make_orders buys the first product"
    assert rows[1]["created_at"] == "2025-03-01T12:00:00+00:00"
    assert rows[0]["customer_email"] == "'=HYPERLINK(1)"  # a spreadsheet shows it, never runs it


def test_csv_export_with_no_orders_has_just_the_header(operator) -> None:
    assert operator.get("/admin/orders.csv").get_data(as_text=True).splitlines() == [
        "order,created_at,status,currency,amount_total,amount_refunded,refund_pending,refunds_failed,disputes,"
        "dispute_withdrawn,customer_email,items,stripe_session_id,payment_intent_id,paid_at,review_reason,"
        "ship_to_name,ship_to_line1,ship_to_line2,ship_to_city,ship_to_state,ship_to_postal_code,ship_to_country,"
        "ship_to_phone,fulfilment,carrier,tracking_number,shipped_at"
    ]


def test_orders_page_links_to_the_csv_of_the_same_filter(operator) -> None:
    html = operator.get("/admin/?status=paid&from=2025-01-01").get_data(as_text=True)
    assert 'href="/admin/orders.csv?status=paid&amp;from=2025-01-01"' in html


# --- Products -----------------------------------------------------------------------------


def test_products_page_lists_name_price_stock_and_whether_on_sale(operator, admin_app) -> None:
    with admin_app.app_context():
        db.session.execute(update(Product).where(Product.slug == "canvas-tote").values(active=False, stock=0))
        db.session.commit()
    html = operator.get("/admin/products").get_data(as_text=True)
    assert "Field Notebook" in html and "Enamel Mug" in html and "Canvas Tote" in html
    assert "$24.00" in html
    assert re.search(r"<code>canvas-tote</code></td>\s*<td class=\"num\">[^<]+</td><td>No</td>", html)
    assert re.search(r"<td>No</td>\s*<td class=\"num\">0 \(sold out\)</td>", html)
    assert re.search(r"<td>Yes</td>\s*<td class=\"num\">100</td>", html)


def test_stripe_events_unrelated_to_an_order_are_not_listed(operator, admin_app, shop) -> None:
    order = shop.start({"enamel-mug": 1})
    with admin_app.app_context():
        db.session.add(StripeEvent(id="evt_unrelated", type="customer.created", created=1, order_id=None, state="not_ours"))
        db.session.commit()
    assert "evt_unrelated" not in operator.get(f"/admin/orders/{order.public_id}").get_data(as_text=True)


# --- Events needing attention -------------------------------------------------------------


def test_failed_and_waiting_events_are_listed_and_a_retry_applies_them(operator, admin_app, shop, monkeypatch) -> None:
    order = shop.start({"enamel-mug": 1})
    payment = session_event(order, "checkout.session.completed", payment_intent="pi_paid_twice_over")
    refund = refund_event("pi_paid_twice_over", 2400, 2400)
    admin_app.config["PROPAGATE_EXCEPTIONS"] = False
    patch_order_handler(monkeypatch, "apply_session_event", lambda *args: 1 / 0)
    assert post_event(admin_app, payment).status_code == 500
    assert post_event(admin_app, refund).status_code == 200  # waits for the payment

    page = operator.get("/admin/events").get_data(as_text=True)

    assert "Events needing attention (2)" in page
    assert payment["id"] in page and "ZeroDivisionError: division by zero" in page
    assert refund["id"] in page and "pi_paid_twice_over" in page
    assert operator.post_form(f"/admin/events/{payment['id']}/retry").status_code == 303
    assert "failed again: ZeroDivisionError" in operator.get("/admin/events").get_data(as_text=True)

    monkeypatch.undo()
    assert operator.post_form(f"/admin/events/{payment['id']}/retry").status_code == 303

    after = operator.get("/admin/events").get_data(as_text=True)
    assert "order paid" in after and "No Stripe event has failed, none is waiting, and none flagged an order." in after
    assert "Events needing attention (0)" in after
    assert get_order(admin_app, order.public_id).status == "refunded"
    detail = operator.get(f"/admin/orders/{order.public_id}").get_data(as_text=True)
    assert detail.count("<td>applied, ") == 2  # the payment, and the refund that waited for it
    assert operator.post_form(f"/admin/events/{payment['id']}/retry").status_code == 404  # final now
    assert operator.post_form("/admin/events/evt_unknown/retry").status_code == 404


def test_a_payment_on_an_order_given_up_is_listed_until_marked_resolved(operator, admin_app, shop) -> None:
    order = shop.start({"enamel-mug": 1})
    with admin_app.app_context():
        db.session.execute(update(Order).where(Order.id == order.id).values(status="expired", stripe_session_id=None))
        db.session.commit()
    payment = session_event(order, "checkout.session.completed", id="cs_test_lost", payment_intent="pi_lost")
    assert post_event(admin_app, payment).status_code == 200

    page = operator.get("/admin/events").get_data(as_text=True)

    assert "Events needing attention (1)" in page
    assert payment["id"] in page and "needs review" in page and "pi_lost" in page
    assert f'href="/admin/orders/{order.public_id}"' in page
    assert operator.post_form(f"/admin/events/{payment['id']}/retry").status_code == 404  # nothing to retry
    assert operator.post_form(f"/admin/events/{payment['id']}/resolved").status_code == 303

    assert f"Event {payment['id']} marked resolved." in operator.get("/admin/events").get_data(as_text=True)
    after = operator.get("/admin/events").get_data(as_text=True)
    assert "Events needing attention (0)" in after and payment["id"] not in after
    detail = operator.get(f"/admin/orders/{order.public_id}").get_data(as_text=True)
    assert "resolved by the operator" in detail and "Needs review" in detail  # the order keeps its flag
    assert operator.post_form(f"/admin/events/{payment['id']}/resolved").status_code == 404


def test_sync_flashes_each_failed_event(operator, admin_app, shop, monkeypatch) -> None:
    order = shop.start({"enamel-mug": 2})
    pay(shop, order.checkout_url)  # the webhook never arrives (no tick)
    patch_order_handler(monkeypatch, "apply_session_event", lambda *args: 1 / 0)

    operator.post_form("/admin/sync")

    html = operator.get("/admin/").get_data(as_text=True)
    assert re.search(r"Fetched \d+ event\(s\): 0 applied, 0 already seen, 0 invalid, 1 failed", html)
    assert "(checkout.session.completed) failed: ZeroDivisionError: division by zero" in html
    assert "Events needing attention (1)" in html


def test_sync_settles_a_refund_that_waited_past_the_grace_period(operator, admin_app, monkeypatch) -> None:
    from shop import recovery
    from shop.models import utcnow

    refund = refund_event("pi_3PaidByAnotherIntegration", 900, 900)
    assert post_event(admin_app, refund).status_code == 200
    assert "Events needing attention (1)" in operator.get("/admin/events").get_data(as_text=True)
    failures = admin_app.extensions["stripe_emulator"].failures
    failures.add("GET", "/v1/checkout/sessions", times=1 + admin_app.config["STRIPE_MAX_NETWORK_RETRIES"])
    monkeypatch.setattr(recovery, "utcnow", lambda: utcnow() + recovery.WAITING_GRACE * 2)

    operator.post_form("/admin/sync")
    html = operator.get("/admin/events").get_data(as_text=True)
    assert "Refunds waiting for payment pi_3PaidByAnotherIntegration: could not ask Stripe" in html
    assert "Events needing attention (1)" in html

    operator.post_form("/admin/sync")
    html = operator.get("/admin/events").get_data(as_text=True)
    assert "1 waiting event(s) found to be another integration&#39;s payment" in html
    assert "Events needing attention (0)" in html and refund["id"] not in html
