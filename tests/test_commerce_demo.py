"""The demo commerce data: coherent, valid, idempotent, and staff edits survive a reload."""

from decimal import Decimal

from django.contrib.auth.models import Group

from commerce import demo
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

MODELS = (
    Carrier,
    CarrierService,
    ShippingRule,
    SalesChannel,
    Warehouse,
    Product,
    StockLevel,
    TaxRate,
)


def counts() -> dict[str, int]:
    return {model.__name__: model.objects.count() for model in MODELS}


def test_the_demo_loads_a_coherent_shop(db):
    created = demo.load()

    assert counts() == {
        "Carrier": 4,
        "CarrierService": 8,
        "ShippingRule": 6,
        "SalesChannel": 2,
        "Warehouse": 3,
        "Product": 30,
        "StockLevel": 62,
        "TaxRate": 23,
    }
    assert created == sum(counts().values())
    served = {c for s in CarrierService.objects.all() for c in s.destination_countries}
    assert served - {"US"} == set(TaxRate.objects.values_list("country", flat=True))
    for model in MODELS:
        for row in model.objects.all():
            row.full_clean()


def test_loading_twice_creates_nothing_and_keeps_staff_edits(db):
    demo.load()
    ShippingRule.objects.filter(name="Prefer DHL Paket to Germany").update(is_active=False)
    Product.objects.filter(sku="MUG-350-BLU").update(price=Decimal("13.50"))

    assert demo.load() == 0
    assert not ShippingRule.objects.get(name="Prefer DHL Paket to Germany").is_active
    assert Product.objects.get(sku="MUG-350-BLU").price == Decimal("13.50")


def test_operators_manage_the_commerce_configuration_and_viewers_see_it(db):
    operators = set(
        Group.objects.get(name="operators").permissions.values_list("codename", flat=True)
    )
    viewers = set(Group.objects.get(name="viewers").permissions.values_list("codename", flat=True))

    for model in MODELS:
        name = model._meta.model_name
        assert {f"{action}_{name}" for action in ("add", "change", "delete", "view")} <= operators
        assert f"view_{name}" in viewers
        assert f"change_{name}" not in viewers
