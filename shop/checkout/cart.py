"""Turning the submitted checkout form into a cart, trusting nothing but quantities."""
from __future__ import annotations

import re
from collections.abc import Sequence

from werkzeug.datastructures import MultiDict

from ..placing import CartLine, SaleProduct

MAX_QUANTITY = 10
QUANTITY_FIELD = "quantity-"
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{32}")
# Fields the form legitimately carries besides the quantities.
FORM_FIELDS = frozenset({"csrf_token", "checkout_token"})


class InvalidCart(ValueError):
    """The form asks for something the shop can't sell; the message is for the shopper."""


def checkout_token_from(form: MultiDict) -> str:
    token = form.get("checkout_token", "")
    if not TOKEN_PATTERN.fullmatch(token):
        raise InvalidCart("This checkout form is incomplete. Please reload the page and try again.")
    return token


def cart_from(form: MultiDict, products: Sequence[SaleProduct]) -> list[CartLine]:
    """Validate every field: known products only, whole quantities 0–10, at least one item."""
    by_field = {QUANTITY_FIELD + product.slug: product for product in products}
    lines = []
    for field in form:
        values = form.getlist(field)
        if field in FORM_FIELDS:
            if len(values) != 1:
                raise InvalidCart("The checkout form was sent with duplicate fields.")
            continue
        product = by_field.get(field)
        if product is None:
            raise InvalidCart(
                "The checkout form asked for something we don't sell "
                f"({field[:40]!r}). Prices and products come from the shop only."
            )
        if len(values) != 1:
            raise InvalidCart(f"{product.name} was given more than one quantity.")
        raw = values[0].strip()
        if not raw.isdigit() or not raw.isascii() or len(raw) > 2 or int(raw) > MAX_QUANTITY:
            raise InvalidCart(f"Quantity for {product.name} must be a whole number from 0 to {MAX_QUANTITY}.")
        if int(raw) > 0:
            lines.append(CartLine(product=product, quantity=int(raw)))
    if not lines:
        raise InvalidCart("Choose at least one item before checking out.")
    return lines
