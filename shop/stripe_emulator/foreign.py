"""Other integrations' traffic on the same Stripe account (STRIPE_EMULATOR_FOREIGN_TRAFFIC).

A real account's event stream carries more than the shop's own Checkout Sessions: a billing
integration's setup- and subscription-mode sessions, payments, refunds and disputes made elsewhere,
charges made with the legacy Charges API (no PaymentIntent), customers, and events rendered
at the API version of whichever endpoint or integration created them. Each story here is a
short sequence of such events, shaped like Stripe's published objects (`fixtures3.json`):
nothing in them belongs to the shop, so a correct shop answers 2xx and changes no order.
"""
from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import stripe

from . import objects
from .models import Charge, CheckoutSession, Dispute, Refund

ForeignEvent = tuple[str, dict[str, Any], str]  # (type, data.object, api_version)

# Older API versions other integrations on the account may still be pinned to.
OLDER_API_VERSIONS = ("2020-08-27", "2022-11-15", "2024-06-20")
OTHER_SITE = "https://billing.example.com"


def _api_version() -> str:
    return random.choice((*OLDER_API_VERSIONS, stripe.api_version))


def _session(now: float, mode: str, **fields: Any) -> dict[str, Any]:
    """A `checkout.session` of another integration (kept for the API only by `kept_session`)."""
    session = CheckoutSession(
        id=objects.new_id("cs_test_", 58),
        created=int(now) - 120,
        expires_at=int(now) + 23 * 3600,
        status="complete",
        payment_status="paid",
        currency="usd",
        amount_total=0,
        params={"mode": mode, "success_url": f"{OTHER_SITE}/done", "cancel_url": f"{OTHER_SITE}/back"},
        line_items=[],
        page_url="",
        payment_intent=None,
        customer_details=objects.customer_details("someone@example.net"),
    )
    result = objects.checkout_session(session)
    result.update(fields)
    if "amount_total" in fields:
        result["amount_subtotal"] = fields["amount_total"]
    return result


def setup_session(now: float) -> list[ForeignEvent]:
    """A setup-mode session saves a card: no amount, no currency, no PaymentIntent."""
    version = _api_version()
    session = _session(
        now, "setup", amount_total=None, currency=None, payment_status="no_payment_required",
        setup_intent=objects.new_id("seti_"), customer=objects.new_id("cus_", 14), total_details=None,
    )
    return [("checkout.session.completed", session, version)]


def subscription_session(now: float) -> list[ForeignEvent]:
    """A subscription-mode session: paid through an invoice, so `payment_intent` is null."""
    version = _api_version()
    trial = random.random() < 0.5
    session = _session(
        now, "subscription", amount_total=0 if trial else 1500,
        payment_status="no_payment_required" if trial else "paid",
        subscription=objects.new_id("sub_"), invoice=objects.new_id("in_"), customer=objects.new_id("cus_", 14),
        client_reference_id=objects.new_id("member-", 8),
    )
    return [("checkout.session.completed", session, version)]


def abandoned_session(now: float) -> list[ForeignEvent]:
    """An expired payment-mode session with null amounts, as in Stripe's own fixture."""
    version = _api_version()
    session = _session(
        now, "payment", status="expired", payment_status="unpaid", amount_total=None, currency=None,
        payment_intent=objects.new_id("pi_"), customer_details=None, url=None,
    )
    return [("checkout.session.expired", session, version)]


