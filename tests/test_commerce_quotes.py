"""The shipping quote engine: exact prices and orders for each kind of rule."""

from datetime import date
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from commerce.models import Carrier, CarrierService, SalesChannel, ShippingRule
from commerce.quotes import shipping_quote
from tests.commerce_factories import carrier_make, channel_make, rule_make, service_make

DAY = date(2025, 6, 2)


@pytest.fixture
def world(db) -> dict[str, CarrierService]:
    """Three services to DE. Prices: DHL 5.00 + 1.00/kg, UPS 6.00 + 0.50/kg, GLS 4.00 +
    1.50/kg, so at 1 kg GLS < DHL < UPS, at 2 kg all cost 7.00, at 4 kg UPS < DHL < GLS."""
    dhl, ups, gls = carrier_make("dhl"), carrier_make("ups"), carrier_make("gls")
    channel_make("web-eu", currency="EUR")
    return {
        "dhl/paket": service_make(
            dhl,
            "paket",
            countries=("DE", "AT"),
            base_price="5.00",
            price_per_kg="1.00",
            max_weight_kg="30",
            days=(1, 2),
        ),
        "ups/standard": service_make(
            ups,
            "standard",
            countries=("DE", "AT"),
            base_price="6.00",
            price_per_kg="0.50",
            max_weight_kg="70",
            days=(2, 4),
        ),
        "gls/parcel": service_make(
            gls,
            "parcel",
            countries=("DE",),
            base_price="4.00",
            price_per_kg="1.50",
            max_weight_kg="20",
            days=(2, 3),
        ),
    }


def make_rules(specs: list[dict], services: dict[str, CarrierService]) -> None:
    for index, spec in enumerate(specs):
        spec = dict(spec)
        if "service" in spec:
            spec["service"] = services[spec["service"]]
        if "carrier" in spec:
            spec["carrier"] = next(
                s.carrier for s in services.values() if s.carrier.code == spec["carrier"]
            )
        rule_make(spec.pop("name", f"rule-{index}"), **spec)


def ranked(quote) -> list[tuple[str, str]]:
    return [(f"{o.carrier}/{o.service}", str(o.price)) for o in quote.options]


