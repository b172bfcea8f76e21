"""The emulated Stripe v1 API, under `/_stripe/v1` (form-encoded in, Stripe JSON out)."""
from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import stripe
from flask import Blueprint, Response, current_app, g, request, url_for
from sqlalchemy import Select, delete, exists, select, tuple_
from sqlalchemy.exc import IntegrityError

from shop.extensions import db

from . import addresses, core, endpoints, latency, objects
from .core import ApiError
from .models import Charge, CheckoutSession, Delivery, Dispute, Event, IdempotencyKey, Refund, WebhookEndpoint
from .params import (
    CREATE_REFUND_PARAMS,
    CREATE_SESSION_PARAMS,
    CREATE_WEBHOOK_ENDPOINT_PARAMS,
    LIST_EVENTS_PARAMS,
    LIST_PARAMS,
    LIST_SESSIONS_PARAMS,
    RETRIEVE_PARAMS,
    UPDATE_DISPUTE_PARAMS,
    UPDATE_WEBHOOK_ENDPOINT_PARAMS,
    Field,
    ParamError,
    parse_form,
    validate,
)

logger = logging.getLogger("shop.stripe_emulator")

bp = Blueprint("stripe_emulator_api", __name__, url_prefix="/_stripe/v1")

Handler = Callable[[], dict[str, Any]]

# Secret and restricted keys of a sandbox. Live keys (`sk_live_`, `rk_live_`) belong to no
# account this emulator knows, so they get Stripe's 401 for an invalid key.
TEST_KEY_PREFIXES = ("sk_test_", "rk_test_")


def _settings() -> core.Settings:
    return current_app.extensions["stripe_emulator"].settings


def _failures() -> core.FailurePlan:
    return current_app.extensions["stripe_emulator"].failures


