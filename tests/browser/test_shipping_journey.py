"""Buy with an address, the operator ships it from the To ship list, the shopper sees Shipped."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select

from shop.extensions import db
from shop.models import Shipment
from tests.browser.conftest import WEBHOOK_TIMEOUT, LiveShop, screenshot
from tests.browser.test_journeys import CHECKOUT_URL, SUCCESS_URL, choose, pay

pytestmark = pytest.mark.sqlite_only

OPERATOR = {"username": "operator", "password": "correct horse battery staple"}
TRACKING = "1Z999AA10123456784"


def shipments(shop: LiveShop) -> list[tuple[str, str, str]]:
    with shop.app.app_context():
        rows = [(s.carrier, s.tracking_number, s.shipped_by) for s in db.session.scalars(select(Shipment))]
        db.session.remove()
        return rows


def test_buy_with_an_address_ship_it_with_tracking_and_the_shopper_sees_shipped(page: Page, new_context, live_shop: LiveShop):
    live_shop.app.config.update(ADMIN_USERNAME=OPERATOR["username"], ADMIN_PASSWORD=OPERATOR["password"])
    page.goto(live_shop.url + "/")
    choose(page, {"enamel-mug": 2, "canvas-tote": 1})
    page.get_by_role("button", name="Buy").click()
    page.wait_for_url(CHECKOUT_URL)
    expect(page.get_by_label("Country or region").locator("option")).to_have_text(["Canada", "United States"])
    pay(page)
    page.wait_for_url(SUCCESS_URL)
    expect(page.get_by_role("heading", name="Payment received")).to_be_visible(timeout=WEBHOOK_TIMEOUT)
    ship_to = page.locator(".summary-ship-to")
    expect(ship_to).to_contain_text("Ada Lovelace")
    expect(ship_to).to_contain_text("Springfield IL 62704")
    public_id = page.locator(".summary-ref .mono").inner_text()

    context, _ = new_context(http_credentials=OPERATOR)
    admin = context.new_page()
    admin.goto(live_shop.url + "/admin/to-ship")
    parcel = admin.locator(".parcel")
    expect(parcel).to_have_count(1)
    expect(parcel).to_contain_text("12 Analytical Row")
    expect(parcel).to_contain_text("2 × Enamel Mug")
    screenshot(admin, "admin-to-ship")
    admin.emulate_media(media="print")  # the packing list: the parcel, without navigation and forms
    expect(parcel).to_contain_text("12 Analytical Row")
    expect(admin.locator(".admin-nav")).to_be_hidden()
    expect(parcel.get_by_role("button", name="Mark shipped")).to_be_hidden()
    admin.emulate_media(media="screen")

    parcel.get_by_label("Carrier").select_option("UPS")
    parcel.get_by_label("Tracking number").fill(TRACKING)
    parcel.get_by_role("button", name="Mark shipped").dblclick()
    expect(admin.get_by_text("Nothing to ship")).to_be_visible()
    assert shipments(live_shop) == [("UPS", TRACKING, "operator")]

    admin.goto(f"{live_shop.url}/admin/orders/{public_id}")
    expect(admin.locator(".fulfilment")).to_contain_text(f"Shipped: UPS {TRACKING}")
    expect(admin.locator(".admin-facts")).to_contain_text("Paid")
    screenshot(admin, "admin-order-shipped")

    page.goto(live_shop.url + "/")
    shipped = page.locator(".order").first.locator(".order-shipped")
    expect(shipped).to_contain_text("Shipped")
    expect(shipped.get_by_role("link", name=TRACKING)).to_have_attribute("href", re.compile(r"^https://www\.ups\.com/track\?tracknum=" + TRACKING))
    screenshot(page, "orders-shipped")
