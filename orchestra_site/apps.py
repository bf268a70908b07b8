from django.apps import AppConfig
from django.contrib.admin.apps import AdminConfig


class OrchestraAdminConfig(AdminConfig):
    default_site = "orchestra_site.admin_site.OrchestraAdminSite"


class SiteConfig(AppConfig):
    """The project itself: installed for its management commands (load_demo_data)."""

    name = "orchestra_site"
    verbose_name = "Orchestra"
