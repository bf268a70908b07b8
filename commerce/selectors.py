"""Reads of the commerce configuration, for the agent tools and the admin."""

import re
from datetime import date

from django.db.models import Q, QuerySet

from commerce.models import Carrier, Product, StockLevel, TaxRate

# Words of a product question that say nothing about the product.
_NOISE = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "for",
        "and",
        "or",
        "with",
        "in",
        "on",
        "to",
        "is",
        "are",
        "do",
        "does",
        "you",
        "have",
        "any",
        "some",
        "your",
        "my",
        "sell",
        "stock",
        "price",
        "cost",
        "much",
        "how",
        "what",
    ]
)


def product_by_sku(sku: str) -> Product | None:
    """The active product with this SKU (any case), or None."""
    return Product.objects.filter(sku__iexact=sku.strip(), is_active=True).first()


def _term_query(term: str) -> Q:
    # "mugs" finds "Mug", "boxes" finds "Box": a crude singular is enough for names.
    variants = {term}
    if len(term) > 3 and term.endswith("es"):
        variants.add(term[:-2])
    if len(term) > 3 and term.endswith("s"):
        variants.add(term[:-1])
    query = Q()
    for variant in variants:
        query |= Q(name__icontains=variant)
    return query


def products_matching(query: str, *, limit: int = 5) -> list[Product]:
    """Active products whose SKU is the query, else whose name contains every word of it."""
    query = query.strip()
    if not query:
        return []
    exact = product_by_sku(query)
    if exact is not None:
        return [exact]
    terms = [t for t in re.findall(r"[\w-]+", query.casefold()) if t not in _NOISE]
    if not terms:
        return []
    products = Product.objects.filter(is_active=True)
    for term in terms:
        products = products.filter(_term_query(term) | Q(sku__iexact=term))
    return list(products.order_by("name", "sku")[:limit])


def stock_levels_of(product: Product) -> QuerySet[StockLevel]:
    """The product's stock in active warehouses, by warehouse code."""
    return (
        StockLevel.objects.filter(product=product, warehouse__is_active=True)
        .select_related("warehouse")
        .order_by("warehouse__code")
    )


def tax_rate_on(*, country: str, tax_category: str, on: date) -> TaxRate | None:
    """The rate valid on that day for the country and category, or None."""
    return (
        TaxRate.objects.filter(country=country, tax_category=tax_category, valid_from__lte=on)
        .filter(Q(valid_until__isnull=True) | Q(valid_until__gte=on))
        .order_by("-valid_from")
        .first()
    )


def carrier_named(name_or_code: str) -> Carrier | None:
    """The active carrier with this code or name (any case), or None."""
    text = name_or_code.strip()
    return (
        Carrier.objects.filter(is_active=True)
        .filter(Q(code__iexact=text) | Q(name__iexact=text))
        .order_by("pk")
        .first()
    )


def active_carriers() -> list[Carrier]:
    return list(Carrier.objects.filter(is_active=True).order_by("name"))
