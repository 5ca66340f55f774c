"""Writes to the model price table: an organisation's own prices, validated and audited."""

from datetime import UTC, datetime
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from audit.services import Actor, audit_record
from thinnest_analytics.errors import ApiError

from .models import ModelPrice
from .prices import PatternError, pattern_for_name, price_pattern

# --- model prices -------------------------------------------------------------

PRICE_FIELDS = (
    "model_name",
    "match_pattern",
    "input_price_per_mtok",
    "output_price_per_mtok",
    "effective_from",
)
MAX_PRICE_PER_MTOK = Decimal(100_000)


def _price_values(price: ModelPrice) -> dict:
    return {
        "model_name": price.model_name,
        "match_pattern": price.match_pattern,
        "input_price_per_mtok": f"{Decimal(price.input_price_per_mtok).normalize():f}",
        "output_price_per_mtok": f"{Decimal(price.output_price_per_mtok).normalize():f}",
        "effective_from": price.effective_from.astimezone(UTC).isoformat(),
    }


def model_price_validate(
    *,
    model_name: str,
    match_pattern: str,
    input_price_per_mtok: Decimal,
    output_price_per_mtok: Decimal,
    effective_from: datetime,
) -> dict:
    """The fields of a price, checked: a pattern that compiles and matches the
    model's own name (empty: exactly the name), prices from 0 to 100,000 USD per
    million tokens with at most 6 decimals, an aware effective date."""
    model_name = (model_name or "").strip()
    if not model_name or len(model_name) > 200:
        raise ApiError(400, "invalid_request", "model_name: must be 1 to 200 characters")
    match_pattern = (match_pattern or "").strip() or pattern_for_name(model_name)
    if len(match_pattern) > 500:
        raise ApiError(400, "invalid_request", "match_pattern: at most 500 characters")
    try:
        compiled = price_pattern(match_pattern)
    except PatternError as exc:
        raise ApiError(
            400,
            "invalid_request",
            f"match_pattern: not a valid regular expression in RE2 syntax"
            f" (no look-around or back-references): {exc}",
        ) from None
    if not compiled.fullmatch(model_name):
        raise ApiError(
            400, "invalid_request", f"match_pattern: does not match the model name '{model_name}' itself"
        )
    for name, value in (
        ("input_price_per_mtok", input_price_per_mtok),
        ("output_price_per_mtok", output_price_per_mtok),
    ):
        if (
            not isinstance(value, Decimal)
            or not value.is_finite()
            or not 0 <= value <= MAX_PRICE_PER_MTOK
            or value != value.quantize(Decimal("0.000001"))
        ):
            raise ApiError(
                400, "invalid_request", f"{name}: USD per million tokens from 0 to 100000, at most 6 decimals"
            )
    if effective_from is None or timezone.is_naive(effective_from):
        raise ApiError(400, "invalid_request", "effective_from: a date and time with a time zone")
    return {
        "model_name": model_name,
        "match_pattern": match_pattern,
        "input_price_per_mtok": input_price_per_mtok,
        "output_price_per_mtok": output_price_per_mtok,
        "effective_from": effective_from,
    }


@transaction.atomic
def model_price_save(*, organisation, actor: Actor, price: ModelPrice | None = None, **fields) -> ModelPrice:
    """Add an organisation's own price (``price`` None) or change one of its own
    (built-in prices ship with the product and are not changed here). Traces
    keep the cost they were stored with until ``manage.py reprice``. Records
    model_price.create, or model_price.update with the changed fields."""
    values = model_price_validate(**fields)
    if price is not None and price.organisation_id != organisation.pk:
        raise ApiError(404, "not_found", "model price not found")
    if price is None:
        price = ModelPrice.objects.create(organisation=organisation, **values)
        action, details = "model_price.create", _price_values(price)
    else:
        price = ModelPrice.objects.select_for_update().get(pk=price.pk)
        old = _price_values(price)
        for name, value in values.items():
            setattr(price, name, value)
        new = _price_values(price)
        changed = [f for f in PRICE_FIELDS if old[f] != new[f]]
        if not changed:
            return price
        price.save(update_fields=list(PRICE_FIELDS))
        action = "model_price.update"
        details = {
            "changed_fields": changed,
            "old": {f: old[f] for f in changed},
            "new": {f: new[f] for f in changed},
        }
    audit_record(
        organisation=organisation,
        actor=actor,
        action=action,
        resource_type="model_price",
        resource_id=str(price.pk),
        details=details,
    )
    return price


@transaction.atomic
def model_price_delete(*, organisation, price: ModelPrice, actor: Actor) -> None:
    """Retire one of the organisation's own prices: its model falls back to the
    next matching price (an older one of the organisation's, else the built-in).
    Records model_price.delete with the price's fields."""
    if price.organisation_id != organisation.pk:
        raise ApiError(404, "not_found", "model price not found")
    details = _price_values(price)
    resource_id = str(price.pk)
    price.delete()
    audit_record(
        organisation=organisation,
        actor=actor,
        action="model_price.delete",
        resource_type="model_price",
        resource_id=resource_id,
        details=details,
    )
