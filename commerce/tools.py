"""Agent tools that answer from the commerce configuration, and how the built-in local
model recognizes requests for them and words their results.

The commerce app registers them when it starts (`register_tools`). Results are small
and factual: money as decimal strings, and a `message` when something is not configured,
so a model never has to guess.
"""

from datetime import date
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.utils import timezone

from agents.providers import local
from agents.tools.registry import Tool, ToolContext, ToolError, register
from commerce import language, selectors
from commerce.countries import COUNTRIES
from commerce.fields import country_label
from commerce.models import TaxCategory
from commerce.quotes import Quote, shipping_quote

# The names staff give an agent to let it answer commerce questions.
COMMERCE_TOOLS = (
    "quote_shipping",
    "product_lookup",
    "stock_check",
    "tax_rate",
    "carrier_tracking_link",
)
MAX_OPTIONS = 5
MAX_PRODUCTS = 5

COUNTRY_ARGUMENT = {
    "type": "string",
    "pattern": "^[A-Za-z]{2}$",
    "description": "ISO 3166-1 alpha-2 country code, e.g. DE for Germany, FR for France, "
    "GB for the United Kingdom, US for the United States.",
}


def _text(amount: Decimal) -> str:
    """'19' for 19.00, '5.5' for 5.50: a rate or weight without trailing zeros."""
    return f"{amount.normalize():f}"


def _country(code: str) -> str:
    code = code.upper()
    if code not in COUNTRIES:
        raise ToolError(f"“{code}” is not an ISO 3166-1 alpha-2 country code.")
    return code


# --- quote_shipping --------------------------------------------------------------------


def quote_shipping(
    context: ToolContext,
    country: str,
    weight_kg: float,
    order_value: float | None = None,
    channel: str | None = None,
    currency: str | None = None,
) -> dict:
    try:
        quote = shipping_quote(
            country=country.upper(),
            weight_kg=Decimal(str(weight_kg)),
            order_value=None if order_value is None else Decimal(str(order_value)),
            channel=channel,
            currency=currency,
        )
    except ValidationError as invalid:
        raise ToolError(
            " ".join(" ".join(messages) for messages in invalid.message_dict.values())
        ) from None
    return _quote_result(quote)


def _quote_result(quote: Quote) -> dict:
    result = {
        "country": quote.country,
        "country_name": COUNTRIES.get(quote.country, quote.country),
        "weight_kg": _text(quote.weight_kg),
        "order_value": None if quote.order_value is None else str(quote.order_value),
        "currency": quote.currency,
        "options": [
            {
                "carrier": option.carrier_name,
                "service": option.service_name,
                "price": str(option.price),
                "currency": option.currency,
                "eta_days": f"{option.eta_days_min}-{option.eta_days_max}",
                "preferred": option.preferred,
                "free_shipping": option.free_shipping,
            }
            for option in quote.options[:MAX_OPTIONS]
        ],
        "message": quote.message,
    }
    if len(quote.options) > MAX_OPTIONS:
        result["more_options"] = len(quote.options) - MAX_OPTIONS
    return result


QUOTE_SHIPPING_TOOL = Tool(
    name="quote_shipping",
    description="Shipping options for one parcel from the shop's configured carriers "
    "and shipping rules: carrier, service, price, currency and delivery days, best "
    "first. Use it for 'how much is shipping', 'which carrier', 'how fast'.",
    parameters={
        "type": "object",
        "properties": {
            "country": {
                **COUNTRY_ARGUMENT,
                "description": "Destination country: " + COUNTRY_ARGUMENT["description"],
            },
            "weight_kg": {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": 100000,
                "description": "Parcel weight in kilograms (500 g = 0.5, 1 lb = 0.4536).",
            },
            "order_value": {
                "type": "number",
                "minimum": 0,
                "description": "Value of the order, in the quote's currency; free-shipping "
                "and order-value rules need it.",
            },
            "channel": {
                "type": "string",
                "pattern": "^[a-z0-9][a-z0-9_-]*$",
                "maxLength": 32,
                "description": "Code of the sales channel the order comes from, if known.",
            },
            "currency": {
                "type": "string",
                "pattern": "^[A-Z]{3}$",
                "description": "ISO 4217 currency of the quote (e.g. EUR), if the "
                "customer named one.",
            },
        },
        "required": ["country", "weight_kg"],
        "additionalProperties": False,
    },
    function=quote_shipping,
)


