from django.contrib import admin

from billing.models import UsageRecord


@admin.register(UsageRecord)
class UsageRecordAdmin(admin.ModelAdmin):
    list_display = [
        "created_at",
        "model",
        "agent",
        "attempt",
        "outcome",
        "error_class",
        "input_tokens",
        "output_tokens",
        "tokens_estimated",
        "latency_ms",
    ]
    list_filter = ["outcome", "model", "agent", "tokens_estimated"]
    list_select_related = ["model", "agent"]
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in UsageRecord._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
