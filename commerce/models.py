"""The commerce configuration the agents answer from: carriers and their services,
shipping rules, sales channels, warehouses, products, stock and tax rates.

Every check a member of staff can trip is in `clean()` with a message on the field to fix.
"""

import string
from datetime import date
from decimal import Decimal
from urllib.parse import quote, urlsplit

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q

from commerce.currencies import CURRENCY_CHOICES, MINOR_UNITS
from commerce.fields import (
    NOT_NEGATIVE,
    CountryField,
    CountryListField,
    country_label,
    money_field,
)

__all__ = [
    "Carrier",
    "CarrierService",
    "Product",
    "SalesChannel",
    "ShippingRule",
    "StockLevel",
    "TaxCategory",
    "TaxRate",
    "Warehouse",
]

CODE = RegexValidator(
    r"^[a-z0-9][a-z0-9_-]*$", "Lower-case letters, digits, - and _, e.g. dhl-express."
)
SKU = RegexValidator(
    r"^[A-Z0-9][A-Z0-9._-]*$", "Upper-case letters, digits, '.', '-' and '_', e.g. MUG-350-BLU."
)
TRACKING_PLACEHOLDER = "tracking_number"
POSITIVE_WEIGHT = MinValueValidator(Decimal("0.001"), "Must be more than 0 kg.")


def currency_field(**kwargs) -> models.CharField:
    return models.CharField(
        max_length=3,
        choices=CURRENCY_CHOICES,
        error_messages={
            "invalid_choice": "“%(value)s” is not a currency Orchestra prices in "
            "(ISO 4217, e.g. EUR)."
        },
        **kwargs,
    )


def _check_minor_unit(errors: dict, field: str, amount: Decimal | None, currency: str) -> None:
    """A price in a currency without cents (JPY) must be whole."""
    if amount is None or currency not in MINOR_UNITS:
        return
    places = MINOR_UNITS[currency]
    if amount != amount.quantize(Decimal(1).scaleb(-places)):
        errors.setdefault(field, f"{currency} has {places} decimal places; {amount} has more.")


def _check_range(errors: dict, high_field: str, low, high, label: str) -> None:
    """Reports a range whose minimum is above its maximum, on the maximum's field."""
    if low is not None and high is not None and low > high:
        errors.setdefault(high_field, f"The maximum {label} ({high}) is below the minimum ({low}).")


class TaxCategory(models.TextChoices):
    STANDARD = "standard", "Standard rate"
    REDUCED = "reduced", "Reduced rate"
    SUPER_REDUCED = "super_reduced", "Super-reduced rate"
    ZERO = "zero", "Zero rate"


class Carrier(models.Model):
    code = models.CharField(max_length=32, unique=True, validators=[CODE])
    name = models.CharField(max_length=120)
    is_active = models.BooleanField("active", default=True)
    tracking_url_template = models.CharField(
        "tracking URL template",
        max_length=500,
        blank=True,
        help_text="The carrier's tracking page with {tracking_number} where the number goes, "
        "e.g. https://www.ups.com/track?tracknum={tracking_number}. Empty: no tracking links.",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self):
        template = self.tracking_url_template.strip()
        if not template:
            return
        try:
            names = {
                name for _, name, _, _ in string.Formatter().parse(template) if name is not None
            }
        except ValueError:
            names = None
        if names != {TRACKING_PLACEHOLDER}:
            raise ValidationError(
                {
                    "tracking_url_template": "Use {tracking_number} once or more, and no other "
                    "{…} placeholder (write { or } as {{ or }})."
                }
            )
        url = urlsplit(template.format(tracking_number="X"))
        if url.scheme not in ("http", "https") or not url.netloc:
            raise ValidationError(
                {"tracking_url_template": "Must be an http:// or https:// address."}
            )

    def tracking_url(self, tracking_number: str) -> str | None:
        """The carrier's page for this parcel; None when no template is configured."""
        template = self.tracking_url_template.strip()
        if not template:
            return None
        return template.format(tracking_number=quote(tracking_number, safe=""))


