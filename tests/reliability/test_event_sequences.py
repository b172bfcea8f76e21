"""Property: any sequence of a session's events, resent, reordered or failing mid-way, ends
where a serial reference model of the state machine says, and never un-pays or mis-pays."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from shop import orders
from shop.extensions import db
from shop.models import Order, StripeEvent
from tests.helpers import ShopClient, get_order, post_event, session_event
from tests.reliability.reference import KINDS, PAID, TAKES_MONEY, ModelEvent, apply

MISMATCHES = {"amount": {"amount_total": 1}, "currency": {"currency": "eur"}}


@dataclass(frozen=True)
class Delivery:
    """Send event number `index` of the pool; `fails` makes the database fail mid-handling."""

    index: int
    fails: bool


@st.composite
def event_pool(draw: st.DrawFn) -> list[tuple[ModelEvent, str | None]]:
    """1-5 distinct events of one session, each (model event, how it mismatches or None)."""
    size = draw(st.integers(1, 5))
    pool = []
    for _ in range(size):
        kind = draw(st.sampled_from(sorted(KINDS)))
        mismatch = draw(st.sampled_from([None, None, *MISMATCHES])) if kind in TAKES_MONEY else None
        pool.append((ModelEvent(kind, matches=mismatch is None), mismatch))
    return pool


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[tuple[ModelEvent, str | None]], list[Delivery]]:
    pool = draw(event_pool())
    deliveries = draw(
        st.lists(
            st.builds(Delivery, st.integers(0, len(pool) - 1), st.sampled_from([False, False, False, True])),
            min_size=1,
            max_size=10,
        )
    )
    return pool, deliveries


class FlakyDatabase:
    """Wraps `orders.apply_session_event`: when armed, does the work, then the database fails."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.armed = False

    def __call__(self, *args: Any, **kwargs: Any) -> orders.Outcome:
        outcome = self.real(*args, **kwargs)
        if self.armed:
            raise OperationalError("UPDATE orders ...", {}, Exception("server closed the connection unexpectedly"))
        return outcome


def stripe_event(order: Order, event: ModelEvent, mismatch: str | None) -> dict[str, Any]:
    event_type, payment_status = KINDS[event.kind]
    return session_event(order, event_type, payment_status=payment_status, **MISMATCHES.get(mismatch, {}))


def recorded_ids(app, order: Order) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(select(StripeEvent.id).where(StripeEvent.order_id == order.id)))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scenario=scenarios())
def test_any_event_sequence_ends_as_the_reference_model_says(app, scenario):
    """Each example places its own order, so the shared `app` fixture carries nothing over."""
    pool, deliveries = scenario
    app.config["PROPAGATE_EXCEPTIONS"] = False  # a crash answers 500, as in production
    order = ShopClient(app).start({"enamel-mug": 1})
    events = [stripe_event(order, event, mismatch) for event, mismatch in pool]
    expected, status, flagged, applied = "awaiting_payment", "awaiting_payment", False, set()
    with pytest.MonkeyPatch.context() as patch:
        flaky = FlakyDatabase(orders.apply_session_event)
        patch.setattr(orders, "apply_session_event", flaky)
        for delivery in deliveries:
            model, event = pool[delivery.index][0], events[delivery.index]
            first_time = event["id"] not in applied
            flaky.armed = delivery.fails
            response = post_event(app, event)

            if delivery.fails and first_time:
                assert response.status_code == 500
            else:
                assert response.status_code == 200, response.get_data(as_text=True)
                assert response.json["duplicate"] is not first_time
                if first_time:
                    applied.add(event["id"])
                    expected = apply(expected, model)
                    flagged = flagged or model.flags_for_review

            previous, actual = status, get_order(app, order.public_id)
            status = actual.status
            assert status == expected, (delivery, status, expected)
            assert previous not in PAID or status in PAID, "a paid order was un-paid"
            if status == "paid" and previous != "paid":
                assert model.kind in TAKES_MONEY and model.matches, "paid by an event that does not match"
            assert (actual.review_reason is not None) == flagged

    assert sorted(recorded_ids(app, order)) == sorted(applied)  # each id once; failed attempts left nothing
