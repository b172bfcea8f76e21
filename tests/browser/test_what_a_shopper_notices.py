"""What a shopper notices, in real Chromium at phone and desktop widths.

Each test is one thing a shopper tripped over: coming Back from the payment page, the page
with JavaScript off, the total and Buy on a phone, a quantity over the limit, the payment
page's identity and fields, dates, and what the orders list and success page offer.
"""
from __future__ import annotations

import re
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select

from shop.extensions import db
from shop.models import Order
from tests.browser.conftest import SCREENSHOTS, WEBHOOK_TIMEOUT, LiveShop, fill_shipping_address, screenshot
from tests.browser.test_journeys import CHECKOUT_URL, SUCCESS_URL, choose, go_to_checkout, pay

pytestmark = pytest.mark.sqlite_only

PHONE = {"width": 375, "height": 740}


def paid_at(shop: LiveShop):
    with shop.app.app_context():
        moment = db.session.scalar(select(Order.paid_at).where(Order.paid_at.is_not(None)))
        db.session.remove()
    return moment


def written_as(moment, zone: str, label: str) -> str:
    """The shop's one date format: `22 Nov 2026, 15:23 UTC`."""
    local = moment.astimezone(ZoneInfo(zone))
    return f"{local.day} {local:%b %Y, %H:%M} {label}"


def test_back_from_the_payment_page_gives_a_fresh_form_and_a_way_back_to_pay(page: Page, live_shop: LiveShop):
    go_to_checkout(page, live_shop, {"canvas-tote": 2})
    page.go_back()
    page.wait_for_url(live_shop.url + "/")
    # A fresh form: no leftover quantity under a $0.00 total.
    expect(page.locator("#qty-canvas-tote")).to_have_value("0")
    expect(page.locator("#order-total")).to_have_text("$0.00")
    order = page.locator(".order")
    expect(order.locator(".badge")).to_have_text("Awaiting payment")
    screenshot(page, "back-from-checkout")

    # The order left unpaid can still be paid: back to its own payment page, same session.
    order.get_by_role("link", name="Continue to payment").click()
    page.wait_for_url(CHECKOUT_URL)
    expect(page.get_by_text("Qty 2")).to_be_visible()
    pay(page)
    page.wait_for_url(SUCCESS_URL)
    expect(page.get_by_role("heading", name="Payment received")).to_be_visible(timeout=WEBHOOK_TIMEOUT)
    assert (live_shop.orders(), live_shop.orders("paid")) == (1, 1)
    page.goto(live_shop.url + "/")
    expect(page.get_by_role("link", name="Continue to payment")).to_have_count(0)  # paid: nothing to continue


def test_without_javascript_nothing_on_the_page_pretends_to_work(new_context, live_shop: LiveShop):
    context, _ = new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto(live_shop.url + "/")
    # No total that stays at $0.00, no −/+ buttons that do nothing.
    expect(page.locator("#order-total")).to_be_hidden()
    expect(page.get_by_role("button", name="One more Canvas Tote")).to_be_hidden()
    expect(page.get_by_role("button", name="One fewer Canvas Tote")).to_be_hidden()
    expect(page.get_by_text("You'll see the total before you pay.")).to_be_visible()
    screenshot(page, "home-nojs")

    choose(page, {"canvas-tote": 2})
    page.get_by_role("button", name="Buy").click()
    page.wait_for_url(CHECKOUT_URL)
    session_id = page.url.rsplit("/", 1)[1]
    expect(page.get_by_role("button", name="Pay $64.00")).to_be_visible()

    page.goto(f"{live_shop.url}/checkout/success?session_id={session_id}")
    waiting = page.locator(".state-waiting")
    expect(waiting).to_contain_text("This usually takes a few seconds.")
    expect(waiting.get_by_text("This page updates by itself")).to_be_hidden()
    expect(page.locator(".spinner")).to_be_hidden()
    # (Playwright's text matching skips <noscript>, so it is found by its class.)
    expect(page.locator(".nojs-hint")).to_contain_text("This page can't update by itself with JavaScript off")
    expect(page.locator(".nojs-hint")).to_be_visible()