CASES = [
    pytest.param(
        [],
        {"weight_kg": "1"},
        [
            ("gls/parcel", "5.50"),
            ("dhl/paket", "6.00"),
            ("ups/standard", "6.50"),
        ],
        id="no rules: by price",
    ),
    pytest.param(
        [],
        {"weight_kg": "2"},
        [
            ("dhl/paket", "7.00"),
            ("gls/parcel", "7.00"),
            ("ups/standard", "7.00"),
        ],
        id="same price: by delivery days",
    ),
    pytest.param(
        [],
        {"weight_kg": "25"},
        [
            ("ups/standard", "18.50"),
            ("dhl/paket", "30.00"),
        ],
        id="weight limit: GLS takes 20 kg at most",
    ),
    pytest.param(
        [],
        {"weight_kg": "0.333"},
        [
            ("gls/parcel", "4.50"),
            ("dhl/paket", "5.33"),
            ("ups/standard", "6.17"),
        ],
        id="base price rounded half-up",
    ),
    pytest.param(
        [{"action": "exclude", "carrier": "dhl"}],
        {"weight_kg": "1"},
        [
            ("gls/parcel", "5.50"),
            ("ups/standard", "6.50"),
        ],
        id="exclude a carrier",
    ),
    pytest.param(
        [{"action": "prefer", "service": "ups/standard"}],
        {"weight_kg": "1"},
        [
            ("ups/standard", "6.50"),
            ("gls/parcel", "5.50"),
            ("dhl/paket", "6.00"),
        ],
        id="prefer ranks first",
    ),
    pytest.param(
        [
            {"action": "prefer", "service": "dhl/paket", "priority": 10},
            {"action": "exclude", "service": "dhl/paket", "priority": 20},
        ],
        {"weight_kg": "1"},
        [
            ("gls/parcel", "5.50"),
            ("ups/standard", "6.50"),
        ],
        id="exclusion wins over an earlier preference",
    ),
    pytest.param(
        [
            {
                "action": "surcharge",
                "service": "gls/parcel",
                "surcharge_amount": "2.00",
                "currency": "EUR",
            },
        ],
        {"weight_kg": "1"},
        [
            ("dhl/paket", "6.00"),
            ("ups/standard", "6.50"),
            ("gls/parcel", "7.50"),
        ],
        id="surcharge amount",
    ),
    pytest.param(
        [{"action": "surcharge", "surcharge_percent": "10"}],
        {"weight_kg": "1"},
        [
            ("gls/parcel", "6.05"),
            ("dhl/paket", "6.60"),
            ("ups/standard", "7.15"),
        ],
        id="surcharge percent on every service",
    ),
    pytest.param(
        [{"action": "surcharge", "surcharge_percent": "15"}],
        {"weight_kg": "1"},
        [
            ("gls/parcel", "6.33"),
            ("dhl/paket", "6.90"),
            ("ups/standard", "7.48"),
        ],
        id="percent surcharge rounded half-up (0.825 -> 0.83)",
    ),
    pytest.param(
        [
            {"action": "surcharge", "carrier": "dhl", "surcharge_percent": "10", "priority": 10},
            {
                "action": "surcharge",
                "carrier": "dhl",
                "surcharge_amount": "1.00",
                "currency": "EUR",
                "priority": 20,
            },
        ],
        {"weight_kg": "1"},
        [
            ("gls/parcel", "5.50"),
            ("ups/standard", "6.50"),
            ("dhl/paket", "7.60"),
        ],
        id="priority: percent first, then amount",
    ),
    pytest.param(
        [
            {"action": "surcharge", "carrier": "dhl", "surcharge_percent": "10", "priority": 20},
            {
                "action": "surcharge",
                "carrier": "dhl",
                "surcharge_amount": "1.00",
                "currency": "EUR",
                "priority": 10,
            },
        ],
        {"weight_kg": "1"},
        [
            ("gls/parcel", "5.50"),
            ("ups/standard", "6.50"),
            ("dhl/paket", "7.70"),
        ],
        id="priority: amount first, then percent",
    ),
    pytest.param(
        [
            {
                "action": "free_shipping",
                "service": "ups/standard",
                "free_shipping_from": "50.00",
                "currency": "EUR",
            },
        ],
        {"weight_kg": "1", "order_value": "50.00"},
        [
            ("ups/standard", "0.00"),
            ("gls/parcel", "5.50"),
            ("dhl/paket", "6.00"),
        ],
        id="free shipping at the threshold",
    ),
    pytest.param(
        [
            {
                "action": "free_shipping",
                "service": "ups/standard",
                "free_shipping_from": "50.00",
                "currency": "EUR",
            },
        ],
        {"weight_kg": "1", "order_value": "49.99"},
        [
            ("gls/parcel", "5.50"),
            ("dhl/paket", "6.00"),
            ("ups/standard", "6.50"),
        ],
        id="no free shipping below the threshold",
    ),
    pytest.param(
        [
            {
                "action": "free_shipping",
                "service": "ups/standard",
                "free_shipping_from": "50.00",
                "currency": "EUR",
            },
        ],
        {"weight_kg": "1"},
        [
            ("gls/parcel", "5.50"),
            ("dhl/paket", "6.00"),
            ("ups/standard", "6.50"),
        ],
        id="no free shipping without an order value",
    ),
    pytest.param(
        [
            {
                "action": "free_shipping",
                "service": "ups/standard",
                "free_shipping_from": "50.00",
                "currency": "EUR",
                "priority": 10,
            },
            {"action": "surcharge", "surcharge_amount": "2.00", "currency": "EUR", "priority": 20},
        ],
        {"weight_kg": "1", "order_value": "80.00"},
        [
            ("ups/standard", "0.00"),
            ("gls/parcel", "7.50"),
            ("dhl/paket", "8.00"),
        ],
        id="a free service takes no later surcharge",
    ),
    pytest.param(
        [
            {
                "action": "exclude",
                "carrier": "gls",
                "valid_from": date(2025, 6, 1),
                "valid_until": date(2025, 6, 2),
            },
        ],
        {"weight_kg": "1", "on": date(2025, 6, 2)},
        [
            ("dhl/paket", "6.00"),
            ("ups/standard", "6.50"),
        ],
        id="valid on its last day",
    ),
    pytest.param(
        [
            {
                "action": "exclude",
                "carrier": "gls",
                "valid_from": date(2025, 6, 1),
                "valid_until": date(2025, 6, 2),
            },
        ],
        {"weight_kg": "1", "on": date(2025, 6, 3)},
        [
            ("gls/parcel", "5.50"),
            ("dhl/paket", "6.00"),
            ("ups/standard", "6.50"),
        ],
        id="expired the day after",
    ),
    pytest.param(
        [
            {"action": "exclude", "carrier": "gls", "valid_from": date(2025, 6, 3)},
        ],
        {"weight_kg": "1", "on": date(2025, 6, 2)},
        [
            ("gls/parcel", "5.50"),
            ("dhl/paket", "6.00"),
            ("ups/standard", "6.50"),
        ],
        id="not valid yet",
    ),
    pytest.param(
        [
            {
                "action": "surcharge",
                "surcharge_amount": "3.00",
                "currency": "EUR",
                "weight_min_kg": "3",
                "weight_max_kg": "5",
            },
        ],
        {"weight_kg": "4"},
        [
            ("ups/standard", "11.00"),
            ("dhl/paket", "12.00"),
            ("gls/parcel", "13.00"),
        ],
        id="weight range holds",
    ),
    pytest.param(
        [
            {
                "action": "surcharge",
                "surcharge_amount": "3.00",
                "currency": "EUR",
                "weight_min_kg": "3",
                "weight_max_kg": "5",
            },
        ],
        {"weight_kg": "1"},
        [
            ("gls/parcel", "5.50"),
            ("dhl/paket", "6.00"),
            ("ups/standard", "6.50"),
        ],
        id="weight range does not hold",
    ),
    pytest.param(
        [
            {"action": "exclude", "carrier": "gls", "order_value_min": "100.00", "currency": "EUR"},
        ],
        {"weight_kg": "1", "order_value": "100.00"},
        [
            ("dhl/paket", "6.00"),
            ("ups/standard", "6.50"),
        ],
        id="order value range holds",
    ),
    pytest.param(
        [{"action": "exclude", "carrier": "gls", "countries": ["AT"]}],
        {"weight_kg": "1"},
        [
            ("gls/parcel", "5.50"),
            ("dhl/paket", "6.00"),
            ("ups/standard", "6.50"),
        ],
        id="destination condition does not hold",
    ),
    pytest.param(
        [{"action": "exclude", "carrier": "gls", "channel": "web-eu"}],
        {"weight_kg": "1", "channel": "web-eu"},
        [
            ("dhl/paket", "6.00"),
            ("ups/standard", "6.50"),
        ],
        id="channel condition holds",
    ),
    pytest.param(
        [{"action": "exclude", "carrier": "gls", "channel": "web-eu"}],
        {"weight_kg": "1"},
        [
            ("gls/parcel", "5.50"),
            ("dhl/paket", "6.00"),
            ("ups/standard", "6.50"),
        ],
        id="channel condition without a channel",
    ),
    pytest.param(
        [{"action": "exclude", "carrier": "ups", "is_active": False}],
        {"weight_kg": "1"},
        [
            ("gls/parcel", "5.50"),
            ("dhl/paket", "6.00"),
            ("ups/standard", "6.50"),
        ],
        id="inactive rule",
    ),
]


