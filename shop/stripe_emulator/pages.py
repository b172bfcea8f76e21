"""The hosted Checkout page (`session.url`): a local, test-mode stand-in for checkout.stripe.com.

Like Stripe's page it names the business it takes the payment for, with its icon: the
account's public details, which Stripe takes from the dashboard and the emulator from
`STRIPE_EMULATOR_BUSINESS_NAME` (default "Fieldwork Supply") and the shop's favicon.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from flask import Blueprint, current_app, redirect, render_template, request
from werkzeug.wrappers import Response

from shop.extensions import db
from shop.security import content_security_policy

from . import core, objects, shipping
from .models import CheckoutSession

bp = Blueprint("stripe_emulator_pages", __name__, url_prefix="/_stripe", template_folder="templates")

# Stripe's test cards and what they do.
TEST_CARDS = {
    "4242424242424242": None,
    "4000000000000002": "Your card was declined.",
    "4000000000009995": "Your card has insufficient funds.",
    # Succeed, then (see core.DISPUTE_CARDS, core.REFUND_FAILS_CARD): disputed as fraudulent,
    # an inquiry, a refund that fails later.
    "4000000000000259": None,
    "4000000000001976": None,
    "4000000000005126": None,
}
METHOD_LABELS = {
    "card": "Card",
    "bank_transfer": "Bank transfer (delayed)",
    "bank_transfer_fail": "Bank transfer (delayed, will fail)",
}


EXPIRY = re.compile(r"(\d{1,2})\s*/\s*(\d{2})|(\d{2})(\d{2})")


@dataclass(frozen=True)
class Business:
    """What the page shows of the account it takes payments for."""

    name: str
    icon: str  # a file under the app's static folder


def _business() -> Business:
    name = current_app.config.get("STRIPE_EMULATOR_BUSINESS_NAME") or os.environ.get("STRIPE_EMULATOR_BUSINESS_NAME")
    return Business(name=name or "Fieldwork Supply", icon="favicon.svg")


def _render(session: CheckoutSession, status: int = 200, **context: object) -> Response:
    items = [
        {**item, "amount": objects.format_amount(item["unit_amount"] * item["quantity"], session.currency)}
        for item in session.line_items
    ]
    html = render_template(
        "stripe_emulator/pay.html",
        session=session,
        items=items,
        total=_total(session),
        methods=METHOD_LABELS,
        success_url=_success_url(session),
        business=_business(),
        shipping_countries=shipping.countries(session),
        asks_for_address=shipping.asks_for_address(session),
        asks_for_phone=shipping.asks_for_phone(session),
        shipping_labels=shipping.labels,
        **context,
    )
    response = Response(html, status=status, mimetype="text/html")
    # Like Stripe's own page, this one sends the shopper back to the shop's origin, whichever
    # host name the shop was opened at (localhost or 127.0.0.1).
    response.headers["Content-Security-Policy"] = content_security_policy(
        session.params["success_url"], session.params.get("cancel_url")
    )
    return response


@bp.route("/pay/<session_id>", methods=["GET", "POST"])
def pay(session_id: str) -> Response:
    settings = current_app.extensions["stripe_emulator"].settings
    now = time.time()
    session = core.get_session(session_id, settings, now)
    db.session.commit()
    if session is None:
        html = render_template("stripe_emulator/pay.html", session=None, business=_business())
        return Response(html, status=404, mimetype="text/html")
    if session.status != "open":
        return _render(session, 409 if request.method == "POST" else 200)
    if request.method == "GET":
        form = {"email": session.params.get("customer_email", ""), "method": "card", "country": shipping.first_country(session)}
        return _render(session, form=form)

    names = ("email", "card", "expiry", "cvc", "method", *shipping.ADDRESS_FORM_FIELDS)
    form = {name: request.form.get(name, "").strip() for name in names}
    form["expiry"] = _formatted_expiry(form["expiry"])
    errors = _field_errors(form, now) | shipping.form_errors(session, form)
    if errors:
        return _render(session, 422, form=form, errors=errors)
    if form["method"] == "card":
        decline = TEST_CARDS[_card_number(form)]
        if decline:
            return _render(session, 402, form=form, errors={}, decline=decline)
    card_number = _card_number(form) if form["method"] == "card" else None
    details = shipping.shipping_details(session, form)
    if not core.pay(session_id, form["email"], form["method"], settings, now, card_number, details, form["phone"] or None):
        db.session.rollback()
        session = db.session.get(CheckoutSession, session_id, populate_existing=True)
        return _render(session, 409)
    db.session.commit()
    return redirect(_success_url(session), code=303)


def _total(session: CheckoutSession) -> str:
    """The total, in the customer's currency under Adaptive Pricing (the integration's beside it)."""
    total = objects.format_amount(session.amount_total, session.currency)
    if session.presentment_currency is None:
        return total
    return f"{objects.format_amount(session.presentment_amount, session.presentment_currency)} ({total})"


def _success_url(session: CheckoutSession) -> str:
    return session.params["success_url"].replace("{CHECKOUT_SESSION_ID}", session.id)


def _card_number(form: dict[str, str]) -> str:
    return re.sub(r"[\s-]", "", form["card"])


def _formatted_expiry(typed: str) -> str:
    """`1230` or `12/30` → `12 / 30`, as Stripe's card field formats what is typed."""
    match = EXPIRY.fullmatch(typed)
    if not match:
        return typed
    month, year = (match.group(1), match.group(2)) if match.group(1) else (match.group(3), match.group(4))
    return f"{int(month):02d} / {year}"


def _field_errors(form: dict[str, str], now: float) -> dict[str, str]:
    """Per-field messages, as Checkout shows them under each input."""
    errors: dict[str, str] = {}
    if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", form["email"]):
        errors["email"] = "Enter a valid email address." if form["email"] else "Enter your email address."
    if form["method"] not in METHOD_LABELS:
        errors["method"] = "Choose a payment method."
    if form["method"] != "card":
        return errors
    number = _card_number(form)
    if not number:
        errors["card"] = "Enter your card number."
    elif number not in TEST_CARDS:
        errors["card"] = "Your card number is incorrect."
    expiry = re.fullmatch(r"(\d{2}) / (\d{2})", form["expiry"])
    if not form["expiry"]:
        errors["expiry"] = "Enter your card's expiration date."
    elif not expiry or not 1 <= int(expiry.group(1)) <= 12:
        errors["expiry"] = "Your card's expiration date is incomplete."
    else:
        today = datetime.fromtimestamp(now, UTC)
        if (2000 + int(expiry.group(2)), int(expiry.group(1))) < (today.year, today.month):
            errors["expiry"] = "Your card's expiration year is in the past."
    if not form["cvc"]:
        errors["cvc"] = "Enter your card's security code."
    elif not re.fullmatch(r"\d{3,4}", form["cvc"]):
        errors["cvc"] = "Your card's security code is incomplete."
    return errors
