"""Factory functions for the commerce models: each builds one valid row (full_clean first)."""

from datetime import date
from decimal import Decimal

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


def _saved(row):
    row.full_clean()
    row.save()
    return row


def carrier_make(code: str = "dhl", *, name: str | None = None, **fields) -> Carrier:
    return _saved(Carrier(code=code, name=name or code.upper(), **fields))


def service_make(
    carrier: Carrier,
    code: str = "parcel",
    *,
    name: str | None = None,
    countries: tuple[str, ...] = ("DE",),
    base_price: str = "5.00",
    price_per_kg: str = "1.00",
    max_weight_kg: str = "30",
    currency: str = "EUR",
    days: tuple[int, int] = (2, 3),
    **fields,
) -> CarrierService:
    return _saved(
        CarrierService(
            carrier=carrier,
            code=code,
            name=name or code.title(),
            destination_countries=list(countries),
            base_price=Decimal(base_price),
            price_per_kg=Decimal(price_per_kg),
            max_weight_kg=Decimal(max_weight_kg),
            currency=currency,
            delivery_days_min=days[0],
            delivery_days_max=days[1],
            **fields,
        )
    )


def channel_make(code: str = "web-eu", *, currency: str = "EUR", **fields) -> SalesChannel:
    return _saved(
        SalesChannel(code=code, name=fields.pop("name", code), currency=currency, **fields)
    )


def rule_make(name: str, *, action: str, priority: int = 100, **fields) -> ShippingRule:
    for money in (
        "surcharge_amount",
        "surcharge_percent",
        "free_shipping_from",
        "order_value_min",
        "order_value_max",
        "weight_min_kg",
        "weight_max_kg",
    ):
        if isinstance(fields.get(money), str | int):
            fields[money] = Decimal(fields[money])
    return _saved(ShippingRule(name=name, action=action, priority=priority, **fields))


def warehouse_make(
    code: str = "ber", *, country: str = "DE", ships_to: tuple[str, ...] = (), **fields
) -> Warehouse:
    return _saved(
        Warehouse(
            code=code,
            name=fields.pop("name", code.title()),
            country=country,
            ships_to=list(ships_to),
            **fields,
        )
    )


def product_make(
    sku: str = "MUG-1",
    *,
    name: str = "Ceramic mug",
    weight_kg: str = "0.400",
    price: str = "12.90",
    currency: str = "EUR",
    tax_category: str = "standard",
    **fields,
) -> Product:
    return _saved(
        Product(
            sku=sku,
            name=name,
            weight_kg=Decimal(weight_kg),
            price=Decimal(price),
            currency=currency,
            tax_category=tax_category,
            **fields,
        )
    )


def stock_make(product: Product, warehouse: Warehouse, *, on_hand: int, reserved: int = 0):
    return _saved(
        StockLevel(product=product, warehouse=warehouse, on_hand=on_hand, reserved=reserved)
    )


def tax_rate_make(
    country: str = "DE",
    *,
    tax_category: str = "standard",
    rate: str = "19.00",
    valid_from: date = date(2021, 1, 1),
    valid_until: date | None = None,
) -> TaxRate:
    return _saved(
        TaxRate(
            country=country,
            tax_category=tax_category,
            rate=Decimal(rate),
            valid_from=valid_from,
            valid_until=valid_until,
        )
    )
