from django.apps import AppConfig
from django.contrib.admin.apps import AdminConfig


class OrchestraAdminConfig(AdminConfig):
    default_site = "orchestra_site.admin_site.OrchestraAdminSite"


class OrchestraSiteConfig(AppConfig):
    name = "orchestra_site"
    label = "orchestra"
    verbose_name = "Access"

    def ready(self):
        # Registers the bearer scheme with drf-spectacular.
        from orchestra_site import openapi  # noqa: F401
