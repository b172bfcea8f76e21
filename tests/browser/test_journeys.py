"""Shoppers' journeys in a real browser against a real HTTP server and the Stripe emulator.

Webhooks arrive over HTTP from the emulator's worker, so the success page flips on its own.
Every request must stay on 127.0.0.1 (the fixtures abort and fail anything else).
"""
from __future__ import annotations

import re
import time
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import (
    DECLINED_CARD,
    GOOD_CARD,
    WEBHOOK_TIMEOUT,
    LiveShop,
    fill_shipping_address,
    screenshot,
)

pytestmark = pytest.mark.sqlite_only

METHODS = {"card": "Card", "bank_transfer": "Bank transfer (delayed)", "bank_transfer_fail": "Bank transfer (delayed, will fail)"}
CHECKOUT_URL = re.compile(r"/_stripe/pay/cs_")
SUCCESS_URL = re.compile(r"/checkout/success\?session_id=cs_")


def wait_for_event(shop: LiveShop, event_type: str) -> None:
    """Until the emulator's worker has delivered an event of this type to the shop."""
    deadline = time.monotonic() + WEBHOOK_TIMEOUT / 1000
    while shop.events(event_type) == 0:
        assert time.monotonic() < deadline, f"no {event_type} arrived"
        time.sleep(0.2)


def choose(page: Page, quantities: dict[str, int]) -> None:
    for slug, quantity in quantities.items():
        page.locator(f"#qty-{slug}").fill(str(quantity))


def go_to_checkout(page: Page, shop: LiveShop, quantities: dict[str, int]) -> None:
    page.goto(shop.url + "/")
    choose(page, quantities)
    page.get_by_role("button", name="Buy").click()
    page.wait_for_url(CHECKOUT_URL)


def pay(page: Page, card: str = GOOD_CARD, method: str = "card") -> None:
    """Fill in the hosted checkout page as a shopper would, and press Pay."""
    page.get_by_label("Email").fill("shopper@example.com")
    fill_shipping_address(page)
    page.get_by_label(METHODS[method], exact=True).check()
    if method == "card":
        page.get_by_label("Card number").fill(card)
        page.get_by_label("Expiry").fill("12 / 34")
        page.get_by_label("CVC").fill("123")
    page.get_by_role("button", name=re.compile(r"^Pay")).click()


def mark_page(page: Page) -> None:
    """Something only this document has: it's gone if the page navigates or reloads."""
    page.evaluate("window.__marker = 1")


def assert_not_navigated(page: Page) -> None:
    assert page.evaluate("window.__marker") == 1, "the page reloaded or navigated"


def test_buy_two_and_one_and_the_success_page_flips_to_paid_without_a_reload(page: Page, live_shop: LiveShop):
    page.goto(live_shop.url + "/")
    expect(page.get_by_text("No orders yet")).to_be_visible()
    screenshot(page, "home")

    choose(page, {"field-notebook": 2, "canvas-tote": 1})
    expect(page.locator("#order-total")).to_have_text("$68.00")
    page.get_by_role("button", name="Buy").click()
    page.wait_for_url(CHECKOUT_URL)
    expect(page.get_by_text("$68.00").first).to_be_visible()
    screenshot(page, "checkout")

    pay(page)
    page.wait_for_url(SUCCESS_URL)
    mark_page(page)
    confirmation = page.locator("[data-status-url]")
    expect(page.get_by_role("heading", name="Payment received")).to_be_visible(timeout=WEBHOOK_TIMEOUT)
    expect(confirmation).to_have_attribute("data-status", "paid")
    expect(page).to_have_title(re.compile("^Payment received"))
    assert_not_navigated(page)
    expect(confirmation.locator(".summary")).to_contain_text("2 × Field Notebook")
    expect(confirmation.locator(".summary")).to_contain_text("$68.00")
    screenshot(page, "success")

    page.get_by_role("link", name="Back to the shop").click()
    orders = page.locator(".order")
    expect(orders).to_have_count(1)
    expect(orders.first).to_have_attribute("data-status", "paid")
    expect(orders.first.locator(".badge")).to_have_text("Paid")
    expect(orders.first.locator(".order-total")).to_have_text("$68.00")
    expect(orders.first).to_contain_text("2 × Field Notebook")
    expect(orders.first).to_contain_text("1 × Canvas Tote")
    expect(orders.first).to_contain_text("Paid")
    screenshot(page, "orders")
    assert live_shop.orders("paid") == 1