def test_on_a_phone_the_total_and_buy_stay_on_screen(new_context, live_shop: LiveShop):
    context, _ = new_context(viewport=PHONE)
    page = context.new_page()
    page.goto(live_shop.url + "/")
    buy = page.get_by_role("button", name="Buy")
    for scrolled_to in (0, 600, 1200):
        page.evaluate("(y) => window.scrollTo(0, y)", scrolled_to)
        box = buy.bounding_box()
        assert box and 0 <= box["y"] and box["y"] + box["height"] <= PHONE["height"], (scrolled_to, box)
        total = page.locator("#order-total").bounding_box()
        assert total and total["y"] + total["height"] <= PHONE["height"], (scrolled_to, total)
    page.evaluate("window.scrollTo(0, 0)")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "home-phone-screen-375.png"))

    # The note beside the lock wraps beside it, never leaving a word alone under the icon.
    lines = page.evaluate(
        """() => {
            const note = document.querySelector("#buy-note"), icon = note.querySelector("svg");
            const range = document.createRange();
            range.selectNodeContents(note.querySelector("span"));
            const right = icon.getBoundingClientRect().right;
            return [...range.getClientRects()].map((line) => line.left - right);
        }"""
    )
    assert lines and min(lines) >= 0, lines


def test_a_quantity_over_the_limit_is_refused_out_loud(page: Page, live_shop: LiveShop):
    page.goto(live_shop.url + "/")
    posts = []
    page.on("request", lambda request: posts.append(request.url) if request.method == "POST" else None)
    quantity = page.get_by_label("Quantity of Canvas Tote")
    quantity.fill("25")
    error = page.locator("#error-canvas-tote")
    expect(error).to_have_text("Up to 10 per order. Choose 10 or fewer.")
    expect(quantity).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#order-total")).to_have_text("$0.00")  # no total for a quantity we won't sell
    page.get_by_role("button", name="Buy").click()
    expect(page.locator("#cart-error")).to_have_text("Please fix the quantity marked above.")
    expect(quantity).to_be_focused()
    expect(quantity).to_have_value("25")  # not quietly changed to 10
    assert posts == []
    screenshot(page, "quantity-over-limit")

    quantity.fill("10")
    expect(error).to_be_hidden()
    page.get_by_role("button", name="Buy").click()
    page.wait_for_url(CHECKOUT_URL)
    expect(page.get_by_role("button", name="Pay $320.00")).to_be_visible()


def test_the_payment_page_names_the_shop_and_its_fields_behave_like_stripes(new_context, live_shop: LiveShop):
    context, _ = new_context(viewport=PHONE)
    page = context.new_page()
    missing = []
    page.on("response", lambda r: missing.append(r.url) if r.status >= 400 and r.request.method == "GET" else None)
    go_to_checkout(page, live_shop, {"field-notebook": 1})

    name = page.locator(".merchant-name")
    expect(name).to_have_text("Fieldwork Supply")
    assert name.evaluate("(el) => el.scrollWidth <= el.clientWidth"), "the shop's name is cut short"
    expect(page.locator(".merchant-icon")).to_be_visible()
    expect(page.locator("link[rel=icon]")).to_have_count(1)
    # The session id is one line, however narrow the screen.
    session_id = page.locator(".session-id")
    line_height = session_id.evaluate("(el) => parseFloat(getComputedStyle(el).lineHeight)")
    assert session_id.bounding_box()["height"] <= line_height * 1.2
    # The legends line up with the labels above and below them.
    left = {name: page.locator(selector).bounding_box()["x"] for name, selector in
            (("email", "label[for=email]"), ("shipping", "fieldset.shipping legend"), ("name", "label[for=ship-name]"),
             ("legend", "fieldset:not(.shipping) legend"), ("card", "label[for=card]"))}
    assert all(abs(x - left["email"]) < 1 for x in left.values()), left

    page.get_by_label("Bank transfer (delayed)", exact=True).check()
    expect(page.get_by_label("Card number")).to_be_hidden()
    expect(page.get_by_label("Expiry")).to_be_hidden()
    screenshot(page, "checkout-bank-transfer")
    page.get_by_label("Card", exact=True).check()
    expect(page.get_by_label("Card number")).to_be_visible()

    page.get_by_label("Expiry").fill("1230")
    expect(page.get_by_label("Expiry")).to_have_value("12 / 30")
    page.get_by_label("Email").fill("shopper@example.com")
    fill_shipping_address(page)
    page.get_by_label("Card number").fill("4242424242424242")
    expect(page.get_by_label("Card number")).to_have_value("4242 4242 4242 4242")
    page.get_by_role("button", name=re.compile("^Pay")).click()  # the CVC is missing
    expect(page.get_by_text("Enter your card's security code.")).to_have_count(1)  # said once
    expect(page.get_by_label("CVC")).to_be_focused()
    expect(page.get_by_label("Expiry")).to_have_value("12 / 30")
    screenshot(page, "checkout-field-error")
    page.get_by_label("CVC").fill("123")
    page.get_by_role("button", name=re.compile("^Pay")).click()
    page.wait_for_url(SUCCESS_URL)
    assert missing == []  # no favicon 404, nothing else missing


