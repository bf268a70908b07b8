"""CSV import and export of products, stock levels and tax rates: a file with one invalid
row imports nothing and the row's error is shown."""

from datetime import date
from decimal import Decimal

import pytest
import tablib
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from commerce.models import Product, StockLevel, TaxRate
from commerce.resources import ProductResource, StockLevelResource, TaxRateResource
from tests.commerce_factories import product_make, tax_rate_make, warehouse_make

PRODUCTS_CSV = (
    "sku,name,weight_kg,price,currency,tax_category,is_active\n"
    "MUG-1,Ceramic mug,0.400,12.90,EUR,standard,1\n"
    "mug-2,Travel mug,0.350,24.90,eur,standard,1\n"
    "BOOK-1,Cookbook,0.950,34.00,EUR,reduced,1\n"
)
ONE_BAD_ROW_CSV = (
    "sku,name,weight_kg,price,currency,tax_category,is_active\n"
    "MUG-1,Ceramic mug,0.400,12.90,EUR,standard,1\n"
    "MUG-2,Travel mug,0.350,-24.90,EUR,standard,1\n"
    "BOOK-1,Cookbook,0.950,34.00,EUR,reduced,1\n"
)


def upload(client, model: str, csv: str):
    return client.post(
        reverse(f"admin:commerce_{model}_import"),
        {
            "resource": "0",
            "format": "0",
            "import_file": SimpleUploadedFile(f"{model}.csv", csv.encode(), "text/csv"),
        },
    )


@pytest.fixture
def admin_client_for(client, superuser):
    client.force_login(superuser)
    return client


def test_a_file_with_one_bad_row_imports_nothing_and_shows_the_row_error(admin_client_for):
    response = upload(admin_client_for, "product", ONE_BAD_ROW_CSV)

    assert response.status_code == 200
    html = response.content.decode()
    assert "Errors" in html or "validation-error" in html
    [invalid] = response.context["result"].invalid_rows
    assert invalid.number == 2
    assert invalid.field_specific_errors == {"price": ["Cannot be negative."]}
    assert "Cannot be negative." in html
    assert "confirm_form" not in response.context
    assert Product.objects.count() == 0


def test_a_good_file_is_previewed_then_imported_on_confirmation(admin_client_for):
    preview = upload(admin_client_for, "product", PRODUCTS_CSV)
    confirm = preview.context["confirm_form"]
    assert Product.objects.count() == 0

    response = admin_client_for.post(
        reverse("admin:commerce_product_process_import"), confirm.initial
    )

    assert response.status_code == 302
    assert list(Product.objects.values_list("sku", "currency", "price").order_by("sku")) == [
        ("BOOK-1", "EUR", Decimal("34.00")),
        ("MUG-1", "EUR", Decimal("12.90")),
        ("MUG-2", "EUR", Decimal("24.90")),
    ]


def dataset(csv: str) -> tablib.Dataset:
    return tablib.Dataset().load(csv, format="csv")


def test_the_resource_rolls_back_a_real_import_with_an_invalid_row(db):
    result = ProductResource().import_data(dataset(ONE_BAD_ROW_CSV), dry_run=False)

    assert result.has_validation_errors()
    assert [row.number for row in result.invalid_rows] == [2]
    assert Product.objects.count() == 0


def test_reimporting_updates_by_sku(db):
    product_make("MUG-1", name="Old name", price="1.00")

    result = ProductResource().import_data(dataset(PRODUCTS_CSV), dry_run=False)

    assert not result.has_errors() and not result.has_validation_errors()
    assert Product.objects.get(sku="MUG-1").name == "Ceramic mug"
    assert Product.objects.count() == 3


def test_stock_import_with_an_unknown_sku_imports_nothing(admin_client_for):
    product_make("MUG-1")
    warehouse_make("ber")
    csv = "sku,warehouse,on_hand,reserved\nMUG-1,ber,10,2\nNOPE-9,ber,5,0\n"

    response = upload(admin_client_for, "stocklevel", csv)

    [invalid] = response.context["result"].invalid_rows
    assert invalid.number == 2
    assert invalid.field_specific_errors == {
        "sku": ["No product with SKU “NOPE-9”: create it first."]
    }
    assert StockLevel.objects.count() == 0


