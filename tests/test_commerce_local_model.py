"""The built-in local model recognizes commerce requests in plain English, calls the tools
and words their results; with the demo data the answer follows the configuration."""

import json

import pytest
from django.utils import timezone

from agents.models import Agent
from agents.providers import LocalModel, ModelRequest, TextDelta
from agents.providers.base import ToolCall
from agents.runtime import RuntimeCallbacks
from agents.tools import get_tool
from commerce import demo
from commerce.models import ShippingRule
from commerce.tools import COMMERCE_TOOLS
from tests.llm_helpers import RouterSpy, events_of, run_agent_here

OFFERED = tuple(get_tool(name).spec for name in (*COMMERCE_TOOLS, "handoff_to_human"))


def first_event(text: str, tools=OFFERED):
    request = ModelRequest(model="local", messages=[{"role": "user", "content": text}], tools=tools)
    return events_of(LocalModel(token_delay_s=0), request)[0]


@pytest.mark.parametrize(
    ("text", "tool", "arguments"),
    [
        (
            "Which carrier for a 2 kg parcel to Germany?",
            "quote_shipping",
            {"country": "DE", "weight_kg": 2},
        ),
        ("How much to ship 500 g to DE?", "quote_shipping", {"country": "DE", "weight_kg": 0.5}),
        (
            "shipping 3.5kg to the Netherlands",
            "quote_shipping",
            {"country": "NL", "weight_kg": 3.5},
        ),
        ("Can you send 2 lbs to the US?", "quote_shipping", {"country": "US", "weight_kg": 0.907}),
        (
            "Deliver 1,5 kg from Germany to Austria, order value 120 EUR",
            "quote_shipping",
            {"country": "AT", "weight_kg": 1.5, "order_value": 120, "currency": "EUR"},
        ),
        (
            "Ship 12 kg to Italy for €80 via the web-eu channel",
            "quote_shipping",
            {
                "country": "IT",
                "weight_kg": 12,
                "order_value": 80,
                "currency": "EUR",
                "channel": "web-eu",
            },
        ),
        ("ship 16 oz to the UK", "quote_shipping", {"country": "GB", "weight_kg": 0.454}),
        ("Is MUG-350-BLU in stock?", "stock_check", {"product": "MUG-350-BLU"}),
        (
            "is sku mug-350-blu available for Austria",
            "stock_check",
            {"product": "MUG-350-BLU", "country": "AT"},
        ),
        ("Is the trail backpack still in stock?", "stock_check", {"product": "trail backpack"}),
        ("How many green tea packs are left?", "stock_check", {"product": "green tea packs"}),
        ("What VAT applies in Germany?", "tax_rate", {"country": "DE"}),
        ("reduced VAT rate in France", "tax_rate", {"country": "FR", "tax_category": "reduced"}),
        (
            "What tax is charged on BOOK-COOK-01 in the Netherlands?",
            "tax_rate",
            {"country": "NL", "sku": "BOOK-COOK-01"},
        ),
        (
            "Track my DHL parcel 00340434161234567890",
            "carrier_tracking_link",
            {"tracking_number": "00340434161234567890", "carrier": "DHL"},
        ),
        (
            "tracking number 1Z999AA10123456784 with UPS",
            "carrier_tracking_link",
            {"tracking_number": "1Z999AA10123456784", "carrier": "UPS"},
        ),
        (
            "Where is my parcel 9400111899223197428490?",
            "carrier_tracking_link",
            {"tracking_number": "9400111899223197428490"},
        ),
        ("Do you sell ceramic mugs?", "product_lookup", {"query": "ceramic mugs"}),
        ("What is SKU KNF-CHF-20?", "product_lookup", {"query": "KNF-CHF-20"}),
        ("How much is the trail backpack?", "product_lookup", {"query": "trail backpack"}),
    ],
)
def test_it_recognizes_commerce_requests(text, tool, arguments):
    event = first_event(text)

    assert isinstance(event, ToolCall)
    assert (event.name, event.arguments) == (tool, arguments)
    get_tool(tool)._validator.validate(event.arguments)


@pytest.mark.parametrize(
    "text",
    [
        "Hello there",
        "How much is shipping to Germany?",  # no weight: nothing to quote
        "Is it in stock?",  # no product named
        "What is 2 kg in pounds?",
        "Ship it to Italy",
        "2 kg to Österreich",  # not a country name it knows
    ],
)
def test_it_does_not_guess_missing_arguments(text):
    assert isinstance(first_event(text), TextDelta)


def test_it_calls_only_the_tools_the_agent_offers():
    only_lookup = (get_tool("product_lookup").spec,)

    assert isinstance(first_event("Is MUG-350-BLU in stock?", only_lookup), ToolCall)
    assert isinstance(first_event("2 kg to Germany", only_lookup), TextDelta)


def answer_to(tool: str, result: dict) -> str:
    request = ModelRequest(
        model="local",
        messages=[
            {"role": "user", "content": "question"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"id": "1", "name": tool, "arguments": {}}],
            },
            {"role": "tool", "tool_call_id": "1", "name": tool, "content": json.dumps(result)},
        ],
        tools=OFFERED,
    )
    events = events_of(LocalModel(token_delay_s=0), request)
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def test_it_words_a_quote():
    result = {
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
                "carrier": "GLS",
                "service": "Business Parcel",
                "price": "0.00",
                "currency": "EUR",
                "eta_days": "2-2",
                "preferred": False,
                "free_shipping": True,
            },
        ],
        "message": "2 options for 2 kg to Germany (DE).",
    }

    assert answer_to("quote_shipping", result) == (
        "For 2 kg to Germany (DE) the best option is DHL Paket (6.19 EUR, 1-3 days), our "
        "preferred service. Also possible: GLS Business Parcel (free, 2 days). Tell me the "
        "order value to see whether free shipping applies."
    )


