"""POST /api/v1/shipping/quotes/ (docs/api.md)."""

import pytest

from commerce.models import ShippingRule
from tests.commerce_factories import carrier_make, channel_make, rule_make, service_make

URL = "/api/v1/shipping/quotes/"


@pytest.fixture
def configured(db):
    dhl, ups = carrier_make("dhl", name="DHL"), carrier_make("ups", name="UPS")
    channel_make("web-eu", currency="EUR")
    paket = service_make(
        dhl,
        "paket",
        name="Paket",
        countries=("DE", "AT"),
        base_price="5.00",
        price_per_kg="1.00",
        max_weight_kg="30",
        days=(1, 2),
    )
    service_make(
        ups,
        "standard",
        name="Standard",
        countries=("DE", "AT"),
        base_price="6.00",
        price_per_kg="0.50",
        max_weight_kg="70",
        days=(2, 4),
    )
    rule_make(
        "Free DHL from 100",
        action="free_shipping",
        service=paket,
        free_shipping_from="100.00",
        currency="EUR",
    )
    return paket


def test_a_quote_lists_the_ranked_options_with_the_rules_applied(alice_client, configured):
    response = alice_client.post(
        URL, {"country": "DE", "weight_kg": 2.5, "order_value": "120.00"}, format="json"
    )

    assert response.status_code == 200
    body = response.json()
    assert body["options"] == [
        {
            "carrier": "dhl",
            "carrier_name": "DHL",
            "service": "paket",
            "service_name": "Paket",
            "price": "0.00",
            "currency": "EUR",
            "eta_days": 2,
            "eta_days_min": 1,
            "preferred": False,
            "free_shipping": True,
            "base_price": "7.50",
            "rules_applied": ["Free DHL from 100"],
        },
        {
            "carrier": "ups",
            "carrier_name": "UPS",
            "service": "standard",
            "service_name": "Standard",
            "price": "7.25",
            "currency": "EUR",
            "eta_days": 4,
            "eta_days_min": 2,
            "preferred": False,
            "free_shipping": False,
            "base_price": "7.25",
            "rules_applied": [],
        },
    ]
    assert {key: body[key] for key in ("country", "weight_kg", "order_value", "channel")} == {
        "country": "DE",
        "weight_kg": "2.500",
        "order_value": "120.00",
        "channel": None,
    }
    assert body["currency"] == "EUR"
    assert body["rules_applied"] == ["Free DHL from 100"]
    assert body["trace"] == [
        {
            "rule": "Free DHL from 100",
            "outcome": "applied",
            "detail": "Free shipping from 100.00 EUR on dhl/paket.",
            "services": ["dhl/paket"],
        }
    ]
    assert body["message"] == "2 options for 2.5 kg to Germany (DE)."
    assert response["X-Request-ID"]


def test_below_the_threshold_the_rule_is_in_the_trace_as_skipped(alice_client, configured):
    response = alice_client.post(
        URL,
        {"country": "de", "weight_kg": "2.5", "order_value": "99.99", "channel": "web-eu"},
        format="json",
    )

    body = response.json()
    assert [(o["service"], o["price"]) for o in body["options"]] == [
        ("standard", "7.25"),
        ("paket", "7.50"),
    ]
    assert body["channel"] == "web-eu"
    assert body["rules_applied"] == []
    assert body["trace"][0]["outcome"] == "skipped"


def test_too_heavy_for_every_service_is_200_with_no_options(alice_client, configured):
    response = alice_client.post(
        URL, {"country": "DE", "weight_kg": 80, "order_value": "10.00"}, format="json"
    )

    assert response.status_code == 200
    assert response.json()["options"] == []
    assert response.json()["message"] == (
        "No service can carry 80 kg to Germany (DE): the most any active service there "
        "takes is 70 kg."
    )


def test_a_country_nobody_delivers_to_is_200_with_no_options(alice_client, configured):
    response = alice_client.post(
        URL, {"country": "JP", "weight_kg": 1, "order_value": "10.00"}, format="json"
    )

    assert response.status_code == 200
    assert response.json()["message"] == "No active carrier service delivers to Japan (JP)."


@pytest.mark.parametrize(
    ("body", "details"),
    [
        (
            {"country": "XX", "weight_kg": 1, "order_value": "1.00"},
            {"country": ["“XX” is not an ISO 3166-1 alpha-2 country code."]},
        ),
        (
            {"country": "DE", "weight_kg": 0, "order_value": "1.00"},
            {"weight_kg": ["The weight must be more than 0 kg."]},
        ),
        (
            {"country": "DE", "weight_kg": -2, "order_value": "1.00"},
            {"weight_kg": ["The weight must be more than 0 kg."]},
        ),
        (
            {"country": "DE", "weight_kg": "heavy", "order_value": "1.00"},
            {"weight_kg": ["A valid number is required."]},
        ),
        (
            {"country": "DE", "weight_kg": 1, "order_value": "-5.00"},
            {"order_value": ["The order value cannot be negative."]},
        ),
        (
            {"country": "DE", "weight_kg": 1, "order_value": "1.00", "channel": "nope"},
            {"channel": ["No active sales channel “nope”."]},
        ),
        (
            {"weight_kg": 1},
            {"country": ["This field is required."], "order_value": ["This field is required."]},
        ),
    ],
)
def test_invalid_input_is_a_validation_error_naming_the_field(
    alice_client, configured, body, details
):
    response = alice_client.post(URL, body, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"
    assert response.json()["error"]["details"] == details


def test_prices_in_two_currencies_need_a_currency_or_channel(alice_client, configured):
    service_make(carrier_make("usps", name="USPS"), "intl", countries=("DE",), currency="USD")

    refused = alice_client.post(
        URL, {"country": "DE", "weight_kg": 1, "order_value": "10.00"}, format="json"
    )
    in_usd = alice_client.post(
        URL,
        {"country": "DE", "weight_kg": 1, "order_value": "10.00", "currency": "usd"},
        format="json",
    )

    assert refused.status_code == 400
    assert list(refused.json()["error"]["details"]) == ["currency"]
    assert [o["carrier"] for o in in_usd.json()["options"]] == ["usps"]


def test_a_quote_writes_nothing(alice_client, configured):
    before = ShippingRule.objects.count()

    response = alice_client.post(
        URL, {"country": "DE", "weight_kg": 1, "order_value": "10.00"}, format="json"
    )

    assert response.status_code == 200
    assert ShippingRule.objects.count() == before


def test_without_credentials_it_is_401(api_client, configured):
    response = api_client.post(
        URL, {"country": "DE", "weight_kg": 1, "order_value": "10.00"}, format="json"
    )

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_the_endpoint_is_in_the_openapi_schema(alice_client):
    schema = alice_client.get("/api/schema/", HTTP_ACCEPT="application/json").json()

    operation = schema["paths"]["/api/v1/shipping/quotes/"]["post"]
    assert operation["operationId"] == "shipping_quotes_create"
    request = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert request.endswith("/QuoteInputRequest")
    assert set(schema["components"]["schemas"]["QuoteInputRequest"]["required"]) == {
        "country",
        "weight_kg",
        "order_value",
    }
    assert "eta_days" in schema["components"]["schemas"]["QuoteOptionOutput"]["properties"]