@pytest.mark.parametrize(("rules", "shipment", "expected"), CASES)
def test_quote_ranks_and_prices(world, rules, shipment, expected):
    rules = [
        {**r, "channel": SalesChannel.objects.get(code=r["channel"])} if "channel" in r else r
        for r in rules
    ]
    make_rules(rules, world)
    shipment = dict(shipment)
    shipment["weight_kg"] = Decimal(shipment["weight_kg"])
    if "order_value" in shipment:
        shipment["order_value"] = Decimal(shipment["order_value"])
    shipment.setdefault("on", DAY)

    quote = shipping_quote(country="DE", **shipment)

    assert ranked(quote) == expected
    assert quote.currency == "EUR"


def test_every_price_has_the_minor_unit_of_its_currency(world):
    quote = shipping_quote(country="DE", weight_kg=Decimal("0.333"), on=DAY)

    assert [option.price.as_tuple().exponent for option in quote.options] == [-2, -2, -2]


def test_yen_prices_are_whole(db):
    carrier = carrier_make("jp-post")
    service_make(
        carrier, "parcel", countries=("JP",), base_price="800", price_per_kg="150", currency="JPY"
    )

    quote = shipping_quote(country="JP", weight_kg=Decimal("1.5"), on=DAY)

    assert ranked(quote) == [("jp-post/parcel", "1025")]


