from django.db import migrations

from access.roles import sync_roles


class Migration(migrations.Migration):
    """Operators manage the commerce configuration; viewers see it (DESIGN.md §4)."""

    dependencies = [
        ("agents", "0004_commerce"),
    ]

    operations = [migrations.RunPython(sync_roles, migrations.RunPython.noop)]