def test_an_expiry_typed_as_four_digits_is_accepted_without_javascript(new_context, live_shop: LiveShop):
    context, _ = new_context(java_script_enabled=False)
    page = context.new_page()
    go_to_checkout(page, live_shop, {"enamel-mug": 1})
    page.get_by_label("Email").fill("shopper@example.com")
    fill_shipping_address(page)
    page.get_by_label("Card number").fill("4242424242424242")
    page.get_by_label("Expiry").fill("1230")
    page.get_by_label("CVC").fill("123")
    page.get_by_role("button", name=re.compile("^Pay")).click()
    page.wait_for_url(SUCCESS_URL)


def test_dates_read_one_way_in_the_shoppers_time_zone(new_context, live_shop: LiveShop):
    context, _ = new_context(timezone_id="Asia/Kolkata")
    page = context.new_page()
    go_to_checkout(page, live_shop, {"enamel-mug": 1})
    pay(page)
    page.wait_for_url(SUCCESS_URL)
    expect(page.get_by_role("heading", name="Payment received")).to_be_visible(timeout=WEBHOOK_TIMEOUT)
    expected = "Paid " + written_as(paid_at(live_shop), "Asia/Kolkata", "GMT+5:30")
    expect(page.locator(".summary-paid")).to_have_text(expected)  # after the live update
    page.reload()
    expect(page.locator(".summary-paid")).to_have_text(expected)  # rendered by the server
    page.goto(live_shop.url + "/")
    expect(page.locator(".order-meta")).to_contain_text(expected)

    # A browser that can't tell (no JavaScript) gets UTC, labelled.
    quiet, _ = new_context(java_script_enabled=False, timezone_id="Asia/Kolkata")
    quiet.add_cookies(context.cookies())
    quiet_page = quiet.new_page()
    quiet_page.goto(live_shop.url + "/")
    expect(quiet_page.locator(".order-meta")).to_contain_text("Paid " + written_as(paid_at(live_shop), "UTC", "UTC"))


def test_refresh_status_is_offered_only_while_there_is_something_to_wait_for(new_context, live_shop: LiveShop):
    context, _ = new_context()
    page = context.new_page()
    go_to_checkout(page, live_shop, {"enamel-mug": 1})
    pay(page)
    page.wait_for_url(SUCCESS_URL)
    expect(page.get_by_role("heading", name="Payment received")).to_be_visible(timeout=WEBHOOK_TIMEOUT)
    expect(page.get_by_role("link", name="Refresh status")).to_have_count(0)  # after the live update
    success_url = page.url

    quiet, _ = new_context(java_script_enabled=False)
    quiet_page = quiet.new_page()
    quiet_page.goto(success_url)
    expect(quiet_page.get_by_role("heading", name="Payment received")).to_be_visible()
    expect(quiet_page.get_by_role("link", name="Refresh status")).to_have_count(0)
    expect(quiet_page.locator(".nojs-hint")).to_have_count(0)
    screenshot(quiet_page, "success-paid-nojs")