def test_the_trace_says_what_each_rule_did(world):
    make_rules(
        [
            {"name": "prefer ups", "action": "prefer", "service": "ups/standard", "priority": 1},
            {"name": "no gls", "action": "exclude", "carrier": "gls", "priority": 2},
            {"name": "plus ten", "action": "surcharge", "surcharge_percent": "10", "priority": 3},
            {
                "name": "austria only",
                "action": "exclude",
                "carrier": "dhl",
                "countries": ["AT"],
                "priority": 4,
            },
        ],
        world,
    )

    quote = shipping_quote(country="DE", weight_kg=Decimal("25"), on=DAY)

    assert [(e.rule, e.outcome, e.detail) for e in quote.trace] == [
        (None, "ineligible", "GLS Parcel takes at most 20 kg."),
        ("prefer ups", "applied", "Preferred ups/standard."),
        ("no gls", "skipped", "No GLS service is among the options."),
        (
            "plus ten",
            "applied",
            "Surcharge 10 %: +3.00 EUR on dhl/paket; +1.85 EUR on ups/standard.",
        ),
        ("austria only", "skipped", "Only for destinations AT."),
    ]
    assert [(o.service, o.price, o.base_price, o.rules_applied) for o in quote.options] == [
        ("standard", Decimal("20.35"), Decimal("18.50"), ("prefer ups", "plus ten")),
        ("paket", Decimal("33.00"), Decimal("30.00"), ("plus ten",)),
    ]
    assert quote.options[0].preferred is True
    assert (quote.options[0].eta_days_min, quote.options[0].eta_days_max) == (2, 4)


def test_rules_of_equal_priority_run_by_name(world):
    make_rules(
        [
            {
                "name": "b plus one",
                "action": "surcharge",
                "carrier": "dhl",
                "surcharge_amount": "1.00",
                "currency": "EUR",
                "priority": 5,
            },
            {
                "name": "a ten percent",
                "action": "surcharge",
                "carrier": "dhl",
                "surcharge_percent": "10",
                "priority": 5,
            },
        ],
        world,
    )

    quote = shipping_quote(country="DE", weight_kg=Decimal("1"), on=DAY)

    assert [e.rule for e in quote.trace] == ["a ten percent", "b plus one"]
    assert ranked(quote)[-1] == ("dhl/paket", "7.60")


def test_too_heavy_for_every_service_is_an_answer_not_an_error(world):
    quote = shipping_quote(country="DE", weight_kg=Decimal("80"), on=DAY)

    assert quote.options == ()
    assert quote.message == (
        "No service can carry 80 kg to Germany (DE): the most any active service there "
        "takes is 70 kg."
    )


def test_a_country_no_service_delivers_to(world):
    quote = shipping_quote(country="JP", weight_kg=Decimal("1"), on=DAY)

    assert quote.options == ()
    assert quote.message == "No active carrier service delivers to Japan (JP)."


def test_every_service_excluded(world):
    make_rules([{"action": "exclude"}], world)

    quote = shipping_quote(country="DE", weight_kg=Decimal("1"), on=DAY)

    assert quote.options == ()
    assert quote.message == "Every service to Germany (DE) is excluded by the shipping rules."


