from importlib import import_module

from django.apps import apps
from django.core.management.base import BaseCommand
from django.db import transaction


class Command(BaseCommand):
    help = (
        "Load the demo data set: each app's demo.load() in turn. Idempotent: rows are "
        "matched by natural key, so a second run changes nothing."
    )

    def handle(self, *args, **options):
        loaders = []
        for app_config in apps.get_app_configs():
            try:
                module = import_module(f"{app_config.name}.demo")
            except ModuleNotFoundError as exc:
                if exc.name != f"{app_config.name}.demo":
                    raise
                continue
            loaders.append((app_config.label, module.load))
        with transaction.atomic():
            for label, load in loaders:
                created = load()
                self.stdout.write(f"demo data {label}: {created} row(s) created")
        if not loaders:
            self.stdout.write("demo data: no app provides any")
