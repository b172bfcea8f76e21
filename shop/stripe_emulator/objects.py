"""Stripe JSON shapes of the emulator's stored state (as the 2026 API returns them)."""
from __future__ import annotations

import secrets
import string
from typing import Any

import stripe

from .models import Charge, CheckoutSession, Dispute, Event, Refund

_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str, length: int = 24) -> str:
    """A Stripe-looking id such as `evt_1Pgc76B7WZ01zgkWwyRHS12y`."""
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def _address() -> dict[str, None]:
    return dict.fromkeys(("city", "country", "line1", "line2", "postal_code", "state"))


def customer_details(email: str, phone: str | None = None) -> dict[str, Any]:
    return {
        "address": _address(),
        "email": email,
        "name": None,
        "phone": phone,
        "tax_exempt": "none",
        "tax_ids": [],
        "business_name": None,
        "individual_name": None,
    }


def line_item(item: dict[str, Any], currency: str, created: int) -> dict[str, Any]:
    """A line item (`item` schema) with its inline price object."""
    amount = item["unit_amount"] * item["quantity"]
    return {
        "id": item["id"],
        "object": "item",
        "amount_discount": 0,
        "amount_subtotal": amount,
        "amount_tax": 0,
        "amount_total": amount,
        "currency": currency,
        "description": item["name"],
        "metadata": {},
        "price": {
            "id": item["price_id"],
            "object": "price",
            "active": False,
            "billing_scheme": "per_unit",
            "created": created,
            "currency": currency,
            "custom_unit_amount": None,
            "livemode": False,
            "lookup_key": None,
            "metadata": {},
            "nickname": None,
            "product": item["product_id"],
            "recurring": None,
            "tax_behavior": "unspecified",
            "tiers_mode": None,
            "transform_quantity": None,
            "type": "one_time",
            "unit_amount": item["unit_amount"],
            "unit_amount_decimal": str(item["unit_amount"]),
        },
        "quantity": item["quantity"],
    }


def list_object(data: list[dict[str, Any]], url: str, has_more: bool) -> dict[str, Any]:
    return {"object": "list", "data": data, "has_more": has_more, "url": url}


