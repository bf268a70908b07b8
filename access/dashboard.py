"""The admin dashboard's widget of the access app."""

from access.models import ApiKey


def api_access(request) -> dict | None:
    if not request.user.has_perm("orchestra.view_apikey"):
        return None
    keys = ApiKey.objects.usable()
    if not request.user.is_superuser:
        keys = keys.filter(user=request.user)
    return {"title": "API access", "rows": [("Usable API keys", keys.count())]}
