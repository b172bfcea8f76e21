"""Shipping and fulfilment: the address from Checkout, the To ship list, Mark shipped, the CSV."""
from __future__ import annotations

import copy
import csv
import io
import json
import time

import pytest
from flask import Flask
from sqlalchemy import func, select

from shop.extensions import db
from shop.models import Shipment, ShippingAddress
from shop.stripe_emulator import tick
from tests.helpers import (
    SHIPPING_ADDRESS,
    ShopClient,
    WireTrace,
    dispute_event,
    get_order,
    latest_order,
    path_of,
    pay,
    post_event,
    refund_event,
    session_event,
    stripe_reference,
)
from tests.test_admin import OPERATOR, Operator


@pytest.fixture
def operator(app: Flask) -> Operator:
    app.config.update(ADMIN_USERNAME=OPERATOR[0], ADMIN_PASSWORD=OPERATOR[1])
    return Operator(app)


def published_shipping_details() -> dict:
    """Stripe's published Checkout Session's `collected_information.shipping_details`, filled in."""
    session = json.loads(stripe_reference("fixtures3.json").read_text())["resources"]["checkout.session"]
    details = copy.deepcopy(session["collected_information"]["shipping_details"])
    details["name"] = "Grace Hopper"
    details["address"].update(line1="1 Compiler Way", city="Arlington", state="VA", postal_code="22201", country="US")
    return details


def paid_order_with(app: Flask, shop: ShopClient, **session_fields) -> str:
    order = shop.start({"field-notebook": 2, "canvas-tote": 1})
    response = post_event(app, session_event(order, "checkout.session.completed", **session_fields))
    assert response.status_code == 200
    return order.public_id


def test_both_api_versions_shapes_give_the_same_address(app: Flask, shop: ShopClient, operator: Operator):
    details = published_shipping_details()
    new = paid_order_with(app, shop, collected_information={"shipping_details": details}, shipping_details=None)
    old = paid_order_with(app, shop, shipping_details=details)  # before 2025-03-31.basil
    pages = [operator.get(f"/admin/orders/{public_id}").get_data(as_text=True) for public_id in (new, old)]
    for page in pages:
        assert "Grace Hopper<br>1 Compiler Way<br>Arlington VA 22201<br>US<br>" in page
        assert "To ship" in page
    listing = operator.get("/admin/to-ship").get_data(as_text=True)
    assert listing.index(new) < listing.index(old)  # oldest first
    assert listing.count("1 Compiler Way") == 2


def test_an_order_paid_without_an_address_needs_one_and_cannot_be_shipped(app: Flask, shop: ShopClient, operator: Operator):
    public_id = paid_order_with(app, shop)
    page = operator.get(f"/admin/orders/{public_id}").get_data(as_text=True)
    assert "Needs an address" in page and "Mark shipped" not in page
    assert "Needs an address" in operator.get("/admin/to-ship").get_data(as_text=True)
    response = operator.post_form(f"/admin/orders/{public_id}/shipped", carrier="UPS", tracking_number="1Z999")
    assert response.status_code == 303
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Shipment)) == 0


def test_a_double_clicked_mark_shipped_records_one_shipment(app: Flask, shop: ShopClient, operator: Operator):
    public_id = paid_order_with(app, shop, collected_information={"shipping_details": published_shipping_details()})
    for _ in range(2):
        response = operator.post_form(f"/admin/orders/{public_id}/shipped", carrier="UPS", tracking_number="1Z999AA10123456784")
        assert response.status_code == 303
    with app.app_context():
        shipments = db.session.scalars(select(Shipment)).all()
        assert [(s.carrier, s.tracking_number, s.shipped_by) for s in shipments] == [("UPS", "1Z999AA10123456784", "operator")]
    assert f"/admin/orders/{public_id}\"" not in operator.get("/admin/to-ship").get_data(as_text=True)
    page = operator.get(f"/admin/orders/{public_id}").get_data(as_text=True)
    assert "Shipped: UPS" in page and "1Z999AA10123456784" in page


def test_mark_shipped_needs_the_csrf_token(app: Flask, shop: ShopClient, operator: Operator):
    public_id = paid_order_with(app, shop, collected_information={"shipping_details": published_shipping_details()})
    response = operator.http.post(
        f"/admin/orders/{public_id}/shipped", data={"carrier": "UPS", "tracking_number": "1Z"}, auth=OPERATOR
    )
    assert response.status_code == 400
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Shipment)) == 0


