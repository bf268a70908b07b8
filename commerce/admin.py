"""Admin of the commerce configuration, and the shipping rule tester."""

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, F, IntegerField, OuterRef, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone
from import_export.admin import ImportExportModelAdmin
from import_export.formats.base_formats import CSV

from commerce.currencies import CURRENCY_CHOICES
from commerce.fields import COUNTRY_CHOICES, country_label
from commerce.models import (
    Carrier,
    CarrierService,
    Product,
    SalesChannel,
    ShippingRule,
    StockLevel,
    TaxRate,
    Warehouse,
)
from commerce.quotes import Quote, shipping_quote
from commerce.resources import ProductResource, StockLevelResource, TaxRateResource


def _countries(codes: list[str], limit: int = 8) -> str:
    if not codes:
        return "any"
    shown = ", ".join(codes[:limit])
    return shown + (f" +{len(codes) - limit}" if len(codes) > limit else "")


class CsvImportExportAdmin(ImportExportModelAdmin):
    """CSV in and out. Importing writes rows, so it takes the add and change permissions;
    exporting takes the view permission."""

    formats = [CSV]

    def has_import_permission(self, request) -> bool:
        return self.has_add_permission(request) and self.has_change_permission(request)

    def has_export_permission(self, request) -> bool:
        return self.has_view_permission(request)


class CarrierServiceInline(admin.TabularInline):
    model = CarrierService
    fields = [
        "code",
        "name",
        "destination_countries",
        "currency",
        "base_price",
        "price_per_kg",
        "max_weight_kg",
        "delivery_days_min",
        "delivery_days_max",
        "is_active",
    ]
    extra = 0
    show_change_link = True


@admin.register(Carrier)
class CarrierAdmin(admin.ModelAdmin):
    list_display = ["name", "code", "is_active", "service_count", "tracking"]
    list_filter = ["is_active"]
    search_fields = ["code", "name"]
    inlines = [CarrierServiceInline]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(service_count=Count("services"))

    @admin.display(description="Services", ordering="service_count")
    def service_count(self, carrier: Carrier) -> int:
        return carrier.service_count

    @admin.display(description="Tracking links", boolean=True)
    def tracking(self, carrier: Carrier) -> bool:
        return bool(carrier.tracking_url_template)


@admin.register(CarrierService)
class CarrierServiceAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "carrier",
        "code",
        "countries",
        "base_price",
        "price_per_kg",
        "currency",
        "max_weight_kg",
        "eta",
        "is_active",
    ]
    list_filter = ["is_active", "carrier", "currency"]
    list_select_related = ["carrier"]
    search_fields = ["name", "code", "carrier__name", "carrier__code"]
    autocomplete_fields = ["carrier"]

    @admin.display(description="Destinations")
    def countries(self, service: CarrierService) -> str:
        return _countries(service.destination_countries)

    @admin.display(description="Delivery days")
    def eta(self, service: CarrierService) -> str:
        return f"{service.delivery_days_min}-{service.delivery_days_max}"


@admin.register(SalesChannel)
class SalesChannelAdmin(admin.ModelAdmin):
    list_display = ["name", "code", "currency", "is_active"]
    list_filter = ["is_active", "currency"]
    search_fields = ["code", "name"]


class RuleTesterForm(forms.Form):
    country = forms.ChoiceField(choices=COUNTRY_CHOICES, initial="DE")
    weight_kg = forms.DecimalField(
        label="Weight (kg)", max_digits=10, decimal_places=3, initial="2.000"
    )
    order_value = forms.DecimalField(
        max_digits=12,
        decimal_places=2,
        required=False,
        help_text="Empty: rules that need the order value are skipped.",
    )
    channel = forms.ModelChoiceField(
        queryset=SalesChannel.objects.filter(is_active=True),
        required=False,
        to_field_name="code",
        empty_label="(none)",
    )
    currency = forms.ChoiceField(
        choices=[("", "(the channel's or the services')"), *CURRENCY_CHOICES], required=False
    )
    on = forms.DateField(
        label="Date",
        required=False,
        help_text="Which rules are valid. Empty: today.",
        widget=forms.DateInput(attrs={"type": "date"}),
    )

    def quote(self) -> Quote | None:
        """The quote for the entered shipment; None, with the errors on the form, when it
        cannot be quoted."""
        data = self.cleaned_data
        try:
            return shipping_quote(
                country=data["country"],
                weight_kg=data["weight_kg"],
                order_value=data.get("order_value"),
                channel=data["channel"].code if data.get("channel") else None,
                currency=data.get("currency") or None,
                on=data.get("on"),
            )
        except ValidationError as invalid:
            for field, messages in invalid.message_dict.items():
                self.add_error(field if field in self.fields else None, messages)
            return None


