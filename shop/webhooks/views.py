from flask import current_app, jsonify, request

from .. import events, stripe_gateway
from . import bp


def _answer(status: int, message: str, **extra):
    return jsonify(message=message, **extra), status


@bp.post("/webhooks/stripe")
def stripe_webhook():
    secrets = current_app.config["STRIPE_WEBHOOK_SECRETS"]
    if not secrets:
        # Never fail open: without a secret nothing can be verified. Stripe retries a 503.
        current_app.logger.error("STRIPE_WEBHOOK_SECRET is not set; refusing to process webhooks")
        return _answer(503, "Webhook secret not configured.")
    if request.mimetype != "application/json":
        return _answer(415, "Expected application/json.")
    try:
        event = stripe_gateway.verify_webhook(request.get_data(), request.headers.get("Stripe-Signature"), secrets)
        result = events.ingest(event)
    except stripe_gateway.WebhookVerificationError as exc:
        return _answer(400, str(exc))
    except events.InvalidEvent as exc:
        return _answer(400, f"Invalid event: {exc}")
    # Any other error propagates: 500, the event stays unprocessed and Stripe retries it.
    return _answer(200, result.outcome, duplicate=result.duplicate)
