"""Validation of the commerce configuration: each mistake a member of staff can make is
reported on the field to fix, in words they understand."""

from datetime import date
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from commerce.models import (
    Carrier,
    CarrierService,
    Product,
    ShippingRule,
    StockLevel,
    TaxRate,
    Warehouse,
)
from tests.commerce_factories import (
    carrier_make,
    channel_make,
    product_make,
    service_make,
    tax_rate_make,
    warehouse_make,
)


def errors_of(row) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as invalid:
        row.full_clean()
    return invalid.value.message_dict


@pytest.fixture
def dhl(db) -> Carrier:
    return carrier_make("dhl", name="DHL")


def service(carrier: Carrier, **fields) -> CarrierService:
    values = {
        "carrier": carrier,
        "code": "paket",
        "name": "Paket",
        "destination_countries": ["DE"],
        "base_price": Decimal("4.99"),
        "price_per_kg": Decimal("0.50"),
        "max_weight_kg": Decimal("31.5"),
        "currency": "EUR",
        "delivery_days_min": 1,
        "delivery_days_max": 3,
    }
    return CarrierService(**{**values, **fields})


def test_a_valid_service_passes(dhl):
    service(dhl).full_clean()


def test_service_min_days_above_max(dhl):
    assert errors_of(service(dhl, delivery_days_min=5, delivery_days_max=2)) == {
        "delivery_days_max": ["The maximum delivery days (2) is below the minimum (5)."]
    }


def test_service_negative_prices(dhl):
    assert errors_of(service(dhl, base_price=Decimal("-1"), price_per_kg=Decimal("-0.10"))) == {
        "base_price": ["Cannot be negative."],
        "price_per_kg": ["Cannot be negative."],
    }


def test_service_unknown_country_codes(dhl):
    assert errors_of(service(dhl, destination_countries=["DE", "XX", "EU"])) == {
        "destination_countries": ["Not ISO 3166-1 alpha-2 country codes: EU, XX."]
    }


def test_service_zero_weight(dhl):
    assert errors_of(service(dhl, max_weight_kg=Decimal(0))) == {
        "max_weight_kg": ["Must be more than 0 kg."]
    }


def test_yen_price_with_cents(dhl):
    assert errors_of(service(dhl, currency="JPY", base_price=Decimal("800.50"))) == {
        "base_price": ["JPY has 0 decimal places; 800.50 has more."]
    }


def test_service_code_once_per_carrier(dhl):
    service(dhl).save()

    assert errors_of(service(dhl)) == {
        "__all__": ["This carrier already has a service with this code."]
    }


def test_tracking_template_needs_the_placeholder(dhl):
    dhl.tracking_url_template = "https://track.example/{number}"

    assert errors_of(dhl) == {
        "tracking_url_template": [
            "Use {tracking_number} once or more, and no other {…} placeholder (write { or } "
            "as {{ or }})."
        ]
    }


def test_tracking_template_must_be_a_web_address(dhl):
    dhl.tracking_url_template = "ftp://track.example/{tracking_number}"

    assert errors_of(dhl) == {"tracking_url_template": ["Must be an http:// or https:// address."]}


def test_tracking_url_quotes_the_number(dhl):
    dhl.tracking_url_template = "https://track.example/?id={tracking_number}"

    assert dhl.tracking_url("00 34/5") == "https://track.example/?id=00%2034%2F5"


def rule(**fields) -> ShippingRule:
    return ShippingRule(**{"name": "r", "action": "exclude", **fields})


@pytest.mark.parametrize(
    ("fields", "errors"),
    [
        (
            {"weight_min_kg": Decimal(10), "weight_max_kg": Decimal(2)},
            {"weight_max_kg": ["The maximum weight (2) is below the minimum (10)."]},
        ),
        (
            {"order_value_min": Decimal(100), "order_value_max": Decimal(50), "currency": "EUR"},
            {"order_value_max": ["The maximum order value (50) is below the minimum (100)."]},
        ),
        (
            {"valid_from": date(2025, 12, 24), "valid_until": date(2025, 12, 1)},
            {"valid_until": ["The last day is before the first day."]},
        ),
        (
            {"countries": ["DE", "UK"]},
            {"countries": ["Not ISO 3166-1 alpha-2 country codes: UK."]},
        ),
        (
            {"action": "surcharge"},
            {"surcharge_amount": ["Give a surcharge amount or a percentage, not both."]},
        ),
        (
            {"action": "surcharge", "surcharge_amount": Decimal("-2"), "currency": "EUR"},
            {"surcharge_amount": ["Cannot be negative."]},
        ),
        (
            {"action": "surcharge", "surcharge_amount": Decimal(2)},
            {"currency": ["In which currency are the amounts of this rule?"]},
        ),
        (
            {"action": "free_shipping", "currency": "EUR"},
            {"free_shipping_from": ["From which order value is shipping free?"]},
        ),
        (
            {"action": "prefer"},
            {"carrier": ["Which carrier or service should be preferred?"]},
        ),
        (
            {"surcharge_percent": Decimal(5)},
            {"surcharge_percent": ["Only a surcharge rule takes a surcharge."]},
        ),
    ],
)
def test_shipping_rule_mistakes(db, fields, errors):
    assert errors_of(rule(**fields)) == errors


