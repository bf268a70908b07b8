"""Demo commerce data: carriers and services across EU and US destinations, rules that
visibly change the rankings, two sales channels, three warehouses, 30 products with stock
and the VAT rates of the EU countries served.

Idempotent: rows are matched by natural key, created when missing and never changed, so
staff edits survive a second run. Every row passes the model's own validation.
"""

from datetime import date
from decimal import Decimal

from django.db import models
from django.utils import timezone

from commerce.models import (
    Carrier,
    CarrierService,
    Product,
    SalesChannel,
    ShippingRule,
    StockLevel,
    TaxCategory,
    TaxRate,
    Warehouse,
)

EU = ["AT", "BE", "DE", "ES", "FR", "IT", "NL", "PL"]

CARRIERS = [
    (
        "dhl",
        "DHL",
        "https://www.dhl.com/global-en/home/tracking/tracking-parcel.html"
        "?submit=1&tracking-id={tracking_number}",
    ),
    ("ups", "UPS", "https://www.ups.com/track?tracknum={tracking_number}"),
    # No tracking page configured: the agents say so rather than invent one.
    ("gls", "GLS", ""),
    ("usps", "USPS", "https://tools.usps.com/go/TrackConfirmAction?tLabels={tracking_number}"),
]

# carrier, code, name, destinations, currency, base, per kg, max kg, days min, days max
SERVICES = [
    ("dhl", "paket", "Paket", EU, "EUR", "4.99", "0.60", "31.500", 1, 3),
    ("dhl", "express", "Express", EU, "EUR", "14.90", "1.20", "70.000", 1, 1),
    ("ups", "standard", "Standard", EU, "EUR", "6.50", "0.45", "70.000", 2, 4),
    ("ups", "ground", "Ground", ["US"], "USD", "9.95", "0.90", "68.000", 1, 5),
    ("ups", "next-day-air", "Next Day Air", ["US"], "USD", "29.00", "2.50", "68.000", 1, 1),
    (
        "gls",
        "business-parcel",
        "Business Parcel",
        ["AT", "BE", "DE", "FR", "NL", "PL"],
        "EUR",
        "4.60",
        "0.55",
        "40.000",
        2,
        3,
    ),
    ("usps", "ground-advantage", "Ground Advantage", ["US"], "USD", "5.50", "1.80", "31.750", 2, 5),
    ("usps", "priority", "Priority Mail", ["US"], "USD", "9.35", "2.10", "31.750", 1, 3),
]

CHANNELS = [("web-eu", "Web shop EU", "EUR"), ("web-us", "Web shop US", "USD")]

WAREHOUSES = [
    ("ber", "Berlin", "DE", EU),
    ("rtm", "Rotterdam", "NL", EU),
    ("ewr", "Newark", "US", ["CA", "US"]),
]