def _quote_answer(result: dict) -> str:
    options = result.get("options") or []
    if not options:
        return result.get("message") or "No shipping option is configured for this parcel."

    def describe(option: dict) -> str:
        price = "free" if option["free_shipping"] else f"{option['price']} {option['currency']}"
        return f"{option['carrier']} {option['service']} ({price}, {_days(option['eta_days'])})"

    where = f"{result['country_name']} ({result['country']})"
    best, others = options[0], options[1:]
    text = f"For {result['weight_kg']} kg to {where} the best option is {describe(best)}"
    text += ", our preferred service." if best["preferred"] else "."
    if others:
        text += " Also possible: " + "; ".join(describe(option) for option in others) + "."
    if result.get("more_options"):
        text += f" There are {result['more_options']} more."
    if result.get("order_value") is None:
        text += " Tell me the order value to see whether free shipping applies."
    return text


def _days(eta: str) -> str:
    low, high = eta.split("-")
    if low == high:
        return f"{low} day{'s' if high != '1' else ''}"
    return f"{low}-{high} days"


# --- product_lookup --------------------------------------------------------------------


def product_lookup(context: ToolContext, query: str) -> dict:
    products = selectors.products_matching(query, limit=MAX_PRODUCTS + 1)
    result = {
        "query": query,
        "products": [
            {
                "sku": product.sku,
                "name": product.name,
                "price": str(product.price),
                "currency": product.currency,
                "weight_kg": _text(product.weight_kg),
                "tax_category": product.tax_category,
            }
            for product in products[:MAX_PRODUCTS]
        ],
    }
    if not products:
        result["message"] = f"No product on sale matches “{query}”."
    elif len(products) > MAX_PRODUCTS:
        result["message"] = "More products match; ask for a SKU or more words of the name."
    return result


PRODUCT_LOOKUP_TOOL = Tool(
    name="product_lookup",
    description="Find products on sale by SKU or by words of their name: SKU, name, "
    "price, currency, weight and tax category. At most 5 results.",
    parameters={
        "type": "object",
        "properties": {
            "query": {
                "type": "string",
                "minLength": 1,
                "maxLength": 200,
                "description": "A SKU (e.g. MUG-350-BLU) or words of the product name "
                "(e.g. ceramic mug).",
            }
        },
        "required": ["query"],
        "additionalProperties": False,
    },
    function=product_lookup,
)


def _product_answer(result: dict) -> str:
    products = result.get("products") or []
    if not products:
        return result.get("message") or f"No product matches “{result.get('query')}”."
    if len(products) == 1:
        p = products[0]
        return (
            f"{p['name']} (SKU {p['sku']}) costs {p['price']} {p['currency']} and weighs "
            f"{p['weight_kg']} kg."
        )
    listing = "; ".join(
        f"{p['name']} (SKU {p['sku']}, {p['price']} {p['currency']})" for p in products
    )
    text = f"I found {len(products)} products matching “{result['query']}”: {listing}."
    if result.get("message"):
        text += " " + result["message"]
    return text


# --- stock_check -----------------------------------------------------------------------


def stock_check(context: ToolContext, product: str, country: str | None = None) -> dict:
    destination = _country(country) if country else None
    matches = selectors.products_matching(product, limit=MAX_PRODUCTS + 1)
    if not matches:
        return {"product": product, "message": f"No product on sale matches “{product}”."}
    if len(matches) > 1:
        return {
            "product": product,
            "candidates": [{"sku": p.sku, "name": p.name} for p in matches[:MAX_PRODUCTS]],
            "message": "Several products match; which SKU?",
        }
    [item] = matches
    warehouses = []
    for level in selectors.stock_levels_of(item):
        entry = {
            "warehouse": level.warehouse.code,
            "name": level.warehouse.name,
            "country": level.warehouse.country,
            "on_hand": level.on_hand,
            "reserved": level.reserved,
            "available": level.available,
        }
        if destination:
            entry["ships_to_destination"] = level.warehouse.ships_to_country(destination)
        warehouses.append(entry)
    result = {
        "sku": item.sku,
        "name": item.name,
        "available": sum(w["available"] for w in warehouses),
        "warehouses": warehouses,
    }
    if destination:
        result["destination"] = destination
        result["available_for_destination"] = sum(
            w["available"] for w in warehouses if w["ships_to_destination"]
        )
    if not warehouses:
        result["message"] = f"No stock of {item.sku} is recorded in any active warehouse."
    return result