def test_a_declined_card_then_a_good_one_makes_exactly_one_paid_order(page: Page, live_shop: LiveShop):
    go_to_checkout(page, live_shop, {"enamel-mug": 1})
    pay(page, card=DECLINED_CARD)
    expect(page.get_by_role("alert")).to_contain_text("Your card was declined.")
    screenshot(page, "checkout-declined")

    pay(page)
    page.wait_for_url(SUCCESS_URL)
    expect(page.get_by_role("heading", name="Payment received")).to_be_visible(timeout=WEBHOOK_TIMEOUT)
    assert live_shop.orders() == 1
    assert live_shop.orders("paid") == 1


def test_cancelling_on_the_checkout_page_reads_cancelled_before_and_after_stripes_expiry(page: Page, live_shop: LiveShop):
    go_to_checkout(page, live_shop, {"canvas-tote": 1})
    page.get_by_role("link", name=re.compile("Cancel")).click()
    page.wait_for_url(live_shop.url + "/")
    expect(page.get_by_role("status").filter(has_text="Checkout cancelled")).to_contain_text("Nothing was charged")
    expect(page.locator(".order")).to_have_count(1)
    expect(page.locator(".order .badge")).to_have_text("Cancelled")  # the banner and the list agree
    screenshot(page, "cancelled")

    # Stripe's `checkout.session.expired` for the closed session lands; the order stays the
    # shopper's own cancellation.
    wait_for_event(live_shop, "checkout.session.expired")
    page.reload()
    expect(page.locator(".order .badge")).to_have_text("Cancelled")
    assert live_shop.orders("cancelled") == 1


def test_double_clicking_buy_makes_one_order(page: Page, live_shop: LiveShop):
    page.goto(live_shop.url + "/")
    choose(page, {"field-notebook": 1})
    posts = []
    page.on("request", lambda request: posts.append(request.url) if request.method == "POST" else None)
    # Report the Buy button's state as each submit event finishes (after the page's own handler).
    submits = []
    page.expose_function("__reportSubmit", lambda *state: submits.append(state))
    page.evaluate(
        """() => {
            const form = document.querySelector("form.checkout-form"), buy = form.querySelector("button.buy");
            form.addEventListener("submit", (e) => window.__reportSubmit(buy.textContent, buy.disabled, e.defaultPrevented));
        }"""
    )
    page.get_by_role("button", name="Buy").dblclick()
    page.wait_for_url(CHECKOUT_URL)

    assert submits[0] == ("Redirecting to secure checkout…", True, False)
    assert all(prevented for _, _, prevented in submits[1:])  # a second click can't submit again
    assert [url for url in posts if url.endswith("/checkout")] == [live_shop.url + "/checkout"]
    assert live_shop.orders() == 1


def test_a_delayed_payment_shows_processing_then_paid(page: Page, live_shop: LiveShop):
    go_to_checkout(page, live_shop, {"enamel-mug": 2})
    pay(page, method="bank_transfer")
    page.wait_for_url(SUCCESS_URL)
    mark_page(page)
    expect(page.get_by_role("heading", name="Payment processing")).to_be_visible(timeout=WEBHOOK_TIMEOUT)
    screenshot(page, "success-processing")
    expect(page.get_by_role("heading", name="Payment received")).to_be_visible(timeout=WEBHOOK_TIMEOUT)
    assert_not_navigated(page)
    assert live_shop.orders("paid") == 1


