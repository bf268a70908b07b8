from django.db import migrations

from access.roles import sync_roles


class Migration(migrations.Migration):
    """Operators manage the commerce configuration; viewers see it (docs/api.md)."""

    dependencies = [
        ("agents", "0004_commerce"),
    ]

    operations = [migrations.RunPython(sync_roles, migrations.RunPython.noop)]
