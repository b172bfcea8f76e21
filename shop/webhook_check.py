"""Will Stripe send this shop every event it needs? (`flask stripe check`, and the operator view.)

Read from the account's webhook endpoints (`GET /v1/webhook_endpoints`), one finding each:

- the key's mode (test or live, secret `sk_` or restricted `rk_`) matches `ALLOW_LIVE_PAYMENTS`;
- an enabled endpoint points at `<shop URL>/webhooks/stripe`;
- it subscribes to every type in `events.HANDLED_EVENT_TYPES` (or to all, `*`): Stripe never
  sends an endpoint the types it isn't subscribed to, and no sync can tell they are missing;
- its API version is the one the shop's SDK is pinned to (`stripe.api_version`): events are
  rendered at the endpoint's version, and the shop reads the fields of its own. An endpoint
  without one (null) gets the account's default version, which the API doesn't reveal.

Any finding that fails would lose or misread events.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import stripe
from flask import current_app

from . import stripe_gateway
from .events import HANDLED_EVENT_TYPES


@dataclass(frozen=True)
class Finding:
    ok: bool
    text: str

    @property
    def line(self) -> str:
        return f"{'OK  ' if self.ok else 'FAIL'} {self.text}"


def configured_shop_url() -> str | None:
    """`SHOP_URL`; offline, where the shop serves the emulator (the origin of `STRIPE_API_BASE`)."""
    config = current_app.config
    if config.get("SHOP_URL"):
        return str(config["SHOP_URL"])
    if config.get("STRIPE_OFFLINE") and config.get("STRIPE_API_BASE"):
        parts = urlsplit(str(config["STRIPE_API_BASE"]))
        return f"{parts.scheme}://{parts.netloc}"
    return None


def webhook_url(shop_url: str) -> str:
    """Where Stripe must send this shop's events: its webhook's route, at `shop_url`."""
    return shop_url.rstrip("/") + current_app.url_map.bind("").build("webhooks.stripe_webhook")


def check(shop_url: str) -> list[Finding]:
    """Every finding about the account's webhook setup for the shop at `shop_url`."""
    findings = [key_mode()]
    try:
        endpoints = stripe_gateway.webhook_endpoints()
    except stripe_gateway.PaymentProviderError as exc:
        hint = " (a restricted key needs the Webhook Endpoints read permission)" if _key().startswith("rk_") else ""
        return [*findings, Finding(False, f"webhook endpoints: Stripe did not list them{hint}: {exc}")]
    target = webhook_url(shop_url)
    ours = sorted((e for e in endpoints if _same_url(e.get("url"), target)), key=lambda e: e.get("status") != "enabled")
    if not ours:
        elsewhere = ", ".join(str(e.get("url")) for e in endpoints) or "none"
        return [*findings, Finding(False, f"endpoint: no webhook endpoint points at {target} (the account's: {elsewhere})")]
    for endpoint in ours:
        findings.extend(_endpoint_findings(endpoint))
    return findings


def key_mode() -> Finding:
    """Whether the key's mode (test or live) is the one `ALLOW_LIVE_PAYMENTS` asks for."""
    key, live_allowed = _key(), bool(current_app.config.get("ALLOW_LIVE_PAYMENTS"))
    kind = "restricted" if key.startswith("rk_") else "secret"
    allowed = "ALLOW_LIVE_PAYMENTS=1" if live_allowed else "ALLOW_LIVE_PAYMENTS is off"
    if key.startswith(("sk_live_", "rk_live_")):
        if live_allowed:
            return Finding(True, f"key: live {kind} key ({key[:8]}…), {allowed}: real payments")
        return Finding(False, f"key: live {kind} key ({key[:8]}…) but {allowed}: the shop refuses to start with it")
    if key.startswith(("sk_test_", "rk_test_")):
        if live_allowed:
            return Finding(False, f"key: test {kind} key ({key[:8]}…) but {allowed}: no payment would be real")
        return Finding(True, f"key: test {kind} key ({key[:8]}…), {allowed}: test payments")
    return Finding(False, "key: STRIPE_SECRET_KEY is not a secret (sk_) or restricted (rk_) key")


def _endpoint_findings(endpoint: Mapping[str, Any]) -> list[Finding]:
    name = f"endpoint {endpoint.get('id')}"
    enabled = endpoint.get("status") == "enabled"
    subscribed = set(endpoint.get("enabled_events") or [])
    missing = [] if "*" in subscribed else [t for t in HANDLED_EVENT_TYPES if t not in subscribed]
    version, expected = endpoint.get("api_version"), stripe.api_version
    return [
        Finding(enabled, f"{name}: {endpoint.get('url')} is {endpoint.get('status')}"),
        Finding(
            not missing,
            f"{name}: subscribes to "
            + ("every event (*)" if "*" in subscribed else f"all {len(HANDLED_EVENT_TYPES)} event types the shop handles")
            if not missing
            else f"{name}: does not subscribe to {', '.join(missing)}: Stripe never sends those",
        ),
        Finding(
            version == expected,
            f"{name}: API version {version}"
            if version == expected
            else f"{name}: API version {version or 'unset (the account default)'}, the shop reads {expected}: "
            "events would arrive shaped for another version",
        ),
    ]


def _key() -> str:
    return str(current_app.config.get("STRIPE_SECRET_KEY") or "")


def _same_url(url: Any, target: str) -> bool:
    return isinstance(url, str) and url.rstrip("/") == target
