import secrets

from flask import current_app, make_response, render_template

from ..checkout.cart import MAX_QUANTITY
from ..shoppers import current_shopper_id
from . import bp
from .queries import orders_of, product_cards


@bp.get("/")
def index():
    shopper_id = current_shopper_id(create=True)
    response = make_response(
        render_template(
            "index.html",
            products=product_cards(),
            orders=orders_of(shopper_id),
            currency=current_app.config["SHOP_CURRENCY"],
            locale=current_app.config["SHOP_LOCALE"].replace("_", "-"),
            max_per_order=MAX_QUANTITY,
            # One-time token: resubmitting this exact form finds the same order.
            checkout_token=secrets.token_urlsafe(24),
        )
    )
    # Back/forward must reload the page, so a new visit gets a new checkout token.
    response.headers["Cache-Control"] = "no-store"
    return response
