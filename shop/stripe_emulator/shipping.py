"""The hosted page's shipping address, asked for when the session has `shipping_address_collection`.

Like Checkout, the page offers only the session's `allowed_countries` (by name) and asks for
the recipient's name, the street, the town and, where the country's addresses have them, a
postal code and a state or province. With `phone_number_collection[enabled]` it also asks
for a phone number, which Stripe reports as `customer_details.phone`. The result is
Stripe's `shipping_details` object: `{name, address: {line1, line2, city, state, postal_code, country}}`.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from babel import Locale

from .models import CheckoutSession

ADDRESS_FORM_FIELDS = ("name", "country", "line1", "line2", "city", "state", "postal_code", "phone")
# Countries whose addresses carry no postal code: the page doesn't ask for one there.
NO_POSTAL_CODE = frozenset(
    "AE AG AO AW BF BI BJ BO BS BW BZ CD CF CG CI CK CM DJ DM ER FJ GA GD GH GM GQ GY HK JM KI KM KN KP "
    "LC ML MO MR MW NR NU QA RW SB SC SL SR ST SY TD TF TG TK TL TO TV UG VU YE ZW".split()
)
# Countries whose addresses need a state, province or territory.
STATE_REQUIRED = frozenset({"US", "CA", "AU"})
STATE_LABELS = {"US": "State", "CA": "Province", "AU": "State or territory"}
POSTAL_CODE_LABELS = {"US": "ZIP code"}
_ENGLISH = Locale("en")


def asks_for_address(session: CheckoutSession) -> bool:
    return bool(session.params.get("shipping_address_collection"))


def asks_for_phone(session: CheckoutSession) -> bool:
    return bool(session.params.get("phone_number_collection", {}).get("enabled"))


def first_country(session: CheckoutSession) -> str:
    """The country the form starts on: the first the session allows."""
    return next(iter(session.params.get("shipping_address_collection", {}).get("allowed_countries", [])), "")


def countries(session: CheckoutSession) -> list[tuple[str, str]]:
    """The session's allowed countries as (code, English name), by name."""
    codes = session.params.get("shipping_address_collection", {}).get("allowed_countries", [])
    return sorted(((code, _ENGLISH.territories.get(code, code)) for code in dict.fromkeys(codes)), key=lambda c: c[1])


def labels(country: str) -> dict[str, str]:
    """The names of the country-dependent fields."""
    return {"state": STATE_LABELS.get(country, "State or region"), "postal_code": POSTAL_CODE_LABELS.get(country, "Postal code")}


def form_errors(session: CheckoutSession, form: Mapping[str, str]) -> dict[str, str]:
    """Per-field messages for the address part of the page, as Checkout shows them."""
    if not asks_for_address(session):
        return {}
    errors: dict[str, str] = {}
    country = form["country"]
    if country not in dict(countries(session)):
        errors["country"] = "Choose a country we ship to."
    required = {"name": "Enter your full name.", "line1": "Enter your address.", "city": "Enter your city."}
    if country not in NO_POSTAL_CODE:
        required["postal_code"] = f"Enter your {labels(country)['postal_code'].replace('Postal', 'postal')}."
    if country in STATE_REQUIRED:
        required["state"] = f"Enter your {labels(country)['state'].lower()}."
    if asks_for_phone(session):
        required["phone"] = "Enter your phone number."
    for field, message in required.items():
        if not form[field]:
            errors[field] = message
    return errors


def shipping_details(session: CheckoutSession, form: Mapping[str, str]) -> dict[str, Any] | None:
    """Stripe's `shipping_details` for a valid form, or None when the session asks for no address."""
    if not asks_for_address(session):
        return None
    address = {field: form[field] or None for field in ("city", "country", "line1", "line2", "postal_code", "state")}
    if form["country"] in NO_POSTAL_CODE:
        address["postal_code"] = None
    return {"address": address, "name": form["name"]}
