"""The commerce admin: changelists at a constant number of queries, inlines, validation
messages on the form, and the shipping rule tester."""

from datetime import date
from decimal import Decimal

import pytest
from django.urls import reverse

from commerce.models import Carrier, Product, ShippingRule, StockLevel
from tests.commerce_factories import (
    carrier_make,
    channel_make,
    product_make,
    rule_make,
    service_make,
    stock_make,
    warehouse_make,
)


@pytest.fixture
def admin_client_for(client, superuser):
    client.force_login(superuser)
    return client


def products_with_stock(count: int) -> None:
    warehouses = [warehouse_make("ber"), warehouse_make("rtm", country="NL")]
    Product.objects.bulk_create(
        Product(
            sku=f"SKU-{n:05d}",
            name=f"Product {n}",
            weight_kg=Decimal("0.500"),
            price=Decimal("9.90"),
            currency="EUR",
        )
        for n in range(count)
    )
    StockLevel.objects.bulk_create(
        StockLevel(product=product, warehouse=warehouse, on_hand=10, reserved=1)
        for product in Product.objects.all()
        for warehouse in warehouses
    )


# session, user, the page's rows, the paginator's count, the unfiltered count
CHANGELIST_QUERIES = 5


@pytest.mark.parametrize("count", [3, 10_000])
def test_product_changelist_queries_do_not_grow_with_products(
    admin_client_for, count, django_assert_num_queries
):
    products_with_stock(count)

    with django_assert_num_queries(CHANGELIST_QUERIES):
        response = admin_client_for.get(reverse("admin:commerce_product_changelist"))

    assert response.status_code == 200
    assert response.context["cl"].result_count == count
    first = response.context["cl"].result_list[0]
    assert (first.sku, first.available) == ("SKU-00000", 18)


@pytest.mark.parametrize("count", [3, 10_000])
def test_stock_changelist_queries_do_not_grow_with_products(
    admin_client_for, count, django_assert_num_queries
):
    products_with_stock(count)

    # one more than products: the warehouse filter's choices
    with django_assert_num_queries(CHANGELIST_QUERIES + 1):
        response = admin_client_for.get(reverse("admin:commerce_stocklevel_changelist"))

    assert response.status_code == 200
    assert response.context["cl"].result_count == 2 * count
    assert "SKU-00000" in response.content.decode()


def test_product_page_shows_its_stock_per_warehouse(admin_client_for):
    mug = product_make("MUG-1")
    stock_make(mug, warehouse_make("ber", name="Berlin"), on_hand=12, reserved=5)

    response = admin_client_for.get(reverse("admin:commerce_product_change", args=[mug.pk]))

    assert response.status_code == 200
    [inline] = response.context["inline_admin_formsets"]
    assert inline.formset.model is StockLevel
    assert [form.instance.available for form in inline.formset.forms if form.instance.pk] == [7]


def test_carrier_page_lists_its_services(admin_client_for):
    dhl = carrier_make("dhl", name="DHL")
    service_make(dhl, "paket", name="Paket")

    response = admin_client_for.get(reverse("admin:commerce_carrier_change", args=[dhl.pk]))

    [inline] = response.context["inline_admin_formsets"]
    assert [form.instance.code for form in inline.formset.forms if form.instance.pk] == ["paket"]


def test_a_service_form_error_is_on_the_field(admin_client_for):
    dhl = carrier_make("dhl", name="DHL")

    response = admin_client_for.post(
        reverse("admin:commerce_carrierservice_add"),
        {
            "carrier": dhl.pk,
            "code": "paket",
            "name": "Paket",
            "delivery_days_min": "4",
            "delivery_days_max": "2",
            "base_price": "-1",
            "price_per_kg": "0.50",
            "max_weight_kg": "31.5",
            "destination_countries": "de, at, XX",
            "currency": "EUR",
            "is_active": "on",
        },
    )

    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {
        "base_price": ["Cannot be negative."],
        "destination_countries": ["Not ISO 3166-1 alpha-2 country codes: XX."],
        "delivery_days_max": ["The maximum delivery days (2) is below the minimum (4)."],
    }
    assert not Carrier.objects.get().services.exists()


def test_countries_are_typed_as_a_list_and_stored_sorted(admin_client_for):
    dhl = carrier_make("dhl", name="DHL")

    response = admin_client_for.post(
        reverse("admin:commerce_carrierservice_add"),
        {
            "carrier": dhl.pk,
            "code": "paket",
            "name": "Paket",
            "delivery_days_min": "1",
            "delivery_days_max": "2",
            "base_price": "4.99",
            "price_per_kg": "0.50",
            "max_weight_kg": "31.5",
            "destination_countries": "fr de, AT;de",
            "currency": "EUR",
            "is_active": "on",
        },
    )

    assert response.status_code == 302
    assert dhl.services.get().destination_countries == ["AT", "DE", "FR"]


