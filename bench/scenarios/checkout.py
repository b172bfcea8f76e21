"""Checkout against the offline emulator in its own process (no added latency): many first-time
shoppers, one order each, loaded with wrk; the same against the checkout floor, alternating."""
from __future__ import annotations

import secrets
import time
from urllib.parse import urlencode

from checks import check_checkout
from load import Load
from shoppers import Browser, write_shoppers

from . import Context

# The shop and its floor each get a measured load and a warm-up of this many shoppers at most.
SHOPPERS_PER_SECOND = 600
WARM_UP_SHOPPERS = 600


def one_unit_form(ctx: Context) -> str:
    """The checkout form's quantities (one of the first product), as the home page names them."""
    _, quantity_fields = Browser(ctx.stack.servers["shop"].base).form()
    return urlencode({quantity_fields[0]: "1", **{name: "0" for name in quantity_fields[1:]}})


def run(ctx: Context) -> None:
    opts, conn, runner, work = ctx.opts, ctx.conn, ctx.runner, ctx.stack.work
    form = one_unit_form(ctx)
    for round_no in range(opts.repeat):
        for name, server in (("floor_checkout", "floor"), ("checkout", "shop")):
            checks = ctx.checks.setdefault(name, [])
            prefix, warm_prefix = (f"{kind}{round_no}{secrets.token_hex(10)}"[:20] for kind in ("b", "w"))
            buyers, warm_buyers = work / f"{name}-buyers-{round_no}.tsv", work / f"{name}-warm-{round_no}.tsv"
            write_shoppers(buyers, ctx.stack.secret_key, max(2000, int(opts.duration * SHOPPERS_PER_SECOND)))
            write_shoppers(warm_buyers, ctx.stack.secret_key, WARM_UP_SHOPPERS)

            def after(load: Load, prefix: str = prefix, checks: list[dict] = checks) -> None:
                deadline = time.monotonic() + 20  # requests still in flight when wrk stopped finish on their own
                while time.monotonic() < deadline and conn.execute(
                        "SELECT count(*) FROM orders WHERE checkout_token LIKE %s AND status = 'pending'",
                        (prefix + "%",)).fetchone()[0]:
                    time.sleep(0.5)
                checks.append(check_checkout(conn, prefix, load, opts.connections, runner.errors))

            runner.load(name, server, "/checkout", "checkout", 303,
                        prepare=lambda p=prefix, w=warm_prefix, b=buyers, wb=warm_buyers: (
                            [p, form, str(b)], [w, form, str(wb)]),
                        after=after)
