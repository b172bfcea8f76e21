"""Operator pages. Every route here is behind the blueprint's basic auth (see `__init__`)."""
import csv
import io
import logging
import re
import secrets
from datetime import UTC, datetime

import stripe
from flask import Response, abort, current_app, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import func, select, update
from sqlalchemy.orm import selectinload

from .. import disputes, fulfilment, recovery, refunds, stripe_gateway, webhook_check
from ..events import HANDLED_EVENT_TYPES
from ..extensions import db
from ..filters import isodate
from ..models import EventState, Order, Product, Shipment, ShippingAddress, StripeEvent, utcnow
from ..money import to_units
from ..orders import PAID_STATES, OrderStatus
from . import bp
from .queries import PER_PAGE, OrderFilter, parse_page

log = logging.getLogger("shop.admin")
EVENTS_SHOWN = 200
REFUNDABLE = frozenset({OrderStatus.PAID, OrderStatus.PARTIALLY_REFUNDED})
# One token per rendering of the refund form: the same form sent twice is one refund.
REFUND_ATTEMPT = re.compile(r"[A-Za-z0-9_-]{22}")
CSV_HEADER = (
    "order", "created_at", "status", "currency", "amount_total", "amount_refunded", "refund_pending",
    "refunds_failed", "disputes", "dispute_withdrawn", "customer_email", "items", "stripe_session_id",
    "payment_intent_id", "paid_at", "review_reason",
    "ship_to_name", "ship_to_line1", "ship_to_line2", "ship_to_city", "ship_to_state", "ship_to_postal_code",
    "ship_to_country", "ship_to_phone", "fulfilment", "carrier", "tracking_number", "shipped_at",
)
TO_SHIP_SHOWN = 200
ADDRESS_COLUMNS = ("name", "line1", "line2", "city", "state", "postal_code", "country", "phone")


# Events an operator must look at: handling failed, waits for a payment, or flagged an order.
NEEDING_ATTENTION = (EventState.FAILED, EventState.WAITING, EventState.NEEDS_REVIEW)


@bp.context_processor
def events_needing_attention() -> dict[str, int]:
    """How many Stripe events need the operator, for the navigation on every operator page."""
    needing = StripeEvent.state.in_(NEEDING_ATTENTION)
    return {"events_needing_attention": db.session.scalar(select(func.count()).select_from(StripeEvent).where(needing)) or 0}


bp.add_app_template_global(fulfilment.address_lines, "address_lines")


@bp.app_template_filter("from_unix")
def from_unix(timestamp: int) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


@bp.get("/")
def orders() -> ResponseReturnValue:
    order_filter = OrderFilter.from_args(request.args)
    page = parse_page(request.args.get("page", "1"))
    pagination = db.paginate(order_filter.query(), page=page, per_page=PER_PAGE, error_out=False)
    return render_template(
        "admin/orders.html",
        pagination=pagination,
        order_filter=order_filter,
        statuses=list(OrderStatus),
        open_disputes=disputes.open_disputes(),
        failed_refunds=refunds.failed_needing_attention(),
        dashboard_url=disputes.dashboard_url,
        failure_text=refunds.failure_text,
    )


@bp.get("/orders.csv")
def orders_csv() -> ResponseReturnValue:
    """The filtered orders (all pages) as a spreadsheet-safe CSV attachment."""
    order_filter = OrderFilter.from_args(request.args)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_HEADER)
    orders = order_filter.query().options(selectinload(Order.refunds), selectinload(Order.disputes))
    for chunk in db.session.scalars(orders.execution_options(yield_per=500)).partitions():
        ids = [order.id for order in chunk]
        addresses, shipments = fulfilment.addresses_of(ids), fulfilment.shipments_of(ids)
        for order in chunk:
            writer.writerow(_csv_row(order, addresses.get(order.id), shipments.get(order.id)))
    filename = f"orders-{utcnow():%Y%m%d-%H%M%S}.csv"
    return Response(
        buffer.getvalue(), mimetype="text/csv", headers={"Content-Disposition": f'attachment; filename="{filename}"'}
    )


