import hashlib
import hmac
import re

from flask import Response, abort, flash, jsonify, redirect, render_template, request, url_for
from sqlalchemy import select

from .. import fulfilment, orders, reservations, stripe_gateway
from ..catalog.queries import product_cards
from ..extensions import db
from ..filters import isodate
from ..models import Order
from ..orders import PAID_STATES, CheckoutTokenConflict, OrderStatus, OutOfStock
from ..shoppers import current_shopper_id
from . import bp
from .cart import InvalidCart, cart_from, checkout_token_from
from .flow import start_checkout
from .queries import order_status

SESSION_ID = re.compile(r"cs_[A-Za-z0-9_]{1,250}")
ORDER_ID = re.compile(r"ord_[A-Za-z0-9_-]{22}")
# Orders whose checkout ended without a payment: no parcel goes anywhere.
NOT_SHIPPED_STATES = frozenset({OrderStatus.FAILED, OrderStatus.EXPIRED, OrderStatus.CANCELLED})


@bp.post("/checkout")
def create():
    try:
        token = checkout_token_from(request.form)
        lines = cart_from(request.form, product_cards())
    except InvalidCart as exc:
        return render_template("error.html", title="We couldn't start your checkout", message=str(exc)), 400
    try:
        order = start_checkout(current_shopper_id(create=True), token, lines)
    except OutOfStock as exc:
        message = f"{exc} Nothing was charged. Please adjust your order and try again."
        return render_template("error.html", title="Not enough stock", message=message), 409
    except reservations.PaymentStillProcessing as exc:
        return render_template("error.html", title="A payment is still in progress", message=str(exc)), 409
    except CheckoutTokenConflict:
        message = "This checkout form was already used for another order. Reload the shop and try again."
        return render_template("error.html", title="Form already used", message=message), 409
    except stripe_gateway.CheckoutWindowClosed:
        message = "This checkout took too long to start. Nothing was charged; please start a new order."
        return render_template("error.html", title="Checkout expired", message=message), 409
    except stripe_gateway.PaymentProviderError:
        return _payment_unavailable()

    if order.status == OrderStatus.AWAITING_PAYMENT and order.superseded:
        message = (
            "You started a newer checkout in this browser, so we asked Stripe to close this one. "
            "Pay in the newer checkout; this one can no longer be paid."
        )
        return render_template("error.html", title="Replaced by a newer checkout", message=message), 409
    if order.status == OrderStatus.AWAITING_PAYMENT and order.checkout_url:
        return redirect(order.checkout_url, code=303)
    if order.stripe_session_id and (order.status in PAID_STATES or order.status == OrderStatus.PROCESSING):
        return redirect(url_for(".success", session_id=order.stripe_session_id), code=303)
    if order.status in (OrderStatus.EXPIRED, OrderStatus.CANCELLED):
        message = f"This checkout was {order.status}. Nothing was charged; please start a new order."
        return render_template("error.html", title=f"Checkout {order.status}", message=message), 409
    return _payment_unavailable()


def _payment_unavailable():
    message = (
        "We couldn't reach our payment provider, so nothing was charged. "
        "Please go back to the shop and try again in a moment."
    )
    return render_template("error.html", title="Payment is unavailable right now", message=message), 503


def _order_for_session(session_id: str | None) -> Order:
    if not session_id or not SESSION_ID.fullmatch(session_id):
        abort(400, description="The link back from checkout is missing its session id.")
    order = db.session.scalar(select(Order).where(Order.stripe_session_id == session_id))
    if order is None:
        abort(404, description="We have no order for this checkout session.")
    return order


@bp.get("/checkout/success")
def success():
    """Show how the order stands. Never changes it: only Stripe's webhook does."""
    order = _order_for_session(request.args.get("session_id"))
    status_url = url_for(".status", public_id=order.public_id, session_id=order.stripe_session_id)
    destination = None if order.status in NOT_SHIPPED_STATES else fulfilment.destination_of(order)
    ship_to = fulfilment.address_lines(destination) if destination else []
    return render_template("success.html", order=order, status_url=status_url, ship_to=ship_to)