STOCK_CHECK_TOOL = Tool(
    name="stock_check",
    description="Stock of one product per warehouse: on hand, reserved and available "
    "(on hand minus reserved). With a destination country, also what the warehouses "
    "that ship there have available.",
    parameters={
        "type": "object",
        "properties": {
            "product": {
                "type": "string",
                "minLength": 1,
                "maxLength": 200,
                "description": "The product's SKU (e.g. MUG-350-BLU), or words of its "
                "name when the SKU is not known.",
            },
            "country": {
                **COUNTRY_ARGUMENT,
                "description": "Destination country, if the "
                "customer named one: " + COUNTRY_ARGUMENT["description"],
            },
        },
        "required": ["product"],
        "additionalProperties": False,
    },
    function=stock_check,
)


def _stock_answer(result: dict) -> str:
    if "candidates" in result:
        listing = "; ".join(f"{c['name']} (SKU {c['sku']})" for c in result["candidates"])
        return f"Several products match “{result['product']}”: {listing}. Which one do you mean?"
    if "sku" not in result:
        return result.get("message", "I could not find that product.")
    if not result["warehouses"]:
        return result["message"]
    label = f"{result['name']} (SKU {result['sku']})"
    per_warehouse = ", ".join(f"{w['name']} {w['available']}" for w in result["warehouses"])
    if result.get("destination"):
        where = country_label(result["destination"])
        return (
            f"{label}: {result['available_for_destination']} available from the warehouses "
            f"that ship to {where} ({result['available']} in all: {per_warehouse})."
        )
    if result["available"] == 0:
        return f"{label} is out of stock right now ({per_warehouse})."
    return f"{label}: {result['available']} available ({per_warehouse})."


# --- tax_rate --------------------------------------------------------------------------


def tax_rate(
    context: ToolContext,
    country: str,
    tax_category: str | None = None,
    sku: str | None = None,
    date: str | None = None,
) -> dict:
    code = _country(country)
    on = _date(date) if date else timezone.localdate()
    result: dict = {"country": code, "country_name": COUNTRIES[code], "on": on.isoformat()}
    if sku:
        product = selectors.product_by_sku(sku)
        if product is None:
            return {**result, "sku": sku, "message": f"No product on sale has the SKU {sku}."}
        result.update(sku=product.sku, product=product.name)
        tax_category = product.tax_category
    tax_category = tax_category or TaxCategory.STANDARD
    result["tax_category"] = tax_category
    rate = selectors.tax_rate_on(country=code, tax_category=tax_category, on=on)
    if rate is None:
        result["message"] = (
            f"No {TaxCategory(tax_category).label.lower()} is configured for "
            f"{country_label(code)} on {on.isoformat()}."
        )
        return result
    result.update(
        rate_percent=_text(rate.rate),
        valid_from=rate.valid_from.isoformat(),
        valid_until=rate.valid_until.isoformat() if rate.valid_until else None,
    )
    return result


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ToolError(f"“{text}” is not a date like 2025-01-31.") from None


TAX_RATE_TOOL = Tool(
    name="tax_rate",
    description="The VAT / sales tax rate configured for a country and tax category "
    "(or for a product's category, by SKU), valid today or on a given date.",
    parameters={
        "type": "object",
        "properties": {
            "country": COUNTRY_ARGUMENT,
            "tax_category": {
                "type": "string",
                "enum": list(TaxCategory.values),
                "description": "Default standard. Ignored when a SKU is given.",
            },
            "sku": {
                "type": "string",
                "minLength": 1,
                "maxLength": 64,
                "description": "Use this product's tax category.",
            },
            "date": {
                "type": "string",
                "pattern": r"^\d{4}-\d{2}-\d{2}$",
                "description": "The day the rate applies to, YYYY-MM-DD. Default today.",
            },
        },
        "required": ["country"],
        "additionalProperties": False,
    },
    function=tax_rate,
)


