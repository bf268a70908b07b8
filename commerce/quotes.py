"""The shipping quote engine: which services can ship a parcel, at what price, in which order.

How a quote is made, in order:

1. The active services of active carriers that deliver to the destination are the
   candidates; a service whose maximum weight is below the parcel's drops out, and so
   does one priced in another currency than the quote's.
2. The quote's currency is the one asked for, else the sales channel's, else the one
   currency the remaining services share. Prices in several currencies are never
   compared: without a currency or channel such a quote is refused.
3. Each candidate's price is base price + price per kg x weight, rounded half-up to the
   currency's minor unit.
4. Active shipping rules run by ascending priority (then name). A rule whose validity
   dates, destinations, weight range, order value range, sales channel or currency do not
   fit the shipment is skipped. Otherwise it acts on its target (a service, every service
   of a carrier, or every service):
   - exclude: the service is no longer an option;
   - prefer: the service is ranked before every service that is not preferred;
   - surcharge: adds an amount, or a percentage of the price as it stands after the
     rules before it (so priority decides how surcharges compound), rounded each time;
   - free_shipping: when the order value is at least the rule's threshold the price is 0;
     a free service takes no surcharge afterwards.
5. Options are ranked: preferred first, then by price, then by delivery days (the
   maximum, then the minimum), then by carrier and service name.

Every rule considered, and every service that dropped out by its own limits, leaves an
entry in the trace, so staff can see why an option is there or not.
"""

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.utils import timezone

from commerce.countries import COUNTRIES
from commerce.currencies import MINOR_UNITS, round_money
from commerce.fields import country_label
from commerce.models import CarrierService, SalesChannel, ShippingRule

MAX_WEIGHT_KG = Decimal(100000)


@dataclass(frozen=True)
class TraceEntry:
    """One line of the trace: a rule (or, with rule None, a service's own limit)."""

    rule: str | None
    outcome: str  # applied | excluded | skipped | ineligible
    detail: str
    services: tuple[str, ...] = ()


@dataclass(frozen=True)
class QuoteOption:
    carrier: str
    carrier_name: str
    service: str
    service_name: str
    price: Decimal
    currency: str
    eta_days_min: int
    eta_days_max: int
    preferred: bool
    free_shipping: bool
    base_price: Decimal
    rules_applied: tuple[str, ...]


@dataclass(frozen=True)
class Quote:
    country: str
    weight_kg: Decimal
    order_value: Decimal | None
    channel: str | None
    currency: str | None
    on: date
    options: tuple[QuoteOption, ...]
    trace: tuple[TraceEntry, ...]
    message: str


@dataclass
class _Candidate:
    service: CarrierService
    base_price: Decimal
    price: Decimal
    preferred: bool = False
    free: bool = False
    excluded: bool = False
    rules: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.service.label