class CarrierService(models.Model):
    """A product of a carrier (e.g. DHL Paket): where it delivers, how fast, at what price."""

    carrier = models.ForeignKey(Carrier, on_delete=models.CASCADE, related_name="services")
    code = models.CharField(max_length=32, validators=[CODE])
    name = models.CharField(max_length=120)
    delivery_days_min = models.PositiveSmallIntegerField("delivery days (min)")
    delivery_days_max = models.PositiveSmallIntegerField("delivery days (max)")
    base_price = money_field("base price")
    price_per_kg = money_field("price per kg", default=Decimal("0.00"))
    max_weight_kg = models.DecimalField(
        "max weight (kg)", max_digits=8, decimal_places=3, validators=[POSITIVE_WEIGHT]
    )
    destination_countries = CountryListField(
        help_text="ISO 3166-1 alpha-2 codes the service delivers to, e.g. DE, AT, FR."
    )
    currency = currency_field()
    is_active = models.BooleanField("active", default=True)

    class Meta:
        ordering = ["carrier__name", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["carrier", "code"],
                name="agents_carrierservice_code_per_carrier",
                violation_error_message="This carrier already has a service with this code.",
            )
        ]

    def __str__(self) -> str:
        return f"{self.carrier.name} {self.name}" if self.carrier_id else self.name

    @property
    def label(self) -> str:
        return f"{self.carrier.code}/{self.code}"

    def clean(self):
        errors: dict[str, str] = {}
        _check_range(
            errors,
            "delivery_days_max",
            self.delivery_days_min,
            self.delivery_days_max,
            "delivery days",
        )
        _check_minor_unit(errors, "base_price", self.base_price, self.currency)
        if errors:
            raise ValidationError(errors)


