import copy
import threading

from django.contrib.auth import get_user_model
from rest_framework import authentication, exceptions

from access.models import ApiKey, api_key_digest
from infrastructure.cache_versions import SharedVersion

# Keys (with their users) this process has looked up, valid while the version holds: any
# save or delete of a key or a user sets a new one (revoking, deactivating, editing).
VERSION = SharedVersion("orchestra:auth:version")
VERSION.watch(ApiKey, get_user_model())
_known: dict[str, ApiKey] = {}
_known_version: str | None = None
_known_lock = threading.Lock()
MAX_KNOWN = 10_000


def _usable_key(digest: str) -> ApiKey | None:
    global _known_version
    version = VERSION.current()
    with _known_lock:
        if version != _known_version:
            _known.clear()
            _known_version = version
        api_key = _known.get(digest)
    if api_key is None:
        api_key = ApiKey.objects.usable().select_related("user").filter(digest=digest).first()
        if api_key is None:
            return None
        with _known_lock:
            if _known_version == version and len(_known) < MAX_KNOWN:
                _known[digest] = api_key
    elif not api_key.is_usable():  # expired since it was looked up
        return None
    return api_key


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer <key>` with a per-user API key."""

    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Invalid Authorization header.")
        try:
            raw_key = header[1].decode()
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Invalid API key.") from None
        return self.authenticate_key(raw_key)

    @staticmethod
    def authenticate_key(raw_key: str):
        api_key = _usable_key(api_key_digest(raw_key))
        if api_key is None or not api_key.matches(raw_key):
            raise exceptions.AuthenticationFailed("Invalid, revoked or expired API key.")
        api_key.touch()
        # A copy per request: what a request caches on its user (permissions) stays its own.
        return copy.copy(api_key.user), api_key

    def authenticate_header(self, request):
        return f'{self.keyword} realm="api"'