def test_the_success_page_works_without_javascript(new_context, live_shop: LiveShop):
    context, _ = new_context(java_script_enabled=False)
    page = context.new_page()
    go_to_checkout(page, live_shop, {"field-notebook": 1})
    session_id = page.url.rsplit("/", 1)[1]

    # Back from checkout before paying (or before the webhook): the status and a way to refresh.
    page.goto(f"{live_shop.url}/checkout/success?session_id={session_id}")
    expect(page.get_by_role("heading", name="Confirming your payment")).to_be_visible()
    expect(page.locator(".live-status")).to_contain_text("Confirming with Stripe")
    refresh = page.get_by_role("link", name="Refresh status")
    expect(refresh).to_be_visible()
    screenshot(page, "success-nojs")

    page.go_back()
    pay(page)
    page.wait_for_url(SUCCESS_URL)
    expect(page.get_by_role("link", name="Refresh status")).to_be_visible()

    # Nothing polls without JavaScript. Wait for the webhook with a second, scripted browser
    # (the session id lets any browser see the status), then the shopper refreshes once.
    watcher, _ = new_context()
    watching = watcher.new_page()
    watching.goto(page.url)
    expect(watching.get_by_role("heading", name="Payment received")).to_be_visible(timeout=WEBHOOK_TIMEOUT)

    page.get_by_role("link", name="Refresh status").click()
    expect(page.get_by_role("heading", name="Payment received")).to_be_visible()
    expect(page.locator(".live-status")).to_contain_text("Paid")
    expect(page).to_have_title(re.compile("^Payment received"))


def tab_to(page: Page, selector: str, limit: int = 40) -> None:
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("(s) => document.activeElement && document.activeElement.matches(s)", selector):
            return
    raise AssertionError(f"Tab never reached {selector}")


def test_keyboard_only_shopper_reaches_checkout(page: Page, live_shop: LiveShop):
    page.goto(live_shop.url + "/")
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()

    tab_to(page, "#qty-enamel-mug")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none", "the focused quantity has no visible focus indicator"
    page.keyboard.press("ArrowUp")
    page.keyboard.press("ArrowUp")
    expect(page.locator("#qty-enamel-mug")).to_have_value("2")

    tab_to(page, "button.step[data-step='1'][data-target='qty-enamel-mug']")
    page.keyboard.press("Space")
    expect(page.locator("#qty-enamel-mug")).to_have_value("3")
    expect(page.locator("#order-total")).to_have_text("$72.00")

    tab_to(page, "button.buy")
    page.keyboard.press("Enter")
    page.wait_for_url(CHECKOUT_URL)
    expect(page.get_by_text("Qty 3")).to_be_visible()


def test_no_request_leaves_127_0_0_1_during_a_whole_journey(page: Page, live_shop: LiveShop, requests_log):
    go_to_checkout(page, live_shop, {"field-notebook": 1, "enamel-mug": 1, "canvas-tote": 1})
    pay(page)
    page.wait_for_url(SUCCESS_URL)
    expect(page.get_by_role("heading", name="Payment received")).to_be_visible(timeout=WEBHOOK_TIMEOUT)
    page.get_by_role("link", name="Back to the shop").click()
    expect(page.locator(".order .badge")).to_have_text("Paid")
    page.goto(live_shop.url + "/no-such-page")
    expect(page.get_by_role("link", name="Back to the shop")).to_be_visible()

    assert requests_log.urls, "no requests were recorded"
    assert requests_log.blocked == []
    assert requests_log.hosts() == {"127.0.0.1"}, requests_log.urls


def test_a_shop_opened_at_localhost_comes_back_there_after_paying(browser, live_shop: LiveShop):
    """The emulator lives at 127.0.0.1; the shopper typed localhost. Both are this machine."""
    context = browser.new_context()
    outside: list[str] = []

    def loopback_only(route) -> None:
        if urlsplit(route.request.url).hostname in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort("blockedbyclient")

    context.route("**/*", loopback_only)
    try:
        page = context.new_page()
        shop_at_localhost = live_shop.url.replace("127.0.0.1", "localhost")
        page.goto(shop_at_localhost + "/")
        choose(page, {"enamel-mug": 1})
        page.get_by_role("button", name="Buy").click()
        page.wait_for_url(CHECKOUT_URL)
        pay(page)
        page.wait_for_url(re.compile(re.escape(shop_at_localhost) + r"/checkout/success\?session_id=cs_"))
        expect(page.get_by_role("heading", name="Payment received")).to_be_visible(timeout=WEBHOOK_TIMEOUT)
    finally:
        context.close()
    assert outside == []
