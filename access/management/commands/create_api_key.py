from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from access.services import api_key_create, expiry_in_days


class Command(BaseCommand):
    help = "Create an API key for USERNAME and print it (it is shown only this once)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="cli", help="A label to recognise the key.")
        parser.add_argument("--expires-days", type=int, default=None, help="Days until expiry.")

    def handle(self, *args, username, name, expires_days, **options):
        User = get_user_model()
        try:
            user = User.objects.get(**{User.USERNAME_FIELD: username})
        except User.DoesNotExist:
            raise CommandError(f"No user named {username!r}.") from None
        if not name.strip() or len(name) > 100:
            raise CommandError("--name must be 1 to 100 characters.")
        try:
            expires_at = expiry_in_days(expires_days)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        api_key, raw_key = api_key_create(user=user, name=name, expires_at=expires_at)
        expiry = api_key.expires_at.isoformat() if api_key.expires_at else "never"
        self.stderr.write(f"API key {api_key.name!r} for {username} (expires: {expiry}).")
        self.stderr.write("Store it now: only its hash is kept.")
        self.stdout.write(raw_key)
