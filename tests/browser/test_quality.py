"""Page weight and accessibility (axe-core, WCAG 2.1 AA) in a real browser.

The figures are printed (run with `-s` to see them among the dots) and saved to
artifacts/page-weight.json.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page, expect
from sqlalchemy import select

from shop.extensions import db
from shop.models import Product
from tests.browser.conftest import (
    DECLINED_CARD,
    GOOD_CARD,
    SCREENSHOTS,
    WEBHOOK_TIMEOUT,
    WIDTHS,
    LiveShop,
    fill_shipping_address,
    order_over_http,
    screenshot,
)

pytestmark = pytest.mark.sqlite_only

MAX_HOME_BYTES = 150 * 1024
MAX_HOME_REQUESTS = 15


def test_home_page_weighs_under_150_kb_in_under_15_requests(new_context, live_shop: LiveShop, capsys):
    context, _ = new_context()
    # A browser with a few orders: two paid, one left awaiting payment.
    order_over_http(context, live_shop.url, {"field-notebook": 1}, pay_with=GOOD_CARD)
    order_over_http(context, live_shop.url, {"enamel-mug": 2, "canvas-tote": 1}, pay_with=GOOD_CARD)
    order_over_http(context, live_shop.url, {"canvas-tote": 3})

    page = context.new_page()
    finished = []
    page.on("requestfinished", lambda request: finished.append(request))
    page.goto(live_shop.url + "/", wait_until="networkidle")
    expect(page.locator(".order")).to_have_count(3)

    rows = []
    for request in finished:
        response = request.response()
        body = len(response.body()) if response and response.status == 200 else 0
        sizes = request.sizes()
        rows.append(
            {
                "url": request.url.removeprefix(live_shop.url),
                "type": request.resource_type,
                "status": response.status if response else None,
                "body_bytes": body,
                "transferred_bytes": sizes["responseBodySize"] + sizes["responseHeadersSize"],
            }
        )
    body_total = sum(row["body_bytes"] for row in rows)
    transferred = sum(max(row["transferred_bytes"], row["body_bytes"]) for row in rows)
    report = {"requests": len(rows), "body_bytes": body_total, "transferred_bytes": transferred, "resources": rows}
    SCREENSHOTS.parent.mkdir(parents=True, exist_ok=True)
    (SCREENSHOTS.parent / "page-weight.json").write_text(json.dumps(report, indent=2))
    with capsys.disabled():
        print(f"\nHome page (3 orders): {len(rows)} requests, {body_total / 1024:.1f} KB of bodies, "
              f"{transferred / 1024:.1f} KB transferred with headers")
        for row in rows:
            print(f"  {row['status']} {row['type']:<10} {row['body_bytes']:>7} B  {row['url']}")

    assert all(row["status"] == 200 for row in rows), rows
    assert len(rows) < MAX_HOME_REQUESTS
    assert transferred < MAX_HOME_BYTES

    kinds = {"HTML": "document", "CSS": "stylesheet", "JS": "script", "three SVG images": "image", "favicon": "other"}
    measured = {
        "requests": len(rows),
        "transferred": transferred / 1024,
        "bodies": body_total / 1024,
        **{name: sum(row["body_bytes"] for row in rows if row["type"] == kind) / 1024 for name, kind in kinds.items()},
    }
    written = readme_budget()
    drift = {name: (written[name], round(value, 1)) for name, value in measured.items() if abs(written[name] - value) > 1}
    assert not drift, f"the README's Budget figures (README, measured) drifted: {drift}"


def readme_budget() -> dict[str, float]:
    """The page-weight figures the README's Budget paragraph states."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    paragraph = " ".join(text.split("**Budget**", 1)[1].split("\n\n", 1)[0].split())
    figures = re.search(
        r"(\d+) requests, ([\d.]+) KB transferred \(([\d.]+) KB of bodies: HTML ([\d.]+) KB, CSS ([\d.]+) KB, "
        r"JS ([\d.]+) KB, three SVG images ([\d.]+) KB, favicon ([\d.]+) KB\)",
        paragraph,
    )
    names = ("requests", "transferred", "bodies", "HTML", "CSS", "JS", "three SVG images", "favicon")
    return dict(zip(names, map(float, figures.groups()), strict=True))


WCAG_21_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
AXE = Axe()  # axe-core as the package bundles it: injected into the page, nothing fetched


def audit(page: Page, name: str) -> None:
    """axe-core's WCAG 2.1 A and AA rules at phone and desktop width: no violations.

    One check axe leaves to best practice is kept by hand: exactly one visible h1.
    """
    original = page.viewport_size
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 800})
        results = AXE.run(page, options={"runOnly": {"type": "tag", "values": WCAG_21_AA}, "resultTypes": ["violations"]})
        assert results.violations_count == 0, f"{name} at {width}px ({page.url}):\n{results.generate_report()}"
        headings = page.locator("h1:visible").count()
        assert headings == 1, f"{name} at {width}px has {headings} visible h1 elements"
    if original:
        page.set_viewport_size(original)


