"""The commerce agent tools: precise schemas, small factual results that say when
something is not configured."""

from datetime import date

import jsonschema
import pytest

from agents.tools import ToolContext, ToolError, get_tool
from commerce.tools import COMMERCE_TOOLS
from tests.commerce_factories import (
    carrier_make,
    channel_make,
    product_make,
    rule_make,
    service_make,
    stock_make,
    tax_rate_make,
    warehouse_make,
)

CONTEXT = ToolContext(agent_slug="support")


def run(name: str, **arguments) -> dict:
    return get_tool(name).run(CONTEXT, arguments)


@pytest.mark.parametrize("name", COMMERCE_TOOLS)
def test_every_commerce_tool_is_registered_with_a_strict_schema(name):
    tool = get_tool(name)

    assert tool is not None and tool.sink is None
    assert tool.parameters["type"] == "object"
    assert tool.parameters["additionalProperties"] is False
    assert tool.parameters["required"]
    assert all(
        p.get("description") or p.get("enum") for p in tool.parameters["properties"].values()
    )
    jsonschema.Draft202012Validator.check_schema(tool.parameters)


@pytest.fixture
def shop(db):
    dhl = carrier_make(
        "dhl", name="DHL", tracking_url_template="https://track.example/dhl?id={tracking_number}"
    )
    carrier_make("gls", name="GLS")
    channel_make("web-eu", currency="EUR")
    paket = service_make(
        dhl,
        "paket",
        name="Paket",
        countries=("DE", "AT"),
        base_price="4.99",
        price_per_kg="0.60",
        max_weight_kg="31.5",
        days=(1, 3),
    )
    service_make(
        dhl,
        "express",
        name="Express",
        countries=("DE",),
        base_price="14.90",
        price_per_kg="1.20",
        max_weight_kg="70",
        days=(1, 1),
    )
    rule_make("Prefer Paket", action="prefer", service=paket)
    mug = product_make("MUG-350-BLU", name="Ceramic mug 350 ml, blue", price="12.90")
    product_make("MUG-350-WHT", name="Ceramic mug 350 ml, white", price="12.90")
    product_make(
        "BOOK-1",
        name="The Everyday Kitchen (cookbook)",
        weight_kg="0.950",
        price="34.00",
        tax_category="reduced",
    )
    berlin = warehouse_make("ber", name="Berlin", ships_to=("DE", "AT"))
    newark = warehouse_make("ewr", name="Newark", country="US", ships_to=("US",))
    stock_make(mug, berlin, on_hand=30, reserved=4)
    stock_make(mug, newark, on_hand=12, reserved=0)
    tax_rate_make("DE", rate="16.00", valid_from=date(2020, 7, 1), valid_until=date(2020, 12, 31))
    tax_rate_make("DE", rate="19.00", valid_from=date(2021, 1, 1))
    tax_rate_make("DE", tax_category="reduced", rate="7.00", valid_from=date(2021, 1, 1))


def test_quote_shipping(shop):
    assert run("quote_shipping", country="de", weight_kg=2) == {
        "country": "DE",
        "country_name": "Germany",
        "weight_kg": "2",
        "order_value": None,
        "currency": "EUR",
        "options": [
            {
                "carrier": "DHL",
                "service": "Paket",
                "price": "6.19",
                "currency": "EUR",
                "eta_days": "1-3",
                "preferred": True,
                "free_shipping": False,
            },
            {
                "carrier": "DHL",
                "service": "Express",
                "price": "17.30",
                "currency": "EUR",
                "eta_days": "1-1",
                "preferred": False,
                "free_shipping": False,
            },
        ],
        "message": "2 options for 2 kg to Germany (DE).",
    }


def test_quote_shipping_too_heavy(shop):
    result = run("quote_shipping", country="DE", weight_kg=120, order_value=50.5)

    assert result["options"] == []
    assert result["order_value"] == "50.5"
    assert result["message"] == (
        "No service can carry 120 kg to Germany (DE): the most any active service there "
        "takes is 70 kg."
    )


def test_quote_shipping_unserved_country(shop):
    assert run("quote_shipping", country="JP", weight_kg=1)["message"] == (
        "No active carrier service delivers to Japan (JP)."
    )


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        (
            {"country": "DE", "weight_kg": 0},
            "Invalid arguments (weight_kg): 0 is less than or equal to the minimum of 0",
        ),
        (
            {"country": "DE", "weight_kg": -2},
            "Invalid arguments (weight_kg): -2 is less than or equal to the minimum of 0",
        ),
        (
            {"country": "Germany", "weight_kg": 1},
            "Invalid arguments (country): 'Germany' does not match '^[A-Za-z]{2}$'",
        ),
        ({"country": "XX", "weight_kg": 1}, "“XX” is not an ISO 3166-1 alpha-2 country code."),
        ({"country": "DE", "weight_kg": 1, "channel": "nope"}, "No active sales channel “nope”."),
        ({"country": "DE"}, "Invalid arguments (arguments): 'weight_kg' is a required property"),
    ],
)
def test_quote_shipping_bad_arguments(shop, arguments, error):
    with pytest.raises(ToolError) as refused:
        get_tool("quote_shipping").run(CONTEXT, arguments)

    assert str(refused.value) == error