def line_items_list(session: CheckoutSession, items: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    data = [line_item(item, session.currency, session.created) for item in items]
    return list_object(data, f"/v1/checkout/sessions/{session.id}/line_items", has_more)


# From this API version on, a session's shipping address is under `collected_information`
# instead of the top-level `shipping_details` (changelog 2025-03-31.basil).
SHIPPING_COLLECTED_SINCE = "2025-03-31"


def checkout_session(
    session: CheckoutSession, expand: frozenset[str] = frozenset(), api_version: str | None = None
) -> dict[str, Any]:
    """The full `checkout.session` object, every field Stripe returns for a payment-mode session.

    Rendered at `api_version` (the SDK's by default) where the versions differ in shape.
    """
    params = session.params
    shipping = session.shipping_details
    result: dict[str, Any] = {
        "id": session.id,
        "object": "checkout.session",
        "adaptive_pricing": {"enabled": session.presentment_currency is not None},
        "after_expiration": None,
        "allow_promotion_codes": None,
        "amount_subtotal": session.amount_total,
        "amount_total": session.amount_total,
        "automatic_tax": {"enabled": False, "liability": None, "provider": None, "status": None},
        "billing_address_collection": None,
        "cancel_url": params.get("cancel_url"),
        "client_reference_id": params.get("client_reference_id"),
        "client_secret": None,
        "collected_information": None,
        "consent": None,
        "consent_collection": None,
        "created": session.created,
        "currency": session.currency,
        "currency_conversion": None,
        "custom_fields": [],
        "custom_text": {
            "after_submit": None,
            "shipping_address": None,
            "submit": None,
            "terms_of_service_acceptance": None,
        },
        "customer": None,
        "customer_account": None,
        "customer_creation": "if_required",
        "customer_details": session.customer_details,
        "customer_email": params.get("customer_email"),
        "discounts": [],
        "expires_at": session.expires_at,
        "integration_identifier": None,
        "invoice": None,
        "invoice_creation": {
            "enabled": False,
            "invoice_data": {
                "account_tax_ids": None,
                "custom_fields": None,
                "description": None,
                "footer": None,
                "issuer": None,
                "metadata": {},
                "rendering_options": None,
            },
        },
        "livemode": False,
        "locale": None,
        "metadata": params.get("metadata", {}),
        "mode": params["mode"],
        "origin_context": None,
        "payment_intent": session.payment_intent,
        "payment_link": None,
        "payment_method_collection": "if_required",
        "payment_method_configuration_details": None,
        "payment_method_options": {},
        "payment_method_types": params.get("payment_method_types", ["card"]),
        "payment_status": session.payment_status,
        "permissions": None,
        "phone_number_collection": {"enabled": bool(params.get("phone_number_collection", {}).get("enabled"))},
        "recovered_from": None,
        "saved_payment_method_options": None,
        "setup_intent": None,
        "shipping_address_collection": params.get("shipping_address_collection"),
        "shipping_cost": None,
        "shipping_details": None,
        "shipping_options": [],
        "status": session.status,
        "submit_type": None,
        "subscription": None,
        "success_url": params["success_url"],
        "tax_id_collection": {"enabled": False, "required": "never"},
        "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        "ui_mode": "hosted",
        "url": session.page_url if session.status == "open" else None,
        "wallet_options": None,
    }
    if (api_version or stripe.api_version) < SHIPPING_COLLECTED_SINCE:
        result["shipping_details"] = shipping
    elif shipping is not None:
        result["collected_information"] = {"business_name": None, "individual_name": None, "shipping_details": shipping}
    if session.presentment_currency is not None and session.status == "complete":
        # What the customer was shown and paid in (Stripe adds it since 2025-03-31.basil);
        # amount_total and currency above stay the integration's.
        result["presentment_details"] = _presentment_details(session)
    if "line_items" in expand:
        result["line_items"] = line_items_list(session, session.line_items, False)
    return result


def _presentment_details(row: CheckoutSession | Charge) -> dict[str, Any]:
    return {"presentment_amount": row.presentment_amount, "presentment_currency": row.presentment_currency}


# From this API version on, a charge no longer carries its `refunds` list unless expanded
# (and event payloads are never expanded).
REFUNDS_UNEXPANDED_SINCE = "2022-11-15"


def refunds_included(api_version: str) -> bool:
    return api_version < REFUNDS_UNEXPANDED_SINCE


# From this API version on, every refund (a card's too) has `refund.created`, `refund.updated`
# and `refund.failed` events; before it a card refund's update was `charge.refund.updated`.
REFUND_EVENTS_SINCE = "2024-10-28"


def refund_events_sent(api_version: str) -> bool:
    return api_version >= REFUND_EVENTS_SINCE


def charge(row: Charge, refunds: list[Refund] | None = None, disputed: bool = False) -> dict[str, Any]:
    """A succeeded `charge`; with `refunds` (older API versions), its refunds listed newest first."""
    card = row.payment_method_type == "card"
    result = {
        "id": row.id,
        "object": "charge",
        "amount": row.amount,
        "amount_captured": row.amount,
        "amount_refunded": row.amount_refunded,
        "application": None,
        "application_fee": None,
        "application_fee_amount": None,
        "balance_transaction": None,
        "billing_details": {"address": _address(), "email": row.email, "name": None, "phone": None, "tax_id": None},
        "calculated_statement_descriptor": "EMULATED SHOP",
        "captured": True,
        "created": row.created,
        "currency": row.currency,
        "customer": None,
        "description": None,
        "disputed": disputed,
        "failure_balance_transaction": None,
        "failure_code": None,
        "failure_message": None,
        "fraud_details": {},
        "livemode": False,
        "metadata": {},
        "on_behalf_of": None,
        "outcome": {
            "network_status": "approved_by_network",
            "reason": None,
            "risk_level": "normal",
            "seller_message": "Payment complete.",
            "type": "authorized",
        },
        "paid": True,
        "payment_intent": row.payment_intent,
        "payment_method": None,
        "payment_method_details": (
            {"type": "card", "card": {"brand": "visa", "country": "US", "exp_month": 12, "exp_year": 2034,
                                      "funding": "credit", "last4": "4242", "network": "visa"}}
            if card
            else {"type": row.payment_method_type, row.payment_method_type: {}}
        ),
        "receipt_email": row.email,
        "receipt_number": None,
        "receipt_url": None,
        "refunded": row.amount_refunded >= row.amount,
        "review": None,
        "shipping": None,
        "source_transfer": None,
        "statement_descriptor": None,
        "statement_descriptor_suffix": None,
        "status": "succeeded",
        "transfer_data": None,
        "transfer_group": None,
    }
    if row.presentment_currency is not None:
        result["presentment_details"] = _presentment_details(row)
    if refunds is not None:
        result["refunds"] = list_object(
            [refund(item, row) for item in refunds], f"/v1/charges/{row.id}/refunds", False
        )
    return result


def refund(row: Refund, charge_row: Charge) -> dict[str, Any]:
    result = {
        "id": row.id,
        "object": "refund",
        "amount": row.amount,
        "balance_transaction": None,
        "charge": charge_row.id,
        "created": row.created,
        "currency": charge_row.currency,
        "destination_details": None,
        "metadata": row.metadata_,
        "payment_intent": charge_row.payment_intent,
        "reason": row.reason,
        "receipt_number": None,
        "source_transfer_reversal": None,
        "status": row.status,
        "transfer_reversal": None,
    }
    if row.failure_reason:
        result["failure_reason"] = row.failure_reason
    return result


# Every evidence field of a dispute (Stripe lists them all, null until given).
EVIDENCE_FIELDS = (
    "access_activity_log", "billing_address", "cancellation_policy", "cancellation_policy_disclosure",
    "cancellation_rebuttal", "customer_communication", "customer_email_address", "customer_name",
    "customer_purchase_ip", "customer_signature", "duplicate_charge_documentation", "duplicate_charge_explanation",
    "duplicate_charge_id", "product_description", "receipt", "refund_policy", "refund_policy_disclosure",
    "refund_refusal_explanation", "service_date", "service_documentation", "shipping_address", "shipping_carrier",
    "shipping_date", "shipping_documentation", "shipping_tracking_number", "uncategorized_file", "uncategorized_text",
)
INQUIRY_STATUSES = frozenset({"warning_needs_response", "warning_under_review", "warning_closed"})


def dispute_balance_transaction(amount: int, fee: int, currency: str, created: int, source: str) -> dict[str, Any]:
    """A dispute's withdrawal (negative amount, the fee) or reinstatement (positive, the fee back)."""
    return {
        "id": new_id("txn_"),
        "object": "balance_transaction",
        "amount": amount,
        "available_on": created,
        "created": created,
        "currency": currency,
        "description": "Chargeback withdrawal" if amount < 0 else "Chargeback reversal",
        "exchange_rate": None,
        "fee": fee,
        "fee_details": [{"amount": fee, "application": None, "currency": currency, "description": "Dispute fee",
                         "type": "stripe_fee"}] if fee else [],
        "net": amount - fee,
        "reporting_category": "dispute" if amount < 0 else "dispute_reversal",
        "source": source,
        "status": "available",
        "type": "adjustment",
    }


def dispute(row: Dispute, charge_row: Charge, now: float) -> dict[str, Any]:
    """A `dispute` of a charge, as Stripe's published fixture has it."""
    open_ = row.status in ("needs_response", "warning_needs_response")
    return {
        "id": row.id,
        "object": "dispute",
        "amount": row.amount,
        "balance_transactions": row.balance_transactions,
        "charge": charge_row.id,
        "created": row.created,
        "currency": charge_row.currency,
        "evidence": {name: row.evidence.get(name) for name in EVIDENCE_FIELDS} | {"enhanced_evidence": {}},
        "evidence_details": {
            "due_by": row.due_by,
            "has_evidence": bool(row.evidence),
            "past_due": open_ and now > row.due_by,
            "submission_count": row.submission_count,
            "enhanced_eligibility": {},
        },
        "is_charge_refundable": row.status in INQUIRY_STATUSES,
        "livemode": False,
        "metadata": {},
        "payment_intent": charge_row.payment_intent,
        "payment_method_details": {
            "card": {"brand": "visa", "case_type": "inquiry" if row.status in INQUIRY_STATUSES else "chargeback",
                     "network_reason_code": "10.4" if row.reason == "fraudulent" else "13.1"},
            "type": "card",
        },
        "reason": row.reason,
        "status": row.status,
        "enhanced_eligibility_types": [],
    }


def payment_intent(intent_id: str, amount: int, currency: str, created: int) -> dict[str, Any]:
    """A succeeded `payment_intent` (the emulator stores none; other integrations' payments)."""
    return {
        "id": intent_id,
        "object": "payment_intent",
        "amount": amount,
        "amount_capturable": 0,
        "amount_details": {"tip": {}},
        "amount_received": amount,
        "application": None,
        "application_fee_amount": None,
        "automatic_payment_methods": {"allow_redirects": "always", "enabled": True},
        "canceled_at": None,
        "cancellation_reason": None,
        "capture_method": "automatic",
        "client_secret": f"{intent_id}_secret_{new_id('', 25)}",
        "confirmation_method": "automatic",
        "created": created,
        "currency": currency,
        "customer": None,
        "description": None,
        "last_payment_error": None,
        "latest_charge": new_id("ch_"),
        "livemode": False,
        "metadata": {},
        "next_action": None,
        "on_behalf_of": None,
        "payment_method": new_id("pm_"),
        "payment_method_configuration_details": None,
        "payment_method_options": {},
        "payment_method_types": ["card"],
        "processing": None,
        "receipt_email": None,
        "review": None,
        "setup_future_usage": None,
        "shipping": None,
        "statement_descriptor": None,
        "statement_descriptor_suffix": None,
        "status": "succeeded",
        "transfer_data": None,
        "transfer_group": None,
    }


def customer(customer_id: str, created: int) -> dict[str, Any]:
    return {
        "id": customer_id,
        "object": "customer",
        "address": None,
        "balance": 0,
        "created": created,
        "currency": None,
        "default_source": None,
        "delinquent": False,
        "description": None,
        "discount": None,
        "email": "someone@example.net",
        "invoice_prefix": new_id("", 8).upper(),
        "invoice_settings": {"custom_fields": None, "default_payment_method": None, "footer": None,
                             "rendering_options": None},
        "livemode": False,
        "metadata": {},
        "name": None,
        "next_invoice_sequence": 1,
        "phone": None,
        "preferred_locales": [],
        "shipping": None,
        "tax_exempt": "none",
        "test_clock": None,
    }


def event(row: Event, pending_webhooks: int) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "event",
        "api_version": row.api_version,
        "created": row.created,
        "data": {"object": row.object},
        "livemode": False,
        "pending_webhooks": pending_webhooks,
        "request": {"id": row.request_id, "idempotency_key": row.idempotency_key},
        "type": row.type,
    }


ZERO_DECIMAL = frozenset(
    "bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split()
)
_SYMBOLS = {"usd": "$", "eur": "€", "gbp": "£", "jpy": "¥", "cad": "CA$", "aud": "A$"}


def format_amount(amount: int, currency: str) -> str:
    """`1234, "usd"` -> `$12.34`; zero-decimal currencies have no minor unit."""
    value = f"{amount:,}" if currency in ZERO_DECIMAL else f"{amount / 100:,.2f}"
    symbol = _SYMBOLS.get(currency)
    return f"{symbol}{value}" if symbol else f"{value} {currency.upper()}"


def error(error_type: str, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"type": error_type, "message": message}
    if param:
        body["param"] = param
    if code:
        body["code"] = code
    return {"error": body}
