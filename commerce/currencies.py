"""ISO 4217 currencies Orchestra prices in, with their minor units.

Prices are stored with two decimal places, so the currencies offered are those whose
minor unit is 0 or 2. The three-decimal currencies (BHD, IQD, JOD, KWD, LYD, OMR, TND),
fund codes, precious metals and testing codes are left out on purpose.
"""

from decimal import ROUND_HALF_UP, Decimal

# fmt: off
# ISO 4217 currencies with no minor unit: amounts are whole numbers.
ZERO_DECIMAL = frozenset((
    "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "VND", "VUV",
    "XAF", "XOF", "XPF",
))
_TWO_DECIMAL = (
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
    "BGN", "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD", "CDF", "CHF",
    "CNY", "COP", "CRC", "CUP", "CVE", "CZK", "DKK", "DOP", "DZD", "EGP", "ERN", "ETB", "EUR",
    "FJD", "FKP", "GBP", "GEL", "GHS", "GIP", "GMD", "GTQ", "GYD", "HKD", "HNL", "HTG", "HUF",
    "IDR", "ILS", "INR", "IRR", "JMD", "KES", "KGS", "KHR", "KPW", "KYD", "KZT", "LAK", "LBP",
    "LKR", "LRD", "LSL", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR",
    "MWK", "MXN", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "PAB", "PEN", "PGK",
    "PHP", "PKR", "PLN", "QAR", "RON", "RSD", "RUB", "SAR", "SBD", "SCR", "SDG", "SEK", "SGD",
    "SHP", "SLE", "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB", "TJS", "TMT", "TOP",
    "TRY", "TTD", "TWD", "TZS", "UAH", "USD", "UYU", "UZS", "VED", "VES", "WST", "XCD", "YER",
    "ZAR", "ZMW",
)
# fmt: on

MINOR_UNITS: dict[str, int] = {
    **dict.fromkeys(_TWO_DECIMAL, 2),
    **dict.fromkeys(ZERO_DECIMAL, 0),
}
CURRENCY_CHOICES = [(code, code) for code in sorted(MINOR_UNITS)]


def minor_unit(currency: str) -> int:
    """Decimal places of the currency. Raises KeyError for a currency not offered."""
    return MINOR_UNITS[currency]


def round_money(amount: Decimal, currency: str) -> Decimal:
    """The amount rounded half-up to the currency's minor unit (2.345 EUR -> 2.35)."""
    return amount.quantize(Decimal(1).scaleb(-minor_unit(currency)), rounding=ROUND_HALF_UP)