def other_payment(now: float) -> list[ForeignEvent]:
    """Another integration's payment (its own `client_reference_id`), and maybe its refund."""
    version = _api_version()
    payment_intent = objects.new_id("pi_")
    amount = random.choice((900, 2500, 6800))
    session = _session(
        now, "payment", amount_total=amount, payment_intent=payment_intent,
        client_reference_id=objects.new_id("inv-", 10), metadata={"source": "billing"},
    )
    events: list[ForeignEvent] = [
        ("checkout.session.completed", session, version),
        ("payment_intent.succeeded", objects.payment_intent(payment_intent, amount, "usd", int(now)), version),
    ]
    if random.random() < 0.5:
        charge = _refunded_charge(now, amount, payment_intent, amount // 2, version)
        if objects.refund_events_sent(version):
            refund = Refund(id=objects.new_id("re_"), charge_id=charge["id"], amount=amount // 2, created=int(now),
                            reason=None, metadata_={}, status="succeeded")
            events.append(("refund.created", objects.refund(refund, _charge(now, amount, payment_intent)), version))
        events.append(("charge.refunded", charge, version))
    return events


def disputed_payment(now: float) -> list[ForeignEvent]:
    """Another integration's payment, charged back and lost."""
    version = _api_version()
    payment_intent = objects.new_id("pi_")
    amount = random.choice((900, 2500))
    session = _session(
        now, "payment", amount_total=amount, payment_intent=payment_intent,
        client_reference_id=objects.new_id("inv-", 10), metadata={"source": "billing"},
    )
    charge = _charge(now, amount, payment_intent)
    dispute = Dispute(
        id=objects.new_id("dp_"), charge_id=charge.id, amount=amount, created=int(now), due_by=int(now) + 7 * 86400,
        status="needs_response", reason="fraudulent", evidence={}, submission_count=0,
        balance_transactions=[objects.dispute_balance_transaction(-amount, 1500, "usd", int(now), "dp_x")],
    )
    opened = objects.dispute(dispute, charge, now)
    dispute.status = "lost"
    return [
        ("checkout.session.completed", session, version),
        ("charge.dispute.created", opened, version),
        ("charge.dispute.funds_withdrawn", opened, version),
        ("charge.dispute.closed", objects.dispute(dispute, charge, now), version),
    ]


def legacy_charge(now: float) -> list[ForeignEvent]:
    """A Charges-API charge (`payment_intent: null`), then its full refund."""
    version = _api_version()
    amount = random.choice((100, 2000))
    charge = _charge(now, amount, None)
    return [
        ("charge.succeeded", objects.charge(charge, [] if objects.refunds_included(version) else None), version),
        ("charge.refunded", _refunded_charge(now, amount, None, amount, version, charge), version),
    ]


def new_customer(now: float) -> list[ForeignEvent]:
    return [("customer.created", objects.customer(objects.new_id("cus_", 14), int(now)), _api_version())]


def _charge(now: float, amount: int, payment_intent: str | None) -> Charge:
    return Charge(
        id=objects.new_id("ch_"), payment_intent=payment_intent, session_id=None, amount=amount,
        amount_refunded=0, currency="usd", created=int(now) - 60, payment_method_type="card", email=None,
    )


def _refunded_charge(
    now: float, amount: int, payment_intent: str | None, refunded: int, version: str, charge: Charge | None = None
) -> dict[str, Any]:
    """The charge after a refund; its `refunds` list only at API versions that still include it."""
    charge = charge or _charge(now, amount, payment_intent)
    after = Charge(**{**{column: getattr(charge, column) for column in _CHARGE_COLUMNS}, "amount_refunded": refunded})
    refund = Refund(id=objects.new_id("re_"), charge_id=charge.id, amount=refunded, created=int(now), reason=None,
                    metadata_={})
    return objects.charge(after, [refund] if objects.refunds_included(version) else None)


def kept_session(obj: dict[str, Any]) -> CheckoutSession | None:
    """The row that lets the API list another integration's payment-mode session by its
    PaymentIntent, as Stripe would; None for objects that aren't such a session.

    The row renders back to the same object. A session with null amounts (one abandoned
    before its line items were priced) has no PaymentIntent Stripe could have charged, so it
    needs no row.
    """
    if obj.get("object") != "checkout.session" or obj.get("mode") != "payment" or not obj.get("payment_intent"):
        return None
    if not isinstance(obj.get("amount_total"), int) or not isinstance(obj.get("currency"), str):
        return None
    kept = ("mode", "success_url", "cancel_url", "client_reference_id", "metadata")
    return CheckoutSession(
        id=obj["id"], created=obj["created"], expires_at=obj["expires_at"], status=obj["status"],
        payment_status=obj["payment_status"], currency=obj["currency"], amount_total=obj["amount_total"],
        params={key: obj[key] for key in kept if obj.get(key) is not None}, line_items=[], page_url="",
        payment_intent=obj["payment_intent"], customer_details=obj.get("customer_details"),
    )


_CHARGE_COLUMNS = ("id", "payment_intent", "session_id", "amount", "amount_refunded", "currency", "created",
                   "payment_method_type", "email")

STORIES: dict[str, Callable[[float], list[ForeignEvent]]] = {
    "setup_session": setup_session,
    "subscription_session": subscription_session,
    "abandoned_session": abandoned_session,
    "other_payment": other_payment,
    "legacy_charge": legacy_charge,
    "new_customer": new_customer,
    "disputed_payment": disputed_payment,
}


def traffic(now: float) -> list[ForeignEvent]:
    """One story, picked at random."""
    return random.choice(list(STORIES.values()))(now)
