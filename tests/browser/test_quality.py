"""Page weight and accessibility smoke checks in a real browser.

The figures are printed (run with `-s` to see them among the dots) and saved to
artifacts/page-weight.json.
"""
from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select

from shop.extensions import db
from shop.models import Product
from tests.browser.conftest import GOOD_CARD, SCREENSHOTS, LiveShop, order_over_http, screenshot

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


# Run in the page: the smoke checks, returning a list of problems (empty when all is well).
AUDIT = """
() => {
  const problems = [];
  const visible = (el) => {
    if (el.closest("[hidden], [aria-hidden='true']")) return false;
    const box = el.getBoundingClientRect(), style = getComputedStyle(el);
    return box.width > 1 && box.height > 1 && style.visibility !== "hidden" && style.display !== "none";
  };
  if (!document.documentElement.lang) problems.push("<html> has no lang");
  if (!document.title.trim()) problems.push("no <title>");
  const h1s = [...document.querySelectorAll("h1")].filter(visible);
  if (h1s.length !== 1) problems.push(`${h1s.length} visible h1 elements`);
  for (const input of document.querySelectorAll("input, select, textarea")) {
    if (input.type === "hidden") continue;
    const named = input.labels.length || input.getAttribute("aria-label") || input.getAttribute("aria-labelledby");
    if (!named) problems.push(`unlabelled ${input.outerHTML}`);
  }
  for (const img of document.querySelectorAll("img")) {
    if (!img.hasAttribute("alt")) problems.push(`image without alt: ${img.src}`);
  }
  for (const button of document.querySelectorAll("button, a[href]")) {
    if (visible(button) && !(button.textContent.trim() || button.getAttribute("aria-label"))) problems.push(`nameless ${button.outerHTML}`);
  }

  // Contrast of every visible text against the background it is painted on (WCAG AA).
  const parse = (value) => {
    const parts = (value.match(/rgba?\\(([^)]+)\\)/) || [, ""])[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
    return parts.length >= 3 ? { r: parts[0], g: parts[1], b: parts[2], a: parts.length > 3 ? parts[3] : 1 } : null;
  };
  const over = (top, bottom) => ({
    r: top.r * top.a + bottom.r * (1 - top.a), g: top.g * top.a + bottom.g * (1 - top.a),
    b: top.b * top.a + bottom.b * (1 - top.a), a: 1,
  });
  const background = (el) => {
    const layers = [];
    for (let node = el; node; node = node.parentElement) {
      const colour = parse(getComputedStyle(node).backgroundColor);
      if (colour && colour.a > 0) { layers.push(colour); if (colour.a >= 1) break; }
    }
    return layers.reverse().reduce((below, layer) => over(layer, below), { r: 255, g: 255, b: 255, a: 1 });
  };
  const luminance = ({ r, g, b }) => {
    const channel = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
  };
  const checked = [];
  for (const el of document.body.querySelectorAll("*")) {
    const ownText = [...el.childNodes].some((n) => n.nodeType === Node.TEXT_NODE && n.textContent.trim());
    if (!ownText || !visible(el) || el.closest(":disabled")) continue;
    const style = getComputedStyle(el);
    const bg = background(el);
    const fg = over(parse(style.color), bg);
    const [light, dark] = [luminance(fg), luminance(bg)].sort((a, b) => b - a);
    const ratio = (light + 0.05) / (dark + 0.05);
    const size = parseFloat(style.fontSize), bold = Number(style.fontWeight) >= 700;
    const needed = size >= 24 || (size >= 18.66 && bold) ? 3 : 4.5;
    checked.push(ratio);
    if (ratio < needed) problems.push(`contrast ${ratio.toFixed(2)} < ${needed} for "${el.textContent.trim().slice(0, 40)}" (${style.color} on rgb(${bg.r}, ${bg.g}, ${bg.b}))`);
  }
  if (!checked.length) problems.push("no text checked");
  return problems;
}
"""


def audit(page: Page) -> None:
    problems = page.evaluate(AUDIT)
    assert problems == [], f"{page.url}: " + "\n".join(problems)


def set_stock(shop: LiveShop, **stock: int) -> None:
    with shop.app.app_context():
        for slug, level in stock.items():
            db.session.scalar(select(Product).where(Product.slug == slug.replace("_", "-"))).stock = level
        db.session.commit()
        db.session.remove()


def test_pages_pass_the_accessibility_smoke_checks(page: Page, live_shop: LiveShop):
    set_stock(live_shop, canvas_tote=0, field_notebook=3)
    page.goto(live_shop.url + "/")
    expect(page.locator(".stock-out")).to_have_text("Sold out")
    expect(page.locator(".stock-low")).to_have_text("Only 3 left")
    expect(page.get_by_label("Quantity of Canvas Tote")).to_be_disabled()
    expect(page.get_by_label("Quantity of Field Notebook")).to_have_attribute("max", "3")
    audit(page)  # empty state, low and no stock
    screenshot(page, "home-stock")

    page.locator("#qty-enamel-mug").fill("1")
    page.get_by_role("button", name="Buy").click()
    page.wait_for_url(re.compile(r"/_stripe/pay/"))
    audit(page)  # the emulator's hosted checkout page
    page.get_by_role("button", name=re.compile("^Pay")).click()  # nothing filled in: field errors
    expect(page.get_by_role("alert")).to_be_visible()
    audit(page)

    page.get_by_role("link", name=re.compile("Cancel")).click()
    expect(page.get_by_text("Nothing was charged")).to_be_visible()
    audit(page)  # flash message and an order

    page.locator("#qty-field-notebook").fill("2")
    page.get_by_role("button", name="Buy").click()
    page.wait_for_url(re.compile(r"/_stripe/pay/"))
    session_id = page.url.rsplit("/", 1)[1]
    page.goto(f"{live_shop.url}/checkout/success?session_id={session_id}")
    expect(page.get_by_role("heading", name="Confirming your payment")).to_be_visible()
    audit(page)

    for path, status in (("/no-such-page", 404), ("/checkout/success?session_id=", 400)):
        response = page.goto(live_shop.url + path)
        assert response.status == status
        expect(page.get_by_role("link", name="Back to the shop")).to_be_visible()
        audit(page)
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
