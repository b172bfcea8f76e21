"""The only place the shop talks to Stripe. Everything goes through the official SDK.

Where the SDK sends its requests is configuration (`STRIPE_API_BASE` and an optional
`stripe_http_client` extension), so the same code drives Stripe or its offline stand-in.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import stripe
from flask import current_app

from .models import Order


class PaymentProviderError(Exception):
    """Stripe could not be reached or refused the request; safe to retry later."""


class CheckoutWindowClosed(PaymentProviderError):
    """The order is too old for a new Checkout Session (see `session_expires_at`)."""


class SessionBeingCreated(PaymentProviderError):
    """Another request (a double click's twin) holds this order's idempotency key right now.

    Stripe answers such a request 409 `idempotency_error`; the twin gets the session, so the
    order must not be failed. Trying again later replays the twin's session.
    """


class WebhookVerificationError(Exception):
    """A webhook body that is not a correctly signed, fresh Stripe event."""


@dataclass(frozen=True)
class CheckoutSession:
    id: str
    url: str


def _client() -> stripe.StripeClient:
    """The app's SDK client, kept so its HTTP connections are reused between requests."""
    config = current_app.config
    http_client = current_app.extensions.get("stripe_http_client")
    settings = (config["STRIPE_SECRET_KEY"], config.get("STRIPE_API_BASE"), http_client, config["STRIPE_MAX_NETWORK_RETRIES"])
    cached = current_app.extensions.get("stripe_client")
    if cached is None or cached[0] != settings:
        key, base, _, retries = settings
        client = stripe.StripeClient(
            key, base_addresses={"api": base} if base else None, http_client=http_client, max_network_retries=retries
        )
        cached = current_app.extensions["stripe_client"] = (settings, client)
    return cached[1]


def session_expires_at(order: Order) -> datetime:
    """When the order's Checkout Session expires: fixed by the order, never by the request.

    Every attempt for one order (the SDK's retries, a resubmitted form) must send identical
    parameters under its idempotency key: Stripe refuses a reused key with other parameters,
    and replays what it saved for the same ones. Stripe also wants `expires_at` at least 30
    minutes after the session's creation. So it is counted from the order's creation, with
    the time an order may stay `pending` (STALE_PENDING_MINUTES, after which the sweep expires
    it) added: any attempt in that window is valid. A later attempt still gets back a session
    an earlier one created (a replay is not validated again); if there is none, Stripe refuses
    the request and the checkout is closed (`CheckoutWindowClosed`).
    """
    return order.created_at + checkout_session_lifetime()


def checkout_session_lifetime() -> timedelta:
    """How long after its order was placed a Checkout Session can be paid (see `session_expires_at`)."""
    config = current_app.config
    return timedelta(minutes=config["CHECKOUT_SESSION_MINUTES"] + config["STALE_PENDING_MINUTES"])


def checkout_session_params(order: Order, success_url: str, cancel_url: str) -> dict[str, Any]:
    """Checkout Session parameters, priced from the order's server-side snapshot only."""
    return {
        "mode": "payment",
        "line_items": [
            {
                "price_data": {
                    "currency": order.currency,
                    "unit_amount": item.unit_amount,
                    "product_data": {"name": item.product_name},
                },
                "quantity": item.quantity,
            }
            for item in order.items
        ],
        "client_reference_id": order.public_id,
        "metadata": {"order_id": order.public_id},
        "expires_at": int(session_expires_at(order).timestamp()),
        "success_url": success_url,
        "cancel_url": cancel_url,
        **_shipping_params(),
    }


def _shipping_params() -> dict[str, Any]:
    """Checkout asks for the shipping address (and, by setting, a phone number for the carrier)."""
    config = current_app.config
    params: dict[str, Any] = {"shipping_address_collection": {"allowed_countries": list(config["SHIPPING_COUNTRIES"])}}
    if config["SHIPPING_PHONE"]:
        params["phone_number_collection"] = {"enabled": True}
    return params


def create_checkout_session(order: Order, success_url: str, cancel_url: str) -> CheckoutSession:
    """Create (or, for a retry of the same order, get back) the order's Checkout Session.

    The idempotency key is derived from the order, so neither the SDK's own retries nor a
    resubmitted form can make Stripe create a second session for one order. Only the id and
    the URL are read from Stripe's answer, so it is taken as JSON (the SDK's `raw_request`:
    the same request, retries and errors) rather than turned into the SDK's objects: building
    them for the whole session cost about as much CPU as the checkout's database work.
    """
    try:
        answer = _client().raw_request(
            "post",
            "/v1/checkout/sessions",
            **checkout_session_params(order, success_url, cancel_url),
            idempotency_key=f"checkout-session-{order.public_id}",
        )
    except stripe.InvalidRequestError as exc:
        if exc.param == "expires_at":
            raise CheckoutWindowClosed(str(exc)) from exc
        raise PaymentProviderError(str(exc)) from exc
    except stripe.IdempotencyError as exc:
        raise SessionBeingCreated(str(exc)) from exc
    except stripe.StripeError as exc:
        raise PaymentProviderError(str(exc)) from exc
    session = answer.data
    return CheckoutSession(id=session["id"], url=session.get("url") or "")


@dataclass(frozen=True)
class SessionState:
    """How a Checkout Session stands at Stripe: `status` open/complete/expired, and `payment_status`."""

    status: str
    payment_status: str


def retrieve_checkout_session(session_id: str) -> dict[str, Any]:
    """A Checkout Session as Stripe has it now, as a plain dict."""
    try:
        return _client().v1.checkout.sessions.retrieve(session_id).to_dict()
    except stripe.StripeError as exc:
        raise PaymentProviderError(str(exc)) from exc


def checkout_session_of_payment(payment_intent: str) -> dict[str, Any] | None:
    """The Checkout Session a PaymentIntent was created by, as a plain dict; None if none was.

    Stripe's session list filters on `payment_intent`, and a PaymentIntent belongs to at most
    one session. A payment made another way (an integration calling the PaymentIntents API, an
    invoice) has none.
    """
    try:
        page = _client().v1.checkout.sessions.list(params={"payment_intent": payment_intent, "limit": 1})
    except stripe.StripeError as exc:
        raise PaymentProviderError(str(exc)) from exc
    return page.data[0].to_dict() if page.data else None


def expire_checkout_session(session_id: str) -> SessionState:
    """Expire an open session so it can no longer be paid, and say how it stands afterwards."""
    session = expire_or_read_back(session_id)
    return SessionState(status=session.get("status") or "", payment_status=session.get("payment_status") or "")


def expire_or_read_back(session_id: str) -> dict[str, Any]:
    """Expire an open session so it can no longer be paid; the session as it then stands, as a plain dict.

    Stripe refuses to expire a session that is no longer open (it may have just been paid):
    then the session is read back, so the caller learns the truth instead of assuming it.
    """
    sessions = _client().v1.checkout.sessions
    try:
        try:
            session = sessions.expire(session_id)
        except stripe.InvalidRequestError:
            session = sessions.retrieve(session_id)
    except stripe.StripeError as exc:
        raise PaymentProviderError(str(exc)) from exc
    return session.to_dict()


def checkout_sessions_naming(order_public_id: str, created_from: datetime, created_to: datetime) -> list[dict[str, Any]]:
    """The Checkout Sessions created in [created_from, created_to] whose `client_reference_id` is the order's.

    Stripe's session list can't filter on `client_reference_id`, but it filters on `created`:
    the caller bounds when the order's sessions can have been created (see `stale_orders`).
    """
    params = {"created": {"gte": int(created_from.timestamp()), "lte": int(created_to.timestamp())}, "limit": 100}
    try:
        page = _client().v1.checkout.sessions.list(params=params)  # type: ignore[arg-type]
        return [session.to_dict() for session in page.auto_paging_iter() if session.client_reference_id == order_public_id]
    except stripe.StripeError as exc:
        raise PaymentProviderError(str(exc)) from exc


def refund_remaining(order: Order, attempt: str) -> dict[str, Any]:
    """Ask Stripe to refund what is left of a paid order; returns the refund Stripe made.

    The idempotency key names the order and the refund form's `attempt` token (one per showing
    of the form), so a double-submitted form makes one refund, while a form shown again after
    a failure gets a key of its own: Stripe replays a saved error, even a 500, for 24 hours.
    A second attempt can't refund twice: Stripe never refunds more than the charge.
    """
    try:
        refund = _client().v1.refunds.create(
            params={"payment_intent": order.payment_intent_id},  # type: ignore[typeddict-item]
            options={"idempotency_key": f"refund-{order.public_id}-{attempt}"},
        )
    except stripe.StripeError as exc:
        raise PaymentProviderError(str(exc)) from exc
    return refund.to_dict()


def events_since(created_after: int) -> Iterator[dict[str, Any]]:
    """Every event created after the given unix time, newest first, as plain dicts."""
    try:
        page = _client().v1.events.list(params={"created": {"gt": created_after}, "limit": 100})
        for event in page.auto_paging_iter():
            yield event.to_dict()
    except stripe.StripeError as exc:
        raise PaymentProviderError(str(exc)) from exc


def webhook_endpoints() -> list[dict[str, Any]]:
    """Every webhook endpoint of the account the key belongs to, as plain dicts."""
    try:
        page = _client().v1.webhook_endpoints.list(params={"limit": 100})
        return [endpoint.to_dict() for endpoint in page.auto_paging_iter()]
    except stripe.StripeError as exc:
        raise PaymentProviderError(str(exc)) from exc


def verify_webhook(payload: bytes, signature_header: str | None, secrets: list[str]) -> dict[str, Any]:
    """Check the Stripe-Signature of a raw webhook body against any configured secret.

    Several secrets are accepted so a secret can be rotated without losing events.
    """
    if not signature_header:
        raise WebhookVerificationError("Missing Stripe-Signature header.")
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(
                payload.decode("utf-8"), signature_header, secret, tolerance=stripe.Webhook.DEFAULT_TOLERANCE
            )
        except stripe.SignatureVerificationError:
            continue
        except (UnicodeDecodeError, ValueError, IndexError) as exc:
            raise WebhookVerificationError("Malformed Stripe-Signature header.") from exc
        break
    else:
        raise WebhookVerificationError("Invalid or expired Stripe-Signature.")
    try:
        event = json.loads(payload)
    except ValueError as exc:
        raise WebhookVerificationError("Body is not valid JSON.") from exc
    except RecursionError as exc:  # the parser's own limit, far past any event (see shop.event_shape)
        raise WebhookVerificationError("Body is nested too deeply to be a Stripe event.") from exc
    if not isinstance(event, dict):
        raise WebhookVerificationError("Body is not a Stripe event object.")
    return event
