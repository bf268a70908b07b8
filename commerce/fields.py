"""Country and money fields of the commerce models."""

import re
from decimal import Decimal

from django import forms
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models

from commerce.countries import COUNTRIES

COUNTRY_CHOICES = sorted(
    ((code, f"{name} ({code})") for code, name in COUNTRIES.items()), key=lambda choice: choice[1]
)
UNKNOWN_COUNTRY = "“%(value)s” is not an ISO 3166-1 alpha-2 country code (e.g. DE, FR, US)."


def country_label(code: str) -> str:
    """'Germany (DE)'; the code alone when it is not a country."""
    name = COUNTRIES.get(code)
    return f"{name} ({code})" if name else code


def validate_country_codes(value) -> None:
    if not isinstance(value, list) or not all(isinstance(code, str) for code in value):
        raise ValidationError("A list of ISO 3166-1 alpha-2 country codes.", code="invalid")
    unknown = sorted({code for code in value if code not in COUNTRIES})
    if unknown:
        raise ValidationError(
            "Not ISO 3166-1 alpha-2 country codes: %(codes)s.",
            code="unknown_country",
            params={"codes": ", ".join(unknown)},
        )


class CountryField(models.CharField):
    """One ISO 3166-1 alpha-2 code, chosen from the complete list."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("max_length", 2)
        kwargs["choices"] = COUNTRY_CHOICES
        kwargs.setdefault("error_messages", {"invalid_choice": UNKNOWN_COUNTRY})
        super().__init__(*args, **kwargs)

    def deconstruct(self):
        # The list is data of this module, not of the schema: keep it out of migrations.
        name, path, args, kwargs = super().deconstruct()
        kwargs.pop("choices", None)
        kwargs.pop("error_messages", None)
        return name, path, args, kwargs


class CountryListFormField(forms.CharField):
    """Country codes typed as 'DE, AT, FR' (commas or spaces), stored as a sorted list."""

    def __init__(self, *args, encoder=None, decoder=None, **kwargs):
        kwargs.setdefault(
            "widget", forms.TextInput(attrs={"size": 60, "placeholder": "DE, AT, FR"})
        )
        super().__init__(*args, **kwargs)

    def prepare_value(self, value):
        return ", ".join(value) if isinstance(value, list) else value

    def to_python(self, value) -> list[str]:
        if isinstance(value, list):
            return value
        text = super().to_python(value)
        codes = sorted({code.upper() for code in re.split(r"[\s,;]+", text or "") if code})
        unknown = [code for code in codes if code not in COUNTRIES]
        if unknown:
            raise ValidationError(
                "Not ISO 3166-1 alpha-2 country codes: %(codes)s.",
                code="unknown_country",
                params={"codes": ", ".join(unknown)},
            )
        return codes


class CountryListField(models.JSONField):
    """A list of ISO 3166-1 alpha-2 codes (JSON, so it works on SQLite and PostgreSQL)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("default", list)
        kwargs.setdefault("validators", [validate_country_codes])
        super().__init__(*args, **kwargs)

    def deconstruct(self):
        name, path, args, kwargs = super().deconstruct()
        kwargs.pop("validators", None)
        return name, path, args, kwargs

    def formfield(self, **kwargs):
        return models.Field.formfield(self, **{"form_class": CountryListFormField, **kwargs})


NOT_NEGATIVE = MinValueValidator(Decimal(0), "Cannot be negative.")


def money_field(verbose_name: str, **kwargs) -> models.DecimalField:
    kwargs.setdefault("validators", [NOT_NEGATIVE])
    return models.DecimalField(verbose_name, max_digits=12, decimal_places=2, **kwargs)
