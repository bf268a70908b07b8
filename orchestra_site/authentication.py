from rest_framework import authentication, exceptions

from orchestra_site.models import ApiKey, api_key_digest


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
        api_key = (
            ApiKey.objects.usable()
            .select_related("user")
            .filter(digest=api_key_digest(raw_key))
            .first()
        )
        if api_key is None or not api_key.matches(raw_key):
            raise exceptions.AuthenticationFailed("Invalid, revoked or expired API key.")
        api_key.touch()
        return api_key.user, api_key

    def authenticate_header(self, request):
        return f'{self.keyword} realm="api"'
