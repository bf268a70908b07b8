from django.db import migrations

from access.roles import sync_roles


class Migration(migrations.Migration):
    dependencies = [
        ("conversations", "0001_initial"),
        ("agents", "0001_initial"),
        ("orchestra", "0002_roles"),
    ]

    operations = [migrations.RunPython(sync_roles, migrations.RunPython.noop)]