def shipping_quote(
    *,
    country: str,
    weight_kg: Decimal,
    order_value: Decimal | None = None,
    channel: str | None = None,
    currency: str | None = None,
    on: date | None = None,
) -> Quote:
    """The ranked shipping options for one parcel. Reads only.

    Raises ValidationError with a message per field (country, weight_kg, order_value,
    channel, currency) for input that cannot be quoted: not a country code, a weight not
    above 0, a negative order value, an unknown or inactive channel, an unknown currency,
    or services in several currencies with no currency or channel to choose one. A
    shipment nothing can carry is not an error: the quote has no options and a message.
    """
    country = (country or "").strip().upper()
    sales_channel = _check_input(country, weight_kg, order_value, channel, currency)
    on = on or timezone.localdate()
    wanted_currency = currency or (sales_channel.currency if sales_channel else None)
    trace: list[TraceEntry] = []

    def quote(options=(), message="", quote_currency=wanted_currency) -> Quote:
        return Quote(
            country=country,
            weight_kg=weight_kg,
            order_value=order_value,
            channel=sales_channel.code if sales_channel else None,
            currency=quote_currency,
            on=on,
            options=tuple(options),
            trace=tuple(trace),
            message=message,
        )

    where = country_label(country)
    services = [
        service
        for service in CarrierService.objects.filter(is_active=True, carrier__is_active=True)
        .select_related("carrier")
        .order_by("carrier__name", "name", "pk")
        if country in service.destination_countries
    ]
    if not services:
        return quote(message=f"No active carrier service delivers to {where}.")

    carriable = []
    for service in services:
        if service.max_weight_kg < weight_kg:
            trace.append(
                TraceEntry(
                    None,
                    "ineligible",
                    f"{service} takes at most {_kg(service.max_weight_kg)} kg.",
                    (service.label,),
                )
            )
        else:
            carriable.append(service)
    if not carriable:
        heaviest = max(service.max_weight_kg for service in services)
        return quote(
            message=f"No service can carry {_kg(weight_kg)} kg to {where}: the most any active "
            f"service there takes is {_kg(heaviest)} kg."
        )

    quote_currency = wanted_currency
    if quote_currency is None:
        currencies = sorted({service.currency for service in carriable})
        if len(currencies) > 1:
            raise ValidationError(
                {
                    "currency": f"Services to {where} are priced in {', '.join(currencies)}; "
                    "prices in different currencies are not compared. Give a currency or "
                    "a sales channel."
                }
            )
        quote_currency = currencies[0]

    candidates = []
    for service in carriable:
        if service.currency != quote_currency:
            trace.append(
                TraceEntry(
                    None,
                    "ineligible",
                    f"{service} is priced in {service.currency}, this quote is in "
                    f"{quote_currency}.",
                    (service.label,),
                )
            )
            continue
        base = round_money(service.base_price + service.price_per_kg * weight_kg, quote_currency)
        candidates.append(_Candidate(service=service, base_price=base, price=base))
    if not candidates:
        return quote(
            message=f"No service to {where} is priced in {quote_currency}.",
            quote_currency=quote_currency,
        )

    shipment = _Shipment(country, weight_kg, order_value, sales_channel, quote_currency, on)
    rules = ShippingRule.objects.filter(is_active=True).select_related(
        "channel", "carrier", "service__carrier"
    )
    for rule in rules.order_by("priority", "name"):
        trace.append(_apply_rule(rule, shipment, candidates))
        candidates = [c for c in candidates if not c.excluded]

    if not candidates:
        return quote(
            message=f"Every service to {where} is excluded by the shipping rules.",
            quote_currency=quote_currency,
        )
    candidates.sort(
        key=lambda c: (
            not c.preferred,
            c.price,
            c.service.delivery_days_max,
            c.service.delivery_days_min,
            c.service.carrier.name,
            c.service.name,
        )
    )
    count = len(candidates)
    return quote(
        options=[_option(c, quote_currency) for c in candidates],
        message=f"{count} option{'s' if count != 1 else ''} for {_kg(weight_kg)} kg to {where}.",
        quote_currency=quote_currency,
    )


def _kg(weight: Decimal) -> str:
    """2.5 rather than 2.500: weights as people write them."""
    return f"{weight.normalize():f}"


def _check_input(
    country: str,
    weight_kg: Decimal,
    order_value: Decimal | None,
    channel: str | None,
    currency: str | None,
) -> SalesChannel | None:
    errors: dict[str, str] = {}
    if country not in COUNTRIES:
        errors["country"] = f"“{country}” is not an ISO 3166-1 alpha-2 country code."
    if not isinstance(weight_kg, Decimal) or not weight_kg.is_finite() or weight_kg <= 0:
        errors["weight_kg"] = "The weight must be more than 0 kg."
    elif weight_kg > MAX_WEIGHT_KG:
        errors["weight_kg"] = f"The weight must be at most {MAX_WEIGHT_KG} kg."
    if order_value is not None and (not order_value.is_finite() or order_value < 0):
        errors["order_value"] = "The order value cannot be negative."
    if currency is not None and currency not in MINOR_UNITS:
        errors["currency"] = f"“{currency}” is not a currency Orchestra prices in."
    sales_channel = None
    if channel:
        sales_channel = SalesChannel.objects.filter(code=channel, is_active=True).first()
        if sales_channel is None:
            errors["channel"] = f"No active sales channel “{channel}”."
        elif currency and currency != sales_channel.currency:
            errors["currency"] = (
                f"The {sales_channel.code} channel sells in {sales_channel.currency}, "
                f"not {currency}."
            )
    if errors:
        raise ValidationError(errors)
    return sales_channel


@dataclass(frozen=True)
class _Shipment:
    country: str
    weight_kg: Decimal
    order_value: Decimal | None
    channel: SalesChannel | None
    currency: str
    on: date