def _csv_row(order: Order, address: ShippingAddress | None, shipment: Shipment | None) -> list[str]:
    items = "; ".join(f"{item.quantity} x {item.product_name}" for item in order.items)
    cells = [
        order.public_id,
        isodate(order.created_at),
        order.status,
        order.currency.upper(),
        _decimal_amount(order.amount_total, order.currency),
        _decimal_amount(order.amount_refunded, order.currency),
        _decimal_amount(order.amount_refund_pending, order.currency),
        "; ".join(
            f"{refund.stripe_refund_id} {_decimal_amount(refund.amount, refund.currency)} {refund.failure_reason or ''}".strip()
            for refund in order.refunds
            if refund.status == refunds.FAILED
        ),
        "; ".join(f"{dispute.stripe_dispute_id} {dispute.status}" for dispute in order.disputes),
        _decimal_amount(sum(d.amount_withdrawn + d.fee_withdrawn - d.amount_reinstated - d.fee_reinstated
                            for d in order.disputes), order.currency),
        order.customer_email or "",
        items,
        order.stripe_session_id or "",
        order.payment_intent_id or "",
        isodate(order.paid_at) if order.paid_at else "",
        order.review_reason or "",
        *(getattr(address, field) or "" if address else "" for field in ADDRESS_COLUMNS),
        fulfilment.fulfilment_of(order.status, address is not None, shipment is not None, fulfilment.is_disputed(order)),
        shipment.carrier if shipment else "",
        shipment.tracking_number if shipment else "",
        isodate(shipment.shipped_at) if shipment else "",
    ]
    return [_spreadsheet_safe(cell) for cell in cells]


def _decimal_amount(amount: int, currency: str) -> str:
    """Minor units as a plain decimal in major units: 1800 usd → 18.00, 500 jpy → 500."""
    return str(to_units(amount, currency))


def _spreadsheet_safe(cell: str) -> str:
    """Keep text a spreadsheet would run as a formula (=, +, -, @) from being one."""
    return "'" + cell if cell[:1] in ("=", "+", "-", "@", "\t", "\r") else cell


@bp.get("/orders/<public_id>")
def order_detail(public_id: str) -> ResponseReturnValue:
    order = _order_or_404(public_id)
    events = db.session.scalars(
        select(StripeEvent)
        .where(StripeEvent.order_id == order.id)
        .order_by(StripeEvent.created.desc(), StripeEvent.received_at.desc())
    ).all()
    order_disputes = disputes.of_order(order.id)
    blockers = disputes.refund_blockers(order_disputes)
    address, shipment = db.session.get(ShippingAddress, order.id), db.session.get(Shipment, order.id)
    return render_template(
        "admin/order.html",
        order=order,
        events=events,
        refunds=refunds.of_order(order.id),
        disputes=order_disputes,
        open_dispute_statuses=disputes.OPEN_STATUSES,
        dashboard_url=disputes.dashboard_url,
        failure_text=refunds.failure_text,
        refund_blockers=blockers,
        refundable=order.status in REFUNDABLE and not blockers,
        address=address,
        shipment=shipment,
        fulfilment_state=fulfilment.fulfilment_of(
            order.status, address is not None, shipment is not None, fulfilment.is_disputed(order)
        ),
        shipping_warnings=fulfilment.warnings_before_shipping(order),
        carriers=fulfilment.CARRIERS,
        refund_attempt=secrets.token_urlsafe(16),
    )


@bp.post("/orders/<public_id>/refund")
def refund(public_id: str) -> ResponseReturnValue:
    """Ask Stripe to refund what is left; the refund shows as pending until Stripe's events say more."""
    order = _order_or_404(public_id)
    # Any paid state: a form sent again after its refund was recorded still reaches Stripe, which
    # replays the first answer for the same attempt (and refuses a new one on a refunded charge).
    if order.status not in PAID_STATES or not order.payment_intent_id:
        abort(409, "Only paid orders can be refunded.")
    if disputes.refund_blockers(disputes.of_order(order.id)):
        abort(409, "A dispute of this payment is open: Stripe refuses refunds until it is closed.")
    if not request.form.get("confirm"):
        abort(400, "Tick the box to confirm the refund.")
    attempt = request.form.get("attempt", "")
    if not REFUND_ATTEMPT.fullmatch(attempt):
        abort(400, "The refund form is incomplete; reload the order and try again.")
    try:
        refund = stripe_gateway.refund_remaining(order, attempt)
    except stripe_gateway.PaymentProviderError as exc:
        log.error("refund of order %s failed: %s", order.public_id, exc)
        flash(f"Stripe did not accept the refund: {exc}", "error")
    else:
        refunds.record_requested(order, refund)
        db.session.commit()
        log.info("refund %s requested for order %s", refund["id"], order.public_id)
        flash("Refund requested; it shows as pending until Stripe confirms it.")
    return redirect(url_for(".order_detail", public_id=order.public_id), code=303)


@bp.get("/to-ship")
def to_ship() -> ResponseReturnValue:
    """Paid orders waiting for their parcel, oldest payment first: a packing list when printed."""
    return render_template("admin/to_ship.html", parcels=fulfilment.to_ship(TO_SHIP_SHOWN), carriers=fulfilment.CARRIERS)