def test_stock_import_reserved_above_on_hand(db):
    product_make("MUG-1")
    warehouse_make("ber")
    csv = "sku,warehouse,on_hand,reserved\nmug-1,ber,3,5\n"

    result = StockLevelResource().import_data(dataset(csv), dry_run=False)

    assert result.invalid_rows[0].field_specific_errors == {
        "reserved": ["Cannot reserve more than is on hand (3)."]
    }
    assert StockLevel.objects.count() == 0


def test_stock_import_sets_levels_by_sku_and_warehouse(db):
    mug = product_make("MUG-1")
    warehouse_make("ber")
    warehouse_make("rtm", country="NL")
    csv = "sku,warehouse,on_hand,reserved\nMUG-1,ber,10,2\nmug-1,rtm,4,0\n"

    result = StockLevelResource().import_data(dataset(csv), dry_run=False)

    assert not result.has_errors() and not result.has_validation_errors()
    assert sorted((level.warehouse.code, level.available) for level in mug.stock_levels.all()) == [
        ("ber", 8),
        ("rtm", 4),
    ]


def test_tax_rates_overlapping_within_one_file_import_nothing(db):
    csv = (
        "country,tax_category,rate,valid_from,valid_until\n"
        "de,standard,19.00,2021-01-01,\n"
        "DE,standard,20.00,2024-01-01,\n"
    )

    result = TaxRateResource().import_data(dataset(csv), dry_run=False)

    [invalid] = result.invalid_rows
    assert invalid.number == 2
    assert invalid.field_specific_errors == {
        "valid_from": [
            "Overlaps the standard rate of 19.00 % for Germany (DE), valid 2021-01-01 to no "
            "end. End that one first."
        ]
    }
    assert TaxRate.objects.count() == 0


def test_tax_rate_import_with_an_unknown_country(db):
    csv = "country,tax_category,rate,valid_from,valid_until\nXX,standard,19.00,2021-01-01,\n"

    result = TaxRateResource().import_data(dataset(csv), dry_run=False)

    assert result.invalid_rows[0].field_specific_errors == {
        "country": ["“XX” is not an ISO 3166-1 alpha-2 country code (e.g. DE, FR, US)."]
    }
    assert TaxRate.objects.count() == 0


def test_tax_rates_export_as_csv(admin_client_for):
    tax_rate_make("DE", rate="16.00", valid_from=date(2020, 7, 1), valid_until=date(2020, 12, 31))

    response = admin_client_for.post(
        reverse("admin:commerce_taxrate_export"),
        {
            "format": "0",
            "resource": "0",
            "taxrateresource_country": True,
            "taxrateresource_tax_category": True,
            "taxrateresource_rate": True,
            "taxrateresource_valid_from": True,
            "taxrateresource_valid_until": True,
        },
    )

    assert response.status_code == 200
    assert response.content.decode().splitlines() == [
        "country,tax_category,rate,valid_from,valid_until",
        "DE,standard,16.00,2020-07-01,2020-12-31",
    ]


def test_a_viewer_can_export_but_not_import(client, staff_user):
    client.force_login(staff_user)

    assert client.get(reverse("admin:commerce_product_import")).status_code == 403
    assert client.get(reverse("admin:commerce_product_export")).status_code == 200
    assert upload(client, "product", PRODUCTS_CSV).status_code == 403
    assert Product.objects.count() == 0


def test_a_value_that_is_not_a_number_is_a_field_error_in_words(admin_client_for):
    csv = (
        "sku,name,weight_kg,price,currency,tax_category,is_active\n"
        "MUG-1,Ceramic mug,0.400,12.90,EUR,standard,1\n"
        "MUG-2,Travel mug,heavy,abc,EUR,standard,1\n"
    )

    response = upload(admin_client_for, "product", csv)

    [invalid] = response.context["result"].invalid_rows
    assert invalid.number == 2
    assert invalid.field_specific_errors == {
        "price": ["“abc” is not a number."],
        "weight_kg": ["“heavy” is not a number."],
    }
    assert "confirm_form" not in response.context
    assert Product.objects.count() == 0
