"""Which client a request comes from, as far as the shop can trust it.

`X-Forwarded-For` is a list anyone can start: each proxy appends the address that connected to
it, so only the entries added by proxies the operator runs (or rents) are true. With
`TRUSTED_PROXY_HOPS=n` the shop takes the n-th address from the right (`ProxyFix(x_for=n)`),
and the other `X-Forwarded-*` headers likewise; with 0 it uses the connection's own address
and ignores those headers, so a header a client made up changes nothing. The default is 1 on a
Heroku-style dyno (`DYNO` is set; the router appends the address that reached it) and 0
elsewhere.

Bounds that count per client (the checkout's rate limits, the stock share, the operator's
login throttle) group IPv6 addresses by their /64 (`IPV6_CLIENT_PREFIX`): one host is given a
whole /64 and may use any address in it. IPv4 addresses count one by one.
"""
from __future__ import annotations

import ipaddress
import logging
from functools import lru_cache

from flask import Flask, current_app, request
from werkzeug.middleware.proxy_fix import ProxyFix

log = logging.getLogger("shop.client_address")


def init_app(app: Flask) -> None:
    """Trust the forwarded headers of exactly the configured number of proxies; say which in production."""
    hops = app.config["TRUSTED_PROXY_HOPS"]
    if hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops)  # type: ignore[method-assign]
    if app.config["APP_ENV"] == "production":
        log.info("client addresses: %s", describe_source(hops, app.config["IPV6_CLIENT_PREFIX"]))


def describe_source(hops: int, ipv6_prefix: int) -> str:
    if hops:
        source = f"X-Forwarded-For, the address {hops} proxy hop(s) from the right (TRUSTED_PROXY_HOPS={hops})"
    else:
        source = "the connection's own address; X-Forwarded-* headers are ignored (TRUSTED_PROXY_HOPS=0)"
    return f"{source}; IPv6 grouped by /{ipv6_prefix}"


def client_address() -> str:
    """The requesting client: its IPv4 address, or the IPv6 network it belongs to."""
    return client_group(request.remote_addr or "", current_app.config["IPV6_CLIENT_PREFIX"])


@lru_cache(maxsize=4096)
def client_group(address: str, ipv6_prefix: int) -> str:
    """`address` as one client: IPv4 (or IPv4-mapped IPv6) as is, other IPv6 as its network."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address or "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, ipv6_prefix), strict=False))
    return str(ip)
