"""Plain-English commerce questions, for the built-in local model.

`find_*` take one piece out of a message (country, weight, order value, SKU, product
words …); `parse_*_request` decide whether a message is a request for one tool and give
that tool's arguments, or None. A request is recognized only when every argument the
tool needs is there, so the local model never calls a tool with half its arguments.
"""

import re
import unicodedata
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from commerce.countries import COUNTRIES

# Names people use besides the ISO short names.
COUNTRY_ALIASES = {
    "america": "US",
    "usa": "US",
    "u.s.": "US",
    "u.s.a.": "US",
    "united states of america": "US",
    "the states": "US",
    "uk": "GB",
    "u.k.": "GB",
    "britain": "GB",
    "great britain": "GB",
    "england": "GB",
    "scotland": "GB",
    "wales": "GB",
    "northern ireland": "GB",
    "holland": "NL",
    "the netherlands": "NL",
    "czech republic": "CZ",
    "turkey": "TR",
    "russia": "RU",
    "vatican": "VA",
    "vatican city": "VA",
    "ivory coast": "CI",
    "cape verde": "CV",
    "burma": "MM",
    "brunei": "BN",
    "macedonia": "MK",
    "swaziland": "SZ",
    "dr congo": "CD",
    "democratic republic of the congo": "CD",
    "republic of the congo": "CG",
    "micronesia": "FM",
    "palestine": "PS",
    "east timor": "TL",
    "falkland islands": "FK",
    "saint martin": "MF",
    "sint maarten": "SX",
    "bonaire": "BQ",
    "saint helena": "SH",
    "south korea": "KR",
    "british virgin islands": "VG",
    "us virgin islands": "VI",
    "u.s. virgin islands": "VI",
}


