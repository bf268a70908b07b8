from django.apps import AppConfig


class AccessConfig(AppConfig):
    """API keys, staff roles, bearer authentication and API throttling."""

    name = "access"
    # The label the app had when it lived in orchestra_site: its tables and migrations keep it.
    label = "orchestra"
    verbose_name = "Access"

    def ready(self):
        # Registers the bearer scheme with drf-spectacular.
        from access import openapi  # noqa: F401
