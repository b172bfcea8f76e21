"""The emulator's state machine: sessions, payments, refunds, events and webhook deliveries.

Every state change is a conditional UPDATE (e.g. status open -> complete) so that several
gunicorn workers, or two clicks on "Pay", change a row once and emit one event.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import stripe
from sqlalchemy import delete, func, select, update

from shop.extensions import db
from shop.money import minor_unit_digits

from . import endpoints, foreign, objects
from .addresses import delivery_url
from .models import Charge, CheckoutSession, Delivery, Dispute, Event, IdempotencyKey, Refund
from .params import ParamError

logger = logging.getLogger("shop.stripe_emulator")

Transport = Callable[[str, bytes, dict[str, str]], int]

CLAIM_LEASE = 60.0  # a claimed delivery whose worker died is retried after this many seconds
IDEMPOTENCY_TTL = 24 * 3600
# Hosted-page payment methods: (Stripe payment method type, delayed, outcome).
PAYMENT_METHODS = {
    "card": ("card", False, "succeeded"),
    "bank_transfer": ("us_bank_account", True, "succeeded"),
    "bank_transfer_fail": ("us_bank_account", True, "failed"),
}


# Stripe's test cards for what happens after a payment (docs: Testing, "Disputes" and "Refunds"):
# a payment disputed as fraudulent (a chargeback: the amount and the dispute fee are withdrawn),
# one that gets an inquiry (nothing withdrawn, still refundable), and one whose refunds
# succeed and later fail because the card is expired or cancelled.
DISPUTE_CARDS = {
    "4000000000000259": ("fraudulent", "needs_response"),
    "4000000000001976": ("general", "warning_needs_response"),
}
REFUND_FAILS_CARD = "4000000000005126"
DISPUTE_FEE = 1500  # Stripe's dispute fee for a US account, in cents
EVIDENCE_WINDOW = 7 * 24 * 3600.0  # card networks give 7 to 21 days to respond
# In test mode, the evidence text decides how a dispute closes.
WINNING_EVIDENCE, LOSING_EVIDENCE = "winning_evidence", "losing_evidence"

HOUR = 3600.0
DAY = 24 * HOUR
# Seconds between a failed delivery attempt and the next; the delivery fails for good after
# the last. Stripe's documented behaviour: in live mode it retries with exponential backoff
# for up to three days, in a sandbox three times over a few hours, and `stripe listen` does
# not retry. It does not publish the intervals: these double from an hour (last attempt 63
# hours after the first) and from half an hour (last one 3.5 hours after). `fast` is the
# emulator's own, for watching retries happen within seconds.
RETRY_SCHEDULES: dict[str, tuple[float, ...]] = {
    "fast": (1, 2, 4, 8, 16, 32, 60),
    "live": tuple(HOUR * 2**n for n in range(6)),
    "test": (HOUR / 2, HOUR, 2 * HOUR),
    "none": (),
}


@dataclass(frozen=True)
class Settings:
    # STRIPE_EMULATOR_WEBHOOK_URL (or derived from STRIPE_EMULATOR_URL). None: each delivery
    # goes where its session was created (see addresses.py).
    webhook_url: str | None
    deliver_in_process: bool
    delay: float
    async_delay: float
    duplicate: bool
    shuffle: bool
    drop: float
    webhook_secret: str
    retry_schedule: tuple[float, ...] = RETRY_SCHEDULES["fast"]
    save_failed_requests: bool = False  # idempotency: replay results that failed after execution began
    event_retention: float | None = None  # seconds events stay listable and retrievable; None: forever
    foreign_traffic: int = 0  # other integrations' event bursts emitted with each event of the shop's
    latency: float = 0.0  # seconds each API request waits before it is served (see latency.py)
    # Adaptive Pricing: the customer's currency and how many of its units one unit of the
    # integration's buys (STRIPE_EMULATOR_ADAPTIVE_PRICING); None: off.
    adaptive_pricing: tuple[str, Decimal] | None = None


class ApiError(Exception):
    """An error response in Stripe's shape: `{"error": {"type", "message", "param", "code"}}`."""

    def __init__(
        self,
        status: int,
        error_type: str,
        message: str,
        param: str | None = None,
        code: str | None = None,
        *,
        validation: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = objects.error(error_type, message, param, code)
        self.validation = validation  # refused before the endpoint began executing

    @classmethod
    def invalid(cls, error: ParamError) -> ApiError:
        return cls(400, "invalid_request_error", error.message, error.param, validation=True)

    @classmethod
    def server_error(cls) -> ApiError:
        return cls(500, "api_error", "An unexpected error occurred while processing this request (emulated).")

    @classmethod
    def missing(cls, kind: str, object_id: str, param: str) -> ApiError:
        return cls(404, "invalid_request_error", f"No such {kind}: '{object_id}'", param, "resource_missing")


@dataclass(frozen=True)
class PlannedFailure:
    method: str
    path: str
    work_committed: bool

    def error(self) -> ApiError:
        return ApiError.server_error()


class FailurePlan:
    """Test hook: the next request(s) to an endpoint answer 500 after they began executing.

    `work_committed=True` keeps what the request did (the session exists, the answer is a
    500); otherwise it is rolled back. With `save_failed_requests`, the 500 is what its
    idempotency key replays from then on, as on Stripe.
    """

    def __init__(self) -> None:
        self._planned: list[PlannedFailure] = []
        self._lock = threading.Lock()

    def add(self, method: str, path: str, *, work_committed: bool = False, times: int = 1) -> None:
        with self._lock:
            self._planned.extend([PlannedFailure(method.upper(), path, work_committed)] * times)

    def take(self, method: str, path: str) -> PlannedFailure | None:
        with self._lock:
            for index, failure in enumerate(self._planned):
                if (failure.method, failure.path) == (method, path):
                    return self._planned.pop(index)
        return None



# --- Checkout Sessions -------------------------------------------------------------------------


def create_session(
    values: dict[str, Any],
    page_url: Callable[[str], str],
    now: float,
    webhook_url: str | None = None,
    adaptive_pricing: tuple[str, Decimal] | None = None,
) -> CheckoutSession:
    """Check what field validation can't (mode, URLs, currencies, expiry) and store a new session.

    `webhook_url` is where the session's events will be delivered (unless overridden). With
    `adaptive_pricing` (the customer's currency and rate), a session in another currency is
    shown to the customer in theirs (see `presentment_amount`).
    """
    if values["mode"] != "payment":
        raise ParamError("The Stripe emulator supports only `mode=payment`.", "mode")
    for name in ("success_url", "cancel_url"):
        if name in values and not re.match(r"^https?://[^\s/]+", values[name]):
            raise ParamError("Not a valid URL", name)
    if "customer_email" in values and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", values["customer_email"]):
        raise ParamError(f"Invalid email address: {values['customer_email']}", "customer_email")
    items = values.get("line_items")
    if not items:
        raise ParamError("You must specify `line_items` in `payment` mode.", "line_items")
    currency = None
    line_items = []
    for index, item in enumerate(items):
        price = item["price_data"]
        item_currency = price["currency"].lower()
        param = f"line_items[{index}][price_data][currency]"
        if not re.fullmatch(r"[a-z]{3}", item_currency):
            raise ParamError(f"Invalid currency: {price['currency']}", param)
        if currency is not None and item_currency != currency:
            raise ParamError("All line items must have the same currency.", param)
        currency = item_currency
        product = price["product_data"]
        line_items.append(
            {
                "id": objects.new_id("li_"),
                "price_id": objects.new_id("price_"),
                "product_id": objects.new_id("prod_", 14),
                "name": product["name"],
                "description": product.get("description"),
                "images": product.get("images", []),
                "unit_amount": price["unit_amount"],
                "quantity": item["quantity"],
            }
        )
    created = int(now)
    expires_at = values.get("expires_at", created + 24 * 3600)
    if expires_at < created + 30 * 60:
        raise ParamError(
            "The `expires_at` timestamp must be at least 30 minutes from Checkout Session creation.", "expires_at"
        )
    if expires_at > created + 24 * 3600:
        raise ParamError(
            "The `expires_at` timestamp must be less than 24 hours from Checkout Session creation.", "expires_at"
        )
    session_id = objects.new_id("cs_test_", 58)
    stored = {key: value for key, value in values.items() if key not in ("line_items", "expand", "expires_at")}
    session = CheckoutSession(
        id=session_id,
        created=created,
        expires_at=expires_at,
        status="open",
        payment_status="unpaid",
        currency=currency,
        amount_total=sum(item["unit_amount"] * item["quantity"] for item in line_items),
        params=stored,
        line_items=line_items,
        page_url=page_url(session_id),
        webhook_url=webhook_url,
    )
    if adaptive_pricing is not None and adaptive_pricing[0] != currency:
        session.presentment_currency = adaptive_pricing[0]
        session.presentment_amount = presentment_amount(session.amount_total, currency, *adaptive_pricing)
    db.session.add(session)
    return session


def presentment_amount(amount: int, currency: str, presentment_currency: str, rate: Decimal) -> int:
    """`amount` (minor units of `currency`) in `presentment_currency`'s minor units at `rate`, rounded."""
    units = Decimal(amount).scaleb(-minor_unit_digits(currency)) * rate
    return int(units.scaleb(minor_unit_digits(presentment_currency)).quantize(Decimal(1), ROUND_HALF_UP))


def get_session(session_id: str, settings: Settings, now: float) -> CheckoutSession | None:
    """Load a session, first expiring it if its `expires_at` has passed (as Stripe's sweeper would)."""
    session = db.session.get(CheckoutSession, session_id)
    if session is not None and session.status == "open" and session.expires_at <= now:
        expire_session(session_id, settings, now)
        session = db.session.get(CheckoutSession, session_id, populate_existing=True)
    return session


def expire_session(
    session_id: str, settings: Settings, now: float, request_id: str | None = None, idempotency_key: str | None = None
) -> bool:
    """open -> expired, emitting `checkout.session.expired`; False if it wasn't open."""
    changed = _transition(session_id, CheckoutSession.status == "open", status="expired")
    if changed:
        session = db.session.get(CheckoutSession, session_id, populate_existing=True)
        emit(settings, "checkout.session.expired", objects.checkout_session(session), now, request_id, idempotency_key)
    return changed


def pay(
    session_id: str,
    email: str,
    method: str,
    settings: Settings,
    now: float,
    card_number: str | None = None,
    shipping_details: dict[str, Any] | None = None,
    phone: str | None = None,
) -> bool:
    """open -> complete from the hosted page, with what the customer entered; False if the session was no longer open.

    A dispute test card's payment is disputed right after it succeeds."""
    payment_type, delayed, outcome = PAYMENT_METHODS[method]
    changed = _transition(
        session_id,
        (CheckoutSession.status == "open") & (CheckoutSession.expires_at > now),
        status="complete",
        payment_status="unpaid" if delayed else "paid",
        payment_intent=objects.new_id("pi_"),
        customer_details=objects.customer_details(email, phone),
        shipping_details=shipping_details,
        settle_at=now + settings.async_delay if delayed else None,
        settle_outcome=outcome if delayed else None,
    )
    if changed:
        session = db.session.get(CheckoutSession, session_id, populate_existing=True)
        charge = None if delayed else _charge(session, payment_type, now, card_number)
        emit(settings, "checkout.session.completed", objects.checkout_session(session), now)
        if charge is not None and card_number in DISPUTE_CARDS:
            _open_dispute(charge, *DISPUTE_CARDS[card_number], settings, now)
    return changed


def settle_due(settings: Settings, now: float) -> None:
    """Settle delayed payments whose time has come: paid + async_payment_succeeded, or _failed."""
    due = db.session.execute(
        select(CheckoutSession.id, CheckoutSession.settle_outcome).where(CheckoutSession.settle_at <= now)
    ).all()
    db.session.commit()
    for session_id, outcome in due:
        succeeded = outcome == "succeeded"
        changes: dict[str, Any] = {"settle_at": None, "settle_outcome": None}
        if succeeded:
            changes["payment_status"] = "paid"
        if _transition(session_id, CheckoutSession.settle_at.is_not(None), **changes):
            session = db.session.get(CheckoutSession, session_id, populate_existing=True)
            if succeeded:
                _charge(session, "us_bank_account", now)
            kind = "succeeded" if succeeded else "failed"
            emit(settings, f"checkout.session.async_payment_{kind}", objects.checkout_session(session), now)
        db.session.commit()


def expire_due(settings: Settings, now: float) -> None:
    """Expire open sessions whose `expires_at` has passed."""
    due = db.session.scalars(
        select(CheckoutSession.id).where(CheckoutSession.status == "open", CheckoutSession.expires_at <= now)
    ).all()
    db.session.commit()
    for session_id in due:
        expire_session(session_id, settings, now)
        db.session.commit()


def _transition(session_id: str, condition: Any, **values: Any) -> bool:
    result = db.session.execute(
        update(CheckoutSession)
        .where(CheckoutSession.id == session_id, condition)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def _charge(session: CheckoutSession, payment_type: str, now: float, card_number: str | None = None) -> Charge:
    assert session.payment_intent and session.customer_details
    charge = Charge(
        id=objects.new_id("ch_"),
        payment_intent=session.payment_intent,
        session_id=session.id,
        amount=session.amount_total,
        amount_refunded=0,
        currency=session.currency,
        created=int(now),
        payment_method_type=payment_type,
        email=session.customer_details["email"],
        presentment_currency=session.presentment_currency,
        presentment_amount=session.presentment_amount,
        card_number=card_number,
    )
    db.session.add(charge)
    db.session.flush()
    return charge


# --- Refunds -----------------------------------------------------------------------------------


def create_refund(
    values: dict[str, Any], settings: Settings, now: float, request_id: str, idempotency_key: str | None
) -> dict[str, Any]:
    """Refund (part of) a paid session's charge and emit `charge.refunded` (and `refund.created` at
    API versions that send it); returns the refund."""
    payment_intent = values["payment_intent"]
    charge = db.session.scalar(select(Charge).where(Charge.payment_intent == payment_intent))
    if charge is None:
        if db.session.scalar(select(CheckoutSession.id).where(CheckoutSession.payment_intent == payment_intent)):
            raise ApiError(
                400, "invalid_request_error",
                f"This PaymentIntent ({payment_intent}) does not have a successful charge to refund.",
                "payment_intent",
            )
        raise ApiError.missing("payment_intent", payment_intent, "payment_intent")
    charged_back = select(Dispute.id).where(
        Dispute.charge_id == charge.id, Dispute.status.not_in(objects.INQUIRY_STATUSES)
    )
    if db.session.scalar(charged_back) is not None:
        raise ApiError(400, "invalid_request_error", f"Charge {charge.id} has been charged back; cannot issue a refund.",
                       code="charge_disputed")
    remaining = charge.amount - charge.amount_refunded
    if remaining <= 0:
        raise ApiError(400, "invalid_request_error", f"Charge {charge.id} has already been refunded.",
                       code="charge_already_refunded")
    amount = values.get("amount", remaining)
    refunded = db.session.execute(
        update(Charge)
        .where(Charge.id == charge.id, Charge.amount_refunded + amount <= Charge.amount)
        .values(amount_refunded=Charge.amount_refunded + amount)
        .execution_options(synchronize_session=False)
    ).rowcount == 1
    if not refunded:
        raise ApiError(
            400, "invalid_request_error",
            f"Refund amount ({objects.format_amount(amount, charge.currency)}) is greater than unrefunded amount "
            f"on charge ({objects.format_amount(remaining, charge.currency)})",
            "amount",
        )
    refund = Refund(
        id=objects.new_id("re_"), charge_id=charge.id, amount=amount, created=int(now),
        reason=values.get("reason"), metadata_=values.get("metadata", {}), status="succeeded",
        fail_at=now + settings.async_delay if charge.card_number == REFUND_FAILS_CARD else None,
    )
    db.session.add(refund)
    db.session.flush()
    charge = db.session.get(Charge, charge.id, populate_existing=True)
    if objects.refund_events_sent(stripe.api_version):
        emit(settings, "refund.created", objects.refund(refund, charge), now, request_id, idempotency_key)
    emit(settings, "charge.refunded", charge_object(charge), now, request_id, idempotency_key)
    return objects.refund(refund, charge)


def fail_due_refunds(settings: Settings, now: float) -> None:
    """The failing-refund card's refunds fail when their time comes: the money goes back to the
    balance (the charge's refunded total drops) and `refund.updated` + `refund.failed` are sent
    (`charge.refund.updated` at API versions before 2024-10-28)."""
    due = db.session.scalars(select(Refund.id).where(Refund.fail_at <= now)).all()
    db.session.commit()
    for refund_id in due:
        failed = db.session.execute(
            update(Refund)
            .where(Refund.id == refund_id, Refund.fail_at.is_not(None))
            .values(status="failed", failure_reason="expired_or_canceled_card", fail_at=None)
            .execution_options(synchronize_session=False)
        ).rowcount == 1
        if failed:
            refund = db.session.get(Refund, refund_id, populate_existing=True)
            db.session.execute(
                update(Charge)
                .where(Charge.id == refund.charge_id)
                .values(amount_refunded=Charge.amount_refunded - refund.amount)
                .execution_options(synchronize_session=False)
            )
            charge = db.session.get(Charge, refund.charge_id, populate_existing=True)
            refunded = objects.refund(refund, charge)
            if objects.refund_events_sent(stripe.api_version):
                emit(settings, "refund.updated", refunded, now)
                emit(settings, "refund.failed", refunded, now)
            else:
                emit(settings, "charge.refund.updated", refunded, now)
        db.session.commit()


def charge_object(charge: Charge) -> dict[str, Any]:
    """The charge as events at the SDK's API version carry it."""
    disputed = db.session.scalar(select(Dispute.id).where(Dispute.charge_id == charge.id)) is not None
    if not objects.refunds_included(stripe.api_version):
        return objects.charge(charge, disputed=disputed)
    refunds = db.session.scalars(
        select(Refund).where(Refund.charge_id == charge.id).order_by(Refund.created.desc())
    ).all()
    return objects.charge(charge, list(refunds), disputed=disputed)


# --- Disputes ----------------------------------------------------------------------------------


def _open_dispute(charge: Charge, reason: str, status: str, settings: Settings, now: float) -> None:
    """The cardholder disputes the payment: `charge.dispute.created`, and for a chargeback the
    amount and the dispute fee leave the balance (`charge.dispute.funds_withdrawn`)."""
    chargeback = status not in objects.INQUIRY_STATUSES
    dispute = Dispute(
        id=objects.new_id("dp_"), charge_id=charge.id, amount=charge.amount, created=int(now),
        due_by=int(now + EVIDENCE_WINDOW), status=status, reason=reason, evidence={}, submission_count=0,
        balance_transactions=[],
    )
    db.session.add(dispute)
    db.session.flush()
    emit(settings, "charge.dispute.created", objects.dispute(dispute, charge, now), now)
    if chargeback:
        dispute.balance_transactions = [
            objects.dispute_balance_transaction(-charge.amount, DISPUTE_FEE, charge.currency, int(now), dispute.id)
        ]
        db.session.flush()
        emit(settings, "charge.dispute.funds_withdrawn", objects.dispute(dispute, charge, now), now)


def update_dispute(dispute_id: str, values: dict[str, Any], settings: Settings, now: float) -> dict[str, Any]:
    """Evidence for a dispute (`POST /v1/disputes/{id}`); submitted unless `submit=false`.

    In test mode the text decides: `winning_evidence` closes it won (a chargeback's amount and
    fee come back: `charge.dispute.funds_reinstated`), `losing_evidence` closes it lost; any
    other text puts it under review.
    """
    dispute = db.session.get(Dispute, dispute_id)
    if dispute is None:
        raise ApiError.missing("dispute", dispute_id, "dispute")
    if dispute.status in ("won", "lost", "warning_closed"):
        raise ApiError(400, "invalid_request_error",
                       f"This dispute is already closed. You can't update the evidence for dispute {dispute_id}.")
    charge = db.session.get(Charge, dispute.charge_id)
    dispute.evidence = {**dispute.evidence, **values.get("evidence", {})}
    if not values.get("submit", True):
        db.session.flush()
        emit(settings, "charge.dispute.updated", objects.dispute(dispute, charge, now), now)
        return objects.dispute(dispute, charge, now)
    inquiry = dispute.status in objects.INQUIRY_STATUSES
    dispute.submission_count += 1
    dispute.status = "warning_under_review" if inquiry else "under_review"
    db.session.flush()
    emit(settings, "charge.dispute.updated", objects.dispute(dispute, charge, now), now)
    text = dispute.evidence.get("uncategorized_text") or ""
    if WINNING_EVIDENCE in text or LOSING_EVIDENCE in text:
        won = WINNING_EVIDENCE in text
        dispute.status = "warning_closed" if inquiry else "won" if won else "lost"
        if won and not inquiry:
            dispute.balance_transactions = [
                *dispute.balance_transactions,
                objects.dispute_balance_transaction(charge.amount, -DISPUTE_FEE, charge.currency, int(now), dispute.id),
            ]
        db.session.flush()
        emit(settings, "charge.dispute.closed", objects.dispute(dispute, charge, now), now)
        if won and not inquiry:
            emit(settings, "charge.dispute.funds_reinstated", objects.dispute(dispute, charge, now), now)
    return objects.dispute(dispute, charge, now)


# --- Events and webhook deliveries -------------------------------------------------------------


def emit(
    settings: Settings,
    event_type: str,
    data: dict[str, Any],
    now: float,
    request_id: str | None = None,
    idempotency_key: str | None = None,
    api_version: str | None = None,
    url: str | None = None,
) -> Event:
    """Store an event and queue its webhook delivery (twice with STRIPE_EMULATOR_DUPLICATE), if
    the emulator's endpoint is subscribed to its type (see `endpoints`).

    With STRIPE_EMULATOR_FOREIGN_TRAFFIC, other integrations' events follow each of the shop's,
    to the same endpoint. `api_version` marks such an event (and `url` is the endpoint).
    """
    event = Event(
        id=objects.new_id("evt_"),
        type=event_type,
        created=int(now),
        api_version=api_version or stripe.api_version,
        object=data,
        request_id=request_id,
        idempotency_key=idempotency_key,
    )
    db.session.add(event)
    db.session.flush()  # deliveries reference it (no relationship() to order the inserts)
    url = url or _session_webhook_url(data)
    if endpoints.subscribed(event_type):
        queue_delivery(event.id, settings, now + settings.delay, url)
    if api_version is None:  # the shop's own event, not another integration's
        for _ in range(settings.foreign_traffic):
            for foreign_type, foreign_object, version in foreign.traffic(now):
                kept = foreign.kept_session(foreign_object)
                if kept is not None:
                    db.session.merge(kept)
                emit(settings, foreign_type, foreign_object, now, api_version=version, url=url)
    return event


def _session_webhook_url(data: dict[str, Any]) -> str | None:
    """The webhook target stored with the session an event's object (session or charge) belongs to."""
    if data.get("object") == "charge":
        session_id = db.session.scalar(select(Charge.session_id).where(Charge.id == data["id"]))
    elif data.get("object") in ("refund", "dispute"):
        session_id = db.session.scalar(select(Charge.session_id).where(Charge.id == data["charge"]))
    else:
        session_id = data.get("id")
    return db.session.scalar(select(CheckoutSession.webhook_url).where(CheckoutSession.id == session_id))


def queue_delivery(event_id: str, settings: Settings, due_at: float, url: str | None) -> None:
    for _ in range(2 if settings.duplicate else 1):
        db.session.add(Delivery(event_id=event_id, status="pending", due_at=due_at, attempts=0, url=url))


def resend(event_id: str, settings: Settings, now: float) -> bool:
    """Queue one more delivery of an event, as the Dashboard's "Resend" does. False if unknown."""
    if db.session.scalar(select(Event.id).where(Event.id == event_id)) is None:
        return False
    url = db.session.scalar(select(Delivery.url).where(Delivery.event_id == event_id).order_by(Delivery.id.desc()))
    db.session.add(Delivery(event_id=event_id, status="pending", due_at=now, attempts=0, url=url))
    db.session.commit()
    return True


def pending_webhooks(event_ids: list[str]) -> dict[str, int]:
    rows = db.session.execute(
        select(Delivery.event_id, func.count())
        .where(Delivery.event_id.in_(event_ids), Delivery.status == "pending")
        .group_by(Delivery.event_id)
    ).all()
    return {event_id: count for event_id, count in rows}


def event_object(event: Event) -> dict[str, Any]:
    return objects.event(event, pending_webhooks([event.id]).get(event.id, 0))


def sign(payload: str, secret: str, timestamp: int) -> str:
    """The `Stripe-Signature` header value, exactly as Stripe computes it."""
    signature = hmac.new(secret.encode(), f"{timestamp}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={signature}"


def deliver_due(settings: Settings, transport: Transport, now: float) -> int:
    """Claim and send due deliveries; returns how many were attempted (dropped ones included)."""
    due = db.session.execute(
        select(Delivery.id, Delivery.attempts)
        .where(Delivery.status == "pending", Delivery.due_at <= now)
        .order_by(Delivery.due_at, Delivery.id)
        .limit(100)
    ).all()
    db.session.commit()
    if settings.shuffle:
        random.shuffle(due)
    attempted = 0
    for delivery_id, attempts in due:
        if _claim(delivery_id, attempts, now):
            attempted += 1
            _attempt(delivery_id, attempts + 1, settings, transport, now)
    return attempted


def _claim(delivery_id: int, attempts: int, now: float) -> bool:
    """Compare-and-set on `attempts`, so each attempt is made by exactly one worker."""
    claimed = db.session.execute(
        update(Delivery)
        .where(
            Delivery.id == delivery_id,
            Delivery.status == "pending",
            Delivery.attempts == attempts,
            Delivery.due_at <= now,
        )
        .values(attempts=attempts + 1, due_at=now + CLAIM_LEASE)
        .execution_options(synchronize_session=False)
    ).rowcount == 1
    db.session.commit()
    return claimed


def _attempt(delivery_id: int, attempt: int, settings: Settings, transport: Transport, now: float) -> None:
    event_id, stored_url = db.session.execute(
        select(Delivery.event_id, Delivery.url).where(Delivery.id == delivery_id)
    ).one()
    url = delivery_url(settings.webhook_url, stored_url)
    if settings.drop and random.random() < settings.drop:
        _finish(delivery_id, attempt, status="dropped")
        return
    event = db.session.execute(select(Event).where(Event.id == event_id)).scalar_one()
    payload = json.dumps(event_object(event), indent=2)
    described = f"{event.type} {event.id}"
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
        # Signed with the wall clock even when a test jumps `now`, as the receiver checks tolerance.
        "Stripe-Signature": sign(payload, settings.webhook_secret, int(time.time())),
    }
    db.session.commit()  # hold no transaction while the receiver runs
    status: int | None = None
    error: str | None = None
    try:
        status = transport(url, payload.encode(), headers)
    except OSError as exc:
        error = f"connection error: {exc}"
    except Exception as exc:  # the receiver crashed in-process: a 500 as far as Stripe knows
        logger.exception("Webhook receiver raised while handling %s", event_id)
        error = f"receiver raised: {exc!r}"
    if status is not None and 200 <= status < 300:
        _finish(delivery_id, attempt, status="delivered", last_status=status, last_error=None)
    elif attempt > len(settings.retry_schedule):
        _log_failure(described, url, status, error, attempt, settings, None)
        _finish(delivery_id, attempt, status="failed", last_status=status, last_error=error)
    else:
        delay = settings.retry_schedule[attempt - 1]
        _log_failure(described, url, status, error, attempt, settings, delay)
        _finish(delivery_id, attempt, due_at=now + delay, last_status=status, last_error=error)


def _log_failure(
    described: str,
    url: str,
    status: int | None,
    error: str | None,
    attempt: int,
    settings: Settings,
    retry_in: float | None,
) -> None:
    """One WARNING line per failed attempt: what, where, the answer, and what happens next."""
    answer = error or f"answered HTTP {status}"
    then = (
        f"next attempt in {retry_in:g} s"
        if retry_in is not None
        else "giving up (`flask --app wsgi stripe sync` applies missed events)"
    )
    logger.warning(
        "Webhook delivery failed: %s to %s: %s (attempt %d of %d); %s",
        described, url, answer, attempt, len(settings.retry_schedule) + 1, then,
    )


def _finish(delivery_id: int, attempt: int, **values: Any) -> None:
    db.session.execute(
        update(Delivery)
        .where(Delivery.id == delivery_id, Delivery.attempts == attempt)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()


def prune_idempotency_keys(now: float) -> None:
    """Stripe keeps idempotency keys for 24 hours."""
    db.session.execute(delete(IdempotencyKey).where(IdempotencyKey.created < now - IDEMPOTENCY_TTL))
    db.session.commit()
