from django.contrib import admin

from orchestra_site.dashboard import render_widgets


class OrchestraAdminSite(admin.AdminSite):
    site_header = "Orchestra back-office"
    site_title = "Orchestra back-office"
    index_title = "Dashboard"

    def index(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "dashboard_widgets": render_widgets(request)}
        return super().index(request, extra_context)
