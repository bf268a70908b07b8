from django.db import migrations

from access.roles import sync_roles


class Migration(migrations.Migration):
    dependencies = [
        ("conversations", "0004_steps_and_mood"),
        ("agents", "0003_local_model"),
        ("billing", "0001_initial"),
    ]

    operations = [migrations.RunPython(sync_roles, migrations.RunPython.noop)]
