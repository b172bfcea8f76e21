"""Property: any sequence of an order's events (its session's, its refunds', other
integrations', and one that can never be handled), resent, reordered or failing mid-way,
ends where a serial reference model says; never un-pays or mis-pays; and a sync after any
prefix of the deliveries brings it to the same state as the model, with every refund Stripe
reported reflected."""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from shop import events, orders, paid_sessions, recovery, stripe_gateway
from shop.extensions import db
from shop.models import Dispute, Order, StripeEvent
from tests.helpers import (
    ShopClient,
    dispute_event,
    get_order,
    post_event,
    refund_event,
    refund_object_event,
    session_event,
)
from tests.reliability.reference import (
    DISPUTE_STATES,
    FAILED_REFUND,
    KINDS,
    PAID,
    TAKES_MONEY,
    ModelEvent,
    ModelOrder,
    apply,
)

MISMATCHES = {"amount": {"amount_total": 1}, "currency": {"currency": "eur"}}
TOTAL = 2400  # one enamel mug
SESSION_KINDS = sorted(KINDS)
OTHER_KINDS = ["refund", "refund_failed", "dispute_opened", "dispute_lost", "foreign_session", "legacy_refund",
               "foreign_refund"]
AFTER_PAYMENT_KINDS = ("refund", "refund_failed", "dispute_opened", "dispute_lost")
POISON_MARK = {"poison": "this event can never be handled"}


@dataclass(frozen=True)
class Delivery:
    """Send event number `index` of the pool; `fails` makes the database fail mid-handling."""

    index: int
    fails: bool


@st.composite
def model_events(draw: st.DrawFn) -> tuple[ModelEvent, str | None]:
    """One event and, for a payment, how it mismatches the order (or None)."""
    kind = draw(st.sampled_from(SESSION_KINDS + OTHER_KINDS))
    mismatch = draw(st.sampled_from([None, None, *MISMATCHES])) if kind in TAKES_MONEY else None
    refunded = draw(st.sampled_from([1000, 1500, TOTAL])) if kind == "refund" else 0
    return ModelEvent(kind, matches=mismatch is None, refunded=refunded), mismatch


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[tuple[ModelEvent, str | None]], list[Delivery]]:
    """1-7 distinct events, sometimes one of them poison, and up to 12 deliveries of them."""
    pool = draw(st.lists(model_events(), min_size=1, max_size=7))
    # A charge's refunded total never shrinks from one charge.refunded to the next (created in
    # pool order) unless a refund fails, and that is an event of its own.
    totals = iter(sorted(event.refunded for event, _ in pool if event.kind == "refund"))
    pool = [(replace(event, refunded=next(totals)) if event.kind == "refund" else event, m) for event, m in pool]
    pool = [(replace(event, at=index), m) for index, (event, m) in enumerate(pool)]
    if draw(st.booleans()):
        index = draw(st.integers(0, len(pool) - 1))
        event, mismatch = pool[index]
        pool[index] = (replace(event, poison=True), mismatch)
    deliveries = draw(
        st.lists(
            st.builds(Delivery, st.integers(0, len(pool) - 1), st.sampled_from([False, False, False, True])),
            max_size=12,
        )
    )
    return pool, deliveries


class FlakyHandlers:
    """Wraps the order handlers: when armed, the database fails after the work; a poison
    event (marked in its object's metadata) always fails."""

    def __init__(self, patch: pytest.MonkeyPatch) -> None:
        self.armed = False
        patch.setattr(orders, "apply_session_event", self._wrap(orders.apply_session_event, lambda args: args[-1]))
        for event_type, handler in events.HANDLERS.items():
            if event_type not in orders.SESSION_EVENTS:  # those call the wrapped apply_session_event
                patch.setitem(events.HANDLERS, event_type, self._wrap(handler, lambda args: args[0]["data"]["object"]))
        patch.setattr(paid_sessions, "try_paying", self._wrap_fast_path(paid_sessions.try_paying))

    def _wrap_fast_path(self, real: Any) -> Any:
        """A failure in the fast path changes nothing and hands the event to the general intake
        (test_webhook.py proves it): the faults are injected there, in the handlers above."""

        def try_paying(event: dict[str, Any]) -> str | None:
            if self.armed or event["data"]["object"].get("metadata", {}).get("poison"):
                return None
            return real(event)

        return try_paying

    def _wrap(self, real: Any, object_of: Any) -> Any:
        def handler(*args: Any) -> orders.Outcome:
            if object_of(args).get("metadata", {}).get("poison"):
                raise ValueError("poison: this event can never be handled")
            outcome = real(*args)
            if self.armed:
                raise OperationalError("UPDATE orders ...", {}, Exception("server closed the connection unexpectedly"))
            return outcome

        return handler


