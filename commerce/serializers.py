"""Input and output of the shipping quote endpoint."""

from decimal import Decimal

from rest_framework import serializers

from commerce.countries import COUNTRIES
from commerce.currencies import MINOR_UNITS
from commerce.models import SalesChannel
from commerce.quotes import MAX_WEIGHT_KG
from infrastructure.api_fields import StrictCharField


class QuoteInput(serializers.Serializer):
    country = StrictCharField(max_length=2, help_text="Destination, ISO 3166-1 alpha-2 (e.g. DE).")
    weight_kg = serializers.DecimalField(
        max_digits=10, decimal_places=3, help_text="Parcel weight in kg, more than 0."
    )
    order_value = serializers.DecimalField(
        max_digits=12,
        decimal_places=2,
        help_text='Order value in the quote\'s currency (a decimal string, e.g. "120.00").',
    )
    channel = StrictCharField(
        max_length=32, required=False, help_text="Sales channel code; its currency is used."
    )
    currency = StrictCharField(
        max_length=3,
        required=False,
        help_text="ISO 4217 currency of the quote. Needed only when the services to the "
        "destination are priced in several currencies and no channel is given.",
    )

    def validate_country(self, value: str) -> str:
        code = value.strip().upper()
        if code not in COUNTRIES:
            raise serializers.ValidationError(
                f"“{value}” is not an ISO 3166-1 alpha-2 country code."
            )
        return code

    def validate_weight_kg(self, value: Decimal) -> Decimal:
        if value <= 0:
            raise serializers.ValidationError("The weight must be more than 0 kg.")
        if value > MAX_WEIGHT_KG:
            raise serializers.ValidationError(f"The weight must be at most {MAX_WEIGHT_KG} kg.")
        return value

    def validate_order_value(self, value: Decimal) -> Decimal:
        if value < 0:
            raise serializers.ValidationError("The order value cannot be negative.")
        return value

    def validate_channel(self, value: str) -> str:
        if not SalesChannel.objects.filter(code=value, is_active=True).exists():
            raise serializers.ValidationError(f"No active sales channel “{value}”.")
        return value

    def validate_currency(self, value: str) -> str:
        code = value.strip().upper()
        if code not in MINOR_UNITS:
            raise serializers.ValidationError(f"“{value}” is not a currency Orchestra prices in.")
        return code


class QuoteOptionOutput(serializers.Serializer):
    carrier = serializers.CharField(help_text="Carrier code.")
    carrier_name = serializers.CharField()
    service = serializers.CharField(help_text="Service code, unique within the carrier.")
    service_name = serializers.CharField()
    price = serializers.DecimalField(max_digits=12, decimal_places=2)
    currency = serializers.CharField()
    eta_days = serializers.IntegerField(
        source="eta_days_max", help_text="Delivery within this many days (the most it takes)."
    )
    eta_days_min = serializers.IntegerField(help_text="The fewest delivery days.")
    preferred = serializers.BooleanField(help_text="A shipping rule prefers this service.")
    free_shipping = serializers.BooleanField()
    base_price = serializers.DecimalField(
        max_digits=12, decimal_places=2, help_text="The price before shipping rules."
    )
    rules_applied = serializers.ListField(
        child=serializers.CharField(), help_text="Names of the rules that changed this option."
    )


class TraceEntryOutput(serializers.Serializer):
    rule = serializers.CharField(
        allow_null=True, help_text="The rule's name; null for a service's own limit."
    )
    outcome = serializers.ChoiceField(choices=["applied", "excluded", "skipped", "ineligible"])
    detail = serializers.CharField()
    services = serializers.ListField(
        child=serializers.CharField(), help_text="carrier/service codes it concerned."
    )


class QuoteOutput(serializers.Serializer):
    country = serializers.CharField()
    weight_kg = serializers.DecimalField(max_digits=10, decimal_places=3)
    order_value = serializers.DecimalField(max_digits=12, decimal_places=2, allow_null=True)
    channel = serializers.CharField(allow_null=True)
    currency = serializers.CharField(
        allow_null=True, help_text="Null only when no service could be considered."
    )
    options = QuoteOptionOutput(many=True, help_text="Best first; empty when none fits.")
    rules_applied = serializers.SerializerMethodField(
        help_text="Names of the rules that applied or excluded something."
    )
    trace = TraceEntryOutput(many=True)
    message = serializers.CharField(help_text="A sentence for people, e.g. why none fits.")

    def get_rules_applied(self, quote) -> list[str]:
        return [
            entry.rule
            for entry in quote.trace
            if entry.rule is not None and entry.outcome in ("applied", "excluded")
        ]
