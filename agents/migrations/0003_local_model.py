from django.db import migrations


def create_local_model(apps, schema_editor):
    """The built-in local provider and its model always exist (docs/configuration.md)."""
    Provider = apps.get_model("agents", "Provider")
    LLMModel = apps.get_model("agents", "LLMModel")
    provider, _ = Provider.objects.get_or_create(name="local", defaults={"kind": "local"})
    LLMModel.objects.get_or_create(
        name="local",
        defaults={
            "provider": provider,
            "context_window": 32000,
            "max_output_tokens": 1024,
            "supports_tools": True,
        },
    )


class Migration(migrations.Migration):
    dependencies = [("agents", "0002_llm_router")]

    operations = [migrations.RunPython(create_local_model, migrations.RunPython.noop)]
