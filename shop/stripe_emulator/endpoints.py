"""The account's webhook endpoints (`/v1/webhook_endpoints`), as Stripe keeps them.

The emulator's own endpoint is where it delivers events: it exists from the start (created on
first use, subscribed to every event `["*"]`, at the SDK's API version, which is the version
the emulator renders events at), and its `url` is the delivery address (the configured
`STRIPE_EMULATOR_WEBHOOK_URL`, else the address the server accepted the request on, see
`addresses.py`). Like any endpoint it can be updated (`enabled_events`, `disabled`) or
deleted, and deliveries follow: an event type it doesn't subscribe to, or a disabled or
deleted endpoint, is not delivered, as Stripe sends an event only to the endpoints subscribed
to it. Endpoints created through the API are kept and listed (tests set up an endpoint on
another API version this way); the emulator does not deliver to them.
"""
from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

import stripe
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from shop.extensions import db

from . import objects
from .addresses import FALLBACK_ORIGIN, WEBHOOK_PATH, webhook_target
from .models import WebhookEndpoint
from .params import ParamError

OWN_ENDPOINT_ID = "we_emulator0own0endpoint0"
# An event type (`checkout.session.completed`), or a wildcard Stripe accepts (`*`, `charge.*`).
_EVENT_TYPE = re.compile(r"\*|[a-z_]+(\.[a-z_]+)*(\.\*)?")


def own_endpoint() -> WebhookEndpoint:
    """The emulator's own endpoint, created the first time it is needed."""
    endpoint = db.session.get(WebhookEndpoint, OWN_ENDPOINT_ID)
    if endpoint is not None:
        return endpoint
    try:
        with db.session.begin_nested():
            db.session.add(
                WebhookEndpoint(
                    id=OWN_ENDPOINT_ID, created=int(time.time()), url=None, enabled_events=["*"],
                    api_version=stripe.api_version, status="enabled", description="The Stripe emulator's deliveries",
                    metadata_={}, secret="whsec_" + objects.new_id("", 32), deleted=False,
                )
            )
    except IntegrityError:  # another request created it first
        pass
    return db.session.get(WebhookEndpoint, OWN_ENDPOINT_ID, populate_existing=True)


def subscribed(event_type: str) -> bool:
    """Whether the emulator's own endpoint takes events of this type (so one is delivered)."""
    endpoint = db.session.get(WebhookEndpoint, OWN_ENDPOINT_ID)
    if endpoint is None:  # never changed: as created, subscribed to everything
        return True
    return not endpoint.deleted and endpoint.status == "enabled" and _matches(endpoint.enabled_events, event_type)


def _matches(enabled_events: list[str], event_type: str) -> bool:
    return any(
        pattern == "*" or pattern == event_type or (pattern.endswith(".*") and event_type.startswith(pattern[:-1]))
        for pattern in enabled_events
    )


def create(values: Mapping[str, Any], now: float) -> WebhookEndpoint:
    _check_url(values["url"])
    own_endpoint()  # it was there first
    endpoint = WebhookEndpoint(
        id=objects.new_id("we_"), created=int(now), url=values["url"],
        enabled_events=_checked_events(values["enabled_events"]), api_version=values.get("api_version"),
        status="enabled", description=values.get("description"), metadata_=values.get("metadata", {}),
        secret="whsec_" + objects.new_id("", 32), deleted=False,
    )
    db.session.add(endpoint)
    return endpoint


def update(endpoint: WebhookEndpoint, values: Mapping[str, Any]) -> None:
    if "url" in values:
        _check_url(values["url"])
        endpoint.url = values["url"]
    if "enabled_events" in values:
        endpoint.enabled_events = _checked_events(values["enabled_events"])
    if "disabled" in values:
        endpoint.status = "disabled" if values["disabled"] else "enabled"
    if "description" in values:
        endpoint.description = values["description"]
    if "metadata" in values:
        endpoint.metadata_ = {**endpoint.metadata_, **values["metadata"]}


def listed() -> list[WebhookEndpoint]:
    """Every endpoint not deleted, newest first (the emulator's own among them)."""
    own_endpoint()
    return list(
        db.session.scalars(
            select(WebhookEndpoint)
            .where(WebhookEndpoint.deleted.is_(False))
            .order_by(WebhookEndpoint.created.desc(), WebhookEndpoint.id == OWN_ENDPOINT_ID, WebhookEndpoint.id.desc())
        )
    )


def endpoint_object(
    endpoint: WebhookEndpoint, delivery_override: str | None, environ: Mapping[str, Any] | None, with_secret: bool = False
) -> dict[str, Any]:
    """The `webhook_endpoint` object; `secret` only in the answer that created it, as on Stripe."""
    url = endpoint.url or delivery_override or (webhook_target(environ) if environ else FALLBACK_ORIGIN + WEBHOOK_PATH)
    result = {
        "id": endpoint.id,
        "object": "webhook_endpoint",
        "api_version": endpoint.api_version,
        "application": None,
        "created": endpoint.created,
        "description": endpoint.description,
        "enabled_events": list(endpoint.enabled_events),
        "livemode": False,
        "metadata": endpoint.metadata_,
        "status": endpoint.status,
        "url": url,
    }
    if with_secret:
        result["secret"] = endpoint.secret
    return result


def _check_url(url: str) -> None:
    if not re.match(r"^https?://[^\s/]+", url):
        raise ParamError("Invalid URL: URL must be publicly accessible and use http or https.", "url")


def _checked_events(events: list[str]) -> list[str]:
    for index, event_type in enumerate(events):
        if not _EVENT_TYPE.fullmatch(event_type):
            raise ParamError(f"Invalid enabled_events[{index}]: {event_type} is not an event type.", f"enabled_events[{index}]")
    if not events:
        raise ParamError("Missing required param: enabled_events.", "enabled_events")
    return list(events)