def test_rule_currency_must_match_its_service(dhl):
    usd = service_make(dhl, "us", countries=("US",), currency="USD")

    invalid = rule(action="surcharge", service=usd, surcharge_amount=Decimal(2), currency="EUR")

    assert errors_of(invalid) == {
        "currency": ["Currency mismatch: DHL Us is priced in USD, this rule's amounts are in EUR."]
    }


def test_rule_currency_must_match_its_carriers_services(dhl):
    service_make(dhl, "us", countries=("US",), currency="USD")
    service_make(dhl, "eu", countries=("DE",), currency="EUR")

    invalid = rule(action="surcharge", carrier=dhl, surcharge_amount=Decimal(2), currency="EUR")

    assert errors_of(invalid) == {
        "currency": [
            "Currency mismatch: DHL has services priced in USD, this rule's amounts are in "
            "EUR. Target one service instead."
        ]
    }


def test_rule_currency_must_match_its_channel(db):
    channel = channel_make("web-us", currency="USD", name="Web US")

    invalid = rule(
        action="free_shipping", channel=channel, free_shipping_from=Decimal(50), currency="EUR"
    )

    assert errors_of(invalid) == {
        "currency": [
            "Currency mismatch: the Web US channel sells in USD, this rule's amounts are in EUR."
        ]
    }


def test_rule_service_of_another_carrier(dhl):
    ups = carrier_make("ups", name="UPS")
    ups_service = service_make(ups, "standard")

    assert errors_of(rule(carrier=dhl, service=ups_service)) == {
        "service": ["UPS Standard is not a service of DHL."]
    }


def test_product_negative_price_and_unknown_currency(db):
    product = Product(
        sku="MUG-1", name="Mug", weight_kg=Decimal("0.4"), price=Decimal("-1"), currency="EUX"
    )

    assert errors_of(product) == {
        "price": ["Cannot be negative."],
        "currency": ["“EUX” is not a currency Orchestra prices in (ISO 4217, e.g. EUR)."],
    }


def test_product_sku_in_upper_case(db):
    product = Product(
        sku="mug 1", name="Mug", weight_kg=Decimal("0.4"), price=Decimal(1), currency="EUR"
    )

    assert errors_of(product) == {
        "sku": ["Upper-case letters, digits, '.', '-' and '_', e.g. MUG-350-BLU."]
    }


def test_warehouse_unknown_country(db):
    warehouse = Warehouse(code="x", name="X", country="XX", ships_to=["ZZ"])

    assert errors_of(warehouse) == {
        "country": ["“XX” is not an ISO 3166-1 alpha-2 country code (e.g. DE, FR, US)."],
        "ships_to": ["Not ISO 3166-1 alpha-2 country codes: ZZ."],
    }


def test_stock_reserved_above_on_hand(db):
    level = StockLevel(product=product_make(), warehouse=warehouse_make(), on_hand=3, reserved=5)

    assert errors_of(level) == {"reserved": ["Cannot reserve more than is on hand (3)."]}


def test_tax_rate_until_before_from(db):
    rate = TaxRate(
        country="DE",
        tax_category="standard",
        rate=Decimal(19),
        valid_from=date(2025, 1, 1),
        valid_until=date(2024, 12, 31),
    )

    assert errors_of(rate) == {"valid_until": ["The last day is before the first day."]}


@pytest.mark.parametrize(
    ("valid_from", "valid_until"),
    [
        (date(2020, 12, 31), None),  # starts on the last day of the closed one
        (date(2019, 1, 1), date(2020, 7, 1)),  # ends inside the closed one
        (date(2022, 1, 1), None),  # inside the open-ended one
    ],
)
def test_tax_rate_overlapping_validity(db, valid_from, valid_until):
    tax_rate_make("DE", rate="16.00", valid_from=date(2020, 7, 1), valid_until=date(2020, 12, 31))
    tax_rate_make("DE", rate="19.00", valid_from=date(2021, 1, 1))
    rate = TaxRate(
        country="DE",
        tax_category="standard",
        rate=Decimal(20),
        valid_from=valid_from,
        valid_until=valid_until,
    )

    [message] = errors_of(rate)["valid_from"]

    assert message.startswith("Overlaps the standard rate of 1")
    assert " % for Germany (DE), valid 20" in message


def test_tax_rate_overlap_message_names_the_other_rate(db):
    tax_rate_make("DE", rate="19.00", valid_from=date(2021, 1, 1))
    rate = TaxRate(
        country="DE", tax_category="standard", rate=Decimal(20), valid_from=date(2024, 1, 1)
    )

    assert errors_of(rate) == {
        "valid_from": [
            "Overlaps the standard rate of 19.00 % for Germany (DE), valid 2021-01-01 to no "
            "end. End that one first."
        ]
    }


def test_tax_rates_that_touch_do_not_overlap(db):
    tax_rate_make("DE", rate="16.00", valid_from=date(2020, 7, 1), valid_until=date(2020, 12, 31))
    tax_rate_make("DE", tax_category="reduced", rate="7.00", valid_from=date(2020, 1, 1))

    tax_rate_make("DE", rate="19.00", valid_from=date(2021, 1, 1))
    tax_rate_make("AT", rate="20.00", valid_from=date(2020, 1, 1))

    assert TaxRate.objects.count() == 4


def test_editing_a_tax_rate_does_not_overlap_itself(db):
    rate = tax_rate_make("DE", rate="19.00", valid_from=date(2021, 1, 1))
    rate.rate = Decimal("19.50")

    rate.full_clean()