CANCEL_UNCONFIRMED = (
    "We couldn't reach Stripe to cancel this checkout. If you didn't pay, nothing is charged "
    "and the checkout closes by itself within 30 minutes."
)
CANCEL_NOT_PAYABLE = "This checkout can no longer be paid. Nothing was charged."
CANCEL_MESSAGES = {
    OrderStatus.CANCELLED: ("info", "Checkout cancelled. Nothing was charged."),
    OrderStatus.EXPIRED: ("info", "This checkout had already expired. Nothing was charged."),
    OrderStatus.FAILED: ("info", "This payment didn't go through. Nothing was charged."),
    OrderStatus.PROCESSING: (
        "warning",
        "Your payment is already in progress, so this order was not cancelled. "
        "It will show as paid once the bank transfer clears.",
    ),
    **{
        status: ("info", "You have already paid for this order, so it was not cancelled.")
        for status in PAID_STATES
    },
}


@bp.get("/checkout/cancel")
def cancel():
    """The shopper left Stripe's page: close the session, then say what is true of the order.

    Only a session Stripe confirms it closed makes the order `cancelled`. A session that was
    paid (or whose bank transfer is under way) before the shopper came back stays as it is,
    and the shopper is told so, on the page that follows the payment.
    """
    public_id = request.args.get("order", "")
    if not ORDER_ID.fullmatch(public_id):
        abort(400, description="The cancel link is missing its order reference.")
    order = db.session.scalar(select(Order).where(Order.public_id == public_id))
    if order is None or order.shopper_id != current_shopper_id():
        abort(404, description="We have no such order for this browser.")
    outcome = order.status
    if order.status == OrderStatus.AWAITING_PAYMENT and order.stripe_session_id:
        try:
            session = stripe_gateway.expire_checkout_session(order.stripe_session_id)
        except stripe_gateway.PaymentProviderError:
            flash(CANCEL_UNCONFIRMED, "warning")
            return redirect(url_for("catalog.index"), code=303)
        outcome = _outcome_of(session)
        if outcome == OrderStatus.CANCELLED:
            orders.mark_cancelled(order)
            db.session.commit()
    category, message = CANCEL_MESSAGES.get(outcome, ("info", CANCEL_NOT_PAYABLE))
    flash(message, category)
    if outcome in PAID_STATES or outcome == OrderStatus.PROCESSING:
        return redirect(url_for(".success", session_id=order.stripe_session_id), code=303)
    return redirect(url_for("catalog.index"), code=303)


def _outcome_of(session: stripe_gateway.SessionState) -> str:
    """The order state a Checkout Session's state at Stripe stands for."""
    if session.status == "expired":
        return OrderStatus.CANCELLED
    if session.payment_status == "paid":
        return OrderStatus.PAID
    return OrderStatus.PROCESSING


@bp.get("/orders/<public_id>/status")
def status(public_id: str):
    """How an order stands, for the success page's polling. Owner or session holder only."""
    if not ORDER_ID.fullmatch(public_id):
        abort(404)
    order = order_status(public_id)
    session_id = request.args.get("session_id", "")
    allowed = order is not None and (
        order.shopper_id == current_shopper_id()
        or (order.stripe_session_id is not None and hmac.compare_digest(session_id.encode(), order.stripe_session_id.encode()))
    )
    if not allowed:
        abort(404)
    etag = hashlib.sha1(f"{order.id}:{order.status}:{order.updated_at}".encode()).hexdigest()
    if request.if_none_match.contains(etag):
        response = Response(status=304)
    else:
        response = jsonify(
            status=order.status,
            paid=order.status in PAID_STATES,
            paid_at=isodate(order.paid_at) if order.paid_at else None,
            amount_total=order.amount_total,
            currency=order.currency,
        )
    response.set_etag(etag)
    response.headers["Cache-Control"] = "private, no-cache"
    return response
