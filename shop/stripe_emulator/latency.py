"""How long the emulated API takes to answer: `STRIPE_EMULATOR_LATENCY`.

Offline, the emulator answers in a millisecond or two; Stripe answers over the internet in
hundreds. A server that waits on Stripe in a thread per request behaves very differently
under a crowd at each, so the bench and anyone sizing a server can make it wait like Stripe:

- `typical`: 400 ms, what a bare API request from a developer's machine to api.stripe.com
  was measured at (0.41 s, 202-ecommerce/stripe_official#145);
- `slow`: 1,250 ms, the median of test-mode charge creations measured under load (1.24 s,
  95 % under 2 s, stripe/stripe-java#570, where Stripe's maintainers called such times
  normal for test mode);
- a number: that many milliseconds;
- `off` or empty (the default): no added wait.

Stripe publishes no latency figures of its own (stripe/stripe-java#570: "we don't have a
document referencing the average response times"), hence these measured ones. Each request
waits the figure give or take a quarter (uniformly), before anything else happens, as the
network's time comes before Stripe's work. It never holds a database connection.
"""
from __future__ import annotations

import random
import time

PROFILES_MS = {"off": 0.0, "typical": 400.0, "slow": 1250.0}
JITTER = 0.25  # each wait is the figure ± this fraction of it


def seconds_from_setting(value: object) -> float:
    """The setting's figure in seconds; ValueError for anything but a profile name or milliseconds."""
    text = str(value if value is not None else "").strip().lower()
    if text in ("", "0"):
        return 0.0
    if text in PROFILES_MS:
        return PROFILES_MS[text] / 1000
    try:
        milliseconds = float(text)
    except ValueError:
        milliseconds = -1.0
    if not 0 <= milliseconds <= 60_000:
        raise ValueError(
            f"STRIPE_EMULATOR_LATENCY must be {', '.join(PROFILES_MS)} or milliseconds (0–60000), not {value!r}"
        )
    return milliseconds / 1000


def wait(seconds: float) -> None:
    """Wait about `seconds` (± JITTER of it), as one request to Stripe does."""
    if seconds > 0:
        time.sleep(random.uniform(seconds * (1 - JITTER), seconds * (1 + JITTER)))