@bp.post("/orders/<public_id>/shipped")
def mark_shipped(public_id: str) -> ResponseReturnValue:
    """Record the order's parcel as sent; sending the form again records nothing more."""
    order = _order_or_404(public_id)
    form = request.form
    try:
        shipped = fulfilment.mark_shipped(
            order, form.get("carrier", ""), form.get("tracking_number", ""), request.authorization.username or "",
            confirmed=bool(form.get("confirm")),
        )
    except fulfilment.CannotShip as exc:
        db.session.rollback()
        flash(str(exc), "error")
        return redirect(url_for(".order_detail", public_id=public_id), code=303)
    db.session.commit()
    flash(f"Order {public_id} marked shipped." if shipped else f"Order {public_id} was already marked shipped.")
    if form.get("back") == "to_ship":
        return redirect(url_for(".to_ship"), code=303)
    return redirect(url_for(".order_detail", public_id=public_id), code=303)


@bp.post("/sync")
def sync() -> ResponseReturnValue:
    """Apply Stripe events the webhook missed, and expire stale pending orders."""
    try:
        report = recovery.sync_with_stripe()
    except stripe_gateway.PaymentProviderError as exc:
        db.session.rollback()
        log.error("sync with Stripe failed: %s", exc)
        flash(f"Could not sync with Stripe: {exc}", "error")
    else:
        flash(f"Synced with Stripe. {report.summary()}")
        for failure in report.failed:
            flash(f"Event {failure.event_id} ({failure.event_type}) failed: {failure.error}", "error")
        for line in report.lookup_failed:
            flash(f"Refunds waiting for payment {line}", "error")
        for line in report.stale_failed:
            flash(f"Stale order {line}", "error")
    return redirect(url_for(".orders"), code=303)


@bp.get("/events")
def events() -> ResponseReturnValue:
    """Stripe events that failed, wait for their payment or flagged an order, newest first."""
    rows = db.session.execute(
        select(StripeEvent, Order.public_id)
        .outerjoin(Order, Order.id == StripeEvent.order_id)
        .where(StripeEvent.state.in_(NEEDING_ATTENTION))
        .order_by(StripeEvent.created.desc(), StripeEvent.id)
        .limit(EVENTS_SHOWN)
    ).all()
    return render_template("admin/events.html", events=rows)


@bp.post("/events/<event_id>/resolved")
def resolve_event(event_id: str) -> ResponseReturnValue:
    """The operator has dealt with an event that flagged its order: it leaves the list."""
    resolved = db.session.execute(
        update(StripeEvent)
        .where(StripeEvent.id == event_id, StripeEvent.state == EventState.NEEDS_REVIEW)
        .values(state=EventState.APPLIED, outcome=func.substr(StripeEvent.outcome + " (resolved by the operator)", 1, 500))
    ).rowcount
    db.session.commit()
    if not resolved:
        abort(404, "No event needing review has this id.")
    log.info("event %s marked resolved by the operator", event_id)
    flash(f"Event {event_id} marked resolved.")
    return redirect(url_for(".events"), code=303)


@bp.post("/events/<event_id>/retry")
def retry_event(event_id: str) -> ResponseReturnValue:
    """Handle a failed or waiting event again now, from the payload kept on its row."""
    try:
        result = recovery.retry_event(event_id)
    except recovery.NothingToRetry:
        abort(404, "No failed or waiting event has this id.")
    except Exception as exc:  # recorded on the event's row by the intake
        log.error("retry of event %s failed: %s", event_id, exc)
        flash(f"Event {event_id} failed again: {type(exc).__name__}: {exc}", "error")
    else:
        flash(f"Event {event_id}: {result.outcome}")
    return redirect(url_for(".events"), code=303)


@bp.get("/stripe")
def stripe_setup() -> ResponseReturnValue:
    """`flask stripe check`'s findings: will Stripe send this shop every event it handles?"""
    shop_url = current_app.config.get("SHOP_URL") or request.url_root.rstrip("/")
    db.session.commit()  # hold no connection while Stripe answers
    findings = webhook_check.check(shop_url)
    return render_template(
        "admin/stripe.html",
        findings=findings,
        webhook_url=webhook_check.webhook_url(shop_url),
        event_types=HANDLED_EVENT_TYPES,
        api_version=stripe.api_version,
    )


@bp.get("/products")
def products() -> ResponseReturnValue:
    products = db.session.scalars(select(Product).order_by(Product.position, Product.id)).all()
    return render_template("admin/products.html", products=products, currency=current_app.config["SHOP_CURRENCY"])


def _order_or_404(public_id: str) -> Order:
    order = db.session.scalar(select(Order).options(selectinload(Order.items)).where(Order.public_id == public_id))
    if order is None:
        abort(404, "No order has this id.")
    return order