def set_stock(shop: LiveShop, **stock: int) -> None:
    with shop.app.app_context():
        for slug, level in stock.items():
            db.session.scalar(select(Product).where(Product.slug == slug.replace("_", "-"))).stock = level
        db.session.commit()
        db.session.remove()


def test_every_page_a_shopper_sees_passes_axe_at_wcag_2_1_aa(page: Page, live_shop: LiveShop):
    set_stock(live_shop, canvas_tote=0, field_notebook=3)
    page.goto(live_shop.url + "/")
    expect(page.locator(".stock-out")).to_have_text("Sold out")
    expect(page.locator(".stock-low")).to_have_text("Only 3 left")
    expect(page.get_by_label("Quantity of Canvas Tote")).to_be_disabled()
    expect(page.get_by_label("Quantity of Field Notebook")).to_have_attribute("max", "3")
    audit(page, "home: no orders, low and no stock")
    screenshot(page, "home-stock")
    page.get_by_label("Quantity of Field Notebook").fill("5")
    expect(page.locator("#error-field-notebook")).to_have_text("Only 3 left. Choose 3 or fewer.")
    audit(page, "home: a quantity refused")

    page.get_by_label("Quantity of Field Notebook").fill("0")
    page.locator("#qty-enamel-mug").fill("1")
    page.get_by_role("button", name="Buy").click()
    page.wait_for_url(re.compile(r"/_stripe/pay/"))
    audit(page, "payment page")
    page.get_by_role("button", name=re.compile("^Pay")).click()  # nothing filled in: field errors
    expect(page.locator(".field-error").first).to_be_visible()
    audit(page, "payment page with field errors")
    page.get_by_label("Email").fill("shopper@example.com")
    fill_shipping_address(page)
    page.get_by_label("Card number").fill(DECLINED_CARD)
    page.get_by_label("Expiry").fill("1234")
    page.get_by_label("CVC").fill("123")
    page.get_by_role("button", name=re.compile("^Pay")).click()
    expect(page.get_by_role("alert")).to_have_text("Your card was declined.")
    audit(page, "payment page, card declined")

    page.get_by_role("link", name=re.compile("Cancel")).click()
    expect(page.get_by_text("Checkout cancelled")).to_be_visible()
    audit(page, "cancel: flash message and a cancelled order")

    page.locator("#qty-enamel-mug").fill("2")
    page.get_by_role("button", name="Buy").click()
    page.wait_for_url(re.compile(r"/_stripe/pay/"))
    session_id = page.url.rsplit("/", 1)[1]
    page.goto(f"{live_shop.url}/checkout/success?session_id={session_id}")
    expect(page.get_by_role("heading", name="Confirming your payment")).to_be_visible()
    audit(page, "success page, waiting")
    page.goto(live_shop.url + "/")
    audit(page, "home: an order that can still be paid")

    page.goto(f"{live_shop.url}/_stripe/pay/{session_id}")
    page.get_by_label("Email").fill("shopper@example.com")
    fill_shipping_address(page)
    page.get_by_label("Card number").fill(GOOD_CARD)
    page.get_by_label("Expiry").fill("12 / 34")
    page.get_by_label("CVC").fill("123")
    page.get_by_role("button", name=re.compile("^Pay")).click()
    expect(page.get_by_role("heading", name="Payment received")).to_be_visible(timeout=WEBHOOK_TIMEOUT)
    audit(page, "success page, paid")

    for path, status in (("/no-such-page", 404), ("/checkout/success?session_id=", 400)):
        response = page.goto(live_shop.url + path)
        assert response.status == status
        expect(page.get_by_role("link", name="Back to the shop")).to_be_visible()
        audit(page, f"error {status}")
    screenshot(page, "error-400")


def test_buy_with_nothing_chosen_says_so_instead_of_posting(page: Page, live_shop: LiveShop):
    page.goto(live_shop.url + "/")
    posts = []
    page.on("request", lambda request: posts.append(request.url) if request.method == "POST" else None)
    page.get_by_role("button", name="Buy").click()
    expect(page.get_by_role("alert")).to_have_text("Choose at least one item first.")
    page.get_by_role("button", name="One more Canvas Tote").click()
    expect(page.get_by_role("alert")).to_be_hidden()
    expect(page.locator("#order-total")).to_have_text("$32.00")
    expect(page.locator("#item-count")).to_have_text("(1 item)")
    assert posts == []