class SalesChannel(models.Model):
    """Where an order comes from (web shop, marketplace …), and the currency it sells in."""

    code = models.CharField(max_length=32, unique=True, validators=[CODE])
    name = models.CharField(max_length=120)
    currency = currency_field()
    is_active = models.BooleanField("active", default=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ShippingRule(models.Model):
    """Changes the shipping options when its conditions hold. Rules run by ascending
    priority; see commerce.quotes for exactly how each action works."""

    class Action(models.TextChoices):
        EXCLUDE = "exclude", "Exclude the carrier or service"
        PREFER = "prefer", "Prefer the carrier or service (ranked first)"
        SURCHARGE = "surcharge", "Add a surcharge (amount or percent)"
        FREE_SHIPPING = "free_shipping", "Free shipping from an order value"

    name = models.CharField(max_length=120, unique=True)
    priority = models.IntegerField(default=100, help_text="Lower runs first.")
    is_active = models.BooleanField("active", default=True)
    # Conditions: an empty one holds for every shipment.
    countries = CountryListField(
        "destination countries",
        blank=True,
        help_text="Only for these destinations (ISO codes, e.g. DE, AT). Empty: any.",
    )
    weight_min_kg = models.DecimalField(
        "weight from (kg)",
        max_digits=8,
        decimal_places=3,
        null=True,
        blank=True,
        validators=[NOT_NEGATIVE],
    )
    weight_max_kg = models.DecimalField(
        "weight up to (kg)",
        max_digits=8,
        decimal_places=3,
        null=True,
        blank=True,
        validators=[NOT_NEGATIVE],
    )
    order_value_min = money_field("order value from", null=True, blank=True)
    order_value_max = money_field("order value up to", null=True, blank=True)
    channel = models.ForeignKey(
        SalesChannel,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="shipping_rules",
        help_text="Only for orders of this sales channel. Empty: any.",
    )
    valid_from = models.DateField(null=True, blank=True, help_text="First day. Empty: always.")
    valid_until = models.DateField(null=True, blank=True, help_text="Last day. Empty: no end.")
    # What it acts on: a service, every service of a carrier, or (neither) every service.
    carrier = models.ForeignKey(
        Carrier, on_delete=models.CASCADE, null=True, blank=True, related_name="shipping_rules"
    )
    service = models.ForeignKey(
        CarrierService,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="shipping_rules",
    )
    action = models.CharField(max_length=16, choices=Action.choices)
    surcharge_amount = money_field("surcharge amount", null=True, blank=True)
    surcharge_percent = models.DecimalField(
        "surcharge (%)",
        max_digits=6,
        decimal_places=2,
        null=True,
        blank=True,
        validators=[NOT_NEGATIVE, MaxValueValidator(Decimal(1000), "At most 1000 %.")],
    )
    free_shipping_from = money_field(
        "free shipping from order value",
        null=True,
        blank=True,
        help_text="Shipping is free when the order value is at least this.",
    )
    currency = currency_field(
        blank=True,
        help_text="Currency of the amounts of this rule; the rule only applies to quotes "
        "in it. Needed when the rule has an amount.",
    )

    class Meta:
        ordering = ["priority", "name"]

    def __str__(self) -> str:
        return self.name

    @property
    def money_fields(self) -> dict[str, Decimal]:
        values = {
            "order_value_min": self.order_value_min,
            "order_value_max": self.order_value_max,
            "surcharge_amount": self.surcharge_amount,
            "free_shipping_from": self.free_shipping_from,
        }
        return {name: value for name, value in values.items() if value is not None}

    def target_label(self) -> str:
        if self.service_id:
            return str(self.service)
        if self.carrier_id:
            return f"every {self.carrier.name} service"
        return "every service"

    def clean(self):
        errors: dict[str, str] = {}
        _check_range(
            errors,
            "weight_max_kg",
            self.weight_min_kg,
            self.weight_max_kg,
            "weight",
        )
        _check_range(
            errors,
            "order_value_max",
            self.order_value_min,
            self.order_value_max,
            "order value",
        )
        if self.valid_from and self.valid_until and self.valid_until < self.valid_from:
            errors["valid_until"] = "The last day is before the first day."
        self._clean_action(errors)
        self._clean_target(errors)
        self._clean_currency(errors)
        if errors:
            raise ValidationError(errors)

    def _clean_action(self, errors: dict) -> None:
        has_amount = self.surcharge_amount is not None
        has_percent = self.surcharge_percent is not None
        if self.action == self.Action.SURCHARGE:
            if has_amount == has_percent:
                errors["surcharge_amount"] = "Give a surcharge amount or a percentage, not both."
            elif (self.surcharge_amount or self.surcharge_percent) == 0:
                field = "surcharge_amount" if has_amount else "surcharge_percent"
                errors.setdefault(field, "A surcharge of 0 changes nothing.")
        else:
            if has_amount:
                errors["surcharge_amount"] = "Only a surcharge rule takes a surcharge."
            if has_percent:
                errors["surcharge_percent"] = "Only a surcharge rule takes a surcharge."
        if self.action == self.Action.FREE_SHIPPING:
            if self.free_shipping_from is None:
                errors["free_shipping_from"] = "From which order value is shipping free?"
        elif self.free_shipping_from is not None:
            errors["free_shipping_from"] = "Only a free-shipping rule takes this value."

    def _clean_target(self, errors: dict) -> None:
        if self.service_id and self.carrier_id and self.service.carrier_id != self.carrier_id:
            errors["service"] = f"{self.service} is not a service of {self.carrier}."
        if self.action == self.Action.PREFER and not (self.service_id or self.carrier_id):
            errors["carrier"] = "Which carrier or service should be preferred?"

    def _clean_currency(self, errors: dict) -> None:
        amounts = self.money_fields
        if amounts and not self.currency:
            errors["currency"] = "In which currency are the amounts of this rule?"
            return
        if not self.currency:
            return
        for field, amount in amounts.items():
            _check_minor_unit(errors, field, amount, self.currency)
        if self.service_id and self.service.currency != self.currency:
            errors.setdefault(
                "currency",
                f"Currency mismatch: {self.service} is priced in {self.service.currency}, "
                f"this rule's amounts are in {self.currency}.",
            )
        elif self.carrier_id and not self.service_id:
            others = sorted(
                set(self.carrier.services.values_list("currency", flat=True)) - {self.currency}
            )
            if others:
                errors.setdefault(
                    "currency",
                    f"Currency mismatch: {self.carrier} has services priced in "
                    f"{', '.join(others)}, this rule's amounts are in {self.currency}. "
                    "Target one service instead.",
                )
        if self.channel_id and self.channel.currency != self.currency:
            errors.setdefault(
                "currency",
                f"Currency mismatch: the {self.channel} channel sells in "
                f"{self.channel.currency}, this rule's amounts are in {self.currency}.",
            )

    def is_valid_on(self, day: date) -> bool:
        return (self.valid_from is None or self.valid_from <= day) and (
            self.valid_until is None or day <= self.valid_until
        )


class Warehouse(models.Model):
    code = models.CharField(max_length=32, unique=True, validators=[CODE])
    name = models.CharField(max_length=120)
    country = CountryField()
    is_active = models.BooleanField("active", default=True)
    ships_to = CountryListField(
        "ships to",
        blank=True,
        help_text="Destination countries it ships to (ISO codes, e.g. DE, AT). Empty: any.",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def ships_to_country(self, country: str) -> bool:
        return not self.ships_to or country in self.ships_to


class Product(models.Model):
    sku = models.CharField("SKU", max_length=64, unique=True, validators=[SKU])
    name = models.CharField(max_length=200)
    weight_kg = models.DecimalField(
        "weight (kg)", max_digits=8, decimal_places=3, validators=[POSITIVE_WEIGHT]
    )
    price = money_field("price")
    currency = currency_field()
    tax_category = models.CharField(
        max_length=16, choices=TaxCategory.choices, default=TaxCategory.STANDARD
    )
    is_active = models.BooleanField("active", default=True)

    class Meta:
        ordering = ["sku"]

    def __str__(self) -> str:
        return f"{self.sku} {self.name}"

    def clean(self):
        errors: dict[str, str] = {}
        _check_minor_unit(errors, "price", self.price, self.currency)
        if errors:
            raise ValidationError(errors)


class StockLevel(models.Model):
    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="stock_levels")
    warehouse = models.ForeignKey(Warehouse, on_delete=models.CASCADE, related_name="stock_levels")
    on_hand = models.PositiveIntegerField(default=0)
    reserved = models.PositiveIntegerField(
        default=0, help_text="Promised to open orders; available = on hand - reserved."
    )

    class Meta:
        ordering = ["product__sku", "warehouse__code"]
        verbose_name = "stock level"
        constraints = [
            models.UniqueConstraint(
                fields=["product", "warehouse"],
                name="agents_stocklevel_once_per_warehouse",
                violation_error_message="This product already has a stock level in this warehouse.",
            ),
            models.CheckConstraint(
                condition=Q(reserved__lte=models.F("on_hand")),
                name="agents_stocklevel_reserved_within_on_hand",
                violation_error_message="Cannot reserve more than is on hand.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.product.sku} @ {self.warehouse.code}"

    @property
    def available(self) -> int:
        return self.on_hand - self.reserved

    def clean(self):
        if self.on_hand is not None and self.reserved is not None and self.reserved > self.on_hand:
            raise ValidationError(
                {"reserved": f"Cannot reserve more than is on hand ({self.on_hand})."}
            )


class TaxRate(models.Model):
    country = CountryField()
    tax_category = models.CharField(
        max_length=16, choices=TaxCategory.choices, default=TaxCategory.STANDARD
    )
    rate = models.DecimalField(
        "rate (%)",
        max_digits=5,
        decimal_places=2,
        validators=[NOT_NEGATIVE, MaxValueValidator(Decimal(100), "At most 100 %.")],
    )
    valid_from = models.DateField()
    valid_until = models.DateField(null=True, blank=True, help_text="Last day. Empty: no end.")

    class Meta:
        ordering = ["country", "tax_category", "-valid_from"]
        constraints = [
            models.UniqueConstraint(
                fields=["country", "tax_category", "valid_from"],
                name="agents_taxrate_one_start_per_category",
                violation_error_message="A rate for this country and category already starts "
                "on this day.",
            )
        ]

    def __str__(self) -> str:
        return f"{self.country} {self.get_tax_category_display()} {self.rate} %"

    def clean(self):
        if self.valid_from and self.valid_until and self.valid_until < self.valid_from:
            raise ValidationError({"valid_until": "The last day is before the first day."})
        if not (self.country and self.tax_category and self.valid_from):
            return
        overlapping = TaxRate.objects.filter(
            country=self.country, tax_category=self.tax_category
        ).filter(Q(valid_until__isnull=True) | Q(valid_until__gte=self.valid_from))
        if self.valid_until is not None:
            overlapping = overlapping.filter(valid_from__lte=self.valid_until)
        other = overlapping.exclude(pk=self.pk).order_by("valid_from").first()
        if other is not None:
            until = other.valid_until.isoformat() if other.valid_until else "no end"
            raise ValidationError(
                {
                    "valid_from": f"Overlaps the {other.get_tax_category_display().lower()} "
                    f"of {other.rate} % for {country_label(self.country)}, valid "
                    f"{other.valid_from.isoformat()} to {until}. End that one first."
                }
            )