@admin.register(ShippingRule)
class ShippingRuleAdmin(admin.ModelAdmin):
    change_list_template = "admin/commerce/shippingrule_change_list.html"
    list_display = [
        "name",
        "priority",
        "action",
        "effect",
        "target",
        "conditions",
        "validity",
        "is_active",
    ]
    list_editable = ["priority", "is_active"]
    list_filter = ["is_active", "action", "channel", "carrier"]
    list_select_related = ["carrier", "service__carrier", "channel"]
    search_fields = ["name"]
    ordering = ["priority", "name"]
    autocomplete_fields = ["carrier", "service", "channel"]
    fieldsets = [
        (None, {"fields": ["name", "priority", "is_active"]}),
        (
            "Conditions (empty: any)",
            {
                "fields": [
                    "countries",
                    ("weight_min_kg", "weight_max_kg"),
                    ("order_value_min", "order_value_max"),
                    "channel",
                    ("valid_from", "valid_until"),
                ]
            },
        ),
        (
            "Action",
            {
                "description": "Acts on the service, else on every service of the carrier, "
                "else on every service.",
                "fields": [
                    "action",
                    ("carrier", "service"),
                    ("surcharge_amount", "surcharge_percent"),
                    "free_shipping_from",
                    "currency",
                ],
            },
        ),
    ]

    @admin.display(description="Effect")
    def effect(self, rule: ShippingRule) -> str:
        if rule.action == ShippingRule.Action.SURCHARGE:
            if rule.surcharge_amount is not None:
                return f"+{rule.surcharge_amount} {rule.currency}"
            return f"+{rule.surcharge_percent} %"
        if rule.action == ShippingRule.Action.FREE_SHIPPING:
            return f"free from {rule.free_shipping_from} {rule.currency}"
        return rule.get_action_display().split(" ")[0]

    @admin.display(description="Acts on")
    def target(self, rule: ShippingRule) -> str:
        return rule.target_label()

    @admin.display(description="Conditions")
    def conditions(self, rule: ShippingRule) -> str:
        parts = []
        if rule.countries:
            parts.append(f"to {_countries(rule.countries)}")
        if rule.weight_min_kg is not None or rule.weight_max_kg is not None:
            parts.append(f"{rule.weight_min_kg or 0}-{rule.weight_max_kg or '∞'} kg")
        if rule.order_value_min is not None or rule.order_value_max is not None:
            parts.append(
                f"order {rule.order_value_min or 0}-{rule.order_value_max or '∞'} {rule.currency}"
            )
        if rule.channel_id:
            parts.append(f"channel {rule.channel.code}")
        return "; ".join(parts) or "always"

    @admin.display(description="Valid")
    def validity(self, rule: ShippingRule) -> str:
        if rule.valid_from is None and rule.valid_until is None:
            return "always"
        start = rule.valid_from.isoformat() if rule.valid_from else "…"
        end = rule.valid_until.isoformat() if rule.valid_until else "…"
        return f"{start} to {end}"

    def get_urls(self):
        tester = path(
            "tester/",
            self.admin_site.admin_view(self.rule_tester_view),
            name="commerce_shippingrule_tester",
        )
        return [tester, *super().get_urls()]

    def rule_tester_view(self, request):
        """A hypothetical shipment in, the ranked options and the rule trace out."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        form = RuleTesterForm(request.GET or None)
        quote = form.quote() if form.is_valid() else None
        context = {
            **self.admin_site.each_context(request),
            "title": "Shipping rule tester",
            "opts": self.opts,
            "form": form,
            "quote": quote,
            "destination": country_label(quote.country) if quote else "",
            "today": timezone.localdate(),
        }
        return TemplateResponse(request, "admin/commerce/rule_tester.html", context)


@admin.register(Warehouse)
class WarehouseAdmin(admin.ModelAdmin):
    list_display = ["name", "code", "country_name", "ships_to_countries", "is_active"]
    list_filter = ["is_active", "country"]
    search_fields = ["code", "name"]

    @admin.display(description="Country", ordering="country")
    def country_name(self, warehouse: Warehouse) -> str:
        return country_label(warehouse.country)

    @admin.display(description="Ships to")
    def ships_to_countries(self, warehouse: Warehouse) -> str:
        return _countries(warehouse.ships_to)


class StockLevelInline(admin.TabularInline):
    model = StockLevel
    fields = ["warehouse", "on_hand", "reserved", "available"]
    readonly_fields = ["available"]
    extra = 0
    autocomplete_fields = ["warehouse"]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("warehouse")

    @admin.display(description="Available")
    def available(self, level: StockLevel) -> int | str:
        return level.available if level.pk else "—"


# A correlated subquery rather than a join: the changelist's count stays a plain COUNT(*)
# and only the rows of the page are summed.
AVAILABLE = Coalesce(
    Subquery(
        StockLevel.objects.filter(product=OuterRef("pk"), warehouse__is_active=True)
        .values("product")
        .annotate(total=Sum(F("on_hand") - F("reserved")))
        .values("total")
    ),
    Value(0),
    output_field=IntegerField(),
)


@admin.register(Product)
class ProductAdmin(CsvImportExportAdmin):
    resource_classes = [ProductResource]
    list_display = [
        "sku",
        "name",
        "price",
        "currency",
        "weight_kg",
        "tax_category",
        "available",
        "is_active",
    ]
    list_filter = ["is_active", "tax_category", "currency"]
    search_fields = ["sku", "name"]
    inlines = [StockLevelInline]
    list_per_page = 100

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(available=AVAILABLE)

    @admin.display(description="Available", ordering="available")
    def available(self, product: Product) -> int:
        return product.available


@admin.register(StockLevel)
class StockLevelAdmin(CsvImportExportAdmin):
    resource_classes = [StockLevelResource]
    list_display = ["sku", "product_name", "warehouse", "on_hand", "reserved", "available"]
    list_filter = ["warehouse"]
    list_select_related = ["product", "warehouse"]
    search_fields = ["product__sku", "product__name", "warehouse__code"]
    autocomplete_fields = ["product", "warehouse"]
    list_per_page = 100

    @admin.display(description="SKU", ordering="product__sku")
    def sku(self, level: StockLevel) -> str:
        return level.product.sku

    @admin.display(description="Product", ordering="product__name")
    def product_name(self, level: StockLevel) -> str:
        return level.product.name

    @admin.display(description="Available")
    def available(self, level: StockLevel) -> int:
        return level.available


@admin.register(TaxRate)
class TaxRateAdmin(CsvImportExportAdmin):
    resource_classes = [TaxRateResource]
    list_display = ["country_name", "tax_category", "rate", "valid_from", "valid_until", "current"]
    list_filter = ["tax_category", ("country", admin.AllValuesFieldListFilter)]
    search_fields = ["country"]
    ordering = ["country", "tax_category", "-valid_from"]

    @admin.display(description="Country", ordering="country")
    def country_name(self, rate: TaxRate) -> str:
        return country_label(rate.country)

    @admin.display(description="In force today", boolean=True)
    def current(self, rate: TaxRate) -> bool:
        today = timezone.localdate()
        return rate.valid_from <= today and (rate.valid_until is None or today <= rate.valid_until)