def _fold(text: str) -> str:
    """Lower case without accents: 'Türkiye' -> 'turkiye'."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def _country_names() -> dict[str, str]:
    names: dict[str, str] = {}
    for code, name in COUNTRIES.items():
        short = re.sub(r"\s*\(.*\)$", "", name)  # "Holy See (Vatican City State)"
        if "," in short:  # "Virgin Islands, British": the aliases name these
            continue
        for variant in {short.casefold(), _fold(short)}:
            names.setdefault(variant, code)
    for alias, code in COUNTRY_ALIASES.items():
        names[alias] = code
    return names


COUNTRY_NAMES = _country_names()


def _alternation(words) -> str:
    ordered = sorted(words, key=len, reverse=True)
    return "|".join(re.escape(word).replace(r"\ ", r"\s+") for word in ordered)


# A country by name (any case, accents optional), or by ISO code in upper case after a
# preposition ("to DE", "in the US"): a lower-case "it" or "us" is a word, not a country.
COUNTRY = (
    rf"(?:(?<![\w.])(?:{_alternation(COUNTRY_NAMES)})(?![\w])"
    rf"|\b(?:to|into|in|for|country)\s+(?:the\s+)?(?-i:(?:{'|'.join(COUNTRIES)}))\b)"
)
_COUNTRY_RE = re.compile(
    rf"(?:\b(?P<prep>to|into|in|for)\s+(?:the\s+)?)?(?P<country>{COUNTRY})", re.I
)

_NUMBER = r"-?\s?\d+(?:[.,]\d+)*"
WEIGHT_UNITS = {
    "kg": Decimal(1),
    "kgs": Decimal(1),
    "kilo": Decimal(1),
    "kilos": Decimal(1),
    "kilogram": Decimal(1),
    "kilograms": Decimal(1),
    "kilogramme": Decimal(1),
    "kilogrammes": Decimal(1),
    "g": Decimal("0.001"),
    "gr": Decimal("0.001"),
    "gram": Decimal("0.001"),
    "grams": Decimal("0.001"),
    "gramme": Decimal("0.001"),
    "grammes": Decimal("0.001"),
    "lb": Decimal("0.45359237"),
    "lbs": Decimal("0.45359237"),
    "pound": Decimal("0.45359237"),
    "pounds": Decimal("0.45359237"),
    "oz": Decimal("0.028349523125"),
    "ounce": Decimal("0.028349523125"),
    "ounces": Decimal("0.028349523125"),
}
WEIGHT = rf"(?<![\w.,])(?P<amount>{_NUMBER})\s*(?P<unit>{_alternation(WEIGHT_UNITS)})\b"
_WEIGHT_RE = re.compile(WEIGHT, re.I)

_SYMBOLS = {"€": "EUR", "$": "USD", "£": "GBP"}
_MONEY_WORDS = {"euro": "EUR", "euros": "EUR", "dollar": "USD", "dollars": "USD"}
MONEY = (
    r"(?:(?P<symbol>[€$£])\s?(?P<amount1>\d+(?:[.,]\d{1,2})?)"
    r"|(?P<amount2>\d+(?:[.,]\d{1,2})?)\s?(?P<code>EUR|USD|GBP|euros?|dollars?)\b"
    r"|\b(?:order\s+(?:value|total)|worth)\s+(?:of\s+|is\s+)?(?P<symbol3>[€$£])?\s?"
    r"(?P<amount3>\d+(?:[.,]\d{1,2})?)(?:\s?(?P<code3>EUR|USD|GBP|euros?|dollars?)\b)?)"
)
_MONEY_RE = re.compile(MONEY, re.I)
_CHANNEL_RE = re.compile(
    r"\b(?:the\s+)?(?P<a>[a-z0-9][a-z0-9_-]*)\s+(?:sales\s+)?channel\b"
    r"|\bchannel\s+(?P<b>[a-z0-9][a-z0-9_-]*)",
    re.I,
)

# "SKU mug-350" in any case, or a bare upper-case code with a hyphen: "MUG-350-BLU".
SKU = (
    r"(?:\bsku\b\s*[:#]?\s*(?P<sku1>[A-Za-z0-9][A-Za-z0-9._-]*)"
    r"|(?<![\w-])(?-i:(?P<sku2>(?=[A-Z0-9_.-]*[A-Z])(?=[A-Z0-9_.-]*\d)"
    r"[A-Z0-9]+(?:[-_][A-Z0-9]+)+))(?![\w-]))"
)
_SKU_RE = re.compile(SKU, re.I)

_ARTICLE = r"(?:(?:the|a|an|any|your|some|this|that)\s+)?"
_END = r"\s*(?:[?.!]|$)"
_STOCK_PHRASES = [
    re.compile(p, re.I)
    for p in (
        rf"\bdo\s+you\s+have\s+{_ARTICLE}(?P<product>.+?)\s+in\s+stock\b",
        rf"\b(?:is|are)\s+{_ARTICLE}(?P<product>.+?)\s+(?:still\s+)?"
        r"(?:in\s+stock|available|on\s+hand)\b",
        rf"\b(?:stock|availability|inventory)\s+(?:level\s+|levels\s+)?(?:of|for)\s+"
        rf"{_ARTICLE}(?P<product>.+?){_END}",
        r"\bhow\s+many\s+(?P<product>.+?)\s+(?:are\s+(?:there\s+)?(?:left|available|in\s+stock)"
        r"|do\s+you\s+have|are\s+left|left|in\s+stock|available)\b",
    )
]
STOCK_WORDS = r"\b(?:in\s+stock|stock|available|availability|inventory|on\s+hand|how\s+many)\b"
_LOOKUP_PHRASE = re.compile(
    r"\b(?:do\s+you\s+(?:have|sell|carry|stock)|looking\s+for|search\s+for|find|"
    r"price\s+of|how\s+much\s+(?:is|are|does|do)|tell\s+me\s+about|details\s+(?:of|for|on)|"
    r"info(?:rmation)?\s+(?:on|about))\s+"
    rf"{_ARTICLE}(?P<product>.+?)(?:\s+costs?)?{_END}",
    re.I,
)
SHIPPING_WORDS = (
    r"\b(?:ship|ships|shipping|shipped|send|sending|deliver|delivers|delivery|post|postage|"
    r"carrier|carriers|courier|parcel|package)\b"
)
TAX_WORDS = r"\b(?:vat|tax|taxes|taxed|sales\s+tax|gst)\b"
TAX_CATEGORY = r"\b(?P<category>super[-\s]?reduced|reduced|standard|zero)\b"
_TAX_CATEGORY_RE = re.compile(TAX_CATEGORY, re.I)
TRACKING_NUMBER = r"(?<![\w-])(?P<number>(?=[A-Za-z0-9]*\d)[A-Za-z0-9]{8,40})(?![\w-])"
_TRACKING_NUMBER_RE = re.compile(TRACKING_NUMBER)
_CARRIER_WORDS = re.compile(
    r"\b(?:with|via|by|from|through)\s+(?:the\s+)?(?P<a>[A-Za-z][\w-]*)"
    r"|\b(?P<b>[A-Za-z][\w-]*)\s+(?:parcel|package|shipment|tracking|delivery)\b",
    re.I,
)
_NOT_CARRIERS = frozenset(
    [
        "my",
        "your",
        "the",
        "a",
        "an",
        "this",
        "that",
        "our",
        "its",
        "their",
        "me",
        "it",
        "tracking",
        "track",
        "number",
        "parcel",
        "package",
        "shipment",
        "order",
    ]
)


def find_country(text: str) -> str | None:
    """The destination country's ISO code: the one after "to/in/for" when several are
    named ("from Germany to France" is FR), else the last one named."""
    found = []
    for match in _COUNTRY_RE.finditer(text):
        named = match.group("country")
        after_preposition = match.group("prep") is not None or bool(_PREPOSITION.match(named))
        found.append((after_preposition, named))
    if not found:
        return None
    with_preposition = [named for after, named in found if after]
    return _country_code((with_preposition or [named for _, named in found])[-1])


_PREPOSITION = re.compile(r"(?:to|into|in|for|country)\s", re.I)


def _country_code(matched: str) -> str | None:
    words = " ".join(matched.split())
    tail = words.split(" ")[-1]
    if tail in COUNTRIES and _PREPOSITION.match(words):
        return tail
    return COUNTRY_NAMES.get(words.casefold()) or COUNTRY_NAMES.get(_fold(words))


def _decimal(text: str) -> Decimal | None:
    text = text.replace(" ", "")
    if re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", text):  # 1,500 or 1,500.5
        text = text.replace(",", "")
    else:
        text = text.replace(",", ".")
    try:
        return Decimal(text)
    except InvalidOperation:
        return None


def find_weight_kg(text: str) -> Decimal | None:
    """The weight in kg, rounded half-up to grams: '2 lbs' -> 0.907."""
    match = _WEIGHT_RE.search(text)
    if match is None:
        return None
    amount = _decimal(match.group("amount"))
    if amount is None:
        return None
    kg = amount * WEIGHT_UNITS[match.group("unit").lower()]
    return kg.quantize(Decimal("0.001"), rounding=ROUND_HALF_UP)


def find_money(text: str) -> tuple[Decimal, str | None] | None:
    """An order value, and its currency when the message names one."""
    match = _MONEY_RE.search(text)
    if match is None:
        return None
    amount = _decimal(match.group("amount1") or match.group("amount2") or match.group("amount3"))
    if amount is None:
        return None
    symbol = match.group("symbol") or match.group("symbol3")
    if symbol:
        return amount, _SYMBOLS[symbol]
    code = (match.group("code") or match.group("code3") or "").lower()
    return amount, _MONEY_WORDS.get(code) or (code.upper() or None)


def find_channel(text: str) -> str | None:
    for match in _CHANNEL_RE.finditer(text):
        code = (match.group("a") or match.group("b")).lower()
        if code not in _NOT_CHANNELS:
            return code
    return None


_NOT_CHANNELS = frozenset(
    ["sales", "the", "a", "this", "that", "which", "what", "your", "my", "our", "same", "other"]
)


def find_sku(text: str) -> str | None:
    match = _SKU_RE.search(text)
    if match is None:
        return None
    return (match.group("sku1") or match.group("sku2")).upper()


_VAGUE = frozenset(
    [
        "it",
        "this",
        "that",
        "they",
        "them",
        "these",
        "those",
        "one",
        "this",
        "one",
        "that",
        "one",
        "something",
    ]
)
_SHIPPING_RE = re.compile(SHIPPING_WORDS, re.I)


def _product_words(phrase: str) -> str | None:
    phrase = re.sub(r"^(?:the|a|an|any|your|some)\s+", "", phrase.strip(), flags=re.I)
    phrase = phrase.strip(" ?.!,'\"")
    if not phrase or phrase.lower() in _VAGUE or _SHIPPING_RE.search(phrase):
        return None
    return phrase


def find_stock_product(text: str) -> str | None:
    """The product a stock question is about: its SKU, else the words naming it."""
    sku = find_sku(text)
    if sku:
        return sku
    for pattern in _STOCK_PHRASES:
        for match in pattern.finditer(text):
            if phrase := _product_words(match.group("product")):
                return phrase
    return None


def find_lookup_query(text: str) -> str | None:
    sku = find_sku(text)
    if sku:
        return sku
    match = _LOOKUP_PHRASE.search(text)
    return _product_words(match.group("product")) if match else None


def find_tax_category(text: str) -> str | None:
    match = _TAX_CATEGORY_RE.search(text)
    if match is None:
        return None
    word = re.sub(r"[-\s]+", "", match.group("category").lower())
    return "super_reduced" if word == "superreduced" else word


def find_tracking_number(text: str) -> str | None:
    match = _TRACKING_NUMBER_RE.search(text)
    return match.group("number") if match else None


def find_carrier_word(text: str) -> str | None:
    """The word naming the carrier, if the message seems to name one."""
    for match in _CARRIER_WORDS.finditer(text):
        word = match.group("a") or match.group("b")
        if word.lower() not in _NOT_CARRIERS and not any(c.isdigit() for c in word):
            return word
    return None


_TRACK_RE = re.compile(r"\b(?:track|tracking|trace|where\s+is\s+my)\b", re.I)
_STOCK_RE = re.compile(STOCK_WORDS, re.I)
_TAX_RE = re.compile(TAX_WORDS, re.I)


def _names_destination(text: str) -> bool:
    """Whether a country follows "to" or "into"."""
    for match in _COUNTRY_RE.finditer(text):
        preposition = match.group("prep") or match.group("country").split()[0]
        if preposition.lower() in {"to", "into"}:
            return True
    return False


def _number(value: Decimal) -> float | int:
    """JSON number for a tool argument: 2 rather than 2.0, 0.907 as is."""
    return int(value) if value == value.to_integral_value() else float(value)


def parse_tracking_request(text: str) -> dict | None:
    """ "Track my DHL parcel 00340434161234567890" -> carrier_tracking_link arguments."""
    if not _TRACK_RE.search(text):
        return None
    number = find_tracking_number(text)
    if number is None:
        return None
    arguments = {"tracking_number": number}
    if carrier := find_carrier_word(text):
        arguments["carrier"] = carrier
    return arguments


def parse_tax_request(text: str) -> dict | None:
    """ "What VAT applies to books in France?" -> tax_rate arguments."""
    if not _TAX_RE.search(text):
        return None
    country = find_country(text)
    if country is None:
        return None
    arguments: dict = {"country": country}
    if sku := find_sku(text):
        arguments["sku"] = sku
    elif category := find_tax_category(text):
        arguments["tax_category"] = category
    return arguments


def parse_quote_request(text: str) -> dict | None:
    """ "Which carrier for a 2 kg parcel to Germany?" -> quote_shipping arguments. A weight
    and a country make a shipping question with a shipping word or "to": "2 lbs to France"."""
    weight = find_weight_kg(text)
    country = find_country(text)
    if weight is None or country is None:
        return None
    if not (_SHIPPING_RE.search(text) or _names_destination(text)):
        return None
    arguments: dict = {"country": country, "weight_kg": _number(weight)}
    if money := find_money(text):
        amount, currency = money
        arguments["order_value"] = _number(amount)
        if currency:
            arguments["currency"] = currency
    if channel := find_channel(text):
        arguments["channel"] = channel
    return arguments


def parse_stock_request(text: str) -> dict | None:
    """ "Is MUG-350-BLU in stock?" -> stock_check arguments."""
    if not _STOCK_RE.search(text):
        return None
    product = find_stock_product(text)
    if product is None:
        return None
    arguments = {"product": product}
    if country := find_country(text):
        arguments["country"] = country
    return arguments


def parse_lookup_request(text: str) -> dict | None:
    """ "Do you sell ceramic mugs?" or "What is SKU MUG-350-BLU?" -> product_lookup arguments."""
    query = find_lookup_query(text)
    return {"query": query} if query else None