def test_it_words_an_empty_quote_with_its_message():
    result = {
        "country": "DE",
        "country_name": "Germany",
        "weight_kg": "80",
        "options": [],
        "order_value": None,
        "currency": "EUR",
        "message": "No service can carry 80 kg to Germany (DE): the most any active "
        "service there takes is 70 kg.",
    }

    assert answer_to("quote_shipping", result) == result["message"]


def test_it_words_stock_tax_products_and_tracking():
    stock = {
        "sku": "MUG-1",
        "name": "Mug",
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
    tax = {
        "country": "DE",
        "country_name": "Germany",
        "on": "2025-01-01",
        "tax_category": "reduced",
        "rate_percent": "7",
        "valid_from": "2021-01-01",
        "valid_until": None,
    }
    products = {
        "query": "mug",
        "products": [
            {
                "sku": "MUG-1",
                "name": "Mug",
                "price": "12.90",
                "currency": "EUR",
                "weight_kg": "0.4",
                "tax_category": "standard",
            }
        ],
    }
    tracking = {
        "tracking_number": "ABC12345",
        "links": [
            {"carrier": "dhl", "carrier_name": "DHL", "url": "https://track.example/ABC12345"}
        ],
    }
    untracked = {
        "tracking_number": "ABC12345",
        "links": [{"carrier": "gls", "carrier_name": "GLS", "url": None}],
        "message": "No tracking link is configured for GLS.",
    }

    assert answer_to("stock_check", stock) == (
        "Mug (SKU MUG-1): 38 available (Berlin 26, Newark 12)."
    )
    assert answer_to("tax_rate", tax) == (
        "The reduced rate in Germany (DE) is 7 %, valid since 2021-01-01."
    )
    assert answer_to("product_lookup", products) == (
        "Mug (SKU MUG-1) costs 12.90 EUR and weighs 0.4 kg."
    )
    assert answer_to("carrier_tracking_link", tracking) == (
        "You can follow DHL parcel ABC12345 here: https://track.example/ABC12345"
    )
    assert answer_to("carrier_tracking_link", untracked) == (
        "No tracking link is configured for GLS."
    )


@pytest.fixture
def demo_agent(db) -> Agent:
    demo.load()
    return Agent.objects.create(
        slug="shop", name="Shop", tools=list(COMMERCE_TOOLS), anti_echo=Agent.AntiEcho.OFF
    )


def ask(agent: Agent, text: str) -> str:
    spy = RouterSpy()
    outcome = run_agent_here(
        agent=agent,
        history=[],
        text=text,
        callbacks=RuntimeCallbacks(on_delta=spy.callbacks().on_delta),
    )
    assert "".join(spy.deltas) == outcome.text
    return outcome.text


def test_a_chat_answer_follows_the_shipping_rules(demo_agent):
    question = "Which carrier for a 2 kg parcel to Germany?"

    preferred = ask(demo_agent, question)
    ShippingRule.objects.filter(name="Prefer DHL Paket to Germany").update(is_active=False)
    cheapest = ask(demo_agent, question)

    assert preferred.startswith(
        "For 2 kg to Germany (DE) the best option is DHL Paket (6.19 EUR, 1-3 days), our "
        "preferred service. Also possible: GLS Business Parcel (5.70 EUR, 2-3 days); "
    )
    assert cheapest.startswith(
        "For 2 kg to Germany (DE) the best option is GLS Business Parcel (5.70 EUR, 2-3 days). "
        "Also possible: DHL Paket (6.19 EUR, 1-3 days); "
    )


def test_a_chat_answer_about_stock_and_tax_from_the_demo_data(demo_agent):
    assert ask(demo_agent, "Is RUG-WOOL-170 in stock?") == (
        "Wool rug 120 x 170 cm (SKU RUG-WOOL-170) is out of stock right now (Berlin 0, "
        "Rotterdam 0)."
    )
    assert ask(demo_agent, "What VAT applies to BOOK-COOK-01 in France?") == (
        "The reduced rate for The Everyday Kitchen (cookbook) (SKU BOOK-COOK-01) in France "
        "(FR) is 5.5 %, valid since 2016-01-01."
    )
    assert ask(demo_agent, "What VAT applies in the US?") == (
        f"No standard rate is configured for United States (US) on {timezone.localdate()}."
    )


def test_a_chat_answer_for_a_parcel_too_heavy(demo_agent):
    assert ask(demo_agent, "How much to ship 90 kg to Germany?") == (
        "No service can carry 90 kg to Germany (DE): the most any active service there takes "
        "is 70 kg."
    )


def test_a_chat_answer_for_an_unknown_sku(demo_agent):
    assert ask(demo_agent, "Is NOPE-404 in stock?") == "No product on sale matches “NOPE-404”."


def test_a_chat_answer_for_a_zero_weight(demo_agent):
    assert ask(demo_agent, "Ship 0 kg to Germany") == (
        "I tried to look that up but the quote_shipping tool said: Invalid arguments "
        "(weight_kg): 0 is less than or equal to the minimum of 0"
    )