def test_a_partly_refunded_order_ships_only_once_the_operator_confirms(app: Flask, shop: ShopClient, operator: Operator):
    public_id = paid_order_with(app, shop, collected_information={"shipping_details": published_shipping_details()})
    order = latest_order(app)
    post_event(app, refund_event(order.payment_intent_id, 500, order.amount_total))
    page = operator.get(f"/admin/orders/{public_id}").get_data(as_text=True)
    assert "Part of this order was refunded" in page
    operator.post_form(f"/admin/orders/{public_id}/shipped", carrier="USPS", tracking_number="9400")
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Shipment)) == 0
    operator.post_form(f"/admin/orders/{public_id}/shipped", carrier="USPS", tracking_number="9400", confirm="1")
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Shipment)) == 1


def test_a_fully_refunded_order_is_not_on_the_to_ship_list(app: Flask, shop: ShopClient, operator: Operator):
    public_id = paid_order_with(app, shop, collected_information={"shipping_details": published_shipping_details()})
    order = latest_order(app)
    post_event(app, refund_event(order.payment_intent_id, order.amount_total, order.amount_total))
    assert f"/admin/orders/{public_id}\"" not in operator.get("/admin/to-ship").get_data(as_text=True)


def test_the_emulators_page_asks_for_the_address_and_the_csv_carries_it(app: Flask, shop: ShopClient, operator: Operator):
    response = shop.checkout({"enamel-mug": 1})
    checkout_url = response.headers["Location"]
    page = shop.http.get(path_of(checkout_url)).get_data(as_text=True)
    assert "Shipping information" in page and '<option value="CA">Canada</option>' in page
    paid = pay(shop, checkout_url)
    assert paid.status_code == 303
    success = shop.http.get(path_of(paid.headers["Location"])).get_data(as_text=True)  # before the webhook
    assert "Your parcel will go to" in success and "12 Analytical Row<br>Apt 3<br>Springfield IL 62704<br>US" in success
    tick(app)
    order = latest_order(app)
    assert "Shipped" not in shop.http.get("/").get_data(as_text=True)
    operator.post_form(f"/admin/orders/{order.public_id}/shipped", carrier="USPS", tracking_number="9400111")
    home = shop.http.get("/").get_data(as_text=True)
    assert "<strong>Shipped</strong>" in home
    assert 'href="https://tools.usps.com/go/TrackConfirmAction?tLabels=9400111"' in home
    rows = list(csv.DictReader(io.StringIO(operator.get("/admin/orders.csv").get_data(as_text=True))))
    row = next(row for row in rows if row["order"] == order.public_id)
    assert (row["ship_to_name"], row["ship_to_city"], row["ship_to_country"]) == ("Ada Lovelace", "Springfield", "US")
    assert (row["fulfilment"], row["carrier"], row["tracking_number"]) == ("shipped", "USPS", "9400111")


@pytest.mark.postgres_only
def test_the_webhooks_fast_path_keeps_the_address_in_its_one_round_trip(app: Flask, shop: ShopClient, tmp_path):
    """A paid completion with an address is still one pipelined batch, COMMIT included, and the address is kept."""
    details = published_shipping_details()
    with WireTrace(app, str(tmp_path / "libpq.trace")) as wire:
        for _ in range(6):  # psycopg prepares a statement on its fifth run
            other = shop.start({"enamel-mug": 1})
            event = session_event(other, "checkout.session.completed", collected_information={"shipping_details": details})
            wire.traffic(lambda event=event: post_event(app, event))
        order = shop.start({"field-notebook": 1})
        event = session_event(order, "checkout.session.completed", collected_information={"shipping_details": details})
        round_trips, _ = wire.traffic(lambda: post_event(app, event))
    assert round_trips == 1
    with app.app_context():
        address = db.session.get(ShippingAddress, get_order(app, order.public_id).id)
        assert (address.name, address.line1, address.city, address.country) == ("Grace Hopper", "1 Compiler Way", "Arlington", "US")


def test_the_hosted_page_asks_for_the_fields_each_country_needs(app: Flask, shop: ShopClient):
    app.config.update(SHIPPING_COUNTRIES=("US", "HK"))
    checkout_url = shop.checkout({"enamel-mug": 1}).headers["Location"]
    card = {"email": "ada@example.com", "method": "card", "card": "4242 4242 4242 4242", "expiry": "12 / 34", "cvc": "123"}
    missing = shop.http.post(path_of(checkout_url), data={**card, "country": "US"}).get_data(as_text=True)
    for message in ("Enter your full name.", "Enter your address.", "Enter your city.", "Enter your state.", "Enter your ZIP code."):
        assert message in missing
    not_offered = shop.http.post(path_of(checkout_url), data={**card, "country": "GB"}).get_data(as_text=True)
    assert "Choose a country we ship to." in not_offered
    hong_kong = {"name": "Li Wei", "country": "HK", "line1": "1 Queen's Road Central", "city": "Central"}
    assert shop.http.post(path_of(checkout_url), data={**card, **hong_kong}).status_code == 303  # no postal code there
    tick(app)
    with app.app_context():
        address = db.session.get(ShippingAddress, latest_order(app).id)
        assert (address.line1, address.city, address.postal_code, address.country) == ("1 Queen's Road Central", "Central", None, "HK")