def test_an_operator_may_change_shipping_rules(client, operator):
    rule = rule_make("no gls", action="exclude", carrier=carrier_make("gls"))
    client.force_login(operator)

    response = client.post(
        reverse("admin:commerce_shippingrule_change", args=[rule.pk]),
        {
            "name": "no gls",
            "priority": "5",
            "is_active": "on",
            "countries": "DE",
            "action": "exclude",
            "carrier": rule.carrier_id,
        },
    )

    assert response.status_code == 302
    rule.refresh_from_db()
    assert (rule.priority, rule.countries) == (5, ["DE"])


def test_a_viewer_may_not_change_shipping_rules(client, staff_user):
    rule = rule_make("no gls", action="exclude", carrier=carrier_make("gls"))
    client.force_login(staff_user)

    response = client.post(
        reverse("admin:commerce_shippingrule_change", args=[rule.pk]),
        {"name": "renamed", "priority": "5", "action": "exclude", "carrier": rule.carrier_id},
    )

    assert response.status_code == 403
    assert ShippingRule.objects.get().name == "no gls"


@pytest.fixture
def configured(db):
    dhl, gls = carrier_make("dhl", name="DHL"), carrier_make("gls", name="GLS")
    channel_make("web-eu", currency="EUR")
    paket = service_make(
        dhl, "paket", name="Paket", base_price="5.00", price_per_kg="1.00", days=(1, 2)
    )
    service_make(
        gls,
        "parcel",
        name="Parcel",
        base_price="4.00",
        price_per_kg="1.50",
        max_weight_kg="20",
        days=(2, 3),
    )
    rule_make("Prefer DHL Paket", action="prefer", service=paket, priority=10)
    rule_make(
        "GLS winter surcharge",
        action="surcharge",
        carrier=gls,
        surcharge_amount="1.00",
        currency="EUR",
        valid_from=date(2025, 12, 1),
        valid_until=date(2025, 12, 31),
    )
    return paket


def test_the_rule_tester_shows_the_ranked_options_and_the_trace(admin_client_for, configured):
    response = admin_client_for.get(
        reverse("admin:commerce_shippingrule_tester"),
        {
            "country": "DE",
            "weight_kg": "1",
            "order_value": "30",
            "channel": "web-eu",
            "on": "2025-12-24",
        },
    )

    assert response.status_code == 200
    quote = response.context["quote"]
    assert [(o.carrier, o.service, str(o.price), o.preferred) for o in quote.options] == [
        ("dhl", "paket", "6.00", True),
        ("gls", "parcel", "6.50", False),
    ]
    html = response.content.decode()
    assert "2 options for 1 kg to Germany (DE)." in html
    assert html.index("DHL</td>") < html.index("GLS</td>")
    assert "Surcharge 1.00 EUR: +1.00 EUR on gls/parcel." in html
    assert "Preferred dhl/paket." in html


def test_the_rule_tester_on_another_day_skips_the_dated_rule(admin_client_for, configured):
    response = admin_client_for.get(
        reverse("admin:commerce_shippingrule_tester"),
        {"country": "DE", "weight_kg": "1", "on": "2025-11-30"},
    )

    quote = response.context["quote"]
    assert [str(o.price) for o in quote.options] == ["6.00", "5.50"]
    assert "Valid 2025-12-01 to 2025-12-31, not on 2025-11-30." in response.content.decode()


def test_the_rule_tester_too_heavy(admin_client_for, configured):
    response = admin_client_for.get(
        reverse("admin:commerce_shippingrule_tester"), {"country": "DE", "weight_kg": "45"}
    )

    assert (
        "No service can carry 45 kg to Germany (DE): the most any active service there takes "
        "is 30 kg." in response.content.decode()
    )


def test_the_rule_tester_shows_input_errors_on_the_form(admin_client_for, configured):
    response = admin_client_for.get(
        reverse("admin:commerce_shippingrule_tester"), {"country": "DE", "weight_kg": "0"}
    )

    assert response.context["quote"] is None
    assert response.context["form"].errors == {"weight_kg": ["The weight must be more than 0 kg."]}


def test_the_rule_tester_is_linked_from_the_rules(admin_client_for, configured):
    response = admin_client_for.get(reverse("admin:commerce_shippingrule_changelist"))

    assert reverse("admin:commerce_shippingrule_tester") in response.content.decode()


def test_viewers_may_use_the_rule_tester_and_others_may_not(client, staff_user, alice, configured):
    client.force_login(staff_user)
    url = reverse("admin:commerce_shippingrule_tester")

    assert client.get(url, {"country": "DE", "weight_kg": "1"}).status_code == 200
    client.force_login(alice)
    assert client.get(url).status_code == 302  # not staff: to the login page
    assert Carrier.objects.count() == 2
