from datetime import datetime, timedelta

from django.contrib.auth.models import User
from django.utils import timezone

from access.models import ApiKey


def api_key_create(
    *, user: User, name: str, expires_at: datetime | None = None
) -> tuple[ApiKey, str]:
    """Create a key for `user`. Returns the row and the plaintext key, which is not stored
    anywhere and cannot be shown again."""
    if expires_at is not None and expires_at <= timezone.now():
        raise ValueError("expires_at must be in the future.")
    raw_key = ApiKey.generate()
    api_key = ApiKey(user=user, name=name, expires_at=expires_at)
    api_key.set_key(raw_key)
    api_key.save()
    return api_key, raw_key


def expiry_in_days(days: int | None) -> datetime | None:
    if days is None:
        return None
    if days < 1:
        raise ValueError("The expiry must be at least 1 day.")
    return timezone.now() + timedelta(days=days)
