"""Stripe-style form parameters: nested key parsing and declarative validation.

Stripe's v1 API takes `application/x-www-form-urlencoded` bodies whose keys nest with
brackets (`line_items[0][price_data][currency]`, `metadata[order_id]`, `expand[]`).
`parse_form` turns them into dicts; `validate` checks them against a `Field` tree and
raises `ParamError` carrying Stripe's message and the offending `param` in bracket form.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")


class ParamError(Exception):
    """A request parameter is missing, unknown or invalid (HTTP 400 `invalid_request_error`)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(frozen=True)
class Field:
    """One accepted parameter: its kind, constraints and (for objects/arrays) its children."""

    kind: str  # string | integer | boolean | object | array | map
    required: bool = False
    fields: Mapping[str, Field] = field(default_factory=dict)
    item: Field | None = None
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    max_length: int = 5000
    max_items: int | None = None


def parse_form(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Nest bracketed form keys into dicts; `key[]` appends (arrays stay digit-keyed dicts)."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        match = _KEY.match(key)
        parts = [match.group(1), *re.findall(r"\[([^\[\]]*)\]", match.group(2))] if match else [key]
        node = root
        for position, part in enumerate(parts):
            if part == "":
                part = str(len(node))
            if position == len(parts) - 1:
                node[part] = value
            else:
                child = node.get(part)
                if not isinstance(child, dict):
                    child = node[part] = {}
                node = child
    return root


def validate(values: Mapping[str, Any], fields: Mapping[str, Field]) -> dict[str, Any]:
    """Check top-level `values` against `fields`; returns typed values (ints, bools, lists)."""
    return _object(values, fields, "")


def param_paths(fields: Mapping[str, Field], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every accepted parameter as a path of names (array items are transparent)."""
    paths: list[tuple[str, ...]] = []
    for name, spec in fields.items():
        path = (*prefix, name)
        paths.append(path)
        node = spec.item if spec.kind == "array" and spec.item else spec
        if node.kind == "object":
            paths.extend(param_paths(node.fields, path))
    return paths


def _join(path: str, name: str | int) -> str:
    return f"{path}[{name}]" if path else str(name)


def _object(values: Any, fields: Mapping[str, Field], path: str) -> dict[str, Any]:
    if not isinstance(values, Mapping):
        raise ParamError("Invalid hash", path or None)
    for name in values:
        if name not in fields:
            raise ParamError(f"Received unknown parameter: {_join(path, name)}", _join(path, name))
    result: dict[str, Any] = {}
    for name, spec in fields.items():
        here = _join(path, name)
        if name not in values:
            if spec.required:
                raise ParamError(f"Missing required param: {here}.", here)
            continue
        result[name] = _value(values[name], spec, here)
    return result


def _value(value: Any, spec: Field, path: str) -> Any:
    if spec.kind == "object":
        return _object(value, spec.fields, path)
    if spec.kind == "array":
        return _array(value, spec, path)
    if spec.kind == "map":
        return _map(value, path)
    if not isinstance(value, str):
        raise ParamError(f"Invalid {path}: expected a single value, not a hash or array.", path)
    if value == "":
        raise ParamError(
            f"You passed an empty string for '{path}'. We assume empty values are an attempt to unset a "
            f"parameter; however '{path}' cannot be unset. You should remove '{path}' from your request "
            "or supply a non-empty value.",
            path,
        )
    if spec.kind == "integer":
        return _integer(value, spec, path)
    if spec.kind == "boolean":
        if value not in ("true", "false"):
            raise ParamError(f"Invalid boolean: {value}", path)
        return value == "true"
    if spec.choices and value not in spec.choices:
        raise ParamError(f"Invalid {path}: must be one of {', '.join(spec.choices)}", path)
    if len(value) > spec.max_length:
        raise ParamError(f"Invalid {path}: must be at most {spec.max_length} characters", path)
    return value


def _integer(value: str, spec: Field, path: str) -> int:
    if not re.fullmatch(r"-?\d+", value):
        raise ParamError(f"Invalid integer: {value}", path)
    number = int(value)
    if spec.minimum is not None and number < spec.minimum:
        raise ParamError(f"This value must be greater than or equal to {spec.minimum}.", path)
    if spec.maximum is not None and number > spec.maximum:
        raise ParamError(f"This value must be less than or equal to {spec.maximum}.", path)
    return number


def _array(value: Any, spec: Field, path: str) -> list[Any]:
    if not isinstance(value, Mapping) or not all(key.isdigit() for key in value):
        raise ParamError("Invalid array", path)
    indices = sorted(value, key=int)
    if spec.max_items is not None and len(indices) > spec.max_items:
        raise ParamError(f"Invalid {path}: must contain at most {spec.max_items} items", path)
    assert spec.item is not None
    return [_value(value[index], spec.item, _join(path, position)) for position, index in enumerate(indices)]


def _map(value: Any, path: str) -> dict[str, str]:
    """Metadata: up to 50 string keys (40 chars) and values (500 chars); empty values unset."""
    if value == "":
        return {}
    if not isinstance(value, Mapping):
        raise ParamError("Invalid hash", path)
    if len(value) > 50:
        raise ParamError(f"Invalid {path}: can have at most 50 keys", path)
    result: dict[str, str] = {}
    for key, item in value.items():
        here = _join(path, key)
        if not isinstance(item, str):
            raise ParamError(f"Invalid {here}: metadata values must be strings", here)
        if len(key) > 40:
            raise ParamError(f"Invalid {path}: keys must be at most 40 characters long", here)
        if len(item) > 500:
            raise ParamError(f"Invalid {here}: values must be at most 500 characters long", here)
        if item:
            result[key] = item
    return result


def _array_of(item: Field, **kwargs: Any) -> Field:
    return Field("array", item=item, **kwargs)


EXPAND = _array_of(Field("string"))

PAYMENT_METHOD_TYPES = (
    "card", "link", "us_bank_account", "sepa_debit", "bacs_debit", "customer_balance",
    "ideal", "bancontact", "sofort", "klarna", "paypal",
)

# The two-letter codes Checkout can ship to (`shipping_address_collection[allowed_countries][]`).
SHIPPING_COUNTRIES = (
    "AC", "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AT", "AU", "AW", "AX", "AZ", "BA",
    "BB", "BD", "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS", "BT",
    "BV", "BW", "BY", "BZ", "CA", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN", "CO", "CR",
    "CV", "CW", "CY", "CZ", "DE", "DJ", "DK", "DM", "DO", "DZ", "EC", "EE", "EG", "EH", "ER", "ES",
    "ET", "FI", "FJ", "FK", "FO", "FR", "GA", "GB", "GD", "GE", "GF", "GG", "GH", "GI", "GL", "GM",
    "GN", "GP", "GQ", "GR", "GS", "GT", "GU", "GW", "GY", "HK", "HN", "HR", "HT", "HU", "ID", "IE",
    "IL", "IM", "IN", "IO", "IQ", "IS", "IT", "JE", "JM", "JO", "JP", "KE", "KG", "KH", "KI", "KM",
    "KN", "KR", "KW", "KY", "KZ", "LA", "LB", "LC", "LI", "LK", "LR", "LS", "LT", "LU", "LV", "LY",
    "MA", "MC", "MD", "ME", "MF", "MG", "MK", "ML", "MM", "MN", "MO", "MQ", "MR", "MS", "MT", "MU",
    "MV", "MW", "MX", "MY", "MZ", "NA", "NC", "NE", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ",
    "OM", "PA", "PE", "PF", "PG", "PH", "PK", "PL", "PM", "PN", "PR", "PS", "PT", "PY", "QA", "RE",
    "RO", "RS", "RU", "RW", "SA", "SB", "SC", "SE", "SG", "SH", "SI", "SJ", "SK", "SL", "SM", "SN",
    "SO", "SR", "SS", "ST", "SV", "SX", "SZ", "TA", "TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL",
    "TM", "TN", "TO", "TR", "TT", "TV", "TW", "TZ", "UA", "UG", "US", "UY", "UZ", "VA", "VC", "VE",
    "VG", "VN", "VU", "WF", "WS", "XK", "YE", "YT", "ZA", "ZM", "ZW", "ZZ",
)

CREATE_SESSION_PARAMS: Mapping[str, Field] = {
    "mode": Field("string", required=True, choices=("payment", "setup", "subscription")),
    "success_url": Field("string", required=True),
    "cancel_url": Field("string"),
    "client_reference_id": Field("string", max_length=200),
    "customer_email": Field("string", max_length=512),
    "metadata": Field("map"),
    "expires_at": Field("integer"),
    "payment_method_types": _array_of(Field("string", choices=PAYMENT_METHOD_TYPES)),
    "expand": EXPAND,
    "shipping_address_collection": Field(
        "object",
        fields={"allowed_countries": _array_of(Field("string", choices=SHIPPING_COUNTRIES), required=True)},
    ),
    "phone_number_collection": Field("object", fields={"enabled": Field("boolean", required=True)}),
    "line_items": _array_of(
        Field(
            "object",
            fields={
                "quantity": Field("integer", required=True, minimum=1, maximum=999),
                "price_data": Field(
                    "object",
                    required=True,
                    fields={
                        "currency": Field("string", required=True),
                        "unit_amount": Field("integer", required=True, minimum=0, maximum=99_999_999),
                        "product_data": Field(
                            "object",
                            required=True,
                            fields={
                                "name": Field("string", required=True),
                                "description": Field("string", max_length=40000),
                                "images": _array_of(Field("string", max_length=2048), max_items=8),
                                "metadata": Field("map"),
                            },
                        ),
                    },
                ),
            },
        ),
        max_items=100,
    ),
}

RETRIEVE_PARAMS: Mapping[str, Field] = {"expand": EXPAND}

LIST_PARAMS: Mapping[str, Field] = {
    "limit": Field("integer", minimum=1, maximum=100),
    "starting_after": Field("string"),
    "ending_before": Field("string"),
    "expand": EXPAND,
}

_RANGE = Field("object", fields={op: Field("integer") for op in ("gt", "gte", "lt", "lte")})

LIST_SESSIONS_PARAMS: Mapping[str, Field] = {
    **LIST_PARAMS,
    "payment_intent": Field("string"),
    "created": _RANGE,
}

LIST_EVENTS_PARAMS: Mapping[str, Field] = {
    **LIST_PARAMS,
    "type": Field("string"),
    "types": _array_of(Field("string"), max_items=20),
    "created": _RANGE,
    "delivery_success": Field("boolean"),
}

# Evidence is text here (file fields take a File id, which the emulator has no uploads for).
UPDATE_DISPUTE_PARAMS: Mapping[str, Field] = {
    "evidence": Field("object", fields={name: Field("string", max_length=20_000) for name in (
        "access_activity_log", "billing_address", "cancellation_policy_disclosure", "cancellation_rebuttal",
        "customer_email_address", "customer_name", "customer_purchase_ip", "duplicate_charge_explanation",
        "duplicate_charge_id", "product_description", "refund_policy_disclosure", "refund_refusal_explanation",
        "service_date", "shipping_address", "shipping_carrier", "shipping_date", "shipping_tracking_number",
        "uncategorized_text",
    )}),
    "metadata": Field("map"),
    "submit": Field("boolean"),
    "expand": EXPAND,
}

CREATE_REFUND_PARAMS: Mapping[str, Field] = {
    "payment_intent": Field("string", required=True),
    "amount": Field("integer", minimum=1),
    "reason": Field("string", choices=("duplicate", "fraudulent", "requested_by_customer")),
    "metadata": Field("map"),
    "expand": EXPAND,
}

CREATE_WEBHOOK_ENDPOINT_PARAMS: Mapping[str, Field] = {
    "url": Field("string", required=True),
    "enabled_events": _array_of(Field("string"), required=True, max_items=300),
    "api_version": Field("string"),
    "description": Field("string"),
    "metadata": Field("map"),
    "expand": EXPAND,
}

UPDATE_WEBHOOK_ENDPOINT_PARAMS: Mapping[str, Field] = {
    "url": Field("string"),
    "enabled_events": _array_of(Field("string"), max_items=300),
    "disabled": Field("boolean"),
    "description": Field("string"),
    "metadata": Field("map"),
    "expand": EXPAND,
}