def _why_not(rule: ShippingRule, shipment: _Shipment) -> str | None:
    """Why the rule's conditions do not hold for the shipment; None when they do."""
    if not rule.is_valid_on(shipment.on):
        start = rule.valid_from.isoformat() if rule.valid_from else "always"
        end = rule.valid_until.isoformat() if rule.valid_until else "no end"
        return f"Valid {start} to {end}, not on {shipment.on.isoformat()}."
    if rule.countries and shipment.country not in rule.countries:
        return f"Only for destinations {', '.join(rule.countries)}."
    if rule.weight_min_kg is not None and shipment.weight_kg < rule.weight_min_kg:
        return f"Only from {_kg(rule.weight_min_kg)} kg."
    if rule.weight_max_kg is not None and shipment.weight_kg > rule.weight_max_kg:
        return f"Only up to {_kg(rule.weight_max_kg)} kg."
    if rule.channel_id and (shipment.channel is None or shipment.channel.pk != rule.channel_id):
        return f"Only for orders of the {rule.channel.code} channel."
    if rule.money_fields and rule.currency != shipment.currency:
        return f"Its amounts are in {rule.currency}, this quote is in {shipment.currency}."
    needs_order_value = (
        rule.order_value_min is not None
        or rule.order_value_max is not None
        or rule.action == ShippingRule.Action.FREE_SHIPPING
    )
    if needs_order_value and shipment.order_value is None:
        return "Needs the order value, which was not given."
    if rule.order_value_min is not None and shipment.order_value < rule.order_value_min:
        return f"Only from an order value of {rule.order_value_min} {rule.currency}."
    if rule.order_value_max is not None and shipment.order_value > rule.order_value_max:
        return f"Only up to an order value of {rule.order_value_max} {rule.currency}."
    if (
        rule.action == ShippingRule.Action.FREE_SHIPPING
        and shipment.order_value < rule.free_shipping_from
    ):
        return (
            f"Free from an order value of {rule.free_shipping_from} {rule.currency}; "
            f"this one is {shipment.order_value}."
        )
    return None


def _targets(rule: ShippingRule, candidates: list[_Candidate]) -> list[_Candidate]:
    if rule.service_id:
        return [c for c in candidates if c.service.pk == rule.service_id]
    if rule.carrier_id:
        return [c for c in candidates if c.service.carrier_id == rule.carrier_id]
    return list(candidates)


def _no_target(rule: ShippingRule) -> str:
    if rule.service_id:
        return f"{rule.service} is not among the options."
    if rule.carrier_id:
        return f"No {rule.carrier.name} service is among the options."
    return "No option is left to act on."


def _apply_rule(
    rule: ShippingRule, shipment: _Shipment, candidates: list[_Candidate]
) -> TraceEntry:
    """Apply one rule to the candidates in place and return its trace entry."""
    reason = _why_not(rule, shipment)
    if reason is not None:
        return TraceEntry(rule.name, "skipped", reason)
    targets = _targets(rule, candidates)
    if not targets:
        return TraceEntry(rule.name, "skipped", _no_target(rule))
    labels = tuple(c.label for c in targets)
    action = rule.action
    if action == ShippingRule.Action.EXCLUDE:
        for candidate in targets:
            candidate.excluded = True
        return TraceEntry(rule.name, "excluded", f"Excluded {', '.join(labels)}.", labels)
    if action == ShippingRule.Action.PREFER:
        for candidate in targets:
            candidate.preferred = True
            candidate.rules.append(rule.name)
        return TraceEntry(rule.name, "applied", f"Preferred {', '.join(labels)}.", labels)
    if action == ShippingRule.Action.FREE_SHIPPING:
        for candidate in targets:
            candidate.price = round_money(Decimal(0), shipment.currency)
            candidate.free = True
            candidate.rules.append(rule.name)
        return TraceEntry(
            rule.name,
            "applied",
            f"Free shipping from {rule.free_shipping_from} {rule.currency} on {', '.join(labels)}.",
            labels,
        )
    return _surcharge(rule, shipment.currency, targets)


def _surcharge(rule: ShippingRule, currency: str, targets: list[_Candidate]) -> TraceEntry:
    charged, parts = [], []
    for candidate in targets:
        if candidate.free:
            parts.append(f"none on {candidate.label} (free shipping)")
            continue
        if rule.surcharge_amount is not None:
            amount = round_money(rule.surcharge_amount, currency)
        else:
            amount = round_money(candidate.price * rule.surcharge_percent / 100, currency)
        candidate.price += amount
        candidate.rules.append(rule.name)
        charged.append(candidate.label)
        parts.append(f"+{amount} {currency} on {candidate.label}")
    how = (
        f"{rule.surcharge_amount} {currency}"
        if rule.surcharge_amount is not None
        else f"{rule.surcharge_percent.normalize():f} %"
    )
    if not charged:
        return TraceEntry(rule.name, "skipped", f"Surcharge {how}: {'; '.join(parts)}.")
    return TraceEntry(rule.name, "applied", f"Surcharge {how}: {'; '.join(parts)}.", tuple(charged))


def _option(candidate: _Candidate, currency: str) -> QuoteOption:
    service = candidate.service
    return QuoteOption(
        carrier=service.carrier.code,
        carrier_name=service.carrier.name,
        service=service.code,
        service_name=service.name,
        price=candidate.price,
        currency=currency,
        eta_days_min=service.delivery_days_min,
        eta_days_max=service.delivery_days_max,
        preferred=candidate.preferred,
        free_shipping=candidate.free,
        base_price=candidate.base_price,
        rules_applied=tuple(candidate.rules),
    )