def test_product_lookup_by_sku(shop):
    assert run("product_lookup", query="mug-350-blu") == {
        "query": "mug-350-blu",
        "products": [
            {
                "sku": "MUG-350-BLU",
                "name": "Ceramic mug 350 ml, blue",
                "price": "12.90",
                "currency": "EUR",
                "weight_kg": "0.4",
                "tax_category": "standard",
            },
        ],
    }


def test_product_lookup_by_name_words(shop):
    result = run("product_lookup", query="ceramic mugs")

    assert [p["sku"] for p in result["products"]] == ["MUG-350-BLU", "MUG-350-WHT"]


def test_product_lookup_unknown(shop):
    assert run("product_lookup", query="NOPE-1") == {
        "query": "NOPE-1",
        "products": [],
        "message": "No product on sale matches “NOPE-1”.",
    }


def test_product_lookup_skips_products_not_on_sale(shop):
    product_make("OLD-1", name="Old mug", is_active=False)

    assert run("product_lookup", query="OLD-1")["products"] == []


def test_stock_check_per_warehouse(shop):
    assert run("stock_check", product="MUG-350-BLU") == {
        "sku": "MUG-350-BLU",
        "name": "Ceramic mug 350 ml, blue",
        "available": 38,
        "warehouses": [
            {
                "warehouse": "ber",
                "name": "Berlin",
                "country": "DE",
                "on_hand": 30,
                "reserved": 4,
                "available": 26,
            },
            {
                "warehouse": "ewr",
                "name": "Newark",
                "country": "US",
                "on_hand": 12,
                "reserved": 0,
                "available": 12,
            },
        ],
    }


def test_stock_check_for_a_destination(shop):
    result = run("stock_check", product="ceramic mug 350 ml, blue", country="AT")

    assert result["available_for_destination"] == 26
    assert [w["ships_to_destination"] for w in result["warehouses"]] == [True, False]


def test_stock_check_without_stock_levels(shop):
    assert run("stock_check", product="BOOK-1") == {
        "sku": "BOOK-1",
        "name": "The Everyday Kitchen (cookbook)",
        "available": 0,
        "warehouses": [],
        "message": "No stock of BOOK-1 is recorded in any active warehouse.",
    }


def test_stock_check_ambiguous_and_unknown(shop):
    assert run("stock_check", product="ceramic mug") == {
        "product": "ceramic mug",
        "candidates": [
            {"sku": "MUG-350-BLU", "name": "Ceramic mug 350 ml, blue"},
            {"sku": "MUG-350-WHT", "name": "Ceramic mug 350 ml, white"},
        ],
        "message": "Several products match; which SKU?",
    }
    assert run("stock_check", product="NOPE-9") == {
        "product": "NOPE-9",
        "message": "No product on sale matches “NOPE-9”.",
    }


def test_tax_rate_today_and_on_a_date(shop):
    today = run("tax_rate", country="DE")
    in_2020 = run("tax_rate", country="DE", date="2020-08-01")

    assert {k: today[k] for k in ("tax_category", "rate_percent", "valid_from", "valid_until")} == {
        "tax_category": "standard",
        "rate_percent": "19",
        "valid_from": "2021-01-01",
        "valid_until": None,
    }
    assert (in_2020["rate_percent"], in_2020["valid_until"]) == ("16", "2020-12-31")


def test_tax_rate_of_a_product(shop):
    result = run("tax_rate", country="DE", sku="BOOK-1", date="2025-01-01")

    assert result == {
        "country": "DE",
        "country_name": "Germany",
        "on": "2025-01-01",
        "sku": "BOOK-1",
        "product": "The Everyday Kitchen (cookbook)",
        "tax_category": "reduced",
        "rate_percent": "7",
        "valid_from": "2021-01-01",
        "valid_until": None,
    }


def test_tax_rate_not_configured(shop):
    assert run("tax_rate", country="US", date="2025-01-01") == {
        "country": "US",
        "country_name": "United States",
        "on": "2025-01-01",
        "tax_category": "standard",
        "message": "No standard rate is configured for United States (US) on 2025-01-01.",
    }
    assert run("tax_rate", country="DE", sku="NOPE-1", date="2025-01-01")["message"] == (
        "No product on sale has the SKU NOPE-1."
    )


def test_carrier_tracking_link(shop):
    assert run("carrier_tracking_link", carrier="dhl", tracking_number="00340434161234567890") == {
        "tracking_number": "00340434161234567890",
        "links": [
            {
                "carrier": "dhl",
                "carrier_name": "DHL",
                "url": "https://track.example/dhl?id=00340434161234567890",
            },
        ],
    }


def test_carrier_tracking_link_not_configured(shop):
    assert run("carrier_tracking_link", carrier="GLS", tracking_number="ABC12345") == {
        "tracking_number": "ABC12345",
        "links": [{"carrier": "gls", "carrier_name": "GLS", "url": None}],
        "message": "No tracking link is configured for GLS.",
    }


def test_carrier_tracking_link_without_a_carrier_lists_every_carrier(shop):
    result = run("carrier_tracking_link", tracking_number="ABC12345")

    assert [(link["carrier"], link["url"]) for link in result["links"]] == [
        ("dhl", "https://track.example/dhl?id=ABC12345"),
        ("gls", None),
    ]


def test_carrier_tracking_link_unknown_carrier(shop):
    with pytest.raises(ToolError) as refused:
        run("carrier_tracking_link", carrier="fedex", tracking_number="ABC12345")

    assert str(refused.value) == "No active carrier “fedex”. Carriers: DHL, GLS."
