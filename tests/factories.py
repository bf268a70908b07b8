"""Plain factory functions for the test suite: each builds one row the way the app would."""

from datetime import datetime

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, Group

from access.models import ApiKey
from access.services import api_key_create

DEFAULT_PASSWORD = "correct-horse-battery-staple"


def user_create(
    username: str,
    *,
    password: str = DEFAULT_PASSWORD,
    groups: tuple[str, ...] = (),
    **fields,
) -> AbstractBaseUser:
    user = get_user_model().objects.create_user(
        username=username, email=f"{username}@example.com", password=password, **fields
    )
    if groups:
        user.groups.set(Group.objects.filter(name__in=groups))
    return user


def api_key_make(
    user: AbstractBaseUser,
    *,
    name: str = "test",
    expires_at: datetime | None = None,
    revoked_at: datetime | None = None,
    last_used_at: datetime | None = None,
) -> tuple[ApiKey, str]:
    """A key created through the service, then moved to a past state if asked: the service
    rightly refuses to create a key that has already expired."""
    api_key, raw_key = api_key_create(user=user, name=name)
    past_state = {
        "expires_at": expires_at,
        "revoked_at": revoked_at,
        "last_used_at": last_used_at,
    }
    past_state = {field: value for field, value in past_state.items() if value is not None}
    if past_state:
        ApiKey.objects.filter(pk=api_key.pk).update(**past_state)
        api_key.refresh_from_db()
    return api_key, raw_key
