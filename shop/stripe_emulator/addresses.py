"""Where the emulator is reached, and where it reaches the shop, taken from the request served.

Nothing here is configured: the shop may be run with `flask run --host/--port`, gunicorn on
any `PORT`, opened as `localhost`, `127.0.0.1` or a LAN address, or behind a proxy.

- The hosted payment page lives at the address the API call reached, as the shopper's browser
  sees it (after `ProxyFix` applied `X-Forwarded-*`). The in-process SDK client calls the API
  at the address of the shop request it is serving, so the page is where the shop is.
- Webhooks go to the address the server accepted that request on, before any proxy headers:
  the socket it listens on, which the server can always reach from itself. It is stored with
  the session, so every worker (and every later event of that session) uses it.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

WEBHOOK_PATH = "/webhooks/stripe"
# Where the SDK is pointed outside a request (CLI commands), and where events go whose session
# has no recorded target (one created before targets were recorded).
FALLBACK_ORIGIN = "http://127.0.0.1:5000"
# An in-process API call carries the serving request's origin under this environ key.
SERVER_ORIGIN_KEY = "shop.stripe_emulator.server_origin"
# What a server listening on every interface is reached at from the same machine.
_WILDCARD_HOSTS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}


def server_origin(environ: Mapping[str, Any]) -> str:
    """`scheme://host:port` of the socket that accepted this request, ignoring proxy headers."""
    if SERVER_ORIGIN_KEY in environ:
        return str(environ[SERVER_ORIGIN_KEY])
    direct = {**environ, **environ.get("werkzeug.proxy_fix.orig", {})}
    scheme = direct.get("wsgi.url_scheme", "http")
    host, port = str(direct.get("SERVER_NAME", "")), str(direct.get("SERVER_PORT", ""))
    if not port.isdigit():  # e.g. a unix socket: the Host header is all there is
        return f"{scheme}://{direct.get('HTTP_HOST', '127.0.0.1')}"
    host = _WILDCARD_HOSTS.get(host, host)
    if ":" in host:
        host = f"[{host}]"
    if (scheme, port) in (("http", "80"), ("https", "443")):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def webhook_target(environ: Mapping[str, Any]) -> str:
    """Where events about a session created by this request are delivered."""
    return server_origin(environ) + WEBHOOK_PATH


def delivery_url(override: str | None, recorded: str | None) -> str:
    """Where a delivery goes: the configured override, else what its session recorded."""
    return override or recorded or FALLBACK_ORIGIN + WEBHOOK_PATH