# sku, name, weight kg, price EUR, tax category
PRODUCTS = [
    ("MUG-350-BLU", "Ceramic mug 350 ml, blue", "0.400", "12.90", "standard"),
    ("MUG-350-WHT", "Ceramic mug 350 ml, white", "0.400", "12.90", "standard"),
    ("MUG-TRV-500", "Travel mug 500 ml, steel", "0.350", "24.90", "standard"),
    ("TEE-ORG-S", "Organic cotton T-shirt, S", "0.180", "29.00", "standard"),
    ("TEE-ORG-M", "Organic cotton T-shirt, M", "0.190", "29.00", "standard"),
    ("TEE-ORG-L", "Organic cotton T-shirt, L", "0.200", "29.00", "standard"),
    ("HOOD-GRY-M", "Hoodie, grey, M", "0.650", "59.00", "standard"),
    ("HOOD-GRY-L", "Hoodie, grey, L", "0.700", "59.00", "standard"),
    ("SHRT-LIN-M", "Linen shirt, M", "0.300", "79.00", "standard"),
    ("SOCK-MRN-3P", "Merino socks, 3 pairs", "0.200", "24.00", "standard"),
    ("BAG-TOTE-NAT", "Canvas tote bag", "0.250", "15.00", "standard"),
    ("BPK-TRL-28", "Trail backpack 28 l", "1.100", "119.00", "standard"),
    ("BPK-TRL-40", "Trail backpack 40 l", "1.450", "149.00", "standard"),
    ("BTL-STL-750", "Insulated bottle 750 ml", "0.420", "32.00", "standard"),
    ("LAMP-DSK-BLK", "Desk lamp, black", "1.800", "79.00", "standard"),
    ("CHR-FLD-OAK", "Folding chair, oak", "6.500", "139.00", "standard"),
    ("TBL-SDE-OAK", "Side table, oak", "9.800", "229.00", "standard"),
    ("RUG-WOOL-170", "Wool rug 120 x 170 cm", "7.200", "189.00", "standard"),
    ("PLT-STN-4P", "Stoneware plates, set of 4", "3.200", "54.00", "standard"),
    ("KNF-CHF-20", "Chef's knife 20 cm", "0.260", "89.00", "standard"),
    ("PAN-CST-28", "Cast-iron pan 28 cm", "3.400", "69.00", "standard"),
    ("KETL-ELC-17", "Electric kettle 1.7 l", "1.300", "49.00", "standard"),
    ("TWL-LIN-2P", "Linen towels, 2 pack", "0.500", "36.00", "standard"),
    ("CNDL-SOY-200", "Soy candle 200 g", "0.350", "19.00", "standard"),
    ("NB-A5-DOT", "Notebook A5, dotted", "0.300", "14.50", "standard"),
    ("PEN-FNT-BLK", "Fountain pen, black", "0.060", "45.00", "standard"),
    ("COF-BEAN-1K", "Coffee beans, 1 kg", "1.050", "24.50", "reduced"),
    ("TEA-GRN-100", "Green tea, 100 g", "0.130", "8.90", "reduced"),
    ("BOOK-COOK-01", "The Everyday Kitchen (cookbook)", "0.950", "34.00", "reduced"),
    ("BOOK-TRAIL-02", "Trails of the Alps (guidebook)", "0.480", "26.00", "reduced"),
]
SOLD_OUT = {"RUG-WOOL-170"}

# country, category, rate %, valid from, valid until
TAX_RATES = [
    ("DE", "standard", "19.00", date(2007, 1, 1), date(2020, 6, 30)),
    ("DE", "standard", "16.00", date(2020, 7, 1), date(2020, 12, 31)),
    ("DE", "standard", "19.00", date(2021, 1, 1), None),
    ("DE", "reduced", "7.00", date(2007, 1, 1), date(2020, 6, 30)),
    ("DE", "reduced", "5.00", date(2020, 7, 1), date(2020, 12, 31)),
    ("DE", "reduced", "7.00", date(2021, 1, 1), None),
    ("AT", "standard", "20.00", date(2016, 1, 1), None),
    ("AT", "reduced", "10.00", date(2016, 1, 1), None),
    ("BE", "standard", "21.00", date(2016, 1, 1), None),
    ("BE", "reduced", "6.00", date(2016, 1, 1), None),
    ("ES", "standard", "21.00", date(2016, 1, 1), None),
    ("ES", "reduced", "10.00", date(2016, 1, 1), None),
    ("ES", "super_reduced", "4.00", date(2016, 1, 1), None),
    ("FR", "standard", "20.00", date(2016, 1, 1), None),
    ("FR", "reduced", "5.50", date(2016, 1, 1), None),
    ("FR", "super_reduced", "2.10", date(2016, 1, 1), None),
    ("IT", "standard", "22.00", date(2016, 1, 1), None),
    ("IT", "reduced", "10.00", date(2016, 1, 1), None),
    ("IT", "super_reduced", "4.00", date(2016, 1, 1), None),
    ("NL", "standard", "21.00", date(2016, 1, 1), None),
    ("NL", "reduced", "9.00", date(2019, 1, 1), None),
    ("PL", "standard", "23.00", date(2016, 1, 1), None),
    ("PL", "reduced", "8.00", date(2016, 1, 1), None),
]


class _Loader:
    def __init__(self):
        self.created = 0

    def get(self, model: type[models.Model], defaults: dict | None = None, **lookup):
        """The row with this natural key; created (validated first) when missing."""
        found = model.objects.filter(**lookup).first()
        if found is not None:
            return found
        row = model(**lookup, **(defaults or {}))
        row.full_clean()
        row.save()
        self.created += 1
        return row