def _tax_answer(result: dict) -> str:
    if "rate_percent" not in result:
        return result["message"]
    category = TaxCategory(result["tax_category"]).label.lower()
    subject = f" for {result['product']} (SKU {result['sku']})" if result.get("sku") else ""
    text = (
        f"The {category}{subject} in {result['country_name']} ({result['country']}) is "
        f"{result['rate_percent']} %"
    )
    if result["valid_until"]:
        return text + f", valid until {result['valid_until']}."
    return text + f", valid since {result['valid_from']}."


# --- carrier_tracking_link -------------------------------------------------------------


def carrier_tracking_link(
    context: ToolContext, tracking_number: str, carrier: str | None = None
) -> dict:
    if carrier:
        found = selectors.carrier_named(carrier)
        if found is None:
            names = ", ".join(c.name for c in selectors.active_carriers()) or "none"
            raise ToolError(f"No active carrier “{carrier}”. Carriers: {names}.")
        carriers = [found]
    else:
        carriers = selectors.active_carriers()
    links = []
    for each in carriers:
        entry = {
            "carrier": each.code,
            "carrier_name": each.name,
            "url": each.tracking_url(tracking_number),
        }
        links.append(entry)
    result: dict = {"tracking_number": tracking_number, "links": links}
    missing = [entry["carrier_name"] for entry in links if entry["url"] is None]
    if not links:
        result["message"] = "No carrier is configured."
    elif missing:
        result["message"] = f"No tracking link is configured for {', '.join(missing)}."
    return result


CARRIER_TRACKING_LINK_TOOL = Tool(
    name="carrier_tracking_link",
    description="The carrier's tracking page for a parcel. Without a carrier, the link "
    "of every active carrier (ask the customer which carrier when you can).",
    parameters={
        "type": "object",
        "properties": {
            "tracking_number": {
                "type": "string",
                "pattern": "^[A-Za-z0-9-]{4,40}$",
                "description": "The parcel's tracking number as the customer gave it.",
            },
            "carrier": {
                "type": "string",
                "minLength": 1,
                "maxLength": 120,
                "description": "Carrier code or name, e.g. dhl or DHL.",
            },
        },
        "required": ["tracking_number"],
        "additionalProperties": False,
    },
    function=carrier_tracking_link,
)


def _tracking_answer(result: dict) -> str:
    links = [entry for entry in result["links"] if entry["url"]]
    number = result["tracking_number"]
    if len(result["links"]) == 1 and links:
        return f"You can follow {links[0]['carrier_name']} parcel {number} here: {links[0]['url']}"
    text = ""
    if links:
        text = (
            f"Which carrier sent parcel {number}? Follow it with "
            + "; ".join(f"{entry['carrier_name']}: {entry['url']}" for entry in links)
            + "."
        )
    if result.get("message"):
        text = f"{text} {result['message']}".strip()
    return text


# --- registration ------------------------------------------------------------------------


def register_tools() -> None:
    """Give the agents these tools, and teach the built-in local model to recognize
    requests for them (after its own skills: escalation, hand-off …), in this order."""
    for tool in (
        QUOTE_SHIPPING_TOOL,
        PRODUCT_LOOKUP_TOOL,
        STOCK_CHECK_TOOL,
        TAX_RATE_TOOL,
        CARRIER_TRACKING_LINK_TOOL,
    ):
        register(tool)
    for skill in (
        local.Skill("carrier_tracking_link", language.parse_tracking_request, _tracking_answer),
        local.Skill("tax_rate", language.parse_tax_request, _tax_answer),
        local.Skill("quote_shipping", language.parse_quote_request, _quote_answer),
        local.Skill("stock_check", language.parse_stock_request, _stock_answer),
        local.Skill("product_lookup", language.parse_lookup_request, _product_answer),
    ):
        local.teach(skill)