@pytest.mark.parametrize("api_version", ["2025-02-24.acacia", "2025-03-31.basil", None])
def test_the_emulators_session_carries_the_address_where_its_api_version_puts_it(app: Flask, shop: ShopClient, api_version):
    from shop.fulfilment import address_values
    from shop.stripe_emulator import objects
    from shop.stripe_emulator.models import CheckoutSession

    assert pay(shop, shop.checkout({"enamel-mug": 1}).headers["Location"]).status_code == 303
    with app.app_context():
        session = objects.checkout_session(db.session.scalars(select(CheckoutSession)).one(), api_version=api_version)
    if api_version == "2025-02-24.acacia":
        assert session["shipping_details"]["address"]["line1"] == "12 Analytical Row"
        assert session["collected_information"] is None
    else:
        assert session["shipping_details"] is None
        assert session["collected_information"]["shipping_details"]["name"] == "Ada Lovelace"
    assert address_values(session) == {
        "name": "Ada Lovelace", "phone": None, "line1": "12 Analytical Row", "line2": "Apt 3",
        "city": "Springfield", "state": "IL", "postal_code": "62704", "country": "US",
    }


def test_with_shipping_phone_on_the_page_asks_for_a_phone_and_the_shop_keeps_it(app: Flask, shop: ShopClient, operator: Operator):
    app.config.update(SHIPPING_PHONE=True)
    checkout_url = shop.checkout({"enamel-mug": 1}).headers["Location"]
    assert "Enter your phone number." in shop.http.post(path_of(checkout_url), data={"country": "US"}).get_data(as_text=True)
    form = {"email": "ada@example.com", "method": "card", "card": "4242 4242 4242 4242", "expiry": "12 / 34", "cvc": "123"}
    assert shop.http.post(path_of(checkout_url), data={**form, **SHIPPING_ADDRESS, "phone": "+1 217 555 0100"}).status_code == 303
    tick(app)
    page = operator.get(f"/admin/orders/{latest_order(app).public_id}").get_data(as_text=True)
    assert "Phone: +1 217 555 0100" in page


def test_a_disputed_order_is_held_off_the_to_ship_list_and_ships_only_once_confirmed(app: Flask, shop: ShopClient, operator: Operator):
    public_id = paid_order_with(app, shop, collected_information={"shipping_details": published_shipping_details()})
    order = latest_order(app)
    post_event(app, dispute_event("charge.dispute.created", "dp_shipping", order.payment_intent_id, "needs_response", int(time.time())))
    assert f"/admin/orders/{public_id}\"" not in operator.get("/admin/to-ship").get_data(as_text=True)
    page = operator.get(f"/admin/orders/{public_id}").get_data(as_text=True)
    assert "On hold: disputed" in page and "The customer disputed this payment (needs response)" in page
    operator.post_form(f"/admin/orders/{public_id}/shipped", carrier="DHL", tracking_number="JD0146")
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Shipment)) == 0
    operator.post_form(f"/admin/orders/{public_id}/shipped", carrier="DHL", tracking_number="JD0146", confirm="1")
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Shipment)) == 1
    rows = list(csv.DictReader(io.StringIO(operator.get("/admin/orders.csv").get_data(as_text=True))))
    assert [(row["fulfilment"], row["carrier"]) for row in rows if row["order"] == public_id] == [("shipped", "DHL")]


def test_a_fully_refunded_order_can_still_be_marked_shipped_once_confirmed(app: Flask, shop: ShopClient, operator: Operator):
    """The parcel may have left before the refund: the operator can record it, after the warning."""
    public_id = paid_order_with(app, shop, collected_information={"shipping_details": published_shipping_details()})
    order = latest_order(app)
    post_event(app, refund_event(order.payment_intent_id, order.amount_total, order.amount_total))
    page = operator.get(f"/admin/orders/{public_id}").get_data(as_text=True)
    assert "Not to ship" in page and "refunded in full" in page
    operator.post_form(f"/admin/orders/{public_id}/shipped", carrier="DHL", tracking_number="JD0147")
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Shipment)) == 0
    operator.post_form(f"/admin/orders/{public_id}/shipped", carrier="DHL", tracking_number="JD0147", confirm="1")
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Shipment)) == 1
