"""Migrating a database made before commerce became its own app keeps every row.

The database is taken back to the migrations of that release (commerce's models in the
agents app, tables `agents_carrier` …), filled through the historical models, and
migrated forward again.
"""

from datetime import date
from decimal import Decimal

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from tests.turn_helpers import TRANSACTIONAL

pytestmark = [TRANSACTIONAL, pytest.mark.slow]

# The newest migrations of the release before the move (commerce did not exist).
BEFORE_THE_MOVE = [("agents", "0007_provider_key_env"), ("commerce", None)]
COMMERCE_MODELS = [
    "carrier",
    "carrierservice",
    "product",
    "saleschannel",
    "shippingrule",
    "stocklevel",
    "taxrate",
    "warehouse",
]


def _migrate_back():
    """The database as the release before the move left it; returns its models."""
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE_THE_MOVE)
    executor.loader.build_graph()
    applied = [
        leaf for leaf in executor.loader.graph.leaf_nodes() if leaf[0] not in ("agents", "commerce")
    ]
    return executor.loader.project_state([*applied, BEFORE_THE_MOVE[0]]).apps


def _migrate(targets) -> None:
    MigrationExecutor(connection).migrate(targets)


def _latest() -> list[tuple[str, str]]:
    executor = MigrationExecutor(connection)
    return executor.loader.graph.leaf_nodes()


def _fill(apps) -> None:
    """A shop and a conversation, as the release before the move stored them."""
    User = apps.get_model("auth", "User")
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    Agent = apps.get_model("agents", "Agent")
    LLMModel = apps.get_model("agents", "LLMModel")
    Carrier = apps.get_model("agents", "Carrier")
    CarrierService = apps.get_model("agents", "CarrierService")
    SalesChannel = apps.get_model("agents", "SalesChannel")
    ShippingRule = apps.get_model("agents", "ShippingRule")
    Warehouse = apps.get_model("agents", "Warehouse")
    Product = apps.get_model("agents", "Product")
    StockLevel = apps.get_model("agents", "StockLevel")
    TaxRate = apps.get_model("agents", "TaxRate")
    Conversation = apps.get_model("conversations", "Conversation")
    Turn = apps.get_model("conversations", "Turn")
    TurnStep = apps.get_model("conversations", "TurnStep")
    UsageRecord = apps.get_model("billing", "UsageRecord")

    owner = User.objects.create(username="shopper")
    clerk = User.objects.create(username="clerk", is_staff=True)
    # A permission given to one person, not through a group: it must survive the move.
    clerk.user_permissions.add(
        Permission.objects.get(content_type__app_label="agents", codename="change_product")
    )
    assert Group.objects.get(name="operators").permissions.filter(
        content_type__app_label="agents", codename="change_carrier"
    )
    dhl = Carrier.objects.create(code="dhl", name="DHL")
    parcel = CarrierService.objects.create(
        carrier=dhl,
        code="parcel",
        name="Parcel",
        destination_countries=["DE", "AT"],
        delivery_days_min=1,
        delivery_days_max=3,
        base_price=Decimal("4.90"),
        max_weight_kg=Decimal("31.5"),
        currency="EUR",
    )
    web = SalesChannel.objects.create(code="web", name="Web shop", currency="EUR")
    ShippingRule.objects.create(
        name="Free from 50",
        action="free_shipping",
        priority=10,
        channel=web,
        service=parcel,
        free_shipping_from=Decimal("50.00"),
    )
    berlin = Warehouse.objects.create(code="ber", name="Berlin", country="DE")
    mug = Product.objects.create(
        sku="MUG-1", name="Mug", weight_kg=Decimal("0.350"), price=Decimal("9.90"), currency="EUR"
    )
    StockLevel.objects.create(product=mug, warehouse=berlin, on_hand=12, reserved=2)
    TaxRate.objects.create(
        country="DE", tax_category="standard", rate=Decimal("19.00"), valid_from=date(2026, 1, 1)
    )

    support = Agent.objects.create(slug="support", name="Support", is_default=True)
    conversation = Conversation.objects.create(owner=owner, agent=support, turn_count=1)
    turn = Turn.objects.create(
        conversation=conversation,
        number=1,
        turn_id="t-1",
        input="Shipping to Germany?",
        input_hash="0" * 64,
        output="DHL Parcel, 4.90 EUR.",
        status="completed",
        agent=support,
        attempt=1,
    )
    TurnStep.objects.create(turn=turn, index=1, kind="tool_call", name="quote_shipping")
    local = LLMModel.objects.get(name="local")
    UsageRecord.objects.create(
        turn=turn,
        agent=support,
        provider=local.provider,
        model=local,
        attempt=1,
        input_tokens=12,
        output_tokens=5,
        outcome="ok",
    )


def _rows() -> dict[str, list[tuple]]:
    """Every row of every table of the project's apps, by table (commerce's tables under
    their name after the move)."""
    rows = {}
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            if table.startswith("django_migrations"):
                continue
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)} ORDER BY 1")  # noqa: S608
            name = table.replace("agents_", "commerce_", 1)
            if name.removeprefix("commerce_") not in COMMERCE_MODELS:
                name = table
            rows[name] = [tuple(row) for row in cursor.fetchall()]
    return rows


def _content_types() -> dict[int, tuple[str, str]]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT id, app_label, model FROM django_content_type")
        return {pk: (app_label, model) for pk, app_label, model in cursor.fetchall()}


def test_migrating_a_database_from_before_the_move_keeps_every_row():
    latest = _latest()
    _fill(_migrate_back())
    before = _rows()
    content_types = _content_types()

    _migrate(latest)

    after = _rows()
    moved = {
        pk: ("commerce", model) if app_label == "agents" and model in COMMERCE_MODELS else key
        for pk, (app_label, model) in content_types.items()
        for key in [(app_label, model)]
    }
    assert {table: rows for table, rows in after.items() if table != "django_content_type"} == {
        table: rows for table, rows in before.items() if table != "django_content_type"
    }
    assert _content_types() == moved
    assert len(after["commerce_carrier"]) == 1
    assert len(after["conversations_turn"]) == 1


def test_after_the_move_the_commerce_permissions_are_where_staff_had_them(django_user_model):
    _fill(_migrate_back())

    _migrate(_latest())

    from django.contrib.auth.models import Group

    clerk = django_user_model.objects.get(username="clerk")
    operators = Group.objects.get(name="operators")
    assert clerk.has_perm("commerce.change_product")
    assert not clerk.has_perm("commerce.change_carrier")
    assert operators.permissions.filter(
        content_type__app_label="commerce", codename="change_carrier"
    ).exists()
    assert not operators.permissions.filter(content_type__app_label="agents").exclude(
        content_type__model__in=["provider", "llmmodel", "agent", "agentmodel", "routingrule"]
    )