def test_inactive_services_and_carriers_are_no_option(world):
    CarrierService.objects.filter(code="paket").update(is_active=False)
    Carrier.objects.filter(code="gls").update(is_active=False)

    quote = shipping_quote(country="DE", weight_kg=Decimal("1"), on=DAY)

    assert ranked(quote) == [("ups/standard", "6.50")]


@pytest.fixture
def two_currencies(world):
    usps = carrier_make("usps")
    channel_make("web-us", currency="USD")
    return service_make(
        usps,
        "intl",
        countries=("DE",),
        base_price="9.00",
        price_per_kg="0.00",
        currency="USD",
        days=(5, 9),
    )


def test_services_in_two_currencies_are_not_compared(two_currencies):
    with pytest.raises(ValidationError) as refused:
        shipping_quote(country="DE", weight_kg=Decimal("1"), on=DAY)

    assert refused.value.message_dict == {
        "currency": [
            "Services to Germany (DE) are priced in EUR, USD; prices in different currencies "
            "are not compared. Give a currency or a sales channel."
        ]
    }


def test_the_channel_currency_chooses_the_services(two_currencies):
    quote = shipping_quote(country="DE", weight_kg=Decimal("1"), channel="web-us", on=DAY)

    assert ranked(quote) == [("usps/intl", "9.00")]
    assert quote.currency == "USD"
    assert [e.outcome for e in quote.trace] == ["ineligible"] * 3


def test_a_currency_chooses_the_services(two_currencies):
    quote = shipping_quote(country="DE", weight_kg=Decimal("1"), currency="EUR", on=DAY)

    assert ranked(quote) == [
        ("gls/parcel", "5.50"),
        ("dhl/paket", "6.00"),
        ("ups/standard", "6.50"),
    ]
    assert quote.trace[0].detail == "USPS Intl is priced in USD, this quote is in EUR."


def test_a_rule_in_another_currency_is_skipped(two_currencies):
    rule_make("usd surcharge", action="surcharge", surcharge_amount="5.00", currency="USD")

    quote = shipping_quote(country="DE", weight_kg=Decimal("1"), currency="EUR", on=DAY)

    assert ranked(quote)[0] == ("gls/parcel", "5.50")
    assert quote.trace[-1].detail == "Its amounts are in USD, this quote is in EUR."


@pytest.mark.parametrize(
    ("arguments", "errors"),
    [
        ({"weight_kg": Decimal(0)}, {"weight_kg": ["The weight must be more than 0 kg."]}),
        ({"weight_kg": Decimal("-2")}, {"weight_kg": ["The weight must be more than 0 kg."]}),
        ({"country": "XX"}, {"country": ["“XX” is not an ISO 3166-1 alpha-2 country code."]}),
        ({"channel": "nope"}, {"channel": ["No active sales channel “nope”."]}),
        ({"order_value": Decimal("-1")}, {"order_value": ["The order value cannot be negative."]}),
        (
            {"channel": "web-eu", "currency": "USD"},
            {"currency": ["The web-eu channel sells in EUR, not USD."]},
        ),
    ],
)
def test_bad_input_is_refused_per_field_and_nothing_is_written(world, arguments, errors):
    call = {"country": "DE", "weight_kg": Decimal("1"), **arguments}
    counts = _row_counts()

    with pytest.raises(ValidationError) as refused:
        shipping_quote(**call)

    assert refused.value.message_dict == errors
    assert _row_counts() == counts


def _row_counts() -> tuple[int, ...]:
    return tuple(
        model.objects.count() for model in (Carrier, CarrierService, SalesChannel, ShippingRule)
    )


def test_a_quote_takes_a_constant_number_of_queries(world, django_assert_num_queries):
    make_rules([{"action": "surcharge", "surcharge_percent": "5"}], world)

    with django_assert_num_queries(3):  # channel, services, rules
        shipping_quote(country="DE", weight_kg=Decimal("1"), channel="web-eu", on=DAY)