def load() -> int:
    """Create the demo commerce rows that do not exist yet. Returns how many it created."""
    loader = _Loader()
    carriers = {
        code: loader.get(
            Carrier, code=code, defaults={"name": name, "tracking_url_template": template}
        )
        for code, name, template in CARRIERS
    }
    services = {}
    for carrier, code, name, countries, currency, base, per_kg, max_kg, low, high in SERVICES:
        services[f"{carrier}/{code}"] = loader.get(
            CarrierService,
            carrier=carriers[carrier],
            code=code,
            defaults={
                "name": name,
                "destination_countries": countries,
                "currency": currency,
                "base_price": Decimal(base),
                "price_per_kg": Decimal(per_kg),
                "max_weight_kg": Decimal(max_kg),
                "delivery_days_min": low,
                "delivery_days_max": high,
            },
        )
    channels = {
        code: loader.get(SalesChannel, code=code, defaults={"name": name, "currency": currency})
        for code, name, currency in CHANNELS
    }
    _load_rules(loader, carriers, services, channels)
    warehouses = {
        code: loader.get(
            Warehouse, code=code, defaults={"name": name, "country": country, "ships_to": ships}
        )
        for code, name, country, ships in WAREHOUSES
    }
    for index, (sku, name, weight, price, category) in enumerate(PRODUCTS):
        product = loader.get(
            Product,
            sku=sku,
            defaults={
                "name": name,
                "weight_kg": Decimal(weight),
                "price": Decimal(price),
                "currency": "EUR",
                "tax_category": category,
            },
        )
        for position, (code, on_hand) in enumerate(_stock(index, sku)):
            loader.get(
                StockLevel,
                product=product,
                warehouse=warehouses[code],
                defaults={"on_hand": on_hand, "reserved": min(on_hand, (index + position) % 4)},
            )
    for country, category, rate, valid_from, valid_until in TAX_RATES:
        loader.get(
            TaxRate,
            country=country,
            tax_category=TaxCategory(category),
            valid_from=valid_from,
            defaults={"rate": Decimal(rate), "valid_until": valid_until},
        )
    return loader.created


def _stock(index: int, sku: str) -> list[tuple[str, int]]:
    """A plausible, fixed spread: every product in Berlin, most in Rotterdam, every
    third one in Newark."""
    if sku in SOLD_OUT:
        return [("ber", 0), ("rtm", 0)]
    levels = [("ber", 5 + (index * 7) % 40)]
    if index % 4:
        levels.append(("rtm", (index * 11) % 30))
    if index % 3 == 0:
        levels.append(("ewr", 3 + (index * 5) % 25))
    return levels


def _load_rules(loader: _Loader, carriers: dict, services: dict, channels: dict) -> None:
    year = timezone.localdate().year
    rules = [
        (
            "Prefer DHL Paket to Germany",
            10,
            {"action": "prefer", "countries": ["DE"], "service": services["dhl/paket"]},
        ),
        (
            "Prefer USPS Ground Advantage for light US parcels",
            10,
            {
                "action": "prefer",
                "countries": ["US"],
                "weight_max_kg": Decimal(2),
                "service": services["usps/ground-advantage"],
            },
        ),
        (
            "No GLS from 20 kg",
            20,
            {"action": "exclude", "weight_min_kg": Decimal(20), "carrier": carriers["gls"]},
        ),
        (
            "Southern Europe surcharge",
            30,
            {
                "action": "surcharge",
                "countries": ["ES", "IT"],
                "surcharge_amount": Decimal("3.50"),
                "currency": "EUR",
            },
        ),
        (
            "UPS peak season surcharge",
            40,
            {
                "action": "surcharge",
                "carrier": carriers["ups"],
                "surcharge_percent": Decimal(10),
                "valid_from": date(year, 11, 15),
                "valid_until": date(year, 12, 31),
            },
        ),
        (
            "Free DHL Paket from 100 EUR in the EU web shop",
            50,
            {
                "action": "free_shipping",
                "service": services["dhl/paket"],
                "channel": channels["web-eu"],
                "free_shipping_from": Decimal("100.00"),
                "currency": "EUR",
            },
        ),
    ]
    for name, priority, fields in rules:
        loader.get(ShippingRule, name=name, defaults={"priority": priority, **fields})
