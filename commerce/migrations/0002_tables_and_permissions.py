from django.db import migrations

from access.roles import sync_roles

MODELS = [
    "carrier",
    "carrierservice",
    "product",
    "saleschannel",
    "shippingrule",
    "stocklevel",
    "taxrate",
    "warehouse",
]


def move_content_types(apps, schema_editor, *, from_app="agents", to_app="commerce"):
    """The models' content types follow them, and with them their permissions (granted to
    groups and users) and admin log entries."""
    ContentType = apps.get_model("contenttypes", "ContentType")
    for model in MODELS:
        moving = ContentType.objects.filter(app_label=from_app, model=model).first()
        if moving is None:
            continue
        # One made for the new app meanwhile holds nothing yet: the old one replaces it.
        ContentType.objects.filter(app_label=to_app, model=model).delete()
        moving.app_label = to_app
        moving.save(update_fields=["app_label"])


def move_content_types_back(apps, schema_editor):
    move_content_types(apps, schema_editor, from_app="commerce", to_app="agents")


class Migration(migrations.Migration):
    """The tables take the commerce app's names; permissions move with the models, and the
    staff roles are granted them again (access.roles)."""

    dependencies = [
        ("commerce", "0001_initial"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("orchestra", "0002_roles"),
    ]

    operations = [
        *(migrations.AlterModelTable(name=model, table=None) for model in MODELS),
        migrations.RunPython(move_content_types, move_content_types_back),
        migrations.RunPython(sync_roles, migrations.RunPython.noop),
    ]