def stripe_event(order: Order, event: ModelEvent, mismatch: str | None, payment_intent: str, created: int) -> dict[str, Any]:
    if event.kind in KINDS:
        event_type, payment_status = KINDS[event.kind]
        stripe = session_event(
            order, event_type, payment_status=payment_status, payment_intent=payment_intent, **MISMATCHES.get(mismatch, {})
        )
    elif event.kind == "refund":
        stripe = refund_event(payment_intent, event.refunded, TOTAL)
    elif event.kind == "refund_failed":
        stripe = refund_object_event("refund.failed", "re_" + payment_intent, payment_intent, FAILED_REFUND, "failed", created,
                                     "expired_or_canceled_card")
    elif event.kind in DISPUTE_STATES:
        event_type = "charge.dispute.created" if event.kind == "dispute_opened" else "charge.dispute.closed"
        stripe = dispute_event(event_type, "dp_" + payment_intent, payment_intent, DISPUTE_STATES[event.kind], created, amount=TOTAL)
    elif event.kind == "foreign_session":
        stripe = session_event(
            order, "checkout.session.completed", id="cs_test_another_integrations", mode="setup", amount_total=None,
            currency=None, client_reference_id=None, payment_intent=None, metadata={},
        )
    else:
        stripe = refund_event(None if event.kind == "legacy_refund" else "pi_another_integrations", 500, 500)
    if event.poison:
        stripe["data"]["object"]["metadata"] = POISON_MARK
    stripe["created"] = created
    return stripe


def event_rows(app) -> dict[str, tuple[str, int | None, int]]:
    with app.app_context():
        rows = db.session.execute(select(StripeEvent.id, StripeEvent.state, StripeEvent.order_id, StripeEvent.failures))
        return {row.id: (row.state, row.order_id, row.failures) for row in rows}


def assert_matches_model(app, order: Order, model: ModelOrder, previous: str) -> str:
    actual = get_order(app, order.public_id)
    assert (actual.status, actual.amount_refunded) == (model.status, model.amount_refunded)
    with app.app_context():
        dispute = db.session.scalar(select(Dispute.status).where(Dispute.order_id == actual.id))
    assert dispute == model.dispute_status
    assert previous not in PAID or actual.status in PAID, "a paid order was un-paid"
    assert (actual.review_reason is not None) == model.flagged
    return actual.status


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scenario=scenarios())
def test_any_event_sequence_ends_as_the_reference_model_says(app, scenario):
    """Each example places its own order, so the shared `app` fixture carries nothing over."""
    pool, deliveries = scenario
    app.config["PROPAGATE_EXCEPTIONS"] = False  # a crash answers 500, as in production
    order = ShopClient(app).start({"enamel-mug": 1})
    payment_intent = f"pi_{order.public_id[4:]}"
    start = int(time.time()) - 100
    events = [stripe_event(order, e, m, payment_intent, start + i) for i, (e, m) in enumerate(pool)]
    model, status, handled = ModelOrder(TOTAL), "awaiting_payment", set()
    with pytest.MonkeyPatch.context() as patch:
        flaky = FlakyHandlers(patch)
        for delivery in deliveries:
            model_event, event = pool[delivery.index][0], events[delivery.index]
            recorded = event_rows(app).get(event["id"])
            flaky.armed = delivery.fails
            response = post_event(app, event)

            if recorded is not None and recorded[0] in ("applied", "needs_review", "not_ours"):
                assert (response.status_code, response.json["duplicate"]) == (200, True)
            elif model_event.poison or delivery.fails:
                assert response.status_code == 500
            else:
                assert (response.status_code, response.json["duplicate"]) == (200, False), response.get_data(as_text=True)
                handled.add(event["id"])
                model = apply(model, model_event)
            before = status
            status = assert_matches_model(app, order, model, status)
            if status in PAID and before not in PAID:
                assert model_event.kind in TAKES_MONEY and model_event.matches, "paid by an event that does not match"

        # Stripe's event list is the pool; the sync after this prefix of deliveries applies
        # what never got through, oldest first, and goes past the poison event.
        flaky.armed = False
        patch.setattr(stripe_gateway, "events_since", lambda created_after: list(reversed(events)))
        for index in sorted(range(len(pool)), key=lambda i: events[i]["created"]):
            if events[index]["id"] not in handled and not pool[index][0].poison:
                model = apply(model, pool[index][0])
        for _ in range(2):  # and a second sync changes nothing
            with app.app_context():
                report = recovery.sync_with_stripe()
            assert len(report.failed) == sum(event.poison for event, _ in pool)
            status = assert_matches_model(app, order, model, status)

    rows = event_rows(app)
    for (event, _), stripe in zip(pool, events, strict=True):
        state, order_id, failures = rows[stripe["id"]]
        if event.poison:
            assert state == "failed" and failures >= 2, "a poison event stays visible, never silent"
        elif event.kind in ("foreign_session", "legacy_refund"):
            assert (state, order_id) == ("not_ours", None), "no order changes for an event that isn't its own"
        elif event.kind == "foreign_refund":
            assert (state, order_id) == ("waiting", None), "no order changes for an event that isn't its own"
        elif event.kind in AFTER_PAYMENT_KINDS:
            assert state == ("applied" if model.session_state == "paid" else "waiting"), f"a {event.kind} Stripe reported is lost"
        else:  # a payment that doesn't match its order is listed for the operator
            assert (state, order_id) == ("needs_review" if event.flags_for_review else "applied", order.id)