def _json(body: Mapping[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(body, indent=2) + "\n", status=status, mimetype="application/json")


def _params(fields: Mapping[str, Field]) -> dict[str, Any]:
    source = request.form if request.method == "POST" else request.args
    raw = parse_form(source.items(multi=True))
    if isinstance(raw.get("created"), str):  # `created=<ts>` means exactly that second
        raw["created"] = {"gte": raw["created"], "lte": raw["created"]}
    try:
        return validate(raw, fields)
    except ParamError as error:
        raise ApiError.invalid(error) from None


def _expand(values: Mapping[str, Any], allowed: frozenset[str]) -> frozenset[str]:
    for path in values.get("expand", []):
        if path not in allowed:
            raise ApiError.invalid(ParamError(f"This property cannot be expanded ({path}).", "expand"))
    return frozenset(values.get("expand", []))


@bp.before_request
def _wait_like_stripe() -> None:
    latency.wait(_settings().latency)


@bp.before_request
def _authenticate() -> Response | None:
    g.stripe_request_id = objects.new_id("req_", 14)
    auth = request.authorization
    key = (auth.token if auth.type == "bearer" else auth.username) if auth else None
    if not key:
        error = ApiError(
            401, "invalid_request_error",
            "You did not provide an API key. You need to provide your API key in the Authorization header, "
            "using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
        )
        return _json(error.body, error.status)
    if not key.startswith(TEST_KEY_PREFIXES):
        # As Stripe does: the prefix and the last four characters, the rest starred.
        shown = 4 if len(key) > 12 else 0
        masked = key[:8] + "*" * (len(key) - 8 - shown) + key[len(key) - shown:]
        error = ApiError(401, "invalid_request_error", f"Invalid API Key provided: {masked}")
        return _json(error.body, error.status)
    g.stripe_api_key = key
    g.stripe_idempotency_key = request.headers.get("Idempotency-Key") if request.method == "POST" else None
    return None


@bp.after_request
def _stripe_headers(response: Response) -> Response:
    response.headers["Request-Id"] = g.get("stripe_request_id") or objects.new_id("req_", 14)
    response.headers["Stripe-Version"] = request.headers.get("Stripe-Version") or stripe.api_version
    return response


@bp.errorhandler(ApiError)
def _api_error(error: ApiError) -> Response:
    db.session.rollback()
    return _json(error.body, error.status)


def _run(handler: Handler) -> Response:
    """Run a handler in one transaction; an error (ApiError: see `_api_error`) rolls it back.

    A failure planned with `FailurePlan.add` answers 500 once the handler has run, with its
    work rolled back or, if so planned, committed.
    """
    try:
        body = handler()
        failure = _failures().take(request.method, _api_path())
        if failure is not None and not failure.work_committed:
            raise failure.error()
    except BaseException:
        db.session.rollback()
        raise
    db.session.commit()
    if failure is not None:
        raise failure.error()
    return _json(body)


def _api_path() -> str:
    """`/v1/...` as the SDK addressed it, whatever prefix the emulator is mounted at."""
    return "/v1" + request.path.split("/v1", 1)[1]


def _post(handler: Handler) -> Response:
    """Run a POST handler honouring `Idempotency-Key` as Stripe does.

    The key row is committed before the work starts, so a concurrent request with the same
    key finds it (409 while in progress). The result is stored in the same transaction as the
    work. A request whose parameters fail validation releases the key, so a corrected retry
    can reuse it. Any other failure releases it too, unless `save_failed_requests` is set:
    then, as Stripe does, its error (a 500 included) is what the key replays for 24 hours.
    """
    key = g.stripe_idempotency_key
    if not key:
        return _run(handler)
    row_id = hashlib.sha256(f"{g.stripe_api_key}\0{key}".encode()).hexdigest()
    fingerprint = hashlib.sha256(
        json.dumps([request.path, sorted(request.form.items(multi=True))]).encode()
    ).hexdigest()
    db.session.add(
        IdempotencyKey(id=row_id, fingerprint=fingerprint, created=int(time.time()), request_id=g.stripe_request_id)
    )
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        return _replay(db.session.get(IdempotencyKey, row_id), key, fingerprint)
    save_failures = _settings().save_failed_requests
    try:
        body = handler()
        failure = _failures().take(request.method, _api_path())
        if failure is not None and not failure.work_committed:
            raise failure.error()
    except ApiError as error:
        db.session.rollback()
        if error.validation or not save_failures:
            _forget_key(row_id)
            raise
        return _store_result(row_id, _json(error.body, error.status))
    except Exception:
        db.session.rollback()
        if not save_failures:
            _forget_key(row_id)
            raise
        logger.exception("Stripe emulator request %s failed", g.stripe_request_id)
        error = ApiError.server_error()
        return _store_result(row_id, _json(error.body, error.status))
    except BaseException:  # the worker is going away: leave the key usable
        db.session.rollback()
        _forget_key(row_id)
        raise
    if failure is None:
        return _store_result(row_id, _json(body))
    # The work is done and committed, but the answer is a 500.
    error = failure.error()
    if not save_failures:
        db.session.commit()
        _forget_key(row_id)
        raise error
    return _store_result(row_id, _json(error.body, error.status))


def _store_result(row_id: str, response: Response) -> Response:
    """Save the response under its key, in the same transaction as the request's work."""
    row = db.session.get(IdempotencyKey, row_id)
    assert row is not None
    row.status = response.status_code
    row.body = response.get_data(as_text=True)
    db.session.commit()
    return response


def _forget_key(row_id: str) -> None:
    db.session.execute(delete(IdempotencyKey).where(IdempotencyKey.id == row_id))
    db.session.commit()


def _replay(row: IdempotencyKey | None, key: str, fingerprint: str) -> Response:
    if row is not None and row.fingerprint != fingerprint:
        raise ApiError(
            400, "idempotency_error",
            "Keys for idempotent requests can only be used with the same parameters they were first used with. "
            f"Try using a key other than '{key}' if you meant to execute a different request.",
        )
    if row is None or row.status is None or row.body is None:
        raise ApiError(
            409, "idempotency_error",
            "There is currently another in-progress request using this Stripe-Idempotency-Key (that probably means "
            "you submitted twice, and the other request is still going through). Please try again later.",
        )
    response = Response(row.body, status=row.status, mimetype="application/json")
    response.headers["Idempotent-Replayed"] = "true"
    response.headers["Original-Request"] = row.request_id
    return response


def _cursor(values: Mapping[str, Any]) -> tuple[str, str] | None:
    """The pagination cursor, `("starting_after" | "ending_before", object id)`, if any."""
    if "starting_after" in values and "ending_before" in values:
        raise ApiError(
            400, "invalid_request_error",
            "Received both starting_after and ending_before parameters. Please pass in only one.",
        )
    for name in ("starting_after", "ending_before"):
        if name in values:
            return name, values[name]
    return None


def _created_in(query: Select, column: Any, values: Mapping[str, Any]) -> Select:
    """The `created` filter (`created[gt|gte|lt|lte]`, or `created=<ts>`) of a list request."""
    for op, value in values.get("created", {}).items():
        query = query.where({"gt": column > value, "gte": column >= value, "lt": column < value, "lte": column <= value}[op])
    return query


def _session_or_404(session_id: str) -> CheckoutSession:
    session = core.get_session(session_id, _settings(), time.time())
    if session is None:
        raise ApiError.missing("checkout.session", session_id, "session")
    return session


# --- Checkout Sessions -------------------------------------------------------------------------


@bp.post("/checkout/sessions")
def create_checkout_session() -> Response:
    def handler() -> dict[str, Any]:
        values = _params(CREATE_SESSION_PARAMS)
        expand = _expand(values, frozenset({"line_items"}))
        try:
            session = core.create_session(
                values,
                lambda session_id: url_for("stripe_emulator_pages.pay", session_id=session_id, _external=True),
                time.time(),
                addresses.webhook_target(request.environ),
                _settings().adaptive_pricing,
            )
        except ParamError as error:
            raise ApiError.invalid(error) from None
        return objects.checkout_session(session, expand)

    return _post(handler)


@bp.get("/checkout/sessions")
def list_checkout_sessions() -> Response:
    """Sessions newest first; `payment_intent` narrows them to the (at most one) that created it,
    `created` to those created in a range of time."""

    def handler() -> dict[str, Any]:
        values = _params(LIST_SESSIONS_PARAMS)
        expand = _expand(values, frozenset({"data.line_items"}))
        cursor = _cursor(values)
        query = select(CheckoutSession)
        if "payment_intent" in values:
            query = query.where(CheckoutSession.payment_intent == values["payment_intent"])
        query = _created_in(query, CheckoutSession.created, values)
        limit = values.get("limit", 10)
        backwards = cursor is not None and cursor[0] == "ending_before"
        position = tuple_(CheckoutSession.created, CheckoutSession.id)
        if cursor is not None:
            name, session_id = cursor
            anchor = db.session.execute(
                select(CheckoutSession.created, CheckoutSession.id).where(CheckoutSession.id == session_id)
            ).first()
            if anchor is None:
                raise ApiError.missing("checkout.session", session_id, name)
            query = query.where(position > tuple(anchor) if backwards else position < tuple(anchor))
        columns = (CheckoutSession.created, CheckoutSession.id)
        order = [column.asc() if backwards else column.desc() for column in columns]
        ids = list(db.session.scalars(query.with_only_columns(CheckoutSession.id).order_by(*order).limit(limit + 1)))
        has_more = len(ids) > limit
        ids = ids[:limit]
        if backwards:
            ids.reverse()
        now = time.time()
        sessions = [core.get_session(session_id, _settings(), now) for session_id in ids]  # expired if overdue
        data = [objects.checkout_session(session, _line_items_only(expand)) for session in sessions]
        return objects.list_object(data, "/v1/checkout/sessions", has_more)

    return _run(handler)


def _line_items_only(expand: frozenset[str]) -> frozenset[str]:
    """`data.line_items` on a list is `line_items` on each of its sessions."""
    return frozenset(path.removeprefix("data.") for path in expand)


@bp.get("/checkout/sessions/<session_id>")
def retrieve_checkout_session(session_id: str) -> Response:
    def handler() -> dict[str, Any]:
        expand = _expand(_params(RETRIEVE_PARAMS), frozenset({"line_items"}))
        return objects.checkout_session(_session_or_404(session_id), expand)

    return _run(handler)


@bp.get("/checkout/sessions/<session_id>/line_items")
def list_line_items(session_id: str) -> Response:
    def handler() -> dict[str, Any]:
        values = _params(LIST_PARAMS)
        _expand(values, frozenset())
        cursor = _cursor(values)
        session = _session_or_404(session_id)
        items = list(session.line_items)
        limit = values.get("limit", 10)
        if cursor is None:
            return objects.line_items_list(session, items[:limit], len(items) > limit)
        name, anchor = cursor
        ids = [item["id"] for item in items]
        if anchor not in ids:
            raise ApiError.missing("line item", anchor, name)
        if name == "starting_after":
            items = items[ids.index(anchor) + 1:]
            return objects.line_items_list(session, items[:limit], len(items) > limit)
        items = items[: ids.index(anchor)]
        return objects.line_items_list(session, items[-limit:], len(items) > limit)

    return _run(handler)


@bp.post("/checkout/sessions/<session_id>/expire")
def expire_checkout_session(session_id: str) -> Response:
    def handler() -> dict[str, Any]:
        expand = _expand(_params(RETRIEVE_PARAMS), frozenset({"line_items"}))
        _session_or_404(session_id)
        expired = core.expire_session(
            session_id, _settings(), time.time(), g.stripe_request_id, g.stripe_idempotency_key
        )
        # Re-read either way: if it wasn't open, another request may just have changed it.
        session = db.session.get(CheckoutSession, session_id, populate_existing=True)
        if not expired:
            raise ApiError(
                400, "invalid_request_error",
                f"Only Checkout Sessions with a status in [open] can be expired. This session has a status of "
                f"{session.status}.",
            )
        return objects.checkout_session(session, expand)

    return _post(handler)


# --- Events ------------------------------------------------------------------------------------


def _retained(query: Select) -> Select:
    """Only events Stripe still keeps (with STRIPE_EMULATOR_EVENT_RETENTION_DAYS)."""
    retention = _settings().event_retention
    if retention is None:
        return query
    return query.where(Event.created >= time.time() - retention)


@bp.get("/events")
def list_events() -> Response:
    def handler() -> dict[str, Any]:
        values = _params(LIST_EVENTS_PARAMS)
        _expand(values, frozenset())
        cursor = _cursor(values)
        query = _retained(select(Event))
        if "type" in values:
            pattern = values["type"]
            if "*" in pattern:  # `*` is Stripe's only wildcard: `_` and `%` match themselves
                like = re.sub(r"([\\%_])", r"\\\1", pattern).replace("*", "%")
                query = query.where(Event.type.like(like, escape="\\"))
            else:
                query = query.where(Event.type == pattern)
        if "types" in values:
            query = query.where(Event.type.in_(values["types"]))
        if "delivery_success" in values:  # delivered to the endpoint, or still pending / given up
            delivered = exists().where(Delivery.event_id == Event.id, Delivery.status == "delivered")
            query = query.where(delivered if values["delivery_success"] else ~delivered)
        query = _created_in(query, Event.created, values)
        limit = values.get("limit", 10)
        backwards = cursor is not None and cursor[0] == "ending_before"
        # Newest first by `created` (`seq` orders events of one second); a page before
        # `ending_before` is the `limit` events just newer than it.
        position = tuple_(Event.created, Event.seq)
        if cursor is not None:
            name, event_id = cursor
            anchor = db.session.execute(_retained(select(Event.created, Event.seq).where(Event.id == event_id))).first()
            if anchor is None:
                raise ApiError.missing("event", event_id, name)
            query = query.where(position > tuple(anchor) if backwards else position < tuple(anchor))
        order = (Event.created.asc(), Event.seq.asc()) if backwards else (Event.created.desc(), Event.seq.desc())
        rows = list(db.session.scalars(query.order_by(*order).limit(limit + 1)))
        has_more = len(rows) > limit
        rows = rows[:limit]
        if backwards:
            rows.reverse()
        counts = core.pending_webhooks([row.id for row in rows])
        return objects.list_object([objects.event(row, counts.get(row.id, 0)) for row in rows], "/v1/events", has_more)

    return _run(handler)


@bp.get("/events/<event_id>")
def retrieve_event(event_id: str) -> Response:
    def handler() -> dict[str, Any]:
        _expand(_params(RETRIEVE_PARAMS), frozenset())
        event = db.session.scalar(_retained(select(Event).where(Event.id == event_id)))
        if event is None:
            raise ApiError.missing("event", event_id, "id")
        return core.event_object(event)

    return _run(handler)


# --- Refunds -----------------------------------------------------------------------------------


@bp.post("/refunds")
def create_refund() -> Response:
    def handler() -> dict[str, Any]:
        values = _params(CREATE_REFUND_PARAMS)
        _expand(values, frozenset())
        return core.create_refund(values, _settings(), time.time(), g.stripe_request_id, g.stripe_idempotency_key)

    return _post(handler)


@bp.get("/refunds/<refund_id>")
def retrieve_refund(refund_id: str) -> Response:
    def handler() -> dict[str, Any]:
        _expand(_params(RETRIEVE_PARAMS), frozenset())
        refund = db.session.get(Refund, refund_id)
        if refund is None:
            raise ApiError.missing("refund", refund_id, "id")
        return objects.refund(refund, db.session.get(Charge, refund.charge_id))

    return _run(handler)


# --- Webhook endpoints -------------------------------------------------------------------------


def _endpoint_object(endpoint: WebhookEndpoint, with_secret: bool = False) -> dict[str, Any]:
    return endpoints.endpoint_object(endpoint, _settings().webhook_url, request.environ, with_secret)


def _endpoint_or_404(endpoint_id: str) -> WebhookEndpoint:
    if endpoint_id == endpoints.OWN_ENDPOINT_ID:
        endpoints.own_endpoint()
    endpoint = db.session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None or endpoint.deleted:
        raise ApiError.missing("webhook_endpoint", endpoint_id, "webhook_endpoint")
    return endpoint


@bp.post("/webhook_endpoints")
def create_webhook_endpoint() -> Response:
    def handler() -> dict[str, Any]:
        values = _params(CREATE_WEBHOOK_ENDPOINT_PARAMS)
        _expand(values, frozenset())
        try:
            endpoint = endpoints.create(values, time.time())
        except ParamError as error:
            raise ApiError.invalid(error) from None
        return _endpoint_object(endpoint, with_secret=True)

    return _post(handler)


@bp.get("/webhook_endpoints")
def list_webhook_endpoints() -> Response:
    """Every endpoint, newest first, paged as Stripe's lists are."""

    def handler() -> dict[str, Any]:
        values = _params(LIST_PARAMS)
        _expand(values, frozenset())
        cursor = _cursor(values)
        rows = endpoints.listed()
        ids = [row.id for row in rows]
        if cursor is not None:
            name, anchor = cursor
            if anchor not in ids:
                raise ApiError.missing("webhook_endpoint", anchor, name)
            position = ids.index(anchor)
            rows = rows[position + 1:] if name == "starting_after" else rows[:position]
        limit = values.get("limit", 10)
        page = rows[-limit:] if cursor is not None and cursor[0] == "ending_before" else rows[:limit]
        data = [_endpoint_object(row) for row in page]
        return objects.list_object(data, "/v1/webhook_endpoints", len(rows) > limit)

    return _run(handler)


@bp.get("/webhook_endpoints/<endpoint_id>")
def retrieve_webhook_endpoint(endpoint_id: str) -> Response:
    def handler() -> dict[str, Any]:
        _expand(_params(RETRIEVE_PARAMS), frozenset())
        return _endpoint_object(_endpoint_or_404(endpoint_id))

    return _run(handler)


@bp.post("/webhook_endpoints/<endpoint_id>")
def update_webhook_endpoint(endpoint_id: str) -> Response:
    def handler() -> dict[str, Any]:
        values = _params(UPDATE_WEBHOOK_ENDPOINT_PARAMS)
        _expand(values, frozenset())
        endpoint = _endpoint_or_404(endpoint_id)
        try:
            endpoints.update(endpoint, values)
        except ParamError as error:
            raise ApiError.invalid(error) from None
        return _endpoint_object(endpoint)

    return _post(handler)


@bp.delete("/webhook_endpoints/<endpoint_id>")
def delete_webhook_endpoint(endpoint_id: str) -> Response:
    def handler() -> dict[str, Any]:
        _endpoint_or_404(endpoint_id).deleted = True
        return {"id": endpoint_id, "object": "webhook_endpoint", "deleted": True}

    return _run(handler)


# --- Disputes ----------------------------------------------------------------------------------


@bp.get("/disputes/<dispute_id>")
def retrieve_dispute(dispute_id: str) -> Response:
    def handler() -> dict[str, Any]:
        _expand(_params(RETRIEVE_PARAMS), frozenset())
        dispute = db.session.get(Dispute, dispute_id)
        if dispute is None:
            raise ApiError.missing("dispute", dispute_id, "dispute")
        return objects.dispute(dispute, db.session.get(Charge, dispute.charge_id), time.time())

    return _run(handler)


@bp.post("/disputes/<dispute_id>")
def update_dispute(dispute_id: str) -> Response:
    def handler() -> dict[str, Any]:
        values = _params(UPDATE_DISPUTE_PARAMS)
        _expand(values, frozenset())
        return core.update_dispute(dispute_id, values, _settings(), time.time())

    return _post(handler)


@bp.route("/<path:path>", methods=["GET", "POST", "DELETE", "PUT", "PATCH"])
def unrecognized(path: str) -> Response:
    raise ApiError(
        404, "invalid_request_error",
        f"Unrecognized request URL ({request.method}: /v1/{path}). The Stripe emulator implements only the "
        "Checkout Sessions, Events, Refunds, Disputes and Webhook Endpoints endpoints the shop uses.",
    )
