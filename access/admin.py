from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from access import authentication
from access.models import ApiKey
from access.services import api_key_create


def _future_expiry(form):
    expires_at = form.cleaned_data.get("expires_at")
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationError("The expiry must be in the future.")
    return expires_at


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "prefix", "created_at", "last_used_at", "expires_at", "state"]
    list_filter = ["revoked_at", "expires_at"]
    list_select_related = ["user"]
    search_fields = ["name", "user__username", "prefix"]
    autocomplete_fields = ["user"]
    readonly_fields = ["prefix", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke_keys"]

    def get_queryset(self, request):
        # API keys of others are visible to superusers only (docs/api.md, staff roles).
        queryset = super().get_queryset(request)
        return queryset if request.user.is_superuser else queryset.filter(user=request.user)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["user", "name", "expires_at"]
        return ["user", "name", "prefix", "created_at", "last_used_at", "expires_at", "revoked_at"]

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)
        if obj is None:
            form.clean_expires_at = _future_expiry
        return form

    def get_readonly_fields(self, request, obj=None):
        return [*self.readonly_fields, "user"] if obj else []

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        formfield = super().formfield_for_foreignkey(db_field, request, **kwargs)
        if db_field.name == "user" and not request.user.is_superuser:
            formfield.queryset = formfield.queryset.filter(pk=request.user.pk)
        return formfield

    @admin.display(description="State")
    def state(self, obj: ApiKey) -> str:
        if obj.revoked_at:
            return "revoked"
        if obj.expires_at and obj.expires_at <= timezone.now():
            return "expired"
        return "active"

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        api_key, raw_key = api_key_create(user=obj.user, name=obj.name, expires_at=obj.expires_at)
        obj.pk, obj.prefix, obj.digest = api_key.pk, api_key.prefix, api_key.digest
        messages.warning(
            request,
            f"The API key is {raw_key} — copy it now: it is stored only as a hash and "
            "cannot be shown again.",
        )

    @admin.action(description="Revoke selected API keys", permissions=["change"])
    def revoke_keys(self, request, queryset):
        # An update() sends no signal: set a new version of the keys ourselves, and undo
        # the revocation if that fails, rather than leave revoked keys usable.
        with transaction.atomic():
            count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
            authentication.VERSION.bump()
        self.message_user(request, f"Revoked {count} API key(s).", messages.SUCCESS)
